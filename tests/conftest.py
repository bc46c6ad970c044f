# Real NATS JetStream and Postgres fixtures (nats_server, postgres_dsn, database) for integration tests.
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.messaging import forget_streams, fresh_nats

pytest_plugins = ["rebal_devstack.pytest_plugin"]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A NATS server of this test's own (streams and durable consumers start empty). With
    ``TEST_NATS_URL`` set, that server instead, with Rebal's streams (and so their consumers) deleted
    first, so that each test still starts empty."""
    shared = os.environ.get("TEST_NATS_URL")
    if shared:
        asyncio.run(forget_streams(shared))
        yield shared
        return
    for server in fresh_nats(tmp_path):
        yield server.url

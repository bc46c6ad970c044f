# Real NATS JetStream and Postgres fixtures (nats_server, postgres_dsn, database) for integration tests.
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.messaging import fresh_nats

pytest_plugins = ["rebal_devstack.pytest_plugin"]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A NATS server of this test's own (streams and durable consumers start empty)."""
    for server in fresh_nats(tmp_path):
        yield server.url

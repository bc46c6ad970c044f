# Real NATS JetStream and Postgres fixtures (nats_server, postgres_dsn, database) for integration tests.
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.messaging import forget_streams, fresh_nats

pytest_plugins = ["rebal_devstack.pytest_plugin"]

# CI (`.ci/run`) explores the same examples every run (HYPOTHESIS_PROFILE=ci: derandomized), so a red run
# means a change broke something; a plain `make test` explores new random examples each time, which is
# how the property tests keep finding cases (each one found is pinned with `@example`).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# `rebal` finds the client context `make run` writes (var/client.toml) from the directory it runs in: a
# developer's running demo must not become the tests' system. Tests that want a context name one.
os.environ["REBAL_CONTEXT"] = "none"


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

"""pytest fixtures for integration tests against a real NATS JetStream and a real Postgres.

Where the servers come from, per service, first match wins:

1. ``TEST_NATS_URL`` / ``TEST_DATABASE_URL``: use that server, start nothing. ``postgres_dsn`` is then
   that URL as is; ``database`` creates its throwaway databases through it (needs CREATEDB).
2. Docker, when ``REBAL_DEVSTACK_BACKEND`` is ``docker``, or is ``auto`` (the default) and a Docker
   daemon answers a ping within 2 s: testcontainers' ``NatsContainer`` / ``PostgresContainer``.
3. Otherwise local processes (:class:`NatsServer`, :class:`PostgresServer`) under pytest's temporary
   directory; ``REBAL_DEVSTACK_BACKEND=local`` skips the Docker probe.

Enable with ``pytest_plugins = ["rebal_devstack.pytest_plugin"]`` in the top conftest.py.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from rebal_devstack._proc import log
from rebal_devstack.nats import NatsServer
from rebal_devstack.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    dsn_with_database,
    scratch_dir,
    wait_for_postgres,
)

ENV_NATS_URL = "TEST_NATS_URL"
ENV_DATABASE_URL = "TEST_DATABASE_URL"
ENV_BACKEND = "REBAL_DEVSTACK_BACKEND"

NATS_IMAGE = "nats:2.10-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"

# Tests don't need crash-safety against power loss, only against process crashes, which a
# write() without fsync survives. This makes initdb and every commit much cheaper.
TEST_POSTGRES_SETTINGS = {"fsync": "off", "full_page_writes": "off"}

Backend = Literal["env", "docker", "local"]


@dataclass(frozen=True)
class NatsService:
    """What the ``nats_server`` fixture yields: ``url``, and the process when we started one."""

    url: str
    server: NatsServer | None = None


@dataclass(frozen=True)
class FreshDatabase:
    """An empty database made for one test: its ``name`` and its ``dsn``."""

    name: str
    dsn: str


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker daemon answers within ``timeout`` (SDK ping, else ``docker info``)."""
    return _docker_available(timeout)


@functools.cache
def _docker_available(timeout: float) -> bool:
    answer = _docker_sdk_ping(timeout)
    if answer is not None:
        return answer
    cli = shutil.which("docker")
    if cli is None:
        return False
    try:
        result = subprocess.run([cli, "info"], capture_output=True, timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        log.info("no Docker daemon (%s)", exc)
        return False
    return result.returncode == 0


def _docker_sdk_ping(timeout: float) -> bool | None:
    """Ping the daemon the way testcontainers will reach it; None when the SDK is not installed."""
    try:
        import docker
        import requests
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        log.info("no Docker daemon (%s)", exc)
        return False


def resolve_backend(env_url: str | None, setting: str | None, docker_ok: Callable[[], bool]) -> Backend:
    """Which source serves a service, given its ``TEST_*_URL``, ``REBAL_DEVSTACK_BACKEND`` and a probe."""
    if env_url:
        return "env"
    choice = (setting or "auto").strip().lower()
    if choice == "local":
        return "local"
    if choice == "docker":
        return "docker"
    if choice != "auto":
        raise ValueError(f"{ENV_BACKEND} must be auto, local or docker, not {setting!r}")
    return "docker" if docker_ok() else "local"


def _backend(env_var: str) -> Backend:
    return resolve_backend(os.environ.get(env_var), os.environ.get(ENV_BACKEND), docker_available)


# -- NATS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsService]:
    """A NATS server with JetStream for the whole session."""
    backend = _backend(ENV_NATS_URL)
    if backend == "env":
        yield NatsService(os.environ[ENV_NATS_URL])
    elif backend == "docker":
        from testcontainers.community.nats import NatsContainer

        container: Any = NatsContainer(NATS_IMAGE, jetstream=True)
        container.start()
        try:
            yield NatsService(str(container.nats_uri()))
        finally:
            container.stop()
    else:
        server = NatsServer(tmp_path_factory.mktemp("nats") / "jetstream")
        with server:
            yield NatsService(server.url, server)


# -- Postgres -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN with the right to create databases, on the session's Postgres server."""
    backend = _backend(ENV_DATABASE_URL)
    if backend == "env":
        dsn = os.environ[ENV_DATABASE_URL]
        wait_for_postgres(dsn)
        yield dsn
    elif backend == "docker":
        from testcontainers.community.postgres import PostgresContainer

        container: Any = PostgresContainer(POSTGRES_IMAGE, driver=None)
        container.start()
        try:
            dsn = str(container.get_connection_url())
            wait_for_postgres(dsn)
            yield dsn
        finally:
            container.stop()
    else:
        with scratch_dir(tmp_path_factory.mktemp("postgres")) as base:
            server = PostgresServer(base / "data", settings=TEST_POSTGRES_SETTINGS)
            with server:
                yield server.dsn


@pytest.fixture(scope="session")
def postgres_dsn(postgres_admin_dsn: str) -> Iterator[str]:
    """The session's database: ``TEST_DATABASE_URL`` as is, else a fresh database made for it."""
    if os.environ.get(ENV_DATABASE_URL):
        yield os.environ[ENV_DATABASE_URL]
        return
    name = f"rebal_test_session_{uuid.uuid4().hex[:12]}"
    yield create_database(postgres_admin_dsn, name, if_missing=False)
    drop_database(postgres_admin_dsn, name)


@pytest.fixture
def postgres_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """Like ``tmp_path``, for a test's own :class:`PostgresServer`: reachable by the Postgres OS user.

    It is ``tmp_path`` itself unless we are root (see :func:`rebal_devstack.postgres.scratch_dir`).
    """
    with scratch_dir(tmp_path) as path:
        yield path


@pytest.fixture
def database(postgres_admin_dsn: str) -> Iterator[FreshDatabase]:
    """An empty database for one test (``CREATE DATABASE test_<uuid>``), dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    create_database(postgres_admin_dsn, name, if_missing=False)
    yield FreshDatabase(name, dsn_with_database(postgres_admin_dsn, name))
    drop_database(postgres_admin_dsn, name)

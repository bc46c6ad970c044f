"""The services read the NATS credentials and the database URL (with its password) from files, as
docker-compose and Kubernetes mount them, work under their own NATS users through a live rebalance, and
never show a secret: not in their logs, not in /readyz, not in /metrics."""

from __future__ import annotations

import asyncio
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nats
import pytest
from nats.js.errors import NotFoundError

from rebal import bus, subjects
from rebal.events import (
    RunFinished,
    StartRebalance,
    TakeSnapshot,
    TargetWeightsComputed,
    derive_id,
    new_event,
)
from rebal_devstack import _proc
from rebal_devstack.nats import NatsServer
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import SERVICES, Services
from tests.e2e.conftest import TEST_SETTINGS

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(150)]
ROOT = Path(__file__).resolve().parents[2]
PORTFOLIO = "demo"
DB_PASSWORD = f"db-secret-{uuid.uuid4().hex}"
USERS = ("tracker", "optimizer", "planner", "executor", "monitor", "api", "bot_trend")


def nats_password(user: str) -> str:
    return f"nats-secret-{user}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Secured:
    url: str
    passwords: dict[str, str]
    services: Services
    log_dir: Path


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, ""))


@pytest.fixture
def secured(database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secured]:
    passwords = {user: nats_password(user) for user in USERS}
    for user, secret in passwords.items():
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", secret)  # what auth.conf reads
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # Postgres here trusts loopback: the password is carried, not checked; it must still never show.
    (secrets / "database_url").write_text(with_password(database.dsn, DB_PASSWORD) + "\n")
    service_env: dict[str, dict[str, str]] = {}
    for name in SERVICES:
        (secrets / f"nats_{name}").write_text(passwords[name] + "\n")
        service_env[name] = {
            **TEST_SETTINGS.get(name, {}),
            "REBAL__NATS__USER": name,
            "REBAL__NATS__PASSWORD_FILE": str(secrets / f"nats_{name}"),
            "REBAL__DATABASE__URL_FILE": str(secrets / "database_url"),
        }
    base = tmp_path / "nats"
    base.mkdir()
    shutil.copy(ROOT / "deploy" / "nats" / "auth.conf", base / "auth.conf")
    with NatsServer(base / "jetstream", extra_config="max_payload: 8MB\ninclude ./auth.conf") as server:
        services = Services(
            nats_url=server.url,
            # Only the file is right: a service that ignored it would not become ready.
            database_url="postgresql://nobody@127.0.0.1:1/nothing",
            root=ROOT,
            log_dir=tmp_path / "logs",
            service_env=service_env,
        )
        try:
            services.start()
            yield Secured(server.url, passwords, services, tmp_path / "logs")
        finally:
            services.stop()
            left = _proc.wait_gone(services.pids, timeout=10.0)
        assert left == [], f"service processes left behind: {left}"


async def last(js: nats.js.JetStreamContext, subject: str) -> bytes | None:
    try:
        message = await js.get_last_msg(bus.stream_of(subject).name, subject, direct=True)
    except NotFoundError:
        return None
    return message.data


async def live_rebalance_as_the_api(url: str, password: str) -> RunFinished:
    client = await nats.connect(url, user="api", password=password, allow_reconnect=False)
    js = client.jetstream()
    try:
        target_subject = TargetWeightsComputed.topic.subject(PORTFOLIO)
        for _ in range(200):
            if await last(js, target_subject) is not None:
                break
            await asyncio.sleep(0.1)
        now = datetime.now(UTC)
        snap = new_event(TakeSnapshot, key=uuid.uuid4(), now=now, portfolio_id=PORTFOLIO)
        await js.publish(snap.subject, snap.model_dump_json().encode(), stream=subjects.COMMANDS_STREAM)
        await asyncio.sleep(1.0)
        command = new_event(
            StartRebalance,
            key=uuid.uuid4(),
            now=now,
            portfolio_id=PORTFOLIO,
            dry_run=False,
            band=Decimal("0.01"),
        )
        run_id = derive_id("run", command.event_id)
        await js.publish(command.subject, command.model_dump_json().encode(), stream=subjects.COMMANDS_STREAM)
        finished_subject = RunFinished.topic.subject(PORTFOLIO)
        for _ in range(300):
            data = await last(js, finished_subject)
            if data is not None:
                finished = RunFinished.model_validate_json(data)
                if finished.correlation_id == run_id:
                    return finished
            await asyncio.sleep(0.1)
        raise AssertionError("the run did not finish under the services' own users")
    finally:
        await client.drain()


def body(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


async def test_secrets_come_from_files_and_are_never_shown(secured: Secured) -> None:
    finished = await live_rebalance_as_the_api(secured.url, secured.passwords["api"])
    assert finished.status.startswith("completed") and finished.filled > 0, finished

    shown = {f"{name} log": (secured.log_dir / f"{name}.log").read_text() for name in SERVICES} | {
        f"{child.name} {path}": body(f"{child.url}{path}")
        for child in secured.services
        for path in ("/readyz", "/metrics")
    }
    secrets = [DB_PASSWORD, *secured.passwords.values()]
    leaks = [(where, secret) for where, text in shown.items() for secret in secrets if secret in text]
    assert leaks == []
    assert all('"status": "ok"' in text for where, text in shown.items() if where.endswith("/readyz"))

"""The running system as operators meet it: the five services with the API token set, strategy returns
reported as the demo bot would, a target and a snapshot ready, and helpers to call the API.

Shared by the CLI tests (tests/cli/test_ops_cli.py) and the browser test (tests/e2e/test_dashboard.py);
one system per test module, so the start-up (about ten seconds) is paid once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats

from rebal_devstack import _proc, demo_bot
from rebal_devstack.postgres import create_database, drop_database, dsn_with_database
from rebal_devstack.stack import Services
from tests.e2e.conftest import ROOT, TEST_SETTINGS
from tests.e2e.flow import PORTFOLIO, fetch, ready_for_commands
from tests.messaging import fresh_nats

TOKEN = "operators-test-token-0123456789abcdef"
VIEWER_TOKEN = "viewers-test-token-0123456789abcdef-ro"
RETURN_PERIODS = 48
RETURN_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True)
class OperatorSystem:
    nats_url: str
    dsn: str
    api_url: str
    services: Services

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.api_url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(
            f"{self.api_url}{path}", json=body or {}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        response.raise_for_status()
        return response.json()

    @property
    def cli_env(self) -> dict[str, str]:
        """What an operator's shell holds to use `rebal` against this system."""
        return {
            "REBAL__API__URL": self.api_url,
            "REBAL__API__TOKEN": TOKEN,
            "REBAL__NATS__URL": self.nats_url,
            "REBAL__DATABASE__URL": self.dsn,
        }


async def report_returns(url: str, periods: int = RETURN_PERIODS) -> None:
    """The demo bot's three strategies, `periods` hourly returns up to now (published as the bot does)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    equity: dict[str, Decimal] = {}
    events = []
    for back in range(periods, 0, -1):
        events += demo_bot.reports(now - back * RETURN_INTERVAL, equity, portfolio=PORTFOLIO, now=now)
    client = await nats.connect(url)
    try:
        await demo_bot.publish(client, events)
    finally:
        await client.drain()


async def wait_returns_stored(dsn: str, expected: int, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await fetch(dsn, "SELECT count(*) AS n FROM strategy_returns")
        if rows[0]["n"] >= expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{rows[0]['n']} strategy returns stored after {timeout} s, expected {expected}"
            )
        await asyncio.sleep(0.2)


async def wait_journaled(dsn: str, event_type: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await fetch(dsn, "SELECT 1 FROM events WHERE type = $1 LIMIT 1", event_type):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {event_type} in the monitor's journal after {timeout} s")
        await asyncio.sleep(0.2)


@contextmanager
def operator_system(directory: Path, admin_dsn: str) -> Iterator[OperatorSystem]:
    """NATS and a database of its own, the five services (the monitor with the API token), returns of
    three strategies reported, a target and a snapshot on the bus and in the journal."""
    name = f"test_{uuid.uuid4().hex}"
    create_database(admin_dsn, name, if_missing=False)
    dsn = dsn_with_database(admin_dsn, name)
    try:
        for server in fresh_nats(directory):
            monitor = {"REBAL__API__TOKEN": TOKEN, "REBAL__API__VIEWER_TOKEN": VIEWER_TOKEN}
            settings = {**TEST_SETTINGS, "monitor": {**TEST_SETTINGS["monitor"], **monitor}}
            services = Services(
                nats_url=server.url,
                database_url=dsn,
                root=ROOT,
                log_dir=directory / "logs",
                service_env=settings,
            )
            try:
                services.start()
                system = OperatorSystem(server.url, dsn, services["monitor"].url, services)

                async def prepare(url: str) -> None:
                    await report_returns(url)
                    await ready_for_commands(url)
                    await wait_returns_stored(dsn, 3 * RETURN_PERIODS)
                    await wait_journaled(dsn, "BalanceSnapshotTaken")
                    await wait_journaled(dsn, "TargetWeightsComputed")

                asyncio.run(prepare(server.url))
                yield system
            finally:
                services.kill()
                left = _proc.wait_gone(services.pids, timeout=10.0)
            assert left == [], f"service processes left behind: {left}"
    finally:
        drop_database(admin_dsn, name)

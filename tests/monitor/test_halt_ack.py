"""The kill switch holds or says it does not (issue 19.1): a reason Postgres cannot hold is refused before
anything is sent (it used to be accepted with 202, dead-lettered by the executor, and trading went on);
an accepted halt is reported in force only once the executor acknowledged it (`HaltApplied`), otherwise
as pending, by `POST /halt`, `/status` and `rebal halt` (exit 1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.app import build as build_executor
from rebal_executor.settings import ExecutorSettings
from tests.monitor.running import TOKEN, free_port, monitor_settings, running_monitor, serving
from tests.paper_support import MARKETS, PRICES, STILL


@asynccontextmanager
async def running_executor(
    nats_url: str,
    dsn: str,
    files: Path,
    markets: dict[str, Any] = MARKETS,
    prices: dict[str, Any] = PRICES,
    **options: Any,
) -> AsyncIterator[None]:
    """The executor's app on the paper exchange of `markets` and `prices`, with `options` (settings)."""
    (files / "markets.json").write_text(json.dumps(markets))
    (files / "prices.json").write_text(json.dumps(prices))
    settings = ExecutorSettings(
        nats={"url": nats_url},
        database={"url": dsn},
        http={"port": free_port()},
        paper={"markets_file": files / "markets.json", "prices_file": files / "prices.json", **STILL},
        **options,
    )
    async with serving(build_executor(settings), settings.http.port):
        yield


async def test_a_reason_with_a_nul_is_refused_and_nothing_is_halted(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=1.0)
    async with running_monitor(settings) as monitor:
        refused = await monitor.client.post("/halt", json={"reason": "exchange\u0000down"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"].startswith("body.reason:")
        assert "NUL" in refused.json()["detail"]
        await asyncio.sleep(0.5)
        assert (await monitor.client.get("/status")).json()["halted"] is False


async def test_without_the_executor_the_halt_is_pending_and_the_cli_says_it_is_not_in_force(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=1.0)
    async with running_monitor(settings) as monitor:
        answer = await monitor.client.post("/halt", json={"reason": "venue looks wrong"})
        assert answer.status_code == 202 and answer.json()["halt_state"] == "pending"
        status = (await monitor.client.get("/status")).json()
        assert status["halted"] is True and status["halt_state"] == "pending"

        env = {"REBAL__API__URL": monitor.url, "REBAL__API__TOKEN": TOKEN, "REBAL_CONTEXT": "none"}
        ran = await asyncio.to_thread(CliRunner().invoke, app, ["halt", "--reason", "again"], env=env)
        assert ran.exit_code == 1, ran.output
        assert "NOT in force (pending)" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


async def test_with_the_executor_the_halt_is_acknowledged_in_force(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=10.0)
    async with running_executor(nats_url, database.dsn, tmp_path), running_monitor(settings) as monitor:
        answer = await monitor.client.post("/halt", json={"reason": "venue looks wrong"})
        assert answer.status_code == 202 and answer.json()["halt_state"] == "in_force", answer.text
        status = (await monitor.client.get("/status")).json()
        assert status["halted"] is True and status["halt_state"] == "in_force"

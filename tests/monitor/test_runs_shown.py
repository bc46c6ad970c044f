"""What operators see of runs: the last real run (not the latest preview), every skip with its reason,
at 80 and 140 columns with ids whole (the journal, the API and `rebal status|history`)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from typer.testing import CliRunner

from rebal.events import (
    Event,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    SkippedOrder,
    derive_id,
    new_event,
)
from rebal.service import Database
from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.journal import record_many
from rebal_monitor.monitor import Monitor
from tests.monitor.running import TOKEN, monitor_settings, running_monitor

NOW = datetime(2026, 12, 6, 23, 48, tzinfo=UTC)
ORDER = PlannedOrder(
    account="demo/paper/spot",
    exchange="paper",
    symbol="BTC/USDT",
    side="sell",
    amount=Decimal("0.21332"),
    est_price=Decimal("58958.1581"),
    est_cost=Decimal("12576.954285892"),
    est_fee=Decimal("12.576954285892"),
    phase=1,
)
SKIP = SkippedOrder(
    path="demo/paper/spot/crypto/arb/sol",
    symbol="SOL/USDT",
    side="buy",
    amount=Decimal("0.04"),
    reason="below_min_cost",
)


def plan(
    index: int, *, dry_run: bool, at: datetime, skipped: tuple[SkippedOrder, ...] = ()
) -> RebalancePlanned:
    return new_event(
        RebalancePlanned,
        key=index,
        now=at,
        portfolio_id="demo",
        correlation_id=derive_id("run", index),
        dry_run=dry_run,
        band=Decimal(0),
        snapshot_id=derive_id("snapshot", index),
        target_id=derive_id("target", index),
        total_value=Decimal("98825.82131"),
        orders=(ORDER,),
        skipped=skipped,
    )


def finished(planned: RebalancePlanned, skipped: int, reasons: tuple[str, ...] = ()) -> RunFinished:
    return planned.caused(
        RunFinished,
        now=planned.occurred_at + timedelta(seconds=2),
        plan_id=planned.event_id,
        status="completed",
        placed=1,
        filled=1,
        skipped=skipped,
        failed=0,
        reasons=reasons,
    )


def cli(url: str, width: int, *args: str) -> str:
    env = {"REBAL__API__URL": url, "REBAL__API__TOKEN": TOKEN, "COLUMNS": str(width)}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_the_last_run_is_the_last_real_one_and_every_skip_is_shown(
    nats_url: str, database: FreshDatabase
) -> None:
    live = plan(1, dry_run=False, at=NOW, skipped=(SKIP,))
    # The executor's end comes first for the second run (a redelivery): its count must survive the plan.
    late = plan(2, dry_run=False, at=NOW + timedelta(minutes=1), skipped=(SKIP,))
    leg = "leg 1 ETH/USDT buy skipped: no USDT free"
    preview = plan(3, dry_run=True, at=NOW + timedelta(minutes=2))
    events: list[Event] = [live, finished(live, 0), finished(late, 2, (leg,)), late, preview]
    monitor = Monitor(Database(database.dsn))
    await monitor.start()
    assert monitor.database.pool is not None
    await record_many(monitor.database.pool, events)
    await monitor.database.close()

    async with running_monitor(monitor_settings(nats_url, database.dsn)) as running:
        runs = (await running.client.get("/portfolio/history", params={"include_previews": "false"})).json()
        by_id: dict[str, Any] = {run["run_id"]: run for run in runs["runs"]}
        first, second = by_id[str(live.correlation_id)], by_id[str(late.correlation_id)]
        assert first["counts"]["skipped"] == 1  # it said 0: the run's end overwrote the plan's count
        assert first["skips"] == [json.loads(SKIP.model_dump_json())]
        assert second["counts"]["skipped"] == 2 and second["reasons"] == [leg]

        status = (await running.client.get("/status")).json()
        assert status["last_run"]["run_id"] == str(late.correlation_id)  # not the newer preview
        assert status["last_preview"]["run_id"] == str(preview.correlation_id)

        for width in (80, 140):
            text = await asyncio.to_thread(cli, running.url, width, "history")
            lines = text.splitlines()
            assert max(len(line) for line in lines) <= width, text
            assert "…" not in text
            for run in (live, late):
                assert any(str(run.correlation_id) in line for line in lines), text  # whole, on one line
            flat = " ".join(text.split())  # the lines as they wrapped, joined again
            assert "skipped buy 0.04 SOL/USDT at demo/paper/spot/crypto/arb/sol: below_min_cost" in flat
            assert leg in flat
            shown = await asyncio.to_thread(cli, running.url, width, "status")
            assert max(len(line) for line in shown.splitlines()) <= width, shown
            last_run = shown[shown.index("last run") : shown.index("last preview")]
            assert str(late.correlation_id) in last_run and "2 skipped" in last_run
            assert str(preview.correlation_id) in shown[shown.index("last preview") :]

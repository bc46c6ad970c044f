"""A bank transfer through the running system (real NATS, Postgres, executor, monitor and tracker): the
executor's task reaches the monitor (listed, notified), the operator confirms it with `rebal transfer
confirm` and the run's buys go on, and the tracker's next snapshot shows the money left the bank; unknown
ids and bad amounts are refused naming them, and a second confirmation credits nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from typer.testing import CliRunner

from rebal.events import PlannedTransfer, TakeSnapshot, new_event
from rebal.venue import DepositAddress
from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.app import build as build_tracker
from rebal_tracker.settings import TrackerSettings
from rebal_venues.paper import PAPER_NETWORK, PaperVenue
from tests.executor.test_bank_transfers import BANK, MARKETS, OTHER, PRICES, SPOT, bank_plan, order
from tests.executor.test_executor import plan
from tests.monitor.running import TOKEN, free_port, monitor_settings, running_monitor, serving
from tests.monitor.test_api import publish, until
from tests.monitor.test_halt_ack import running_executor
from tests.paper_support import STILL

# The tracker's layout: the bank states 1000 USD; the paper accounts hold what the venue says.
LAYOUT = {
    "name": "demo",
    "children": [
        {"name": "bank", "kind": "bank", "quote": "USD", "children": [
            {"name": "usd", "asset": "USD", "amount": "1000"}]},
        {"name": "paper", "kind": "exchange", "children": [
            {"name": name, "kind": "account", "quote": "USD", "children": [
                {"name": "usd", "asset": "USD", "amount": "0"}]}
            for name in ("spot", "other")]},
    ],
}  # fmt: skip


@asynccontextmanager
async def running_tracker(nats_url: str, dsn: str, files: Path) -> AsyncIterator[None]:
    """The tracker's app on the paper exchange of the executor's files (`running_executor` wrote them)."""
    (files / "layout.json").write_text(json.dumps(LAYOUT))
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": dsn},
        http={"port": free_port()},
        tracking={"layout_file": files / "layout.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": files / "markets.json", "prices_file": files / "prices.json", **STILL},
    )
    async with serving(build_tracker(settings), settings.http.port):
        yield


async def seed(dsn: str, account: str, **amounts: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for asset, amount in amounts.items():
            await connection.execute(
                "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ('paper', $1, $2, $3)"
                " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $3",
                account,
                asset,
                Decimal(amount),
            )
    finally:
        await connection.close()


async def cli(monitor_url: str, *args: str) -> Any:
    env = {"REBAL__API__URL": monitor_url, "REBAL__API__TOKEN": TOKEN, "REBAL_CONTEXT": "none"}
    return await asyncio.to_thread(CliRunner().invoke, app, ["transfer", *args], env=env)


async def test_an_operator_confirms_a_bank_transfer_and_the_run_finishes(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=10.0)
    executor = running_executor(
        nats_url,
        database.dsn,
        tmp_path,
        MARKETS,
        PRICES,
        live=True,
        execution={"reconcile_interval_seconds": 0.5},
    )
    tracker = running_tracker(nats_url, database.dsn, tmp_path)
    async with executor, tracker, running_monitor(settings) as monitor:
        await seed(database.dsn, SPOT, BTC="0.1")
        await seed(database.dsn, OTHER, USD="1000")
        now = datetime.now(UTC)
        the_plan = bank_plan().model_copy(update={"occurred_at": now, "emitted_at": now})
        await publish(nats_url, the_plan)

        async def listed() -> list[dict[str, Any]] | None:
            found = (await monitor.client.get("/transfers")).json()["transfers"]
            return found or None

        [task] = await until(listed, 30)
        assert (task["state"], task["amount"], task["asset"], task["from"], task["to"]) == (
            "waiting",
            "1000",
            "USD",
            BANK,
            SPOT,
        )
        tid = task["task_id"]
        notified = await until(lambda: _notification(database.dsn, tid), 10)
        assert notified["kind"] == "transfer_task" and f"rebal transfer confirm {tid}" in notified["text"]
        assert (await monitor.client.get("/status")).json()["transfers_waiting"] == 1
        shown = await cli(monitor.url, "list")
        assert shown.exit_code == 0 and tid in shown.output and "1000 USD from demo/bank" in shown.output

        # Refused, naming what is wrong: an unknown task (404, exit 2), a bad amount (422, exit 2).
        unknown = await monitor.client.post("/transfers/bt-000000000000/confirm")
        assert unknown.status_code == 404 and "bt-000000000000" in unknown.json()["detail"]
        ran = await cli(monitor.url, "confirm", "bt-000000000000")
        assert ran.exit_code == 2 and "no transfer task bt-000000000000" in ran.stderr
        for bad in ("-1", "abc", "NaN"):
            refused = await monitor.client.post(f"/transfers/{tid}/confirm", json={"received": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"].startswith("body.received"), refused.text
        ran = await cli(monitor.url, "confirm", tid, "--received", "-5")
        assert ran.exit_code == 2 and "--received" in ran.stderr

        # The wire lands; the operator confirms: the buy that waited is placed, the run finishes.
        await seed(database.dsn, SPOT, USD="1000")
        ran = await cli(monitor.url, "confirm", tid)
        assert ran.exit_code == 0, ran.output + ran.stderr
        assert f"transfer task {tid} confirmed: 1000 USD received" in ran.output
        run = await until(lambda: _finished(database.dsn, the_plan.correlation_id), 30)
        assert (run["status"], run["filled"]) == ("completed", 4)

        again = await monitor.client.post(f"/transfers/{tid}/confirm", json={"received": "5"})
        assert again.status_code == 200 and again.json()["already_confirmed"] is True
        assert again.json()["task"]["received"] == "1000"
        ran = await cli(monitor.url, "confirm", tid)
        assert ran.exit_code == 0 and "already confirmed" in ran.output
        assert "no transfer task is waiting" in (await cli(monitor.url, "list")).output
        assert (await monitor.client.get("/status")).json()["transfers_waiting"] == 0

        # The tracker's next snapshot: the 1000 USD left the bank (once), the venue shows them at spot.
        await publish(nats_url, new_event(TakeSnapshot, key="after-confirm", now=now, portfolio_id="demo"))

        async def bank_after() -> dict[str, Any] | None:
            shown = await monitor.client.get("/portfolio/trees/real")
            return shown.json()["tree"] if shown.status_code == 200 else None

        tree = await until(bank_after, 30)
        [bank] = [child for child in tree["children"] if child["name"] == "bank"]
        assert [(w["asset"], w["amount"]) for w in bank["children"]] == [("USD", "0")]


async def _notification(dsn: str, task_id: str) -> dict[str, Any] | None:
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval(
            "SELECT payload::text FROM notifications WHERE payload->'data'->>'task_id' = $1", task_id
        )
    finally:
        await connection.close()
    return None if found is None else dict(json.loads(found))


async def _finished(dsn: str, run_id: object) -> dict[str, Any] | None:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT status, filled FROM runs WHERE run_id = $1 AND finished_at IS NOT NULL", run_id
        )
    finally:
        await connection.close()
    return None if row is None else dict(row)


async def test_money_the_operator_withdraws_toward_the_bank_counts_once_until_and_after_the_confirmation(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    """The other direction through the running system: the plan sells 0.01 BTC at spot (599.4 USD) and
    sends 500 USD of it to the bank, an operator's task. The operator withdraws the 500 at the exchange (a
    fee of 2 USD); the tracker's snapshot shows the 498 on their way at the bank (1498), not a bank of 1000
    beside a spot of 99.4. Confirmed with 498 received: the same 1498, now the ledger's."""
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=10.0)
    executor = running_executor(
        nats_url,
        database.dsn,
        tmp_path,
        MARKETS,
        PRICES,
        live=True,
        execution={"reconcile_interval_seconds": 0.5},
    )
    tracker = running_tracker(nats_url, database.dsn, tmp_path)
    async with executor, tracker, running_monitor(settings) as monitor:
        await seed(database.dsn, SPOT, BTC="0.1")
        now = datetime.now(UTC)
        transfer = PlannedTransfer(
            asset="USD",
            from_account=SPOT,
            to_account=BANK,
            amount=Decimal(500),
            est_value=Decimal(500),
            manual=True,
        )
        the_plan = plan(order(SPOT, "BTC/USD", "sell", "0.01", 1), transfers=(transfer,), key="to-bank")
        the_plan = the_plan.model_copy(update={"occurred_at": now, "emitted_at": now})
        await publish(nats_url, the_plan)

        async def listed() -> list[dict[str, Any]] | None:
            found = (await monitor.client.get("/transfers")).json()["transfers"]
            return found or None

        [task] = await until(listed, 30)
        assert (task["from"], task["to"], task["amount"]) == (SPOT, BANK, "500")
        await until(lambda: _recorded(database.dsn, task["task_id"]), 30)  # the tracker has the task

        pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=2)
        try:
            paper = PaperVenue.from_documents(
                "paper", pool, MARKETS, PRICES, withdraw_fees={"USD": Decimal(2)}, **STILL
            )
            outside = DepositAddress("USD", PAPER_NETWORK, "outside:bank-DE89")
            await paper.withdraw(SPOT, "venue:w-1", "USD", Decimal(500), outside)  # the operator, by hand
        finally:
            await pool.close()
        sent = await _snapshot(nats_url, monitor, now, "withdrawn", None)
        assert (_usd(sent["tree"], "bank"), _usd(sent["tree"], "paper", "spot")) == ("1498", "99.4")

        ran = await cli(monitor.url, "confirm", task["task_id"], "--received", "498")
        assert ran.exit_code == 0, ran.output + ran.stderr
        run = await until(lambda: _finished(database.dsn, the_plan.correlation_id), 30)
        assert run["status"] == "completed_with_adjustments"  # 498 of the 500 arrived: a note says so
        await until(lambda: _ledger(database.dsn, task["task_id"]), 30)  # the tracker has the confirmation
        after = await _snapshot(nats_url, monitor, now, "confirmed", sent["snapshot_id"])
        assert (_usd(after["tree"], "bank"), _usd(after["tree"], "paper", "spot")) == ("1498", "99.4")


async def _snapshot(
    nats_url: str, monitor: Any, now: datetime, key: str, before: str | None
) -> dict[str, Any]:
    """A snapshot taken now, as the monitor shows it (a newer one than `before`)."""
    await publish(nats_url, new_event(TakeSnapshot, key=key, now=now, portfolio_id="demo"))

    async def shown() -> dict[str, Any] | None:
        found = await monitor.client.get("/portfolio/trees/real")
        if found.status_code != 200 or found.json()["snapshot_id"] == before:
            return None
        return dict(found.json())

    return await until(shown, 30)


def _usd(tree: dict[str, Any], *path: str) -> str:
    node = tree
    for name in path:
        node = next(child for child in node["children"] if child["name"] == name)
    return str(next(w["amount"] for w in node["children"] if w["asset"] == "USD"))


async def _recorded(dsn: str, task_id: str) -> bool | None:
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval("SELECT count(*) FROM bank_tasks WHERE task_id = $1", task_id)
    finally:
        await connection.close()
    return True if found else None


async def _ledger(dsn: str, task_id: str) -> bool | None:
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval("SELECT count(*) FROM bank_ledger WHERE task_id = $1", task_id)
    finally:
        await connection.close()
    return True if found else None

"""The whole system end to end: the five services as processes, real NATS and Postgres, the paper exchange.

What an operator would check: a live rebalance leaves the paper holdings within the drift band of the
target; every event is journaled exactly once; bad messages are dead-lettered with a reason while the
service keeps serving; and a service killed or stopped mid-flow loses nothing and does nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import numpy as np
import pytest

from rebal import subjects
from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    OrderFilled,
    OrderPlaced,
    RebalancePlanned,
    StartRebalance,
    TargetWeightsComputed,
    derive_run_id,
    new_event,
)
from rebal_cli import commands
from rebal_executor.execution import client_order_id
from tests.e2e.conftest import System
from tests.e2e.flow import (
    PORTFOLIO,
    balances_from_fills,
    fetch,
    journal_matches_streams,
    once_each,
    publish_raw,
    ready_for_commands,
    stream_events,
    take_snapshot,
    wait_for,
)
from tests.messaging import collecting, eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(150)]
BAND = Decimal("0.01")
ACCOUNT = "demo/paper/spot"
SEED = {
    asset: Decimal(amount)
    for asset, amount in {"BTC": "0.8", "ETH": "5", "SOL": "100", "USDT": "22000"}.items()
}


def outside_band(snapshot: BalanceSnapshotTaken, target: TargetWeightsComputed, band: Decimal) -> list[str]:
    """Wallets whose free amount differs from the desired one by more than band × desired + one step."""
    diff = diff_trees(
        parse_tree(snapshot.tree, "real"), parse_tree(target.tree, "target"), Prices.parse(snapshot.prices)
    )
    quote = str(snapshot.prices["quote"])
    markets = (snapshot.markets or {})["paper"]
    paths = diff.tree.paths()
    out = []
    for node in np.flatnonzero(diff.tree.wallet):
        asset = diff.tree.asset(int(node))
        step = 0.0 if asset == quote else float(markets[f"{asset}/{quote}"]["amount_step"])
        held, desired = float(diff.free_amount[node]), float(diff.desired_free_amount[node])
        if abs(desired - held) > float(band) * desired + step + 1e-9 * max(desired, 1.0):
            out.append(f"{paths[node]}: {held} {asset}, desired {desired}")
    return out


async def test_a_live_rebalance_ends_within_the_band_and_every_event_is_journaled_once(
    system: System,
) -> None:
    target, before = await ready_for_commands(system.nats_url)
    assert outside_band(before, target, BAND), "the demo portfolio should start outside the band"

    outcome = await commands.rebalance(
        system.nats_url, PORTFOLIO, dry_run=False, band=BAND, wait=True, timeout=30.0
    )

    plan, finished = outcome.plan, outcome.finished
    assert isinstance(plan, RebalancePlanned) and len(plan.orders) == 3
    assert finished is not None and finished.status == "completed", finished
    assert (finished.placed, finished.filled, finished.failed) == (3, 3, 0)
    after = await take_snapshot(system.nats_url)
    assert outside_band(after, target, BAND) == []
    held = await fetch(system.dsn, "SELECT asset, amount FROM paper.balances WHERE account = $1", ACCOUNT)
    assert {row["asset"]: row["amount"] for row in held} == await balances_from_fills(system.dsn, SEED)

    events = await journal_matches_streams(system.nats_url, system.dsn)
    kinds = [event.type for event in events if event.correlation_id == plan.correlation_id]
    # The run, and the snapshot the executor asks for at its end.
    run = ["RebalancePlanned", "RunStarted", *["OrderPlaced", "OrderFilled"] * 3, "RunFinished"]
    assert sorted(kinds) == sorted([*run, "TakeSnapshot", "BalanceSnapshotTaken"])
    orders = await fetch(
        system.dsn, "SELECT amount, filled FROM orders WHERE run_id = $1", plan.correlation_id
    )
    assert len(orders) == 3 and all(row["filled"] == row["amount"] for row in orders)


async def test_bad_messages_are_dead_lettered_with_a_reason_and_the_planner_keeps_serving(
    system: System,
) -> None:
    await ready_for_commands(system.nats_url)
    planner = system.services["planner"]
    valid = new_event(
        StartRebalance, key="bad-input", now=datetime.now(UTC), portfolio_id=PORTFOLIO, dry_run=True
    )
    v1 = StartRebalance.topic.subject(PORTFOLIO)
    v2 = StartRebalance.topic.subject(PORTFOLIO, version=2)
    schema_violation = {**json.loads(valid.model_dump_json()), "band": "-1", "surprise": True}
    async with collecting(system.nats_url, subjects.dead_letter("planner")) as letters:
        await publish_raw(system.nats_url, v1, b'{"type": "StartRebalance", "event_id": ')
        await publish_raw(system.nats_url, v1, json.dumps(schema_violation).encode())
        await publish_raw(system.nats_url, v2, valid.model_dump_json().encode())
        await eventually(lambda: len(letters) >= 3, timeout=20.0)

    assert len(letters) == 3, letters
    assert all(letter["service"] == "planner" for letter in letters)
    reasons = sorted((letter["subject"], letter["error"]) for letter in letters)
    assert [subject for subject, _ in reasons] == sorted([v1, v1, v2])
    errors = " | ".join(error for _, error in reasons)
    assert "invalid StartRebalance: body: Invalid JSON" in errors
    assert "band: Input should be greater than or equal to 0" in errors
    assert "surprise: Extra inputs are not permitted" in errors
    assert "unknown version v2 of rebalance.start (this service reads v1)" in errors

    assert planner.running and await asyncio.to_thread(planner.readyz) == 200
    outcome = await commands.rebalance(
        system.nats_url, PORTFOLIO, dry_run=True, band=BAND, wait=True, timeout=20.0
    )
    assert isinstance(outcome.plan, RebalancePlanned) and len(outcome.plan.orders) == 3


async def test_an_executor_killed_mid_run_is_restarted_and_nothing_is_placed_or_filled_twice(
    system: System,
) -> None:
    await ready_for_commands(system.nats_url)
    preview = await commands.rebalance(
        system.nats_url, PORTFOLIO, dry_run=True, band=BAND, wait=True, timeout=20.0
    )
    assert isinstance(preview.plan, RebalancePlanned)
    first, second = (order.symbol.partition("/")[0] for order in preview.plan.orders[:2])
    assert first != second
    executor = system.services["executor"]

    # Hold the second order's base balance: the executor places the first order, then waits on it.
    blocker = await asyncpg.connect(system.dsn)
    hold = blocker.transaction()
    await hold.start()
    await blocker.execute(
        "SELECT amount FROM paper.balances WHERE account = $1 AND asset = $2 FOR UPDATE", ACCOUNT, second
    )
    async with collecting(system.nats_url, "rebal.evt.order.>") as seen:
        run = asyncio.create_task(
            commands.rebalance(system.nats_url, PORTFOLIO, dry_run=False, band=BAND, wait=True, timeout=75.0)
        )
        await eventually(lambda: any(m["type"] == "OrderFilled" for m in seen), timeout=20.0)
        executor.kill()
        at_kill = await fetch(system.dsn, "SELECT client_order_id, status FROM paper.orders")
        await hold.rollback()
        await blocker.close()
        executor.start()
        await asyncio.to_thread(executor.wait_ready)
        outcome = await run  # the plan is redelivered once its ack wait (5 s here) has passed

    plan, finished = outcome.plan, outcome.finished
    assert isinstance(plan, RebalancePlanned)
    assert finished is not None and finished.status == "completed", finished
    assert (finished.placed, finished.filled, finished.failed) == (3, 3, 0)
    ids = [client_order_id(plan.event_id, leg) for leg in range(len(plan.orders))]
    placed = await fetch(
        system.dsn,
        "SELECT client_order_id, count(*) AS n, min(status) AS status FROM paper.orders GROUP BY 1",
    )
    assert sorted(row["client_order_id"] for row in placed) == sorted(ids)
    assert all(row["n"] == 1 and row["status"] == "filled" for row in placed)
    paper_fills = await fetch(system.dsn, "SELECT client_order_id FROM paper.fills")
    assert sorted(row["client_order_id"] for row in paper_fills) == sorted(ids)

    events = await journal_matches_streams(system.nats_url, system.dsn)
    placements = [e.client_order_id for e in events if isinstance(e, OrderPlaced)]
    fills = [e.trade_id for e in events if isinstance(e, OrderFilled)]
    assert sorted(placements) == sorted(ids) and once_each(placements) == {}
    assert len(fills) == 3 and once_each(fills) == {}
    held = await fetch(system.dsn, "SELECT asset, amount FROM paper.balances WHERE account = $1", ACCOUNT)
    assert {row["asset"]: row["amount"] for row in held} == await balances_from_fills(system.dsn, SEED)
    journal_fills = await fetch(system.dsn, "SELECT trade_id FROM fills")
    assert sorted(row["trade_id"] for row in journal_fills) == sorted(fills)
    # The crash was mid-run: only the first order was on the venue when the executor died.
    assert [(row["client_order_id"], row["status"]) for row in at_kill] == [(ids[0], "filled")]


async def test_a_command_sent_while_the_planner_and_monitor_are_down_is_handled_once_after_restart(
    system: System,
) -> None:
    await ready_for_commands(system.nats_url)
    planner, monitor = system.services["planner"], system.services["monitor"]
    planner.stop()  # a clean stop: its durable consumer keeps its place
    monitor.kill()  # a crash: unacked messages come back

    outcome = await commands.rebalance(
        system.nats_url, PORTFOLIO, dry_run=True, band=BAND, wait=False, timeout=10.0
    )
    run_id = derive_run_id(outcome.command)
    await asyncio.sleep(1.0)
    assert await _plans_of(system, run_id) == 0, "planned while the planner was down"

    planner.start()
    monitor.start()
    await asyncio.to_thread(system.services.wait_ready, ["planner", "monitor"])
    plan = await wait_for(system.nats_url, RebalancePlanned, lambda e: e.correlation_id == run_id)
    assert plan.dry_run and len(plan.orders) == 3

    events = await journal_matches_streams(system.nats_url, system.dsn)
    assert await _plans_of(system, run_id) == 1
    assert [e.event_id for e in events].count(outcome.command.event_id) == 1
    journaled = await fetch(system.dsn, "SELECT type FROM events WHERE correlation_id = $1", run_id)
    assert [row["type"] for row in journaled] == ["RebalancePlanned"]


async def _plans_of(system: System, run_id: object) -> int:
    return sum(
        1
        for event in await stream_events(system.nats_url)
        if isinstance(event, RebalancePlanned) and event.correlation_id == run_id
    )

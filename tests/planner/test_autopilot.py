"""The planner's autopilot on a real Postgres: policies decided on snapshots, targets and the clock, one run
per portfolio whatever fires, the modes, fresh plans after a price move, why not recorded, notifications
enqueued, and the funds' scheduled cycles."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from rebal import policy_store
from rebal.events import (
    ApprovePlan,
    BalanceSnapshotTaken,
    Event,
    RebalancePlanned,
    RebalanceTriggered,
    RunFinished,
    RunFundCycle,
    StartRebalance,
    TargetWeightsComputed,
    new_event,
)
from rebal.service import Database
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_planner.approvals import Approvals
from rebal_planner.autopilot import Autopilot
from rebal_planner.planner import Planner
from rebal_planner.settings import PlannerSettings
from tests.autopilot import PRICES, TARGET, real
from tests.fakes import FakeHistory, FakePreviews, RecordingPublisher

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
OVER = ("0.0902", "1", "7.45", "1000")  # BTC 0.451 and SOL 0.149 for 0.4 and 0.2
WITHIN = ("0.08", "1", "10", "1000")  # on target


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    pool: asyncpg.Pool
    planner: Planner
    pilot: Autopilot
    history: FakeHistory
    published: RecordingPublisher
    clock: Clock
    seen: int = field(default=0)

    async def policy(
        self, document: dict[str, Any], kind: policy_store.OwnerKind = "portfolio", owner: str = "demo"
    ) -> None:
        await policy_store.add(self.pool, kind, owner, document, author="test", note="", at=self.clock.now)

    async def snapshot(
        self, holdings: tuple[str, str, str, str], at: datetime, key: str
    ) -> BalanceSnapshotTaken:
        self.clock.now = max(self.clock.now, at)
        event = new_event(
            BalanceSnapshotTaken, key=key, now=at, portfolio_id="demo", tree=real(*holdings), prices=PRICES
        )
        self.history.events.append(event)
        await self.planner.on_snapshot(event)
        return event

    def new(self) -> list[Event]:
        """What was published since the last call."""
        fresh = self.published.published[self.seen :]
        self.seen = len(self.published.published)
        return fresh

    async def decision(self) -> dict[str, Any]:
        found = await policy_store.latest_decision(self.pool, "demo")
        assert found is not None
        return found.decision

    async def finish(self, plan: RebalancePlanned, status: str, at: datetime) -> None:
        self.clock.now = at
        finished = plan.caused(
            RunFinished, now=at, plan_id=plan.event_id, status=status, placed=1, filled=1, skipped=0, failed=0
        )
        await self.pilot.on_run_finished(finished)

    async def notices(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT kind, payload::text FROM notifications ORDER BY created_at, kind"
        )
        return [(row["kind"], json.loads(row["payload"])["title"]) for row in rows]


@pytest.fixture
async def world(database: FreshDatabase) -> AsyncIterator[World]:
    store = Database(database.dsn)
    pool = await store.open()
    from rebal import db

    async with pool.acquire() as connection:
        await db.migrate(connection)
    history, published, clock = FakeHistory(), RecordingPublisher(), Clock()
    settings = PlannerSettings(planning={"preview_on_new_data": False})
    planner = Planner(history, published, settings, clock=clock)
    pilot = Autopilot(
        store, history, published, settings.autopilot, planner.snapshots, planner.targets, clock
    )
    planner.autopilot = pilot
    target = new_event(
        TargetWeightsComputed, key="v1", now=T0 - timedelta(days=1), portfolio_id="demo", tree=TARGET
    )
    history.events.append(target)
    try:
        yield World(pool, planner, pilot, history, published, clock)
    finally:
        await store.close()


def kinds(events: list[Event]) -> list[str]:
    return [event.type for event in events]


async def test_without_a_policy_the_autopilot_does_nothing(world: World) -> None:
    await world.snapshot(OVER, T0, "s1")
    assert world.new() == []
    assert await policy_store.latest_decision(world.pool, "demo") is None


async def test_a_breach_trades_once_and_a_second_trigger_from_the_same_snapshot_does_nothing(
    world: World,
) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "auto"})
    snap = await world.snapshot(OVER, T0, "s1")
    trigger, plan = world.new()
    assert isinstance(trigger, RebalanceTriggered) and isinstance(plan, RebalancePlanned)
    assert (trigger.mode, trigger.kind, trigger.snapshot_id, trigger.policy_version) == (
        "auto",
        "full",
        snap.event_id,
        1,
    )
    assert [b.path for b in trigger.breaches] == ["alice/spot/btc", "alice/spot/sol"]
    assert trigger.reasons[0].startswith("drift: 2 nodes outside their bands")
    assert (plan.dry_run, plan.correlation_id, plan.causation_id) == (
        False,
        trigger.correlation_id,
        trigger.event_id,
    )
    assert [(o.symbol, o.side) for o in plan.orders] == [("BTC/USDT", "sell"), ("SOL/USDT", "buy")]
    assert plan.snapshot_taken_at == T0
    # The same snapshot again (a redelivery), a new target, the clock, an operator's run: nothing starts.
    await world.planner.on_snapshot(snap)
    await world.planner.on_target(world.history.events[0])  # type: ignore[arg-type]
    await world.pilot.tick()
    assert world.new() == []
    decided = await world.decision()
    assert decided["hold"]["code"] == "run_active"
    assert decided["summary"] == f"no rebalance: run {trigger.correlation_id} is under way"
    # The run ends; a snapshot taken before its end still waits for the fills, a later one is on target.
    await world.finish(plan, "completed", T0 + timedelta(seconds=20))
    await world.snapshot(OVER, T0 + timedelta(seconds=15), "s2")
    assert world.new() == []
    assert (await world.decision())["hold"]["code"] == "fills_pending"
    await world.snapshot(WITHIN, T0 + timedelta(seconds=30), "s3")
    assert world.new() == []
    assert (await world.decision())["summary"] == "no rebalance: every node is within its bands"
    assert await world.notices() == [
        ("breach", "demo: drift outside the bands"),
        ("rebalance_triggered", "demo: rebalancing now (full)"),
    ]


async def test_the_cooldown_after_a_completed_rebalance_is_the_reason_given(world: World) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "auto", "cooldown": "1d"})
    await world.snapshot(OVER, T0, "s1")
    _, plan = world.new()
    assert isinstance(plan, RebalancePlanned)
    await world.finish(plan, "completed", T0 + timedelta(seconds=20))
    await world.snapshot(OVER, T0 + timedelta(minutes=5), "s2")  # drifted again at once
    assert world.new() == []
    decided = await world.decision()
    assert decided["summary"] == "no rebalance: in cooldown until 2024-06-06T12:00:20Z"
    assert decided["policy"]["blocked_by"] == "cooldown"
    await world.snapshot(OVER, T0 + timedelta(days=1, seconds=20), "s3")
    assert kinds(world.new()) == ["RebalanceTriggered", "RebalancePlanned"]


async def test_approve_mode_stores_a_preview_and_its_approval_runs_it(world: World) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "approve"})
    await world.snapshot(OVER, T0, "s1")
    trigger, preview = world.new()
    assert isinstance(trigger, RebalanceTriggered) and isinstance(preview, RebalancePlanned)
    assert preview.dry_run and trigger.approval_expires_at == T0 + timedelta(hours=1)
    await world.snapshot(OVER, T0 + timedelta(seconds=10), "s2")
    assert world.new() == []  # waiting for the approval
    assert (await world.decision())["summary"].startswith(
        f"no rebalance: plan {preview.event_id} waits for approval"
    )
    approvals = Approvals(
        FakePreviews([preview]), world.published, world.clock, on_live=world.pilot.on_live_plan
    )
    command = new_event(
        ApprovePlan,
        key=preview.event_id,
        now=world.clock.now,
        portfolio_id="demo",
        plan_id=preview.event_id,
        expires_at=trigger.approval_expires_at,
    )
    await approvals.on_approve(command)
    [live] = world.new()
    assert isinstance(live, RebalancePlanned) and not live.dry_run
    await world.snapshot(OVER, T0 + timedelta(seconds=20), "s3")
    assert world.new() == [] and (await world.decision())["hold"]["code"] == "run_active"
    assert [kind for kind, _ in await world.notices()] == ["approval_needed", "breach"]


async def test_notify_mode_tells_once_and_trades_nothing(world: World) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "notify"})
    await world.snapshot(OVER, T0, "s1")
    [trigger] = world.new()
    assert isinstance(trigger, RebalanceTriggered) and trigger.mode == "notify"
    await world.snapshot(OVER, T0 + timedelta(seconds=10), "s2")
    assert world.new() == []
    assert [kind for kind, _ in await world.notices()] == ["breach", "rebalance_triggered"]


async def test_a_run_stopped_by_a_price_move_is_planned_afresh_within_the_policy_s_bound(
    world: World,
) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "auto", "replan_on_price_move": 1})
    await world.snapshot(OVER, T0, "s1")
    _, plan = world.new()
    assert isinstance(plan, RebalancePlanned)
    await world.finish(plan, "replan_needed", T0 + timedelta(seconds=5))
    # After the sells, the SOL buy did not happen: SOL is still short.
    await world.snapshot(("0.08", "1", "7.45", "1510"), T0 + timedelta(seconds=6), "s2")
    trigger, fresh = world.new()
    assert isinstance(trigger, RebalanceTriggered) and isinstance(fresh, RebalancePlanned)
    assert trigger.replan == 1 and trigger.reasons[0].startswith(
        "replan: the last run stopped because prices moved"
    )
    assert [(o.symbol, o.side) for o in fresh.orders] == [("SOL/USDT", "buy")]
    await world.finish(fresh, "replan_needed", T0 + timedelta(seconds=10))
    await world.snapshot(("0.08", "1", "7.45", "1510"), T0 + timedelta(seconds=11), "s3")
    assert world.new() == []  # no more fresh plans: the failure backs off
    assert (await world.decision())["hold"]["code"] == "retry_backoff"


async def test_an_operators_live_run_holds_the_autopilot(world: World) -> None:
    await world.policy({"drift_absolute": "5%", "mode": "auto"})
    await world.snapshot(WITHIN, T0, "s0")
    command = new_event(StartRebalance, key="op", now=T0, portfolio_id="demo", dry_run=False)
    await world.planner.on_command(command)
    [operators] = world.new()
    assert isinstance(operators, RebalancePlanned) and not operators.dry_run
    await world.snapshot(OVER, T0 + timedelta(seconds=5), "s1")
    assert world.new() == [] and (await world.decision())["hold"]["code"] == "run_active"


async def test_a_funds_scheduled_cycle_runs_once_per_tick_after_the_schedule_was_set(world: World) -> None:
    await world.policy({"schedule": "0 * * * *", "rebalance": True}, kind="fund", owner="f1")
    world.clock.now = T0 + timedelta(minutes=30)
    await world.pilot.tick()
    assert world.new() == []  # the 12:00 tick came before the schedule was set
    world.clock.now = T0 + timedelta(hours=1, seconds=3)
    await world.pilot.tick()
    [cycle] = world.new()
    assert isinstance(cycle, RunFundCycle) and (cycle.portfolio_id, cycle.rebalance) == ("f1", True)
    assert cycle.requested_by == "autopilot"
    await world.pilot.tick()
    assert world.new() == []


async def test_the_clock_starts_a_scheduled_rebalance_once_per_tick(world: World) -> None:
    """A calendar policy needs no breach and no new snapshot: the planner's clock tick finds Monday's
    midnight past, rebalances once, and the next tick (same week) does nothing."""
    await world.policy({"schedule": "0 0 * * MON", "mode": "auto"})
    await world.snapshot(WITHIN, T0, "s1")  # a Wednesday, never rebalanced: Monday's tick is due
    _, first = world.new()
    assert isinstance(first, RebalancePlanned)
    await world.finish(first, "completed", T0 + timedelta(seconds=20))
    await world.snapshot(WITHIN, T0 + timedelta(minutes=1), "s2")  # its fills seen: no tick since
    assert world.new() == []
    world.clock.now = datetime(2024, 6, 9, 23, 59, tzinfo=UTC)  # Sunday night: not yet
    await world.pilot.tick()
    assert world.new() == []
    world.clock.now = datetime(2024, 6, 10, 0, 1, tzinfo=UTC)  # Monday 00:01
    await world.pilot.tick()
    triggered, plan = world.new()
    assert isinstance(triggered, RebalanceTriggered) and isinstance(plan, RebalancePlanned)
    assert any(reason.startswith("schedule") for reason in triggered.reasons), triggered.reasons
    await world.finish(plan, "completed", datetime(2024, 6, 10, 0, 2, tzinfo=UTC))
    await world.snapshot(WITHIN, datetime(2024, 6, 10, 0, 3, tzinfo=UTC), "s3")
    world.clock.now = datetime(2024, 6, 12, 12, 0, tzinfo=UTC)
    await world.pilot.tick()
    assert world.new() == []

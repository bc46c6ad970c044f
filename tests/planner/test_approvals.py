"""An approval (`ApprovePlan`) becomes the preview it names, live, or a `PlanFailed` saying why not."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from rebal import service
from rebal.events import ApprovePlan, PlanFailed, RebalancePlanned, derive_id, derive_run_id, new_event
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.journal import record
from rebal_planner.approvals import Approvals, JournalPreviews, approved_plan
from rebal_planner.planning import parse_snapshot, parse_target, plan_event
from tests.fakes import FakePreviews, RecordingPublisher
from tests.paper_support import migrated_pool
from tests.planner.test_planner import NOW, rebalance, snapshot, target

LATER = NOW + timedelta(minutes=5)


def preview(dry_run: bool = True) -> RebalancePlanned:
    snap, goal = snapshot(), target()
    made = plan_event(
        rebalance(dry_run=dry_run),
        snapshot_id=snap.event_id,
        target_id=goal.event_id,
        snapshot=parse_snapshot(snap),
        target=parse_target(goal),
        band=Decimal("0.001"),
        dry_run=dry_run,
        now=NOW,
    )
    assert isinstance(made, RebalancePlanned)
    return made


def approval(plan_id: uuid.UUID, portfolio: str = "demo", expires_at: object = LATER) -> ApprovePlan:
    return new_event(
        ApprovePlan, key=plan_id, now=NOW, portfolio_id=portfolio, plan_id=plan_id, expires_at=expires_at
    )


def test_the_approved_preview_is_published_live_under_the_approvals_run() -> None:
    shown = preview()
    command = approval(shown.event_id)
    live = approved_plan(command, shown, NOW + timedelta(minutes=1))
    assert isinstance(live, RebalancePlanned) and live.dry_run is False
    assert live.correlation_id == derive_run_id(command) != shown.correlation_id
    assert live.causation_id == command.event_id
    assert live.event_id == derive_id("RebalancePlanned", "approved", shown.event_id)
    # Exactly the plan the operator saw: every order, skip, transfer and projected weight.
    same = (
        "band",
        "snapshot_id",
        "target_id",
        "total_value",
        "orders",
        "transfers",
        "skipped",
        "projected_weights",
    )
    assert {f: getattr(live, f) for f in same} == {f: getattr(shown, f) for f in same}
    assert live.orders and live.projected_weights
    again = approved_plan(approval(shown.event_id), shown, NOW + timedelta(minutes=2))
    assert again.event_id == live.event_id and again.correlation_id == live.correlation_id


def test_an_approval_of_no_preview_or_taken_too_late_fails_naming_why() -> None:
    shown, executing = preview(), preview(dry_run=False)
    cases = [
        (approval(shown.event_id), None, NOW, f"no plan {shown.event_id} in the journal"),
        (
            approval(shown.event_id, "other"),
            shown,
            NOW,
            f"plan {shown.event_id} is a plan for demo, not other",
        ),
        (approval(executing.event_id), executing, NOW, "was made with dry_run false: it executes already"),
        (
            approval(shown.event_id),
            shown,
            LATER + timedelta(seconds=1),
            "expired at 2026-11-21T12:05:00+00:00",
        ),
    ]
    for command, found, now, why in cases:
        failed = approved_plan(command, found, now)
        assert isinstance(failed, PlanFailed) and why in failed.reason, (why, failed)
        assert failed.correlation_id == derive_run_id(command) and failed.dry_run is False


async def test_the_planner_reads_the_preview_back_from_the_journal(database: FreshDatabase) -> None:
    shown = preview()
    async for pool in migrated_pool(database.dsn):
        await record(pool, shown)
    db = service.Database(database.dsn, 2)
    await db.open()
    try:
        previews = JournalPreviews(db)
        assert await previews.preview(shown.event_id) == shown
        assert await previews.preview(uuid.uuid4()) is None
        assert await previews.preview(shown.correlation_id) is None  # not a plan's id
    finally:
        await db.close()


async def test_an_approval_publishes_once_however_often_it_is_delivered() -> None:
    shown = preview()
    out = RecordingPublisher()
    approvals = Approvals(FakePreviews([shown]), out, clock=lambda: NOW)
    command = approval(shown.event_id)
    await approvals.on_approve(command)
    await approvals.on_approve(command)
    assert [(e.type, e.correlation_id) for e in out.published] == [
        ("RebalancePlanned", derive_run_id(command))
    ]

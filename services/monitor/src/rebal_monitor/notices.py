"""What the journal projects for operators beyond its tables: the notifications that events call for (a run
finished or failed, trading halted, a bank transfer to make and confirm or one that expired), and the
autopilot's previews to approve stored as plans.

Called in the journal's transaction for each event the first time it is stored, so each notification is
enqueued once; its id derives from the event. The planner enqueues what only it knows (a breach, a
trigger, a plan waiting for approval) in its own decision's transaction.
"""

from __future__ import annotations

import json
from datetime import timedelta

from rebal.core.numbers import dec_str
from rebal.db import Connection
from rebal.events import (
    Event,
    HaltTrading,
    RebalancePlanned,
    RebalanceTriggered,
    RunFinished,
    TransferTaskExpired,
    TransferTaskOpened,
    derive_id,
)
from rebal.notifications import Notification, enqueue
from rebal_monitor import plan_store

COMPLETED = frozenset({"completed", "completed_with_adjustments"})


async def project(connection: Connection, event: Event) -> None:
    if isinstance(event, RunFinished):
        await enqueue(connection, _run_notice(event))
    elif isinstance(event, HaltTrading):
        await enqueue(
            connection,
            Notification(
                id=derive_id("notification", "halted", event.event_id),
                kind="halted",
                portfolio_id=event.portfolio_id,
                created_at=event.occurred_at,
                title=f"{event.portfolio_id}: trading halted by {event.requested_by}",
                text=event.reason or "no reason given",
                data={"requested_by": event.requested_by, "reason": event.reason},
            ),
        )
    elif isinstance(event, TransferTaskOpened | TransferTaskExpired):
        await enqueue(connection, _transfer_notice(event))
    elif isinstance(event, RebalancePlanned) and event.dry_run and event.causation_id is not None:
        await _store_preview(connection, event)


def _transfer_notice(event: TransferTaskOpened | TransferTaskExpired) -> Notification:
    data = {"task_id": event.task_id, "run_id": str(event.correlation_id), "plan_id": str(event.plan_id)}
    if isinstance(event, TransferTaskExpired):
        return Notification(
            id=derive_id("notification", "transfer_expired", event.event_id),
            kind="transfer_expired",
            portfolio_id=event.portfolio_id,
            created_at=event.occurred_at,
            title=f"{event.portfolio_id}: transfer task {event.task_id} expired",
            text=event.reason,
            data={**data, "reason": event.reason},
        )
    amount = f"{dec_str(event.amount)} {event.asset}"
    return Notification(
        id=derive_id("notification", "transfer_task", event.event_id),
        kind="transfer_task",
        portfolio_id=event.portfolio_id,
        created_at=event.occurred_at,
        title=f"{event.portfolio_id}: transfer {amount} from {event.from_account} to {event.to_account}",
        text=(
            f"Move {amount} from {event.from_account} to {event.to_account}, then confirm it: "
            f"`rebal transfer confirm {event.task_id}` (add --received AMOUNT if less arrived). The buys "
            f"it funds wait until then, at most until {event.expires_at.isoformat()}."
        ),
        data={
            **data,
            "asset": event.asset,
            "amount": dec_str(event.amount),
            "from": event.from_account,
            "to": event.to_account,
            "expires_at": event.expires_at.isoformat(),
        },
    )


def _run_notice(finished: RunFinished) -> Notification:
    done = finished.status in COMPLETED
    counts = (
        f"{finished.placed} placed, {finished.filled} filled, {finished.skipped} skipped,"
        f" {finished.failed} failed"
    )
    return Notification(
        id=derive_id("notification", "run", finished.event_id),
        kind="run_finished" if done else "run_failed",
        portfolio_id=finished.portfolio_id,
        created_at=finished.occurred_at,
        title=f"{finished.portfolio_id}: run {finished.correlation_id} {finished.status}",
        text="; ".join((counts, *finished.reasons[:5])),
        data={
            "run_id": str(finished.correlation_id),
            "plan_id": str(finished.plan_id),
            "status": finished.status,
            "placed": finished.placed,
            "filled": finished.filled,
            "skipped": finished.skipped,
            "failed": finished.failed,
            "reasons": list(finished.reasons),
        },
    )


async def _store_preview(connection: Connection, plan: RebalancePlanned) -> None:
    """An autopilot preview in `approve` mode becomes a stored plan, approved as any other (`rebal approve
    PLAN_ID`, `POST /portfolio/plans/{id}/approve`) until the trigger's expiry."""
    found = await connection.fetchval(
        "SELECT payload::text FROM events WHERE event_id = $1 AND type = 'RebalanceTriggered'",
        plan.causation_id,
    )
    if found is None:
        return
    trigger = RebalanceTriggered.model_validate_json(found)
    if trigger.mode != "approve" or trigger.approval_expires_at is None:
        return
    snapshot = await connection.fetchval(
        "SELECT payload->'prices' FROM events WHERE event_id = $1", plan.snapshot_id
    )
    prices = json.loads(snapshot) if snapshot is not None else {}
    expires_at = max(trigger.approval_expires_at, plan.occurred_at + timedelta(seconds=1))
    document = plan_store.plan_of(plan, prices, plan.occurred_at, expires_at)
    await plan_store.insert_plan(connection, document, "preview")


__all__ = ["project"]

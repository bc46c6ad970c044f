"""Transfers to or from a bank or broker account without an API (`"kind": "bank"`: the plan marks them
`PlannedTransfer.manual`): operators' tasks, not withdrawals.

After the sells, each such transfer of the run becomes a task: announced (`TransferTaskOpened`: the
monitor notifies the operators and lists it, `rebal transfer list`, `GET /transfers`) and journaled, its
id derived from the plan and the transfer (`task_id`), so a restart opens nothing twice. Nothing is sent
anywhere: the operator moves the money, then confirms it (`rebal transfer confirm ID [--received
AMOUNT]`, `POST /transfers/{id}/confirm` → `ConfirmTransfer` → `confirm`), once: a second confirmation
changes nothing and says so.

The buys of the receiving account wait, and so does a sell waiting for the transfer (`after_transfer`: a
conversion of the money it brings into the account's quote), which then sells at most what the operator
says arrived (`received`); the rest of the run goes on. No worker is held while it waits:
the run stays `buys_in_progress` in the journal and each pass over it (`settle`: every reconcile
interval, at once after a confirmation, after a restart) asks the journal again; newer plans of the
portfolio stay queued meanwhile. Once confirmed, the buys that waited are placed with the run's whole
timeout from the confirmation (`Context.restarted`), still refused when prices moved too far since the
plan (a re-plan), and spend at most what arrived: a confirmed amount below the plan's comes off the plan's
budget for that account and asset (`shortfall`). A task not confirmed within
`execution.bank_transfer_timeout_seconds` (7 days by default) expires: the run ends `timed_out` without
the buys that waited for it, with an alert (`TransferTaskExpired`); a halt ends a waiting run the same way
(`cancelled_mid_run`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from rebal.core.numbers import dec_str
from rebal.events import (
    ConfirmTransfer,
    PlannedTransfer,
    RebalancePlanned,
    TransferConfirmed,
    TransferTaskExpired,
    TransferTaskOpened,
    derive_id,
)
from rebal_executor.execution.outcomes import Stop
from rebal_executor.execution.ports import Context, RunRecord, TaskRecord

log = logging.getLogger("rebal.executor")
TASK_PREFIX = "bt-"


def task_id(plan_id: uuid.UUID, index: int) -> str:
    """The operator's task of the plan's transfer `index`: the same plan and transfer, the same id."""
    return f"{TASK_PREFIX}{derive_id(plan_id, 'bank-transfer', index).hex[:12]}"


def manual_transfers(plan: RebalancePlanned) -> list[tuple[int, PlannedTransfer]]:
    return [(index, transfer) for index, transfer in enumerate(plan.transfers) if transfer.manual]


def describe(transfer: PlannedTransfer) -> str:
    amount = f"{dec_str(transfer.amount)} {transfer.asset}"
    return f"bank transfer of {amount} from {transfer.from_account} to {transfer.to_account}"


@dataclass(frozen=True)
class Waiting:
    """What of a run still waits for operators: the accounts whose buys wait, how many tasks, and whether
    this pass changed anything (a task opened or settled)."""

    accounts: frozenset[str] = frozenset()
    tasks: int = 0
    changed: bool = False


async def settle(ctx: Context, record: RunRecord) -> Waiting | Stop:
    """Open the run's tasks not yet opened, end the legs of those confirmed, expire those out of time (or
    all, when trading was halted): what still waits, or how the run must stop."""
    plan = record.plan
    manual = manual_transfers(plan)
    if not manual:
        return Waiting()
    halted = await ctx.journal.halted(plan.portfolio_id)
    accounts: set[str] = set()
    waiting = 0
    changed = False
    stop: Stop | None = None
    for index, transfer in manual:
        tid = task_id(plan.event_id, index)
        task = await ctx.journal.task(tid)
        if task is None:
            task = await _open(ctx, record, index, transfer, tid)
            changed = True
        if task.state == "waiting":
            why = _expiry(ctx, plan, transfer, task, halted)
            if why is None:
                accounts.add(transfer.to_account)
                waiting += 1
                continue
            await _expire(ctx, record, index, task, why.reason)
            stop = stop or why
            changed = True
        elif task.state == "expired":  # expired before a crash ended the run: ended again, the same way
            await _expire(ctx, record, index, task, task.reason)
            stop = stop or Stop("cancelled_mid_run" if halted else "timed_out", task.reason)
        elif task.confirmed_at is not None:
            since = ctx.restarted.get(plan.event_id, task.confirmed_at)
            ctx.restarted[plan.event_id] = max(since, task.confirmed_at)
        changed = await _end_leg(ctx, plan, index, transfer, task) or changed
    return stop or Waiting(frozenset(accounts), waiting, changed)


def _expiry(
    ctx: Context, plan: RebalancePlanned, transfer: PlannedTransfer, task: TaskRecord, halted: bool
) -> Stop | None:
    """How the run stops when a waiting task must end unconfirmed, else None."""
    if halted:
        return Stop(
            "cancelled_mid_run",
            f"{describe(transfer)} (task {task.task_id}) was still waiting when trading was halted for "
            f"portfolio {plan.portfolio_id}: the buys it funds were not placed",
        )
    if ctx.clock() >= task.expires_at:
        timeout = ctx.settings.execution.bank_transfer_timeout_seconds
        return Stop(
            "timed_out",
            f"{describe(transfer)} (task {task.task_id}) was not confirmed within {timeout:g} s: the buys "
            "it funds were not placed (alert)",
        )
    return None


async def _open(
    ctx: Context, record: RunRecord, index: int, transfer: PlannedTransfer, tid: str
) -> TaskRecord:
    """Announce the task (first: a crash before the journal has it announces it again, under the same id),
    then journal it."""
    plan = record.plan
    now = ctx.clock()
    expires = now + timedelta(seconds=ctx.settings.execution.bank_transfer_timeout_seconds)
    await ctx.publisher.publish(
        plan.caused(
            TransferTaskOpened,
            now=now,
            key=tid,
            correlation_id=record.run_id,
            task_id=tid,
            plan_id=plan.event_id,
            transfer=index,
            asset=transfer.asset,
            from_account=transfer.from_account,
            to_account=transfer.to_account,
            amount=transfer.amount,
            expires_at=expires,
        )
    )
    log.warning(
        "operator task %s: %s, then `rebal transfer confirm %s`; the buys it funds wait",
        tid,
        describe(transfer),
        tid,
    )
    return await ctx.journal.open_task(
        TaskRecord(
            task_id=tid,
            plan_id=plan.event_id,
            transfer=index,
            asset=transfer.asset,
            from_account=transfer.from_account,
            to_account=transfer.to_account,
            amount=transfer.amount,
            state="waiting",
            received=None,
            opened_at=now,
            expires_at=expires,
        )
    )


async def _expire(ctx: Context, record: RunRecord, index: int, task: TaskRecord, reason: str) -> None:
    """Announce the expiry (first, under an id derived from the task), record it, end the leg failed;
    each step idempotent, so a crash in between is repaired by doing it again."""
    plan = record.plan
    await ctx.publisher.publish(
        plan.caused(
            TransferTaskExpired,
            now=ctx.clock(),
            key=task.task_id,
            correlation_id=record.run_id,
            task_id=task.task_id,
            plan_id=plan.event_id,
            reason=reason,
        )
    )
    if await ctx.journal.expire_task(task.task_id, reason):
        log.error("ALERT %s", reason)
    await ctx.journal.note(plan.event_id, f"transfer-{index}", reason)
    await ctx.journal.finish_leg(plan.event_id, len(plan.orders) + index, "failed", placed=False)


async def _end_leg(
    ctx: Context, plan: RebalancePlanned, index: int, transfer: PlannedTransfer, task: TaskRecord
) -> bool:
    """The leg of a confirmed task, ended once (filled; a note when less arrived than planned)."""
    leg = len(plan.orders) + index
    if task.state != "confirmed" or await ctx.journal.leg_done(plan.event_id, leg):
        return False
    received = task.amount if task.received is None else task.received
    if received < _expected(plan, task):
        await ctx.journal.note(
            plan.event_id,
            f"transfer-{index}",
            f"{describe(transfer)} (task {task.task_id}) confirmed with {dec_str(received)} "
            f"{task.asset} received: the buys it funds spend at most that",
        )
    await ctx.journal.finish_leg(plan.event_id, leg, "filled", placed=True)
    return True


async def received(ctx: Context, plan: RebalancePlanned, index: int) -> Decimal | None:
    """What the operator confirmed of the plan's bank transfer `index` (None while it is not confirmed):
    what a sell waiting for it (`after_transfer`: a conversion of the money it brought) may sell of it."""
    task = await ctx.journal.task(task_id(plan.event_id, index))
    if task is None or task.state != "confirmed":
        return None
    return task.amount if task.received is None else task.received


def _expected(plan: RebalancePlanned, task: TaskRecord) -> Decimal:
    """What the plan counted on receiving of the task: its amount less the transfer's fee (a bank's wire
    fee, with a network file), which the plan's budgets already left out."""
    return max(task.amount - plan.transfers[task.transfer].fee, Decimal(0))


async def shortfall(ctx: Context, plan: RebalancePlanned, account: str, asset: str) -> Decimal:
    """What the confirmed tasks into `account` brought of `asset` below what the plan counted on (its
    budgets: the amounts less the transfers' fees), never spent."""
    if not any(transfer.manual for transfer in plan.transfers):
        return Decimal(0)
    return sum(
        (
            _expected(plan, task) - min(task.received, _expected(plan, task))
            for task in await ctx.journal.tasks(plan.event_id)
            if task.state == "confirmed"
            and task.received is not None
            and (task.to_account, task.asset) == (account, asset)
        ),
        Decimal(0),
    )


async def confirm(ctx: Context, command: ConfirmTransfer) -> TransferConfirmed | None:
    """An operator's confirmation: recorded once (a second one changes nothing), answered with a
    `TransferConfirmed` caused by the command; None (nothing to answer) for an unknown or expired task."""
    result = await ctx.journal.confirm_task(
        command.task_id, command.received, command.requested_by, ctx.clock()
    )
    if result is None:
        log.warning("confirmation of unknown transfer task %s ignored", command.task_id)
        return None
    task, changed = result
    if task.state != "confirmed" or task.confirmed_at is None or task.received is None:
        log.warning("confirmation of transfer task %s ignored: it is %s", task.task_id, task.state)
        return None
    run = await ctx.journal.run(task.plan_id)
    answer = command.caused(
        TransferConfirmed,
        now=ctx.clock(),
        correlation_id=run.run_id if run is not None else None,
        task_id=task.task_id,
        plan_id=task.plan_id,
        received=task.received,
        confirmed_at=task.confirmed_at,
        requested_by=task.confirmed_by or command.requested_by,
        already_confirmed=not changed,
        asset=task.asset,
        from_account=task.from_account,
        to_account=task.to_account,
        amount=task.amount,
    )
    await ctx.publisher.publish(answer)
    if changed:
        log.info("transfer task %s confirmed: %s %s", task.task_id, dec_str(task.received), task.asset)
    return answer

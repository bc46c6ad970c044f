"""The run: the state machine that orders the steps of one plan, from the journal.

A plan is first written to the journal (queued) and acked; runs are then executed one at a time per
account, from the journal, so a crash at any point resumes from what the journal and the venue say:
queued → (the pre-trade checks) → sells (those that wait for no transfer) → transfers → the sells that
waited for a transfer's arrival → buys → the end-of-run audit → finished. Within the sells and within the
buys, each account's legs run in plan order and the accounts concurrently (`accounts`); the steps that
cross accounts (transfers, the sells after them, bank transfers, positions) run one after another. Every
event id is derived from its cause, so a resumed or redelivered run re-publishes nothing the bus has not
already dropped. The transitions are `rebal.core.execution.RUN_TRANSITIONS`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from rebal import metrics, telemetry
from rebal.core.execution import IllegalTransition, RunState, after_transfer_cap
from rebal.events import (
    ConfirmTransfer,
    HaltTrading,
    PlannedOrder,
    RebalancePlanned,
    ResumeTrading,
    RunFinished,
    RunStarted,
    RunStatus,
    TakeSnapshot,
    TransferConfirmed,
)
from rebal_executor.execution import balances, bank, guards, killswitch, positions, reconcile
from rebal_executor.execution.accounts import each_account
from rebal_executor.execution.buys import buys
from rebal_executor.execution.holdings import Holdings
from rebal_executor.execution.legs import resolve
from rebal_executor.execution.outcomes import Stop
from rebal_executor.execution.ports import UNFINISHED, Context, RunRecord
from rebal_executor.execution.sells import sell
from rebal_executor.execution.transfers import arrived, exchange_of, precheck, run_transfers

log = logging.getLogger("rebal.executor")
Accounts = set[tuple[str, str]]
# The lock a run takes besides its accounts' (with the portfolio's id): one active run per portfolio.
PORTFOLIO_LOCK = "portfolio:"


@asynccontextmanager
async def no_lock(_: Accounts) -> AsyncIterator[None]:
    yield


@dataclass
class Executor(Context):
    """The engine: plans in (`accept`), runs out (`drain`), reconciliation, and the kill switch."""

    # Held around each run: one active writer per account (Postgres advisory locks in the service).
    lock: Callable[[Accounts], AbstractAsyncContextManager[None]] = no_lock
    _draining: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The trace each queued plan arrived in, so its run (on the worker) continues it; lost on a restart.
    _traces: dict[uuid.UUID, dict[str, str]] = field(default_factory=dict)
    # Runs whose every leg but those waiting for an operator's bank transfer is done (in this process).
    _waited: set[uuid.UUID] = field(default_factory=set)

    # -- plans in ---------------------------------------------------------------------------------------

    async def accept(self, plan: RebalancePlanned) -> bool:
        """Queue a plan to run (written before its message is acked); False when there is nothing new to run
        (a dry run, execution disabled, or a plan already queued: a redelivery)."""
        if plan.dry_run:
            log.info("plan %s is a dry run: not executed", plan.event_id)
            return False
        if not self.settings.enabled:
            log.warning("execution is disabled: plan %s not executed", plan.event_id)
            return False
        self._traces[plan.event_id] = telemetry.carrier()
        return await self.journal.enqueue(plan.correlation_id or plan.event_id, plan)

    async def on_plan(self, plan: RebalancePlanned) -> None:
        """Queue the plan and run what is queued now (tests and single-shot use; the service queues and
        lets its worker drain)."""
        await self.accept(plan)
        await self.drain()

    async def drain(self) -> None:
        """Run every unfinished run (resumed ones first, then queued ones, newest plan per portfolio), then
        reconcile our orders still open at the venues."""
        async with self._draining:
            tried: set[uuid.UUID] = set()
            # Portfolios with a run waiting for an operator (`bank`): their newer plans stay queued.
            busy: set[str] = set()
            while True:
                for old, new in (await self.journal.coalesce()).items():
                    await self._supersede(old, new)
                waiting = [
                    r
                    for r in await self.journal.unfinished()
                    if r.plan_id not in tried and not (r.state == "queued" and r.plan.portfolio_id in busy)
                ]
                if not waiting:
                    break
                record = waiting[0]
                tried.add(record.plan_id)
                # At most one run per account, and per portfolio, is active across replicas.
                accounts = {(order.exchange, order.account) for order in record.plan.orders}
                for transfer in record.plan.transfers:  # an account a transfer leaves may place no order
                    accounts.add((exchange_of(record.plan, transfer.from_account), transfer.from_account))
                    accounts.add((exchange_of(record.plan, transfer.to_account), transfer.to_account))
                accounts |= positions.accounts_of(record.plan)
                accounts.add((PORTFOLIO_LOCK, record.plan.portfolio_id))
                async with self.lock(accounts):
                    fresh = await self.journal.run(record.plan_id)  # another replica may have run it
                    if fresh is not None and fresh.state in UNFINISHED:
                        carried = self._traces.pop(fresh.plan_id, None)
                        with telemetry.continued_span("executor run", carried, run=str(fresh.run_id)):
                            await self._run(fresh)
                        if record.plan_id in self._waited:
                            busy.add(record.plan.portfolio_id)
            await self.reconcile_orders()

    # -- reconciliation and the kill switch (`reconcile`, `killswitch`) ---------------------------------

    async def reconcile_orders(self) -> int:
        return await reconcile.reconcile_orders(self)

    async def classify_external(self) -> dict[str, int]:
        return await reconcile.classify_external(self)

    async def halt(self, command: HaltTrading) -> None:
        await killswitch.halt(self, command)

    async def resume(self, command: ResumeTrading) -> None:
        await killswitch.resume(self, command)

    async def restore_halts(self, portfolios: Iterable[str]) -> None:
        await killswitch.restore_halts(self, portfolios)

    # -- operators' bank transfers (`bank`) --------------------------------------------------------------

    async def confirm_transfer(self, command: ConfirmTransfer) -> TransferConfirmed | None:
        """Record an operator's confirmation; the next `drain` places the buys that waited for it."""
        return await bank.confirm(self, command)

    # -- a run ------------------------------------------------------------------------------------------

    async def _run(self, record: RunRecord) -> None:
        plan = record.plan
        state: RunState | IllegalTransition = record.state
        if state == "queued":
            refused = await guards.refusal(self, plan) or await guards.stale(self, plan)
            refused = refused or await precheck(self, plan) or await positions.precheck(self, plan)
            if refused:
                await self._finish(record, "cancelled", refused)
                return
            await self.publisher.publish(
                plan.caused(
                    RunStarted,
                    now=self.clock(),
                    correlation_id=record.run_id,
                    plan_id=plan.event_id,
                    orders=len(plan.orders) + len(plan.position_orders),
                )
            )
            await balances.record_balances(self, record, "start")
            state = await self.journal.move_run(plan.event_id, "sells_in_progress", at=self.clock())
        stop: Stop | None = None
        if state == "sells_in_progress":
            held: dict[tuple[str, str], Holdings] = {}
            stop = await each_account(
                [(leg, o) for leg, o in enumerate(plan.orders) if o.phase == 1 and o.after_transfer is None],
                lambda leg, order: sell(self, record, leg, order, holdings=self._holdings(held, order)),
            )
            stop = stop or await positions.reduce(self, record)
            if stop is None:
                state = await self.journal.move_run(plan.event_id, "buys_in_progress")
        if stop is None and state == "buys_in_progress":
            await run_transfers(self, record)
            stop = await self._sells_after_transfers(record)
            waiting = stop if stop is not None else await bank.settle(self, record)
            if isinstance(waiting, Stop):
                stop = waiting
            elif waiting.tasks and not waiting.changed and record.plan_id in self._waited:
                return  # still waiting for an operator, and nothing else of the run left to do
            else:
                stop = await buys(self, record, waiting.accounts) or await positions.increase(self, record)
                if stop is None and waiting.tasks:
                    self._waited.add(record.plan_id)
                    return  # the run stays in the journal until the operator confirms (`bank`)
        if isinstance(state, IllegalTransition):
            raise RuntimeError(state.reason)  # a broken invariant: the journal and this code disagree
        if stop is not None:
            done = await self.journal.legs_done(plan.event_id)
            for leg in [*range(len(plan.orders)), *positions.legs_of(plan)]:
                if leg not in done:
                    await resolve(self, record, leg)  # an order the venue may hold is found or judged lost
            await self._finish(record, stop.status, stop.reason)
            return
        report = await self.journal.report(plan.event_id)
        await self._finish(record, "completed_with_adjustments" if report.reasons else "completed")

    def _holdings(self, held: dict[tuple[str, str], Holdings], order: PlannedOrder) -> Holdings | None:
        """The account's balance reads shared by its sells of this phase (None: no such venue)."""
        venue = self.venues.get(order.exchange)
        if venue is None:
            return None
        return held.setdefault((order.exchange, order.account), Holdings(self, venue, order.account))

    async def _sells_after_transfers(self, record: RunRecord) -> Stop | None:
        """The sells that waited for a transfer's arrival (`after_transfer`), once the transfers have
        ended (a bank transfer: once the operator confirmed it): each sells at most its own part and what
        arrived (`after_transfer_cap`)."""
        plan = record.plan
        for leg, order in enumerate(plan.orders):
            # (A buy that waits for a transfer, money paying for it, is one of the buys: `buys`.)
            if order.phase != 1 or order.after_transfer is None:
                continue
            if await self.journal.leg_done(plan.event_id, leg):
                continue
            transfer = plan.transfers[order.after_transfer]
            if transfer.manual:  # an operator's task (`bank`): the sell waits for its confirmation
                confirmed = await bank.received(self, plan, order.after_transfer)
                if confirmed is None:
                    continue
                came = confirmed
            else:
                came = await arrived(self, plan, order.after_transfer)
            cap = after_transfer_cap(order.amount, transfer.amount, transfer.fee, came)
            stop = await sell(self, record, leg, order, at_most=cap)
            if stop:
                return stop
        return None

    async def _finish(self, record: RunRecord, status: RunStatus, reason: str = "") -> None:
        """Publish how the run ended (first: a crash before the journal says so publishes it again, under
        the same id), then record it."""
        plan = record.plan
        self._waited.discard(record.plan_id)
        self.restarted.pop(record.plan_id, None)
        await balances.check_balances(self, record)
        # Every fill of the run is in by now: a snapshot taken after this instant reflects them all.
        ended = self.clock()
        if reason:
            await self.journal.note(plan.event_id, "end", reason)
        report = await self.journal.report(plan.event_id)
        finished = plan.caused(
            RunFinished,
            now=ended,
            correlation_id=record.run_id,
            plan_id=plan.event_id,
            status=status,
            placed=report.placed,
            filled=report.filled,
            # The plan's own skips are counted (a run is never "0 skipped" when its plan skipped legs);
            # they are listed, leg by leg, in the plan (`RebalancePlanned.skipped`) wherever a run is shown
            # with its plan: the reasons are the executor's own.
            skipped=report.skipped + len(plan.skipped),
            failed=report.failed,
            reasons=report.reasons,
        )
        if await self.publisher.publish(finished):
            metrics.RUNS.labels(portfolio=plan.portfolio_id, status=status).inc()
        if record.state != "queued" or status != "cancelled":
            await self.publisher.publish(
                plan.caused(TakeSnapshot, now=self.clock(), correlation_id=record.run_id)
            )
        moved = await self.journal.move_run(plan.event_id, status, reason, at=ended)
        if isinstance(moved, IllegalTransition):
            raise RuntimeError(moved.reason)
        log.info(
            "run %s %s: %d placed, %d filled %s", record.run_id, status, report.placed, report.filled, reason
        )

    async def _supersede(self, old: uuid.UUID, new: uuid.UUID) -> None:
        record = await self.journal.run(old)
        if record is not None and record.state == "queued":
            await self._finish(record, "cancelled", f"superseded by the newer plan {new}: not started")

"""Executor handlers: a non-dry-run `RebalancePlanned` in; orders on the venues, and what happened, out.

A plan is first written to the journal (queued) and acked; runs are then executed one at a time per
account, from the journal, so a crash at any point resumes from what the journal and the venue say:

- sells first (phase 1), each sized from what the account holds now; then buys (phase 2) sized from the
  quote really free after the sells, at the venue's current prices (`rebal.core.sizing`); when too little
  is free and OUR own open orders lock the asset, they are cancelled first (`_release`), never external ones;
- every order is written (state `created`) before it is sent, under a client id derived from the plan, the
  leg and the attempt; an order whose outcome is unknown is looked up by that id and, if the venue never
  saw it, sent again under the SAME id — never under a new one;
- every fill is recorded once by its trade id, and every event id is derived from its cause, so a resumed
  or redelivered run places nothing twice and re-publishes nothing the bus has not already dropped.

The rules (state machines, limits, sizing) are pure functions in `rebal.core.execution` and
`rebal.core.sizing`; this module reads and writes, and maps outcomes to events. See docs/execution.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Protocol, runtime_checkable

from faststream.nats import NatsBroker

from rebal import bus, metrics, telemetry
from rebal.core.execution import (
    ORDER_FINAL,
    IllegalTransition,
    OpenLock,
    OrderStage,
    RunState,
    balance_discrepancies,
    balance_tolerances,
    expected_change,
    locked_by,
    notional_refusal,
    price_moved,
    routed_sell,
    sell_amount,
    stage_of,
    to_release,
)
from rebal.core.market import Market
from rebal.core.numbers import MONEY_QUANTUM, dec_str
from rebal.core.sizing import BuyRequest, size_buys
from rebal.events import (
    HaltTrading,
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    RebalancePlanned,
    ResumeTrading,
    RunFinished,
    RunStarted,
    RunStatus,
    TakeSnapshot,
    derive_id,
)
from rebal.venue import (
    INSUFFICIENT_FUNDS,
    InsufficientFunds,
    MarketInfo,
    OrderRejected,
    OrderState,
    Venue,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_executor.journal import UNFINISHED, Journal, OrderRecord, RunRecord
from rebal_executor.settings import ExecutorSettings
from rebal_executor.transfers import TransferOutcome, Transfers, describe

log = logging.getLogger("rebal.executor")
SERVICE = "executor"
Accounts = set[tuple[str, str]]


def utc_now() -> datetime:
    return datetime.now(UTC)


# Every client order id of ours starts with this (an unknown order with it is suspicious, still external).
OUR_PREFIX = "rb-"


def client_order_id(plan_id: uuid.UUID, leg: int, attempt: int = 0) -> str:
    """The order's id at the venue: the same plan, leg and attempt always give the same id (<= 36 chars)."""
    return f"{OUR_PREFIX}{derive_id(plan_id, leg, attempt).hex[:12]}-{leg}-{attempt}"


@runtime_checkable
class Cancels(Protocol):
    """A venue that can cancel an order by our client id (the kill switch uses it when the venue can)."""

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None: ...


@dataclass(frozen=True)
class Stop:
    """The run cannot go on: how it ends and why (halted, authentication refused, prices moved)."""

    status: RunStatus
    reason: str


@dataclass(frozen=True)
class Rejected:
    reason: str
    insufficient_funds: bool


@dataclass(frozen=True)
class Unknown:
    """Still no answer after every attempt: the order stays outcome_unknown, reconciled later."""

    reason: str


@dataclass(frozen=True)
class BuyPlan:
    """Phase-2 amounts after sizing: leg → amount to place, or why it is skipped."""

    amounts: Mapping[int, Decimal]
    skipped: Mapping[int, str]


@asynccontextmanager
async def no_lock(_: Accounts) -> AsyncIterator[None]:
    yield


@dataclass
class Executor:
    venues: Mapping[str, Venue]
    publisher: bus.EventSink
    settings: ExecutorSettings
    journal: Journal
    lock: Callable[[Accounts], AbstractAsyncContextManager[None]] = no_lock
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _draining: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The trace each queued plan arrived in, so its run (on the worker) continues it; lost on a restart.
    _traces: dict[uuid.UUID, dict[str, str]] = field(default_factory=dict)

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
            while True:
                for old, new in (await self.journal.coalesce()).items():
                    await self._supersede(old, new)
                waiting = [r for r in await self.journal.unfinished() if r.plan_id not in tried]
                if not waiting:
                    break
                record = waiting[0]
                tried.add(record.plan_id)
                accounts = {(order.exchange, order.account) for order in record.plan.orders}
                async with self.lock(accounts):
                    fresh = await self.journal.run(record.plan_id)  # another replica may have run it
                    if fresh is not None and fresh.state in UNFINISHED:
                        carried = self._traces.pop(fresh.plan_id, None)
                        with telemetry.continued_span("executor run", carried, run=str(fresh.run_id)):
                            await self._run(fresh)
            await self.reconcile_orders()

    # -- a run ------------------------------------------------------------------------------------------

    async def _run(self, record: RunRecord) -> None:
        plan = record.plan
        state: RunState | IllegalTransition = record.state
        if state == "queued":
            refusal = await self._refusal(plan)
            if refusal:
                await self._finish(record, "cancelled", refusal)
                return
            await self.publisher.publish(
                plan.caused(
                    RunStarted,
                    now=self.clock(),
                    correlation_id=record.run_id,
                    plan_id=plan.event_id,
                    orders=len(plan.orders),
                )
            )
            await self._record_balances(record, "start")
            state = await self.journal.move_run(plan.event_id, "sells_in_progress")
        stop: Stop | None = None
        if state == "sells_in_progress":
            for leg, order in enumerate(plan.orders):
                if order.phase == 1:
                    stop = await self._sell(record, leg, order)
                    if stop:
                        break
            if stop is None:
                state = await self.journal.move_run(plan.event_id, "buys_in_progress")
        if stop is None and state == "buys_in_progress":
            await self._transfers(record)
            stop = await self._buys(record)
        if isinstance(state, IllegalTransition):
            raise RuntimeError(state.reason)  # a broken invariant: the journal and this code disagree
        if stop is not None:
            for leg in range(len(plan.orders)):
                if not await self.journal.leg_done(plan.event_id, leg):
                    await self.journal.finish_leg(plan.event_id, leg, "skipped", placed=False)
            await self._finish(record, stop.status, stop.reason)
            return
        report = await self.journal.report(plan.event_id)
        await self._finish(record, "completed_with_adjustments" if report.reasons else "completed")

    def _late(self, plan: RebalancePlanned) -> float:
        """Seconds past the run's deadline (plan time + run_timeout_seconds); <= 0 while in time."""
        timeout = self.settings.execution.run_timeout_seconds
        return (self.clock() - plan.occurred_at).total_seconds() - timeout

    async def _refusal(self, plan: RebalancePlanned) -> str:
        if await self.journal.halted(plan.portfolio_id):
            return f"trading is halted for portfolio {plan.portfolio_id}: the run was not started"
        if self._late(plan) > 0:
            timeout = self.settings.execution.run_timeout_seconds
            return f"the plan is more than {timeout:g} s old: not started (re-plan with fresh prices)"
        if not self.settings.live:
            return (
                "live trading is disabled: nothing was sent (set live = true, REBAL__LIVE=true, in the "
                "executor's configuration to execute plans)"
            )
        return ""

    async def _finish(self, record: RunRecord, status: RunStatus, reason: str = "") -> None:
        """Publish how the run ended (first: a crash before the journal says so publishes it again, under
        the same id), then record it."""
        plan = record.plan
        await self._check_balances(record)
        if reason:
            await self.journal.note(plan.event_id, "end", reason)
        report = await self.journal.report(plan.event_id)
        finished = plan.caused(
            RunFinished,
            now=self.clock(),
            correlation_id=record.run_id,
            plan_id=plan.event_id,
            status=status,
            placed=report.placed,
            filled=report.filled,
            skipped=report.skipped,
            failed=report.failed,
            reasons=report.reasons,
        )
        if await self.publisher.publish(finished):
            metrics.RUNS.labels(portfolio=plan.portfolio_id, status=status).inc()
        if record.state != "queued" or status != "cancelled":
            await self.publisher.publish(
                plan.caused(TakeSnapshot, now=self.clock(), correlation_id=record.run_id)
            )
        moved = await self.journal.move_run(plan.event_id, status, reason)
        if isinstance(moved, IllegalTransition):
            raise RuntimeError(moved.reason)
        log.info(
            "run %s %s: %d placed, %d filled %s", record.run_id, status, report.placed, report.filled, reason
        )

    # -- balances against fills -------------------------------------------------------------------------

    def _checked_accounts(self, plan: RebalancePlanned) -> list[tuple[str, str]]:
        """The accounts whose balances the run's fills alone should explain: those its orders trade, less
        those a transfer of the run moves assets out of or into (a transfer is not a fill)."""
        moved = {account for t in plan.transfers for account in (t.from_account, t.to_account)}
        return sorted({(o.exchange, o.account) for o in plan.orders if o.account not in moved})

    async def _record_balances(self, record: RunRecord, moment: str) -> None:
        for exchange, account in self._checked_accounts(record.plan):
            venue = self.venues.get(exchange)
            if venue is None:
                continue
            try:
                balances = await venue.balances(account)
            except VenueError as error:
                log.warning("reading %s %s balances at the run's %s: %s", exchange, account, moment, error)
                continue
            await self.journal.record_balances(record.plan_id, moment, exchange, account, balances)

    async def _check_balances(self, record: RunRecord) -> None:
        """At the end of a run that started: record the balances again and report every asset that moved by
        more than the run's journaled fills explain (`rebal.core.execution.balance_discrepancies`): a line
        in the run's reasons, a warning, and `rebal_balance_discrepancies_total`."""
        plan = record.plan
        start = await self.journal.run_balances(plan.event_id, "start")
        if not start:
            return  # never started (or started before balances were recorded)
        await self._record_balances(record, "end")
        end = await self.journal.run_balances(plan.event_id, "end")
        fills = await self.journal.run_fills(plan.event_id)
        # An order still unsettled (open, or its outcome unknown) may have fills the journal has not seen
        # yet: its account's balances cannot be explained yet, and are not checked.
        unsettled = {
            (o.exchange, o.account): o.client_order_id
            for o in await self.journal.orders(plan.event_id)
            if o.state not in ORDER_FINAL and o.state != "created"
        }
        for (exchange, account), before in sorted(start.items()):
            after = end.get((exchange, account))
            venue = self.venues.get(exchange)
            if after is None or venue is None:
                continue
            if (exchange, account) in unsettled:
                log.info(
                    "run %s: balances of %s (%s) not checked: order %s is not settled",
                    record.run_id,
                    account,
                    exchange,
                    unsettled[(exchange, account)],
                )
                continue
            try:
                markets = (await venue.markets()).values()
            except VenueError as error:
                log.warning("reading %s markets for the balance check: %s", exchange, error)
                continue
            tolerances = balance_tolerances((m.base, m.amount_step) for m in markets)
            explained = expected_change(fills.get((exchange, account), ()))
            for found in balance_discrepancies(before, after, explained, tolerances):
                difference = found.difference
                reason = (
                    f"balance of {found.asset} on {account} ({exchange}) moved by {dec_str(abs(difference))} "
                    f"{'more' if difference > 0 else 'less'} than the fills explain "
                    f"({dec_str(found.moved)} against {dec_str(found.explained)}): external activity"
                )
                key = f"balance-{exchange}-{account}-{found.asset}"
                if await self.journal.add_note(plan.event_id, key, reason):
                    metrics.BALANCE_DISCREPANCIES.labels(exchange=exchange).inc()
                    log.warning("run %s: %s", record.run_id, reason)

    async def _supersede(self, old: uuid.UUID, new: uuid.UUID) -> None:
        record = await self.journal.run(old)
        if record is not None and record.state == "queued":
            await self._finish(record, "cancelled", f"superseded by the newer plan {new}: not started")

    async def _stop_now(self, plan: RebalancePlanned) -> Stop | None:
        if await self.journal.halted(plan.portfolio_id):
            return Stop("cancelled_mid_run", f"trading halted for portfolio {plan.portfolio_id} mid-run")
        if self._late(plan) > 0:
            timeout = self.settings.execution.run_timeout_seconds
            return Stop(
                "timed_out",
                f"the run did not end within {timeout:g} s of its plan: stopped before its next leg",
            )
        return None

    # -- sells ------------------------------------------------------------------------------------------

    async def _sell(self, record: RunRecord, leg: int, order: PlannedOrder) -> Stop | None:
        plan = record.plan
        if await self.journal.leg_done(plan.event_id, leg):
            return None
        stop = await self._stop_now(plan)
        if stop:
            return stop
        venue = self.venues.get(order.exchange)
        if venue is None:
            await self._fail(plan, leg, f"leg {leg} {order.symbol} sell failed: no venue {order.exchange!r}")
            return None
        existing = await self.journal.latest_order(plan.event_id, leg)
        amount = order.amount
        if existing is None:
            info = (await venue.markets()).get(order.symbol)
            if info is not None:
                balances = await venue.balances(order.account)
                free = balances.free.get(info.base, Decimal(0))
                released = False
                if free < order.amount:
                    free, released = await self._release(
                        plan, leg, order, info.base, order.amount, free, venue
                    )
                    balances = await venue.balances(order.account) if released else balances
                amount = sell_amount(order.amount, free, info.amount_step)
                if amount < order.amount and (released or balances.locked.get(info.base, Decimal(0)) > 0):
                    await self.journal.note(
                        plan.event_id,
                        f"short-{leg}",
                        f"leg {leg} {order.symbol} sell: {dec_str(order.amount - amount)} {info.base} still "
                        f"locked/insufficient, not asked for ({dec_str(free)} free, "
                        f"{dec_str(balances.locked.get(info.base, Decimal(0)))} locked in orders left open)",
                    )
                if amount <= 0:
                    await self._skip(plan, leg, f"leg {leg} {order.symbol} sell skipped: no {info.base} free")
                    return None
                if amount != order.amount:
                    await self.journal.note(
                        plan.event_id,
                        f"resized-{leg}",
                        f"leg {leg} {order.symbol} sell reduced from {dec_str(order.amount)} to "
                        f"{dec_str(amount)}: {dec_str(free)} {info.base} free",
                    )
        first = self._route_first(plan, leg)
        if first is not None and existing is None:
            # A routed order's second leg sells what the first delivered, not what the plan estimated.
            delivered = await self._delivered(plan, first)
            info = (await venue.markets()).get(order.symbol)
            step = info.amount_step if info is not None else order.amount
            capped = sell_amount(amount, delivered, step)
            base = order.symbol.partition("/")[0]
            if capped <= 0:
                await self._skip(
                    plan, leg, f"leg {leg} {order.symbol} sell skipped: route leg {first} delivered no {base}"
                )
                return None
            if capped < amount:
                await self.journal.note(
                    plan.event_id,
                    f"route-{leg}",
                    f"leg {leg} {order.symbol} sell reduced from {dec_str(amount)} to {dec_str(capped)}: "
                    f"route leg {first} delivered {dec_str(delivered)} {base}",
                )
                amount = capped
        stop = await self._order_leg(record, leg, order, amount, existing)
        if first is not None and await self.journal.leg_outcome(plan.event_id, leg) != "filled":
            delivered = await self._delivered(plan, first)
            if delivered > 0:
                await self.journal.note(
                    plan.event_id,
                    f"stranded-{leg}",
                    f"route legs {first}-{leg}: {dec_str(delivered)} {order.symbol.partition('/')[0]} "
                    f"delivered by leg {first} stays in {order.account} (stranded, not unwound)",
                )
        return stop

    def _route_first(self, plan: RebalancePlanned, leg: int) -> int | None:
        """The first leg of the routed sell whose second leg is `leg`, if it is one."""
        if leg == 0:
            return None
        first, second = plan.orders[leg - 1], plan.orders[leg]
        same_place = (first.exchange, first.account, first.phase, first.side) == (
            second.exchange,
            second.account,
            second.phase,
            second.side,
        )
        if not same_place or second.side != "sell":
            return None
        routed = routed_sell(first.symbol, first.amount, first.est_price, second.symbol, second.amount)
        return leg - 1 if routed else None

    async def _delivered(self, plan: RebalancePlanned, leg: int) -> Decimal:
        base, _, quote = plan.orders[leg].symbol.partition("/")
        # Venues credit proceeds rounded to a quantum; amount x price can be a hair above: round down.
        delivered = await self.journal.delivered(plan.event_id, leg, base, quote)
        return delivered.quantize(MONEY_QUANTUM, rounding=ROUND_DOWN)

    # -- transfers (after the sells, before the buys they fund) ----------------------------------------

    async def _transfers(self, record: RunRecord) -> None:
        plan = record.plan
        execution = self.settings.execution

        async def log_state(tid: str, state: str, reason: str) -> None:
            await self.journal.record_transfer(plan.event_id, tid, state, reason)

        mover = Transfers(
            self.venues,
            self.sleep,
            execution.transfer_timeout_seconds,
            execution.transfer_poll_seconds,
            log_state,
        )
        for index, transfer in enumerate(plan.transfers):
            leg = len(plan.orders) + index
            if await self.journal.leg_done(plan.event_id, leg):
                continue
            if not self.settings.transfers:
                outcome = TransferOutcome(
                    "skipped",
                    False,
                    f"{describe(transfer)} skipped: transfers are off (transfers = true, "
                    "REBAL__TRANSFERS=true, to execute them)",
                )
            else:
                outcome = await mover.run(plan, index, transfer)
            if outcome.outcome != "filled":  # a credited transfer is in the transitions log, not a reason
                await self.journal.note(plan.event_id, f"transfer-{index}", outcome.reason)
            await self.journal.finish_leg(plan.event_id, leg, outcome.outcome, placed=outcome.moved)

    # -- buys -------------------------------------------------------------------------------------------

    async def _buys(self, record: RunRecord) -> Stop | None:
        plan = record.plan
        legs = [(leg, o) for leg, o in enumerate(plan.orders) if o.phase != 1]
        todo = [(leg, o) for leg, o in legs if not await self.journal.leg_done(plan.event_id, leg)]
        moved = await self._price_check(plan, todo)
        if moved:
            return Stop("cancelled_mid_run", moved)
        sized: dict[tuple[str, str, str], BuyPlan] = {}
        for leg, order in todo:
            stop = await self._stop_now(plan)
            if stop:
                return stop
            group = _group(order)
            if group not in sized:
                sized[group] = await self._size(record, [(i, o) for i, o in todo if _group(o) == group])
            buys = sized[group]
            if leg in buys.skipped:
                await self._skip(
                    plan, leg, f"leg {leg} {order.symbol} {order.side} skipped: {buys.skipped[leg]}"
                )
                continue
            existing = await self.journal.latest_order(plan.event_id, leg)
            stop = await self._order_leg(record, leg, order, buys.amounts[leg], existing)
            if stop:
                return stop
        return None

    async def _price_check(self, plan: RebalancePlanned, legs: Sequence[tuple[int, PlannedOrder]]) -> str:
        """Why the buys must not go on (a price moved beyond the tolerance since the plan), or ""."""
        tolerance = self.settings.execution.max_price_move
        by_venue: dict[str, list[PlannedOrder]] = {}
        for leg, order in legs:
            if await self.journal.latest_order(plan.event_id, leg) is None and order.est_price > 0:
                by_venue.setdefault(order.exchange, []).append(order)
        for exchange, orders in sorted(by_venue.items()):
            venue = self.venues.get(exchange)
            if venue is None:
                continue
            prices = await venue.prices(sorted({o.symbol for o in orders}))
            for order in orders:
                now = prices.get(order.symbol)
                if now is not None and price_moved(order.est_price, now, tolerance):
                    return (
                        f"re-plan needed: {order.symbol} is at {dec_str(now)}, planned at "
                        f"{dec_str(order.est_price)} (more than {dec_str(tolerance * 100)}% away); "
                        "the buys were not placed"
                    )
        return ""

    async def _size(self, record: RunRecord, legs: Sequence[tuple[int, PlannedOrder]]) -> BuyPlan:
        """Size one account's buys against one quote from its free balance now (after the sells)."""
        plan = record.plan
        exchange, account, quote = _group(legs[0][1])
        venue = self.venues.get(exchange)
        if venue is None:
            return BuyPlan({leg: order.amount for leg, order in legs}, {})
        markets = await venue.markets()
        fixed: dict[int, Decimal] = {}
        pending: list[tuple[int, PlannedOrder]] = []
        for leg, order in legs:
            # Already written (a resumed run) or on no known market: placed as it is, not resized.
            known = await self.journal.latest_order(plan.event_id, leg)
            if known is not None or order.symbol not in markets:
                fixed[leg] = known.amount if known is not None else order.amount
            else:
                pending.append((leg, order))
        if not pending:
            return BuyPlan(fixed, {})
        budget = (await venue.balances(account)).free.get(quote, Decimal(0))
        prices = await venue.prices(sorted({order.symbol for _, order in pending}))
        requests = [
            BuyRequest(leg, order.amount, prices[order.symbol], _market(markets[order.symbol]))
            for leg, order in pending
        ]
        buffer = self.settings.execution.price_buffer
        needed = sum((request.cost(request.amount, buffer) for request in requests), Decimal(0))
        if budget < needed:  # our own resting orders may lock the quote these buys spend: released first
            budget, _ = await self._release(plan, pending[0][0], pending[0][1], quote, needed, budget, venue)
        sizing = size_buys(requests, budget, self.settings.execution.price_buffer)
        for buy in sizing.buys:
            if buy.amount != buy.planned:
                await self.journal.note(
                    plan.event_id,
                    f"scaled-{buy.leg}",
                    f"leg {buy.leg} {plan.orders[buy.leg].symbol} buy scaled from {dec_str(buy.planned)} to "
                    f"{dec_str(buy.amount)}: {dec_str(budget)} {quote} free after the sells",
                )
        return BuyPlan(
            {**fixed, **{buy.leg: buy.amount for buy in sizing.buys}},
            {skip.leg: skip.reason for skip in sizing.skipped},
        )

    # -- releasing what our own open orders lock ------------------------------------------------------------

    async def _release(
        self,
        plan: RebalancePlanned,
        leg: int,
        order: PlannedOrder,
        asset: str,
        needed: Decimal,
        free: Decimal,
        venue: Venue,
    ) -> tuple[Decimal, bool]:
        """When less than `needed` of `asset` is free on the leg's account, cancel OUR open orders there that
        lock it (orders in the journal, not final, of any run: `rebal.core.execution.to_release`), adopt how
        each ended (a fill that raced the cancel is recorded by its trade id and published), and read the free
        balance again. Returns (free now, whether anything was cancelled). An order the journal does not know
        (external) is never among them, so what it locks is never released nor asked for."""
        ours: dict[str, tuple[OrderRecord, Decimal]] = {}
        for held in await self.journal.open_orders():
            if (held.exchange, held.account) != (order.exchange, order.account):
                continue
            price = held.notional / held.amount if held.amount > 0 else Decimal(0)
            locked_asset, _ = locked_by(held.side, held.symbol, held.amount, held.filled, price)
            if locked_asset == asset:
                ours[held.client_order_id] = (held, price)
        locks = [
            OpenLock(cid, asset, locked_by(o.side, o.symbol, o.amount, o.filled, price)[1])
            for cid, (o, price) in ours.items()
        ]
        decision = to_release(needed, free, locks)
        if not decision.cancel:
            return free, False
        doing = "selling" if order.side == "sell" else "buying"
        if not isinstance(venue, Cancels):
            await self.journal.note(
                plan.event_id,
                f"release-{leg}-{asset}",
                f"{dec_str(decision.releases)} {asset} locked in our open orders on {order.account} not "
                f"released before {doing}: {venue.name} cannot cancel orders",
            )
            return free, False
        for lock in decision.cancel:
            held, price = ours[lock.client_order_id]
            try:
                state = await venue.cancel_order(held.account, held.client_order_id, held.symbol)
            except VenueError as error:
                log.warning("cancelling %s to release %s: %s", held.client_order_id, asset, error)
                continue
            if state is None:
                continue
            await self._adopt_found(held, state)
            if stage_of(state.status, state.filled) in ("filled", "accepted", "partially_filled"):
                reason = (
                    f"our open order {held.client_order_id} {stage_of(state.status, state.filled)} before it "
                    f"could be cancelled: nothing released before {doing}"
                )
            else:
                _, left = locked_by(held.side, held.symbol, held.amount, state.filled, price)
                left = left.quantize(MONEY_QUANTUM, rounding=ROUND_DOWN) if held.side == "buy" else left
                reason = (
                    f"released {dec_str(left)} {asset} locked in our open order {held.client_order_id} "
                    f"before {doing}"
                )
            await self.journal.note(plan.event_id, f"release-{held.client_order_id}", reason)
            log.info("run of plan %s: %s", plan.event_id, reason)
        after = (await venue.balances(order.account)).free.get(asset, Decimal(0))
        return after, True

    async def _adopt_found(self, order: OrderRecord, state: OrderState) -> int:
        """`_adopt` for an order of ours found outside its leg (reconciled, cancelled to release funds): new
        fills are published under their run, like any other."""
        new_fills = await self._adopt(order, state)
        record = await self.journal.run(order.plan_id)
        if new_fills and record is not None:
            planned = record.plan.orders[order.leg]
            await self._publish_order(record.plan, record.run_id, order, planned, state)
        return new_fills

    # -- one leg: write, send, settle, record -----------------------------------------------------------

    async def _order_leg(
        self, record: RunRecord, leg: int, order: PlannedOrder, amount: Decimal, existing: OrderRecord | None
    ) -> Stop | None:
        plan = record.plan
        what = f"leg {leg} {order.symbol} {order.side}"
        venue = self.venues.get(order.exchange)
        if venue is None:
            await self._fail(plan, leg, f"{what} failed: no venue {order.exchange!r}")
            return None
        if existing is None:
            existing = await self._write(plan, leg, order, amount, 0, venue)
            if existing is None:
                return None
        outcome = await self._drive(venue, existing)
        if isinstance(outcome, Rejected) and outcome.insufficient_funds and existing.attempt == 0:
            resized = await self._resize(plan, leg, order, existing, venue)
            if resized is not None:
                outcome = await self._drive(venue, resized)
                existing = resized
        if isinstance(outcome, Stop):
            await self._fail(plan, leg, f"{what} failed: {outcome.reason}")
            return outcome
        if isinstance(outcome, Rejected):
            await self._fail(plan, leg, f"{what} rejected: {outcome.reason}")
            return None
        if isinstance(outcome, Unknown):
            await self._fail(plan, leg, f"{what} failed: {outcome.reason}", placed=False)
            return None
        await self._publish_order(plan, record.run_id, existing, order, outcome)
        if outcome.status == "filled":
            await self.journal.finish_leg(plan.event_id, leg, "filled", placed=True)
            metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="filled").inc()
        elif outcome.status in ("cancelled", "rejected", "expired"):
            detail = f": {outcome.reason}" if outcome.reason else ""
            await self._fail(
                plan, leg, f"{what} {outcome.status}{detail}", placed=outcome.status != "rejected"
            )
        else:
            timeout = self.settings.execution.order_timeout_seconds
            await self._fail(
                plan, leg, f"{what} still {outcome.status} after {timeout:g} s: left to reconcile", True
            )
        return None

    async def _write(
        self,
        plan: RebalancePlanned,
        leg: int,
        order: PlannedOrder,
        amount: Decimal,
        attempt: int,
        venue: Venue,
    ) -> OrderRecord | None:
        """The order written to the journal (state created) before it is sent, or None when a guardrail
        refuses it (the leg is skipped with the reason)."""
        price = (await venue.prices([order.symbol])).get(order.symbol, order.est_price)
        notional = amount * price
        execution = self.settings.execution
        refusal = notional_refusal(
            notional,
            await self.journal.sent_notional(plan.event_id),
            execution.max_order_notional,
            execution.max_run_notional,
        )
        if refusal:
            limit = (
                execution.max_order_notional
                if refusal.endswith("order_notional")
                else execution.max_run_notional
            )
            await self._skip(
                plan,
                leg,
                f"leg {leg} {order.symbol} {order.side} skipped: {refusal} ({dec_str(amount)} x "
                f"{dec_str(price)} = {dec_str(notional)}, limit {dec_str(limit or Decimal(0))})",
            )
            return None
        return await self.journal.create_order(
            OrderRecord(
                client_order_id=client_order_id(plan.event_id, leg, attempt),
                plan_id=plan.event_id,
                leg=leg,
                attempt=attempt,
                exchange=order.exchange,
                account=order.account,
                symbol=order.symbol,
                side=order.side,
                amount=amount,
                notional=notional,
                state="created",
                filled=Decimal(0),
                reason="",
            )
        )

    async def _resize(
        self, plan: RebalancePlanned, leg: int, order: PlannedOrder, rejected: OrderRecord, venue: Venue
    ) -> OrderRecord | None:
        """After an insufficient-funds rejection: refresh the balance and size the leg again, once (a new
        attempt, so a new client id: the venue recorded the first one as rejected)."""
        info = (await venue.markets()).get(order.symbol)
        if info is None:
            return None
        free = (await venue.balances(order.account)).free
        if order.side == "sell":
            amount = sell_amount(rejected.amount, free.get(info.base, Decimal(0)), info.amount_step)
        else:
            price = (await venue.prices([order.symbol]))[order.symbol]
            sizing = size_buys(
                [BuyRequest(leg, rejected.amount, price, _market(info))],
                free.get(info.quote, Decimal(0)),
                self.settings.execution.price_buffer,
            )
            amount = sizing.buys[0].amount if sizing.buys else Decimal(0)
        if amount <= 0 or amount >= rejected.amount:
            return None
        await self.journal.note(
            plan.event_id,
            f"refunded-{leg}",
            f"leg {leg} {order.symbol} {order.side} resized from {dec_str(rejected.amount)} to "
            f"{dec_str(amount)} after insufficient funds",
        )
        return await self._write(plan, leg, order, amount, rejected.attempt + 1, venue)

    async def _drive(self, venue: Venue, order: OrderRecord) -> OrderState | Rejected | Unknown | Stop:
        """Send the order (or find it), then follow it until it is final or the timeout passes."""
        if order.state == "rejected":
            return Rejected(order.reason, order.reason == INSUFFICIENT_FUNDS)
        if order.state == "created":
            # Recorded as submitted BEFORE it is sent: a crash after this line is resolved by a look-up.
            await self.journal.move_order(order.client_order_id, "submitted")
            sent = await self._send(venue, order)
        else:
            # Written and perhaps sent before a crash or a lost answer: the venue says whether it has it.
            found = await self._lookup(venue, order)
            if found is not None:
                sent = found
            elif order.state in ("submitted", "outcome_unknown"):
                sent = await self._send(venue, order)  # never seen by the venue: the SAME id again
            else:
                return Unknown(
                    f"{order.client_order_id} is {order.state} in the journal but the venue does not show it"
                )
        if not isinstance(sent, OrderState):
            return sent
        return await self._settle(venue, order, sent)

    async def _send(self, venue: Venue, order: OrderRecord) -> OrderState | Rejected | Unknown | Stop:
        execution = self.settings.execution
        cid = order.client_order_id
        for attempt in range(1, execution.placement_attempts + 1):
            if attempt > 1:
                await self.journal.move_order(cid, "submitted")  # sent again, under the same id
            try:
                return await venue.place_order(order.account, cid, order.symbol, order.side, order.amount)
            except OrderRejected as rejected:
                await self.journal.move_order(cid, "rejected", reason=rejected.reason)
                return Rejected(rejected.reason, isinstance(rejected, InsufficientFunds))
            except VenueAuthError as error:
                log.error("venue %s refused our credentials placing %s: %s", venue.name, cid, error)
                await self.journal.move_order(cid, "rejected", reason="authentication refused")
                return Stop("error", f"authentication refused by {venue.name}: {error}; trading stopped")
            except VenueError as error:
                # No answer, or a retryable refusal: the outcome is unknown until a look-up says.
                await self.journal.move_order(cid, "outcome_unknown", reason=type(error).__name__)
                delay = min(execution.retry_base_seconds * 2 ** (attempt - 1), execution.retry_max_seconds)
                if isinstance(error, VenueRateLimited) and error.retry_after is not None:
                    delay = min(error.retry_after, execution.retry_max_seconds)
                log.warning(
                    "placing %s: %s (attempt %d of %d, again in %.2f s)",
                    cid,
                    error,
                    attempt,
                    execution.placement_attempts,
                    delay,
                )
                await self.sleep(delay)
            known = await self._lookup(venue, order)
            if known is not None:
                return known
        return Unknown(
            f"{cid} outcome unknown after {execution.placement_attempts} attempts: left to reconcile"
        )

    async def _lookup(self, venue: Venue, order: OrderRecord) -> OrderState | None:
        try:
            return await venue.order(order.account, order.client_order_id, symbol=order.symbol)
        except VenueError as error:
            log.warning("looking %s up: %s", order.client_order_id, error)
            return None

    async def _settle(self, venue: Venue, order: OrderRecord, state: OrderState) -> OrderState:
        """Record what the venue shows, and look the order up until it is final or the timeout passes."""
        execution = self.settings.execution
        waited = 0.0
        await self._adopt(order, state)
        while (
            stage_of(state.status, state.filled) not in ORDER_FINAL
            and waited < execution.order_timeout_seconds
        ):
            await self.sleep(execution.poll_interval_seconds)
            waited += execution.poll_interval_seconds
            state = await self._lookup(venue, order) or state
            await self._adopt(order, state)
        return state

    async def _adopt(self, order: OrderRecord, state: OrderState) -> int:
        """Make the journal say what the venue says about our order (its stage, filled amount, fills);
        returns how many fills were new."""
        stage: OrderStage = stage_of(state.status, state.filled)
        moved = await self.journal.move_order(
            order.client_order_id, stage, filled=state.filled, reason=state.reason
        )
        if isinstance(moved, IllegalTransition):
            log.error(
                "%s: %s (the venue's answer is kept in the log only)", order.client_order_id, moved.reason
            )
        new = 0
        for fill in state.fills:
            new += await self.journal.record_fill(order.exchange, order.client_order_id, fill)
        return new

    async def _publish_order(
        self,
        plan: RebalancePlanned,
        run_id: uuid.UUID,
        record: OrderRecord,
        order: PlannedOrder,
        state: OrderState,
    ) -> None:
        placed = plan.caused(
            OrderPlaced,
            now=self.clock(),
            key=record.client_order_id,
            correlation_id=run_id,
            client_order_id=record.client_order_id,
            account=order.account,
            exchange=order.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=state.amount,
            phase=order.phase,
        )
        await self.publisher.publish(placed)
        for fill in state.fills:
            await self.publisher.publish(
                placed.caused(
                    OrderFilled,
                    now=self.clock(),
                    key=fill.trade_id,
                    client_order_id=record.client_order_id,
                    trade_id=fill.trade_id,
                    symbol=order.symbol,
                    side=order.side,
                    amount=fill.amount,
                    price=fill.price,
                    fee=fill.fee,
                    fee_asset=fill.fee_asset,
                )
            )

    async def _skip(self, plan: RebalancePlanned, leg: int, reason: str) -> None:
        await self.journal.note(plan.event_id, f"leg-{leg}", reason)
        await self.journal.finish_leg(plan.event_id, leg, "skipped", placed=False)

    async def _fail(self, plan: RebalancePlanned, leg: int, reason: str, placed: bool = False) -> None:
        await self.journal.note(plan.event_id, f"leg-{leg}", reason)
        await self.journal.finish_leg(plan.event_id, leg, "failed", placed=placed)
        metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="failed").inc()
        log.warning("%s", reason)

    # -- reconciliation ---------------------------------------------------------------------------------

    async def reconcile_orders(self) -> int:
        """Look up every order of ours the journal does not know to be final (in runs already finished or
        not), adopt what the venue shows; returns how many changed. Orders the venue has that are not ours
        are never touched: they are classified external (`classify_external`)."""
        changed = 0
        for order in await self.journal.open_orders():
            venue = self.venues.get(order.exchange)
            if venue is None:
                continue
            state = await self._lookup(venue, order)
            if state is None:
                continue
            await self._adopt_found(order, state)  # fills found late are published like any other
            after = await self.journal.order(order.client_order_id)
            if after is not None and (after.state, after.filled) != (order.state, order.filled):
                changed += 1
        await self.classify_external()
        return changed

    async def classify_external(self) -> dict[str, int]:
        """List the open orders of every account the journal has traded on; an order the journal does not
        know is `external`: recorded in `execution.external_orders` (logged the first time it is seen) and
        NEVER cancelled. Returns (and sets the gauge `rebal_external_orders`) how many are open per
        exchange."""
        now = self.clock()
        counts: dict[str, int] = {}
        for exchange, account in await self.journal.touched_accounts():
            venue = self.venues.get(exchange)
            if venue is None:
                continue
            try:
                listed = await venue.open_orders(account)
            except VenueError as error:
                log.warning("listing the open orders of %s on %s: %s", account, exchange, error)
                continue
            counts.setdefault(exchange, 0)
            for state in listed:
                if await self.journal.known_order(state.client_order_id):
                    continue  # ours: adopted by the look-ups of `reconcile_orders`
                counts[exchange] += 1
                looks_ours = state.client_order_id.startswith(OUR_PREFIX)
                if not await self.journal.saw_external(exchange, state, looks_ours, now):
                    continue
                what = (
                    f"{state.client_order_id} {state.side} {dec_str(state.amount)} {state.symbol}"
                    f" on {account} ({exchange})"
                )
                if looks_ours:
                    log.warning(
                        "open order %s looks like ours but is not in the journal: external, left alone", what
                    )
                else:
                    log.info("open order %s is not ours: external, never cancelled", what)
        for exchange, count in counts.items():
            metrics.EXTERNAL_ORDERS.labels(exchange=exchange).set(count)
        return counts

    # -- the kill switch --------------------------------------------------------------------------------

    async def halt(self, command: HaltTrading) -> None:
        """Refuse new runs for the portfolio (persisted) and cancel our open orders where the venue can."""
        if not await self.journal.set_halted(
            command.portfolio_id, True, command.reason, command.requested_by, command.occurred_at
        ):
            return  # a newer resume (or halt) is already recorded
        metrics.TRADING_HALTED.labels(portfolio=command.portfolio_id).set(1)
        log.warning(
            "trading halted for %s by %s: %s", command.portfolio_id, command.requested_by, command.reason
        )
        for order in await self.journal.open_orders(command.portfolio_id):
            venue = self.venues.get(order.exchange)
            if isinstance(venue, Cancels):
                try:
                    state = await venue.cancel_order(order.account, order.client_order_id, order.symbol)
                except VenueError as error:
                    log.error("cancelling %s on halt: %s", order.client_order_id, error)
                    continue
                if state is not None:
                    await self._adopt(order, state)

    async def resume(self, command: ResumeTrading) -> None:
        if not await self.journal.set_halted(
            command.portfolio_id, False, "", command.requested_by, command.occurred_at
        ):
            return
        metrics.TRADING_HALTED.labels(portfolio=command.portfolio_id).set(0)
        log.warning("trading resumed for %s by %s", command.portfolio_id, command.requested_by)

    async def restore_halts(self, portfolios: Iterable[str]) -> None:
        """Set the halted gauge from the journal at start (a halt survives restarts)."""
        halted = set(await self.journal.halted_portfolios())
        for portfolio in sorted(halted | set(portfolios)):
            metrics.TRADING_HALTED.labels(portfolio=portfolio).set(1 if portfolio in halted else 0)


def _group(order: PlannedOrder) -> tuple[str, str, str]:
    return order.exchange, order.account, order.symbol.partition("/")[2]


def _market(info: MarketInfo) -> Market:
    return Market(info.base, info.quote, info.amount_step, info.min_amount, info.min_cost, info.fee_rate)


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    on_plan: Callable[[RebalancePlanned], Awaitable[None]],
    on_halt: Callable[[HaltTrading], Awaitable[None]] | None = None,
    on_resume: Callable[[ResumeTrading], Awaitable[None]] | None = None,
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=RebalancePlanned,
        durable="executor-plans",
        handler=on_plan,
    )
    if on_halt is not None:
        bus.consume(
            broker, publisher, service=SERVICE, kind=HaltTrading, durable="executor-halt", handler=on_halt
        )
    if on_resume is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=ResumeTrading,
            durable="executor-resume",
            handler=on_resume,
        )

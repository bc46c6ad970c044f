"""Executor handlers: a non-dry-run `RebalancePlanned` in; orders on the venues, and what happened, out.

Sells first (phase 1), then buys (phase 2) sized from facts: the quote the account really holds after
the sells, at the venue's current prices (`rebal.core.sizing`). Every order's client id is derived from
the plan and the leg, and every event id from its cause, so a redelivered plan places nothing twice and
re-publishes nothing the bus has not already dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from faststream.nats import NatsBroker

from rebal import bus, metrics
from rebal.core.market import Market
from rebal.core.numbers import dec_str
from rebal.core.sizing import BuyRequest, size_buys
from rebal.events import (
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    RunStarted,
    RunStatus,
    TakeSnapshot,
    derive_id,
)
from rebal.venue import MarketInfo, OrderRejected, OrderState, Venue, VenueError
from rebal_executor.settings import ExecutorSettings

log = logging.getLogger("rebal.executor")
SERVICE = "executor"
TERMINAL = frozenset({"filled", "rejected", "cancelled"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def client_order_id(plan_id: uuid.UUID, leg: int) -> str:
    """The order's id at the venue: the same plan and leg always give the same id."""
    return f"rb-{derive_id(plan_id, leg).hex[:12]}-{leg}"


@dataclass
class Tally:
    """How a run went, leg by leg."""

    placed: int = 0
    filled: int = 0
    skipped: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, reason: str) -> None:
        self.reasons.append(reason)

    @property
    def status(self) -> RunStatus:
        return "completed_with_adjustments" if self.reasons else "completed"


@dataclass(frozen=True)
class BuyPlan:
    """Phase-2 amounts after sizing: leg → amount to place, or why it is skipped."""

    amounts: Mapping[int, Decimal]
    skipped: Mapping[int, str]


@dataclass
class Executor:
    venues: Mapping[str, Venue]
    publisher: bus.EventSink
    settings: ExecutorSettings
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def on_plan(self, plan: RebalancePlanned) -> None:
        if plan.dry_run:
            log.info("plan %s is a dry run: not executed", plan.event_id)
            return
        if not self.settings.enabled:
            log.warning("execution is disabled: plan %s not executed", plan.event_id)
            return
        run = plan.correlation_id or plan.event_id
        await self.publisher.publish(
            plan.caused(
                RunStarted,
                now=self.clock(),
                correlation_id=run,
                plan_id=plan.event_id,
                orders=len(plan.orders),
            )
        )
        tally = Tally()
        for leg, order in enumerate(plan.orders):
            if order.phase == 1:
                await self._execute(plan, leg, order, order.amount, tally)
        sized: dict[tuple[str, str, str], BuyPlan] = {}
        for leg, order in enumerate(plan.orders):
            if order.phase == 1:
                continue
            group = (order.exchange, order.account, order.symbol.partition("/")[2])
            if group not in sized:
                legs = [(i, o) for i, o in enumerate(plan.orders) if o.phase != 1 and _group(o) == group]
                sized[group] = await self._size(plan, legs, tally)
            buys = sized[group]
            if leg in buys.skipped:
                tally.skipped += 1
                tally.note(f"leg {leg} {order.symbol} {order.side} skipped: {buys.skipped[leg]}")
                continue
            await self._execute(plan, leg, order, buys.amounts[leg], tally)
        for transfer in plan.transfers:
            tally.skipped += 1
            tally.note(
                f"transfer of {dec_str(transfer.amount)} {transfer.asset} from {transfer.from_account} to "
                f"{transfer.to_account} skipped: transfers are not executed yet"
            )
        status = tally.status
        finished = plan.caused(
            RunFinished,
            now=self.clock(),
            correlation_id=run,
            plan_id=plan.event_id,
            status=status,
            placed=tally.placed,
            filled=tally.filled,
            skipped=tally.skipped,
            failed=tally.failed,
            reasons=tuple(tally.reasons),
        )
        if await self.publisher.publish(finished):
            metrics.RUNS.labels(portfolio=plan.portfolio_id, status=status).inc()
        await self.publisher.publish(plan.caused(TakeSnapshot, now=self.clock(), correlation_id=run))
        log.info("run %s %s: %d placed, %d filled", run, status, tally.placed, tally.filled)

    async def _size(
        self, plan: RebalancePlanned, legs: Sequence[tuple[int, PlannedOrder]], tally: Tally
    ) -> BuyPlan:
        """Size one account's buys against one quote from its free balance now (after the sells)."""
        exchange, account, quote = _group(legs[0][1])
        venue = self.venues.get(exchange)
        if venue is None:
            return BuyPlan({leg: order.amount for leg, order in legs}, {})
        markets = await venue.markets()
        fixed: dict[int, Decimal] = {}
        pending: list[tuple[int, PlannedOrder]] = []
        for leg, order in legs:
            # Already placed (a redelivered plan) or on no known market: placed as it is, not resized.
            known = await venue.order(account, client_order_id(plan.event_id, leg))
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
        sizing = size_buys(requests, budget, self.settings.execution.price_buffer)
        for buy in sizing.buys:
            if buy.amount != buy.planned:
                tally.note(
                    f"leg {buy.leg} {plan.orders[buy.leg].symbol} buy scaled from {dec_str(buy.planned)} to "
                    f"{dec_str(buy.amount)}: {dec_str(budget)} {quote} free after the sells"
                )
        return BuyPlan(
            {**fixed, **{buy.leg: buy.amount for buy in sizing.buys}},
            {skip.leg: skip.reason for skip in sizing.skipped},
        )

    async def _execute(
        self, plan: RebalancePlanned, leg: int, order: PlannedOrder, amount: Decimal, tally: Tally
    ) -> None:
        cid = client_order_id(plan.event_id, leg)
        what = f"leg {leg} {order.symbol} {order.side}"
        venue = self.venues.get(order.exchange)
        if venue is None:
            self._failed(plan, tally, f"{what} failed: no venue {order.exchange!r}")
            return
        state = await self._place(venue, order, cid, amount)
        if isinstance(state, str):
            self._failed(plan, tally, f"{what} rejected: {state}")
            return
        tally.placed += 1
        placed = plan.caused(
            OrderPlaced,
            now=self.clock(),
            key=leg,
            client_order_id=cid,
            account=order.account,
            exchange=order.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=state.amount,
            phase=order.phase,
        )
        await self.publisher.publish(placed)
        state = await self._settle(venue, state)
        for fill in state.fills:
            await self.publisher.publish(
                placed.caused(
                    OrderFilled,
                    now=self.clock(),
                    key=fill.trade_id,
                    client_order_id=cid,
                    trade_id=fill.trade_id,
                    symbol=order.symbol,
                    side=order.side,
                    amount=fill.amount,
                    price=fill.price,
                    fee=fill.fee,
                    fee_asset=fill.fee_asset,
                )
            )
        if state.status == "filled":
            tally.filled += 1
            metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="filled").inc()
        elif state.status in TERMINAL:
            self._failed(plan, tally, f"{what} {state.status}: {state.reason}")
        else:
            timeout = self.settings.execution.order_timeout_seconds
            self._failed(plan, tally, f"{what} still {state.status} after {timeout:g} s: left to reconcile")

    def _failed(self, plan: RebalancePlanned, tally: Tally, reason: str) -> None:
        tally.failed += 1
        tally.note(reason)
        metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="failed").inc()
        log.warning("%s", reason)

    async def _place(self, venue: Venue, order: PlannedOrder, cid: str, amount: Decimal) -> OrderState | str:
        """The order as the venue knows it, or the rejection reason. A venue error means the outcome is
        unknown: look the order up by its id, and place it again under the same id if it is not there."""
        attempts = self.settings.execution.placement_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await venue.place_order(order.account, cid, order.symbol, order.side, amount)
            except OrderRejected as rejected:
                return rejected.reason
            except VenueError as error:
                log.warning("placing %s: %s (attempt %d of %d)", cid, error, attempt, attempts)
                if attempt == attempts:
                    raise
            try:
                known = await venue.order(order.account, cid)
            except VenueError as error:
                log.warning("looking %s up: %s", cid, error)
                continue
            if known is not None:
                return known if known.status != "rejected" else known.reason
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _settle(self, venue: Venue, state: OrderState) -> OrderState:
        """Look the order up until it is filled, rejected or cancelled, or the timeout passes."""
        execution = self.settings.execution
        waited = 0.0
        while state.status not in TERMINAL and waited < execution.order_timeout_seconds:
            await self.sleep(execution.poll_interval_seconds)
            waited += execution.poll_interval_seconds
            state = await venue.order(state.account, state.client_order_id) or state
        return state


def _group(order: PlannedOrder) -> tuple[str, str, str]:
    return order.exchange, order.account, order.symbol.partition("/")[2]


def _market(info: MarketInfo) -> Market:
    return Market(info.base, info.quote, info.amount_step, info.min_amount, info.min_cost, info.fee_rate)


def register(
    broker: NatsBroker, publisher: bus.Publisher, on_plan: Callable[[RebalancePlanned], Awaitable[None]]
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=RebalancePlanned,
        durable="executor-plans",
        handler=on_plan,
    )

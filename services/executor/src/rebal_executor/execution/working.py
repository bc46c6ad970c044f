"""Working a leg: its amount sent as limit orders that rest and are re-priced or taken, and a large one as
slices over time, instead of one market order (`ExecutionSettings.order_types`, `max_order_value`).

Every order of a worked leg is written to the journal before it is sent, under a client id derived from
the plan, the leg and its attempt number, ``attempt = slice·ATTEMPTS_PER_SLICE + try``: tries 0..reprices
are the slice's limit orders, `TAKE` its market order for the rest. Which order comes next follows from
the journal alone (the leg's orders, what each filled, how each ended), so a restarted executor finds the
order it was working by its id and goes on with it, never placing a second one beside it: a leg has at
most one order that is not final at any time. A resting order is cancelled before the next is placed;
a fill that won the race against the cancel is counted, and the next order asks only for what is left.
A limit order's price is read once with its size and journaled with it: it is sent at exactly that price,
also after a restart; one proven never to have reached the venue whose price no longer holds (moved
beyond `max_price_move`) is ended unsent, and the next attempt is sized afresh under its own id.

A buy never spends more over all its orders than it was sized to spend: its share of its group's sizing
(the quote the buys step allotted it, buffer and fee in, kept with its orders), so the plan's budget holds
across slices and re-placements whatever prices do in between (`rebal.core.execution.affordable`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from rebal.core.execution import (
    ORDER_FINAL,
    affordable,
    expected_change,
    limit_price,
    slice_amount,
)
from rebal.core.numbers import dec_str
from rebal.core.sizing import BuyRequest
from rebal.events import PlannedOrder, RebalancePlanned
from rebal.venue import (
    POST_ONLY_WOULD_TAKE,
    TERMINAL_STATUSES,
    MarketInfo,
    OrderState,
    Resting,
    Venue,
    VenueError,
)
from rebal_executor.execution import guards
from rebal_executor.execution.orders import STALE_UNSENT, Limit, drive, lookup, moved_from, settle
from rebal_executor.execution.outcomes import Rejected, Stop, Unknown, client_order_id, market_of
from rebal_executor.execution.ports import Context, OrderRecord
from rebal_executor.settings import ATTEMPTS_PER_SLICE, OrderType

log = logging.getLogger("rebal.executor")

# The try of a slice that takes the rest with a market order.
TAKE = ATTEMPTS_PER_SLICE - 1

Report = Callable[[OrderRecord, OrderState], Awaitable[None]]


@dataclass(frozen=True)
class Worked:
    """How a worked leg ended: what filled of its amount; `reason` why it stopped short ("" when it did
    not), `stop` when the run must end, `placed` whether any order reached the venue."""

    amount: Decimal
    filled: Decimal
    reason: str = ""
    stop: Stop | None = None
    placed: bool = False


async def is_worked(
    ctx: Context, order: PlannedOrder, amount: Decimal, venue: Venue, existing: OrderRecord | None
) -> bool:
    """Whether a leg is worked here: it was (its order says so), or its order type is limit (and the venue
    rests orders), or it is worth more than its market's `max_order_value`. Otherwise it is one market
    order, as ever."""
    if existing is not None:
        return existing.leg_amount is not None
    execution = ctx.settings.execution
    limit = execution.order_types.of(order.account, order.symbol).type == "limit" and isinstance(
        venue, Resting
    )
    cap = execution.max_order_value.get(order.symbol)
    if (not limit and cap is None) or order.symbol not in await venue.markets():
        return False  # a market order, as ever (an unknown symbol is the venue's to refuse)
    if limit:
        return True
    price = (await venue.prices([order.symbol])).get(order.symbol, order.est_price)
    return cap is not None and amount * price > cap


async def record(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    attempt: int,
    venue: Venue,
    terms: tuple[Decimal | None, Decimal | None, Decimal | None] = (None, None, None),
) -> OrderRecord | str:
    """The order written to the journal (state created) before it is sent, or why a guardrail refuses
    it. Its notional is at the venue's last price (a buy's spending cap is derived from it); a limit
    order's price is written with it: the only price it is ever sent at. `terms`: a worked leg's whole
    amount, the order's limit price and the leg's budget (a buy's), each None when not there."""
    leg_amount, limit_price, leg_budget = terms
    price = (await venue.prices([order.symbol])).get(order.symbol, order.est_price)
    refused = await guards.notional_limit(ctx, plan, leg, order, amount, price)
    if refused:
        return refused
    return await ctx.journal.create_order(
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
            notional=amount * price,
            state="created",
            filled=Decimal(0),
            reason="",
            leg_amount=leg_amount,
            limit_price=limit_price,
            leg_budget=leg_budget,
        )
    )


def _is_limit(attempt: int, style: OrderType, venue: Venue) -> bool:
    return style.type == "limit" and isinstance(venue, Resting) and attempt % ATTEMPTS_PER_SLICE != TAKE


def next_attempt(latest: OrderRecord | None, style: OrderType, venue: Venue) -> int:
    """The attempt number of a leg's next order, from its latest: a limit order that ended without filling
    all it asked for is re-placed (the next try) until `reprices` are spent, then taken (`TAKE`);
    otherwise the next slice begins."""
    if latest is None:
        return 0
    slice_, try_ = divmod(latest.attempt, ATTEMPTS_PER_SLICE)
    if _is_limit(latest.attempt, style, venue) and latest.filled < latest.amount:
        return latest.attempt + 1 if try_ < style.reprices else slice_ * ATTEMPTS_PER_SLICE + TAKE
    return (slice_ + 1) * ATTEMPTS_PER_SLICE


async def work(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    venue: Venue,
    deadline: datetime,
    report: Report,
    budget: Decimal | None = None,
) -> Worked:
    """Work the leg until `amount` has filled, or what is left cannot be traded, or an order fails; a buy
    spends no more than `budget` over all its orders (its share of its group's sizing; kept with its
    orders, so a resumed leg has it too)."""
    style = ctx.settings.execution.order_types.of(order.account, order.symbol)
    info = (await venue.markets()).get(order.symbol)
    if info is None:
        return Worked(amount, Decimal(0), f"no market {order.symbol} at {venue.name}")
    await _report_ended(ctx, plan, leg, venue, report)
    while True:
        mine = sorted(
            (o for o in await ctx.journal.orders(plan.event_id) if o.leg == leg), key=lambda o: o.attempt
        )
        filled = sum((o.filled for o in mine), Decimal(0))
        placed = any(o.state not in ("created", "rejected", "lost") for o in mine)
        if mine and mine[-1].state not in ORDER_FINAL:
            ended = await _follow(ctx, venue, mine[-1], style, info, deadline, report)
            if isinstance(ended, Stop):
                return Worked(amount, filled, ended.reason, ended, placed)
            if isinstance(ended, Unknown):
                return Worked(amount, filled, ended.reason, placed=True)
            continue  # what it filled and how it ended are in the journal now
        why, stop = await _next_order(
            ctx, plan, leg, order, (amount, filled, budget), venue, info, style, mine
        )
        if why is not None:
            return Worked(amount, filled, why, stop, placed)


async def _report_ended(ctx: Context, plan: RebalancePlanned, leg: int, venue: Venue, report: Report) -> None:
    """A resumed leg's orders that ended with fills before a restart are reported again (the events are
    deduplicated by their ids): one that ended just before the process died is published all the same."""
    for done in await ctx.journal.orders(plan.event_id):
        if done.leg == leg and done.state in ORDER_FINAL and done.filled > 0:
            state = await lookup(venue, done)
            if state is not None:
                await report(done, state)


async def _next_order(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    progress: tuple[Decimal, Decimal, Decimal | None],
    venue: Venue,
    info: MarketInfo,
    style: OrderType,
    mine: list[OrderRecord],
) -> tuple[str | None, Stop | None]:
    """Write the leg's next order (None: written), or say why the leg ends ("": all of it filled);
    `progress` is the leg's amount, what filled of it and its budget (a buy's, or None)."""
    execution = ctx.settings.execution
    amount, filled, budget = progress
    left = amount - filled
    latest = mine[-1] if mine else None
    if (
        latest is not None
        and latest.state in ("rejected", "lost")
        and latest.reason not in (POST_ONLY_WOULD_TAKE, STALE_UNSENT)
    ):
        return f"{latest.client_order_id} {latest.state}: {latest.reason}", None
    if left <= 0:
        return "", None
    attempt = next_attempt(latest, style, venue)
    if attempt // ATTEMPTS_PER_SLICE >= execution.max_slices:
        return f"stopped after {execution.max_slices} slices", None
    if latest is not None and attempt % ATTEMPTS_PER_SLICE == 0 and execution.slice_interval_seconds:
        await ctx.sleep(execution.slice_interval_seconds)
    stop = await guards.stop_before_leg(ctx, plan)
    if stop:
        return stop.reason, stop
    # A worked buy's budget is kept with each of its orders: the first one's holds for the whole leg.
    budget = mine[0].leg_budget if mine else budget
    size, price = await _size(
        ctx, plan, leg, order, info, venue, mine, (amount, budget), left, attempt, style
    )
    if size <= 0:
        rest = f"the rest, {dec_str(left)} {info.base},"
        return f"{rest} is under the market's minimums or what the leg may still spend", None
    limit = price if _is_limit(attempt, style, venue) else None
    terms = (amount, limit, budget if order.side == "buy" else None)
    written = await record(ctx, plan, leg, order, size, attempt, venue, terms)
    return (written, None) if isinstance(written, str) else (None, None)


async def _price(venue: Venue, symbol: str, side: str, info: MarketInfo, style: OrderType | None) -> Decimal:
    """The price of the next order: its limit price (a `style` given), or the venue's last price."""
    if style is not None and isinstance(venue, Resting):
        top = await venue.book_top(symbol)
        return limit_price(side, top.bid, top.ask, style.offset_bps, info.price_step)
    return (await venue.prices([symbol]))[symbol]


async def _size(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    info: MarketInfo,
    venue: Venue,
    mine: list[OrderRecord],
    whole: tuple[Decimal, Decimal | None],
    left: Decimal,
    attempt: int,
    style: OrderType,
) -> tuple[Decimal, Decimal]:
    """The next order's amount (a slice of what is left, and for a buy no more than the leg may still
    spend; 0 when that is under the market's minimums) and its price, read once: a limit order is
    journaled with it and sent at it. `whole`: the leg's amount and budget (None: derived from the price
    when its first order was written, as a leg written before budgets were kept)."""
    amount, budget = whole
    execution = ctx.settings.execution
    limit = style if _is_limit(attempt, style, venue) else None
    price = await _price(venue, order.symbol, order.side, info, limit)
    size = slice_amount(
        left,
        execution.max_order_value.get(order.symbol),
        price,
        info.amount_step,
        info.min_amount,
        info.min_cost,
    )
    if order.side == "buy":
        buffer = execution.price_buffer
        cap = budget
        if cap is None:
            # No share of a group's sizing (a leg written before it was kept): its amount at the last
            # price when its first order was written (that order's notional), or now.
            first = mine[0] if mine else None
            sized_at = (
                first.notional / first.amount
                if first is not None
                else price
                if limit is None
                else await _price(venue, order.symbol, order.side, info, None)
            )
            cap = BuyRequest(leg, amount, sized_at, market_of(info)).cost(amount, buffer)
        spent = -expected_change(await ctx.journal.leg_fills(plan.event_id, leg)).get(info.quote, Decimal(0))
        # A limit order never pays more than its price; a market order is allowed the buffer.
        worst = price if limit is not None else price * (1 + buffer)
        size = affordable(size, cap, spent, worst, info.fee_rate, info.amount_step)
    if size < info.min_amount or size * price < info.min_cost:
        return Decimal(0), price
    return size, price


async def _follow(
    ctx: Context,
    venue: Venue,
    order: OrderRecord,
    style: OrderType,
    info: MarketInfo,
    deadline: datetime,
    report: Report,
) -> OrderState | Rejected | Unknown | Stop:
    """Send (or find) one order of the leg and follow it: a limit order rests `rest_seconds`, then is
    cancelled; whatever it filled, also in a race with the cancel, is adopted and reported."""
    limit = None
    # The price it was written at: a limit order's journaled price (one written before prices were
    # journaled: priced now, as it was then), a market order's last price then (its notional).
    price = order.notional / order.amount
    terms = style if _is_limit(order.attempt, style, venue) else None
    if terms is not None:
        price = order.limit_price or await _price(venue, order.symbol, order.side, info, terms)
        limit = Limit(price, terms.post_only, terms.rest_seconds)

    async def stale() -> str:
        return moved_from(ctx, price, await _price(venue, order.symbol, order.side, info, terms))

    outcome = await drive(ctx, venue, order, deadline, limit, stale)
    if not isinstance(outcome, OrderState):
        return outcome
    if limit is not None and outcome.status not in TERMINAL_STATUSES:
        ended = await cancel(ctx, venue, order, outcome)
        if isinstance(ended, Unknown):
            await report(order, outcome)
            return ended
        outcome = ended
    await report(order, outcome)
    return outcome


async def cancel(ctx: Context, venue: Venue, order: OrderRecord, state: OrderState) -> OrderState | Unknown:
    """Cancel a resting order and follow it until the venue shows it ended: cancelled (with what filled
    before), or filled (the fill won the race). Still open after that: unknown, and nothing more is placed
    for the leg (a second order beside a live one could buy twice)."""
    ended: OrderState | None = None
    try:
        if isinstance(venue, Resting):
            ended = await venue.cancel_order(order.account, order.client_order_id, order.symbol)
    except VenueError as error:
        log.warning("cancelling %s: %s (looked up)", order.client_order_id, error)
    ended = await settle(ctx, venue, order, ended or state)
    if ended.status not in TERMINAL_STATUSES:
        return Unknown(f"{order.client_order_id} still {ended.status} after its cancel: left to reconcile")
    return ended

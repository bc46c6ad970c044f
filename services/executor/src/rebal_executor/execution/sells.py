"""Phase 1: the sells, each sized from what the account holds now.

A sell sells `min(planned, free)`, truncated to the market's step (a "sell all" planned on a snapshot
that fees or an earlier fill have since reduced sells what is there); our own open orders locking the
asset are released first when too little is free. The second leg of a routed sell (``A/X`` then ``X/Q``)
sells at most what the first leg delivered, never the account's own X; what it strands is reported.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from rebal.core.execution import routed_sell, sell_amount
from rebal.core.numbers import MONEY_QUANTUM, dec_str
from rebal.events import PlannedOrder, RebalancePlanned
from rebal.venue import Venue
from rebal_executor.execution import guards
from rebal_executor.execution.holdings import Holdings
from rebal_executor.execution.legs import fail, place, skip
from rebal_executor.execution.outcomes import Stop
from rebal_executor.execution.ports import Context, RunRecord
from rebal_executor.execution.release import release


async def sell(
    ctx: Context,
    record: RunRecord,
    leg: int,
    order: PlannedOrder,
    at_most: Decimal | None = None,
    holdings: Holdings | None = None,
) -> Stop | None:
    """One sell leg, sized from what the account holds now (from `holdings`' last read when it is fresh
    enough for the asset, else read); never more than `at_most` when given (a sell that waited for a
    transfer sells at most its own part and what arrived)."""
    plan = record.plan
    if await ctx.journal.leg_done(plan.event_id, leg):
        return None
    stop = await guards.stop_before_leg(ctx, plan)
    if stop:
        return stop
    venue = ctx.venues.get(order.exchange)
    if venue is None:
        await fail(ctx, plan, leg, f"leg {leg} {order.symbol} sell failed: no venue {order.exchange!r}")
        return None
    existing = await ctx.journal.latest_order(plan.event_id, leg)
    amount = order.amount
    if existing is None:
        sized = await _size(ctx, plan, leg, order, venue, holdings)
        if sized is not None and at_most is not None:
            sized = await _capped(ctx, plan, leg, order, venue, sized, at_most)
        if sized is None:
            return None
        amount = sized
    first = route_first(plan, leg)
    if first is not None and existing is None:
        # A routed order's second leg sells what the first delivered, not what the plan estimated.
        delivered = await delivered_by(ctx, plan, first)
        info = (await venue.markets()).get(order.symbol)
        step = info.amount_step if info is not None else order.amount
        capped = sell_amount(amount, delivered, step)
        base = order.symbol.partition("/")[0]
        if capped <= 0:
            await skip(
                ctx,
                plan,
                leg,
                f"leg {leg} {order.symbol} sell skipped: route leg {first} delivered no {base}",
            )
            return None
        if capped < amount:
            await ctx.journal.note(
                plan.event_id,
                f"route-{leg}",
                f"leg {leg} {order.symbol} sell reduced from {dec_str(amount)} to {dec_str(capped)}: "
                f"route leg {first} delivered {dec_str(delivered)} {base}",
            )
            amount = capped
    if holdings is not None:
        holdings.touched(*order.symbol.split("/"))
    stop = await place(ctx, record, leg, order, amount, existing)
    if first is not None and await ctx.journal.leg_outcome(plan.event_id, leg) != "filled":
        delivered = await delivered_by(ctx, plan, first)
        if delivered > 0:
            await ctx.journal.note(
                plan.event_id,
                f"stranded-{leg}",
                f"route legs {first}-{leg}: {dec_str(delivered)} {order.symbol.partition('/')[0]} "
                f"delivered by leg {first} stays in {order.account} (stranded, not unwound)",
            )
    return stop


async def _size(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    venue: Venue,
    holdings: Holdings | None,
) -> Decimal | None:
    """The amount to sell now (None: the leg is skipped, nothing free)."""
    info = (await venue.markets()).get(order.symbol)
    if info is None:
        return order.amount
    if holdings is None:
        holdings = Holdings(ctx, venue, order.account)
    balances = await holdings.balances(info.base)
    free = balances.free.get(info.base, Decimal(0))
    released = False
    if free < order.amount:
        free, released = await release(ctx, plan, leg, order, info.base, order.amount, free, venue)
        if released:
            holdings.forget()
            balances = await holdings.balances(info.base)
    amount = sell_amount(order.amount, free, info.amount_step)
    locked = balances.locked.get(info.base, Decimal(0))
    if amount < order.amount and (released or locked > 0):
        await ctx.journal.note(
            plan.event_id,
            f"short-{leg}",
            f"leg {leg} {order.symbol} sell: {dec_str(order.amount - amount)} {info.base} still "
            f"locked/insufficient, not asked for ({dec_str(free)} free, "
            f"{dec_str(locked)} locked in orders left open)",
        )
    if amount <= 0:
        await skip(ctx, plan, leg, f"leg {leg} {order.symbol} sell skipped: no {info.base} free")
        return None
    if amount != order.amount:
        await ctx.journal.note(
            plan.event_id,
            f"resized-{leg}",
            f"leg {leg} {order.symbol} sell reduced from {dec_str(order.amount)} to "
            f"{dec_str(amount)}: {dec_str(free)} {info.base} free",
        )
    return amount


async def _capped(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    venue: Venue,
    amount: Decimal,
    at_most: Decimal,
) -> Decimal | None:
    """`amount` brought down to `at_most` (whole steps) for a sell that waited for transfer
    `order.after_transfer`; None (the leg skipped) when nothing is left to sell."""
    if amount <= at_most:
        return amount
    info = (await venue.markets()).get(order.symbol)
    capped = sell_amount(amount, at_most, info.amount_step if info is not None else amount)
    base = order.symbol.partition("/")[0]
    why = (
        f"at most {dec_str(at_most)} {base} to sell (the account's own part and what transfer "
        f"{order.after_transfer} brought)"
    )
    if capped <= 0:
        await skip(ctx, plan, leg, f"leg {leg} {order.symbol} sell skipped: {why}")
        return None
    await ctx.journal.note(
        plan.event_id,
        f"arrived-{leg}",
        f"leg {leg} {order.symbol} sell reduced from {dec_str(amount)} to {dec_str(capped)}: {why}",
    )
    return capped


def route_first(plan: RebalancePlanned, leg: int) -> int | None:
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


async def delivered_by(ctx: Context, plan: RebalancePlanned, leg: int) -> Decimal:
    """What a sell leg's fills delivered in its quote, net of fees, rounded down to the money quantum."""
    base, _, quote = plan.orders[leg].symbol.partition("/")
    # Venues credit proceeds rounded to a quantum; amount x price can be a hair above: round down.
    delivered = await ctx.journal.delivered(plan.event_id, leg, base, quote)
    return delivered.quantize(MONEY_QUANTUM, rounding=ROUND_DOWN)

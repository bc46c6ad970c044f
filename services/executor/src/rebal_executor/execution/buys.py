"""Phase 2: the buys, sized per (account, quote) from the quote really free after the sells, at the
venue's current prices (`rebal.core.sizing`), after checking that no price moved beyond the tolerance
since the plan. Our own open orders locking the quote are released first when too little is free."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rebal.core.numbers import dec_str
from rebal.core.sizing import BuyRequest, size_buys
from rebal.events import PlannedOrder
from rebal_executor.execution import guards
from rebal_executor.execution.legs import place, skip
from rebal_executor.execution.outcomes import BuyPlan, Stop, market_of, spend_group
from rebal_executor.execution.ports import Context, RunRecord
from rebal_executor.execution.release import release


async def buys(ctx: Context, record: RunRecord) -> Stop | None:
    plan = record.plan
    legs = [(leg, o) for leg, o in enumerate(plan.orders) if o.phase != 1]
    todo = [(leg, o) for leg, o in legs if not await ctx.journal.leg_done(plan.event_id, leg)]
    moved = await guards.prices_moved(ctx, plan, todo)
    if moved:
        return Stop("cancelled_mid_run", moved)
    sized: dict[tuple[str, str, str], BuyPlan] = {}
    for leg, order in todo:
        stop = await guards.stop_before_leg(ctx, plan)
        if stop:
            return stop
        group = spend_group(order)
        if group not in sized:
            sized[group] = await size(ctx, record, [(i, o) for i, o in todo if spend_group(o) == group])
        planned = sized[group]
        if leg in planned.skipped:
            await skip(
                ctx, plan, leg, f"leg {leg} {order.symbol} {order.side} skipped: {planned.skipped[leg]}"
            )
            continue
        existing = await ctx.journal.latest_order(plan.event_id, leg)
        stop = await place(ctx, record, leg, order, planned.amounts[leg], existing)
        if stop:
            return stop
    return None


async def size(ctx: Context, record: RunRecord, legs: Sequence[tuple[int, PlannedOrder]]) -> BuyPlan:
    """Size one account's buys against one quote from its free balance now (after the sells)."""
    plan = record.plan
    exchange, account, quote = spend_group(legs[0][1])
    venue = ctx.venues.get(exchange)
    if venue is None:
        return BuyPlan({leg: order.amount for leg, order in legs}, {})
    markets = await venue.markets()
    fixed: dict[int, Decimal] = {}
    pending: list[tuple[int, PlannedOrder]] = []
    for leg, order in legs:
        # Already written (a resumed run) or on no known market: placed as it is, not resized.
        known = await ctx.journal.latest_order(plan.event_id, leg)
        if known is not None or order.symbol not in markets:
            fixed[leg] = known.amount if known is not None else order.amount
        else:
            pending.append((leg, order))
    if not pending:
        return BuyPlan(fixed, {})
    budget = (await venue.balances(account)).free.get(quote, Decimal(0))
    prices = await venue.prices(sorted({order.symbol for _, order in pending}))
    requests = [
        BuyRequest(leg, order.amount, prices[order.symbol], market_of(markets[order.symbol]))
        for leg, order in pending
    ]
    buffer = ctx.settings.execution.price_buffer
    needed = sum((request.cost(request.amount, buffer) for request in requests), Decimal(0))
    if budget < needed:  # our own resting orders may lock the quote these buys spend: released first
        budget, _ = await release(ctx, plan, pending[0][0], pending[0][1], quote, needed, budget, venue)
    sizing = size_buys(requests, budget, buffer)
    for buy in sizing.buys:
        if buy.amount != buy.planned:
            await ctx.journal.note(
                plan.event_id,
                f"scaled-{buy.leg}",
                f"leg {buy.leg} {plan.orders[buy.leg].symbol} buy scaled from {dec_str(buy.planned)} to "
                f"{dec_str(buy.amount)}: {dec_str(budget)} {quote} free after the sells",
            )
    return BuyPlan(
        {**fixed, **{buy.leg: buy.amount for buy in sizing.buys}},
        {skip.leg: skip.reason for skip in sizing.skipped},
    )

"""Phase 2: the buys, sized per (account, asset spent) from facts, after checking that no price moved
beyond the tolerance since the plan.

What a group of buys may spend is what the venue shows free now, and — when the plan carries budgets —
never more than the plan's budget for that account and asset moved by what the run's own fills did
(`rebal.core.execution.spendable`): a deposit landing mid-run, or quote a bot holds, is never spent. The
buys are fitted into it at current prices (`rebal.core.sizing`); our own open orders locking the asset
are released first when the venue shows too little free. A routed buy (``X/Q`` then ``A/X``) whose
second leg does not fill has its intermediate X sold back to Q when the market's minimums allow, else
it is reported stranded (`rebal_stranded_assets_total`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal

from rebal import metrics
from rebal.core.execution import expected_change, routed_buy, sell_amount, spendable
from rebal.core.numbers import dec_str
from rebal.core.sizing import BuyRequest, size_buys
from rebal.events import PlannedOrder, RebalancePlanned
from rebal_executor.execution import bank, guards
from rebal_executor.execution.accounts import each_account
from rebal_executor.execution.legs import place, skip
from rebal_executor.execution.outcomes import BuyPlan, Stop, market_of, spend_group
from rebal_executor.execution.ports import Context, OrderRecord, RunRecord
from rebal_executor.execution.release import release

log = logging.getLogger("rebal.executor")

# The stages in which the venue has the order and holds what it spends (no longer in its free balance).
VENUE_HOLDS: frozenset[str] = frozenset({"accepted", "partially_filled"})


async def buys(ctx: Context, record: RunRecord, waiting: frozenset[str] = frozenset()) -> Stop | None:
    """The run's buys not yet done, but those of the `waiting` accounts (a bank transfer into them is not
    confirmed yet: `bank`)."""
    plan = record.plan
    legs = [(leg, o) for leg, o in enumerate(plan.orders) if o.phase != 1 and o.account not in waiting]
    ended = await ctx.journal.legs_done(plan.event_id)
    todo = [(leg, o) for leg, o in legs if leg not in ended]
    moved = await guards.prices_moved(ctx, plan, todo)
    if moved:
        return Stop("replan_needed", moved)  # the planner may make a fresh plan (a policy's replans)
    # Sized per (account, asset spent) when its first buy comes: each account's task sizes its own.
    sized: dict[tuple[str, str, str], BuyPlan] = {}

    async def buy(leg: int, order: PlannedOrder) -> Stop | None:
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
            return None
        existing = await ctx.journal.latest_order(plan.event_id, leg)
        return await place(
            ctx, record, leg, order, planned.amounts[leg], existing, budget=planned.costs.get(leg)
        )

    stop = await each_account(todo, buy)
    if stop:
        return stop
    for first, second in routed_buys(plan):
        done = await ctx.journal.leg_done(plan.event_id, len(plan.orders) + len(plan.transfers) + second)
        if not done and await ctx.journal.leg_outcome(plan.event_id, second) != "filled":
            stop = await unwind(ctx, record, first, second)
            if stop:
                return stop
    return None


async def _stranded(ctx: Context, plan: RebalancePlanned, second: int, reason: str) -> None:
    bought = plan.orders[second - 1]
    if await ctx.journal.add_note(plan.event_id, f"stranded-{second}", reason):
        metrics.STRANDED.labels(exchange=bought.exchange, asset=bought.symbol.partition("/")[0]).inc()
        log.error("ALERT %s", reason)


def routed_buys(plan: RebalancePlanned) -> list[tuple[int, int]]:
    """The (first, second) legs of each routed buy of the plan: ``X/Q`` then ``A/X`` on one account."""
    return [
        (leg - 1, leg)
        for leg in range(1, len(plan.orders))
        if (plan.orders[leg - 1].exchange, plan.orders[leg - 1].account)
        == (plan.orders[leg].exchange, plan.orders[leg].account)
        and plan.orders[leg - 1].phase == plan.orders[leg].phase == 2
        and routed_buy(
            plan.orders[leg - 1].side,
            plan.orders[leg - 1].symbol,
            plan.orders[leg].side,
            plan.orders[leg].symbol,
        )
    ]


async def size(ctx: Context, record: RunRecord, legs: Sequence[tuple[int, PlannedOrder]]) -> BuyPlan:
    """Size one account's buys against one asset from what may be spent of it now (after the sells)."""
    plan = record.plan
    exchange, account, quote = spend_group(legs[0][1])
    venue = ctx.venues.get(exchange)
    if venue is None:
        return BuyPlan({leg: order.amount for leg, order in legs}, {})
    markets = await venue.markets()
    fixed: dict[int, Decimal] = {}
    pending: list[tuple[int, PlannedOrder]] = []
    written: list[OrderRecord] = []
    for leg, order in legs:
        # Already written (a resumed run) or on no known market: placed as it is, not resized.
        known = await ctx.journal.latest_order(plan.event_id, leg)
        if known is not None or order.symbol not in markets:
            # A worked leg's order is one of several: the leg's whole amount is what it buys.
            fixed[leg] = (known.leg_amount or known.amount) if known is not None else order.amount
            if known is not None and order.symbol in markets:
                written.append(known)
        else:
            pending.append((leg, order))
    if not pending:
        return BuyPlan(fixed, {})
    prices = await venue.prices(sorted({order.symbol for _, order in pending} | {o.symbol for o in written}))
    requests = [
        BuyRequest(leg, order.amount, prices[order.symbol], market_of(markets[order.symbol]))
        for leg, order in pending
    ]
    buffer = ctx.settings.execution.price_buffer
    needed = sum((request.cost(request.amount, buffer) for request in requests), Decimal(0))
    # What the legs already written will still spend (a run resumed after a crash): theirs, not these
    # buys'. Off the budget always; off the free balance too unless the venue already holds it for them.
    owed = {
        o.client_order_id: BuyRequest(o.leg, o.amount, prices[o.symbol], market_of(markets[o.symbol])).cost(
            max((o.leg_amount or o.amount) - o.filled, Decimal(0)), buffer
        )
        for o in written
    }
    unheld = sum((owed[o.client_order_id] for o in written if o.state not in VENUE_HOLDS), Decimal(0))
    free = (await venue.balances(account)).free.get(quote, Decimal(0)) - unheld
    allowed = await _allowed(ctx, plan, exchange, account, quote)
    if allowed is not None:
        allowed -= sum(owed.values(), Decimal(0))
    if free < min(needed, allowed if allowed is not None else needed):
        # Our own resting orders may lock the quote these buys spend: released first.
        free, _ = await release(ctx, plan, pending[0][0], pending[0][1], quote, needed, free, venue)
    budget = free if allowed is None else spendable(allowed, Decimal(0), free)
    why = f"{dec_str(budget)} {quote} " + (
        "of the plan's budget left" if allowed is not None and allowed < free else "free after the sells"
    )
    sizing = size_buys(requests, budget, buffer)
    for buy in sizing.buys:
        if buy.amount != buy.planned:
            await ctx.journal.note(
                plan.event_id,
                f"scaled-{buy.leg}",
                f"leg {buy.leg} {plan.orders[buy.leg].symbol} buy scaled from {dec_str(buy.planned)} to "
                f"{dec_str(buy.amount)}: {why}",
            )
    by_leg = {request.leg: request for request in requests}
    return BuyPlan(
        {**fixed, **{buy.leg: buy.amount for buy in sizing.buys}},
        {skip.leg: skip.reason for skip in sizing.skipped},
        {buy.leg: by_leg[buy.leg].cost(buy.amount, buffer) for buy in sizing.buys},
    )


async def _allowed(
    ctx: Context, plan: RebalancePlanned, exchange: str, account: str, asset: str
) -> Decimal | None:
    """The plan's budget for the asset on the account moved by the run's own fills there (None: the plan
    carries no budgets, so only what the venue shows free limits the buys)."""
    if not plan.budgets:
        return None
    budget = sum(
        (b.amount for b in plan.budgets if (b.exchange, b.account, b.asset) == (exchange, account, asset)),
        Decimal(0),
    )
    fills = (await ctx.journal.run_fills(plan.event_id)).get((exchange, account), [])
    # A bank transfer in that brought less than planned: only what arrived is spent.
    short = await bank.shortfall(ctx, plan, account, asset)
    return budget + expected_change(fills).get(asset, Decimal(0)) - short


async def unwind(ctx: Context, record: RunRecord, first: int, second: int) -> Stop | None:
    """The intermediate a routed buy's first leg delivered and its second did not spend, sold back to the
    quote (an extra leg of the run), or reported stranded when that is not possible."""
    plan = record.plan
    bought = plan.orders[first]
    middle, _, quote = bought.symbol.partition("/")
    fills = [
        *await ctx.journal.leg_fills(plan.event_id, first),
        *await ctx.journal.leg_fills(plan.event_id, second),
    ]
    left = expected_change(fills).get(middle, Decimal(0))
    venue = ctx.venues.get(bought.exchange)
    if left <= 0 or venue is None:
        return None
    leg = len(plan.orders) + len(plan.transfers) + second
    info = (await venue.markets()).get(bought.symbol)
    free = (await venue.balances(bought.account)).free.get(middle, Decimal(0))
    amount = sell_amount(left, min(left, free), info.amount_step) if info is not None else Decimal(0)
    price = (
        (await venue.prices([bought.symbol])).get(bought.symbol, Decimal(0))
        if info is not None
        else Decimal(0)
    )
    what = f"route legs {first}-{second}: {dec_str(left)} {middle} delivered by leg {first}"
    if info is None or amount < info.min_amount or amount * price < info.min_cost or amount <= 0:
        await _stranded(
            ctx, plan, second, f"{what} stays in {bought.account} (stranded, under the market's minimums)"
        )
        return None
    back = PlannedOrder(
        account=bought.account,
        exchange=bought.exchange,
        symbol=bought.symbol,
        side="sell",
        amount=amount,
        est_price=price,
        est_cost=Decimal(0),
        est_fee=Decimal(0),
        phase=2,
    )
    stop = await place(ctx, record, leg, back, amount, await ctx.journal.latest_order(plan.event_id, leg))
    if await ctx.journal.leg_outcome(plan.event_id, leg) == "filled":
        await ctx.journal.note(
            plan.event_id, f"unwind-{second}", f"{what} sold back to {quote} ({dec_str(amount)}, leg {leg})"
        )
    else:
        await _stranded(
            ctx, plan, second, f"{what} stays in {bought.account} (stranded: selling it back failed)"
        )
    return stop

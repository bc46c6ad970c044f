"""Reconciliation with the venues: every order of ours the journal does not know to be final is looked up
by its client id and what the venue shows is adopted (late fills are published like any other); every
other open order on an account we trade is classified `external` — recorded, counted, NEVER cancelled.
An order of a finished run that the venue still does not show is judged `lost` once the look-ups of
successive cycles, all "not found", span the look-up window (it will never be sent again).
Runs at start and every `reconcile_interval_seconds` (the worker in `rebal_executor.app`)."""

from __future__ import annotations

import logging

from rebal import metrics
from rebal.core.execution import RUN_FINAL
from rebal.core.numbers import dec_str
from rebal.venue import VenueError
from rebal_executor.execution.legs import adopt_found
from rebal_executor.execution.orders import judge_lost
from rebal_executor.execution.outcomes import OUR_PREFIX, Absent
from rebal_executor.execution.ports import Context, OrderRecord

log = logging.getLogger("rebal.executor")


async def reconcile_orders(ctx: Context) -> int:
    """Look up every order of ours the journal does not know to be final (in runs already finished or
    not), adopt what the venue shows; returns how many changed. Orders the venue has that are not ours
    are never touched: they are classified external (`classify_external`)."""
    changed = 0
    for order in await ctx.journal.open_orders():
        venue = ctx.venues.get(order.exchange)
        if venue is None:
            continue
        try:
            state = await venue.order(order.account, order.client_order_id, symbol=order.symbol)
        except VenueError as error:
            log.warning("looking %s up: %s (proves nothing)", order.client_order_id, error)
            continue
        if state is None:
            changed += await _absent_again(ctx, order)
            continue
        ctx.absences.pop(order.client_order_id, None)
        await adopt_found(ctx, order, state)  # fills found late are published like any other
        after = await ctx.journal.order(order.client_order_id)
        if after is not None and (after.state, after.filled) != (order.state, order.filled):
            changed += 1
    await classify_external(ctx)
    return changed


async def _absent_again(ctx: Context, order: OrderRecord) -> int:
    """One more "not found" for an order that may never have reached its venue; 1 when it is judged lost
    (its run finished, so nothing will send it again, and the answers span the look-up window)."""
    if order.state not in ("submitted", "outcome_unknown"):
        return 0
    run = await ctx.journal.run(order.plan_id)
    if run is None or run.state not in RUN_FINAL:
        return 0  # the run, resumed, searches for it itself
    execution = ctx.settings.execution
    seen = ctx.absences.setdefault(order.client_order_id, [])
    seen.append(ctx.clock())
    span = (seen[-1] - seen[0]).total_seconds()
    if len(seen) < execution.lookup_queries or span < execution.lookup_window_seconds:
        return 0
    del ctx.absences[order.client_order_id]
    await judge_lost(ctx, order, Absent(len(seen), span))
    return 1


async def classify_external(ctx: Context) -> dict[str, int]:
    """List the open orders of every account the journal has traded on; an order the journal does not
    know is `external`: recorded in the journal (logged the first time it is seen) and NEVER cancelled.
    Returns (and sets the gauge `rebal_external_orders`) how many are open per exchange."""
    now = ctx.clock()
    counts: dict[str, int] = {}
    for exchange, account in await ctx.journal.touched_accounts():
        venue = ctx.venues.get(exchange)
        if venue is None:
            continue
        try:
            listed = await venue.open_orders(account)
        except VenueError as error:
            log.warning("listing the open orders of %s on %s: %s", account, exchange, error)
            continue
        counts.setdefault(exchange, 0)
        for state in listed:
            if await ctx.journal.known_order(state.client_order_id):
                continue  # ours: adopted by the look-ups of `reconcile_orders`
            counts[exchange] += 1
            looks_ours = state.client_order_id.startswith(OUR_PREFIX)
            if not await ctx.journal.saw_external(exchange, state, looks_ours, now):
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

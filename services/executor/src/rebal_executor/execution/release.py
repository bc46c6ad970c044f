"""Releasing what our own open orders lock, before a leg that needs it.

When less of an asset is free on an account than a leg needs, the orders of OURS (in the journal, not
final, of any run) that lock it there are cancelled, the fewest first (`rebal.core.execution.to_release`);
how each ended is adopted (a fill that raced the cancel is recorded once and published). An order the
journal does not know (external) is never among them: what it locks is never released nor asked for.
"""

from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal

from rebal.core.execution import OpenLock, locked_by, stage_of, to_release
from rebal.core.numbers import MONEY_QUANTUM, dec_str
from rebal.events import PlannedOrder, RebalancePlanned
from rebal.venue import Venue, VenueError
from rebal_executor.execution.legs import adopt_found
from rebal_executor.execution.ports import Cancels, Context, OrderRecord

log = logging.getLogger("rebal.executor")


async def release(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    asset: str,
    needed: Decimal,
    free: Decimal,
    venue: Venue,
) -> tuple[Decimal, bool]:
    """Cancel our open orders locking `asset` on the leg's account when `free` is below `needed`, then read
    the free balance again. Returns (free now, whether anything was cancelled)."""
    ours: dict[str, tuple[OrderRecord, Decimal]] = {}
    for held in await ctx.journal.open_orders():
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
        await ctx.journal.note(
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
        await adopt_found(ctx, held, state)
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
        await ctx.journal.note(plan.event_id, f"release-{held.client_order_id}", reason)
        log.info("run of plan %s: %s", plan.event_id, reason)
    after = (await venue.balances(order.account)).free.get(asset, Decimal(0))
    return after, True

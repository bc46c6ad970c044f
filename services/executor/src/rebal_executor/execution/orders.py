"""One order at a venue: sent under its client id (the SAME id on every retry), looked up by that id, and
followed until it is final; whatever the venue says is adopted into the journal (its stage, its filled
amount, each fill once by its trade id).

The journal moves an order to `submitted` BEFORE it is sent, so a crash after that line is resolved by a
look-up, never by sending under a new id.
"""

from __future__ import annotations

import logging

from rebal.core.execution import ORDER_FINAL, IllegalTransition, OrderStage, stage_of
from rebal.venue import (
    INSUFFICIENT_FUNDS,
    InsufficientFunds,
    OrderRejected,
    OrderState,
    Venue,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_executor.execution.outcomes import Rejected, Stop, Unknown
from rebal_executor.execution.ports import Context, OrderRecord

log = logging.getLogger("rebal.executor")


async def drive(ctx: Context, venue: Venue, order: OrderRecord) -> OrderState | Rejected | Unknown | Stop:
    """Send the order (or find it), then follow it until it is final or the timeout passes."""
    if order.state == "rejected":
        return Rejected(order.reason, order.reason == INSUFFICIENT_FUNDS)
    if order.state == "created":
        # Recorded as submitted BEFORE it is sent: a crash after this line is resolved by a look-up.
        await ctx.journal.move_order(order.client_order_id, "submitted")
        sent = await send(ctx, venue, order)
    else:
        # Written and perhaps sent before a crash or a lost answer: the venue says whether it has it.
        found = await lookup(venue, order)
        if found is not None:
            sent = found
        elif order.state in ("submitted", "outcome_unknown"):
            sent = await send(ctx, venue, order)  # never seen by the venue: the SAME id again
        else:
            return Unknown(
                f"{order.client_order_id} is {order.state} in the journal but the venue does not show it"
            )
    if not isinstance(sent, OrderState):
        return sent
    return await settle(ctx, venue, order, sent)


async def send(ctx: Context, venue: Venue, order: OrderRecord) -> OrderState | Rejected | Unknown | Stop:
    execution = ctx.settings.execution
    cid = order.client_order_id
    for attempt in range(1, execution.placement_attempts + 1):
        if attempt > 1:
            await ctx.journal.move_order(cid, "submitted")  # sent again, under the same id
        try:
            return await venue.place_order(order.account, cid, order.symbol, order.side, order.amount)
        except OrderRejected as rejected:
            await ctx.journal.move_order(cid, "rejected", reason=rejected.reason)
            return Rejected(rejected.reason, isinstance(rejected, InsufficientFunds))
        except VenueAuthError as error:
            log.error("venue %s refused our credentials placing %s: %s", venue.name, cid, error)
            await ctx.journal.move_order(cid, "rejected", reason="authentication refused")
            return Stop("error", f"authentication refused by {venue.name}: {error}; trading stopped")
        except VenueError as error:
            # No answer, or a retryable refusal: the outcome is unknown until a look-up says.
            await ctx.journal.move_order(cid, "outcome_unknown", reason=type(error).__name__)
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
            await ctx.sleep(delay)
        known = await lookup(venue, order)
        if known is not None:
            return known
    return Unknown(f"{cid} outcome unknown after {execution.placement_attempts} attempts: left to reconcile")


async def lookup(venue: Venue, order: OrderRecord) -> OrderState | None:
    try:
        return await venue.order(order.account, order.client_order_id, symbol=order.symbol)
    except VenueError as error:
        log.warning("looking %s up: %s", order.client_order_id, error)
        return None


async def settle(ctx: Context, venue: Venue, order: OrderRecord, state: OrderState) -> OrderState:
    """Record what the venue shows, and look the order up until it is final or the timeout passes."""
    execution = ctx.settings.execution
    waited = 0.0
    await adopt(ctx, order, state)
    while (
        stage_of(state.status, state.filled) not in ORDER_FINAL and waited < execution.order_timeout_seconds
    ):
        await ctx.sleep(execution.poll_interval_seconds)
        waited += execution.poll_interval_seconds
        state = await lookup(venue, order) or state
        await adopt(ctx, order, state)
    return state


async def adopt(ctx: Context, order: OrderRecord, state: OrderState) -> int:
    """Make the journal say what the venue says about our order (its stage, filled amount, fills);
    returns how many fills were new."""
    stage: OrderStage = stage_of(state.status, state.filled)
    moved = await ctx.journal.move_order(
        order.client_order_id, stage, filled=state.filled, reason=state.reason
    )
    if isinstance(moved, IllegalTransition):
        log.error("%s: %s (the venue's answer is kept in the log only)", order.client_order_id, moved.reason)
    new = 0
    for fill in state.fills:
        new += await ctx.journal.record_fill(order.exchange, order.client_order_id, fill)
    return new

"""One order at a venue: sent under its client id, looked up by that id, followed until it is final, and
whatever the venue says adopted into the journal (its stage, its filled amount, each fill once by its
trade id).

A timeout is not evidence. The journal moves an order to `submitted` BEFORE it is sent; a submit without
an answer (or a look-up that fails) leaves its outcome unknown, and the order is looked up again and
again over a window (`search`): found, it is adopted; a look-up that fails proves nothing; only look-ups
spread over the whole window that all answer "not found" prove the venue never saw it. Only then is it
sent again, under the SAME id (a venue may take an id again once its earlier order has ended: a blind
resend trades twice). A venue's "duplicate client order id" means the order exists. A rate limit is a
refusal, never a failure: the same id is sent again after the wait, until the run's deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from rebal.core.execution import ORDER_FINAL, IllegalTransition, OrderStage, price_moved, stage_of
from rebal.core.numbers import dec_str
from rebal.venue import (
    INSUFFICIENT_FUNDS,
    ClientIdInUse,
    InsufficientFunds,
    OrderRejected,
    OrderState,
    Venue,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_executor.execution.outcomes import Absent, Rejected, Stop, Unanswered, Unknown
from rebal_executor.execution.ports import Context, OrderRecord

log = logging.getLogger("rebal.executor")


# Why an order proven never to have reached the venue was ended instead of sent again: the price it was
# written at no longer holds at the venue (the leg goes on with a fresh order, under the next id).
STALE_UNSENT = "stale_unsent"


@dataclass(frozen=True)
class Limit:
    """A limit order's terms: its price (the journaled one), whether it is post-only (a maker order), and
    how long it rests before the caller cancels it."""

    price: Decimal
    post_only: bool
    rest_seconds: float


# Why the price an order was written at no longer holds at the venue now ("" when it does).
Stale = Callable[[], Awaitable[str]]


def moved_from(ctx: Context, written_at: Decimal, now: Decimal) -> str:
    """Why an order written at `written_at` must not be sent at `now` ("" when the price still holds:
    within `execution.max_price_move`)."""
    tolerance = ctx.settings.execution.max_price_move
    if not price_moved(written_at, now, tolerance):
        return ""
    return f"written at {dec_str(written_at)}, more than {dec_str(tolerance * 100)}% from {dec_str(now)}"


async def drive(
    ctx: Context,
    venue: Venue,
    order: OrderRecord,
    deadline: datetime,
    limit: Limit | None = None,
    stale: Stale | None = None,
) -> OrderState | Rejected | Unknown | Stop:
    """Send the order (or find it), then follow it until it is final or the timeout passes (a `limit`
    order: until it has rested `limit.rest_seconds`). One proven never seen is sent again only while
    `stale` (when given) says its price still holds; else it is ended unsent (lost, `STALE_UNSENT`)."""
    if order.state == "rejected":
        return Rejected(order.reason, order.reason == INSUFFICIENT_FUNDS)
    if order.state == "created":
        # Recorded as submitted BEFORE it is sent: a crash after this line is resolved by a look-up.
        await ctx.journal.move_order(order.client_order_id, "submitted")
        sent = await send(ctx, venue, order, deadline, limit)
    else:
        # Written and perhaps sent before a crash or a lost answer: the venue says whether it has it.
        found = await search(ctx, venue, order)
        if isinstance(found, OrderState):
            sent = found
        elif isinstance(found, Unanswered):
            return Unknown(f"{order.client_order_id} outcome unknown ({found.reason}): left to reconcile")
        elif order.state in ("submitted", "outcome_unknown"):
            moved = await stale() if stale is not None else ""
            if moved:
                # Never seen, its price no longer holds: ended unsent, never re-priced under its id.
                await ctx.journal.move_order(order.client_order_id, "lost", reason=STALE_UNSENT)
                log.warning("%s never reached the venue and is not sent: %s", order.client_order_id, moved)
                return Rejected(STALE_UNSENT, False)
            sent = await send(ctx, venue, order, deadline, limit)  # proven never seen: the SAME id again
        else:
            return Unknown(
                f"{order.client_order_id} is {order.state} in the journal but the venue does not show it"
            )
    if not isinstance(sent, OrderState):
        return sent
    return await settle(ctx, venue, order, sent, limit.rest_seconds if limit is not None else None)


async def send(
    ctx: Context, venue: Venue, order: OrderRecord, deadline: datetime, limit: Limit | None = None
) -> OrderState | Rejected | Unknown | Stop:
    """Place the order under its id; after a lost answer, search for it; send again only once absent."""
    execution = ctx.settings.execution
    cid = order.client_order_id
    sends = limited = 0
    # Rate-limit waits stop at the run's deadline (counted by what was waited: also with a still clock).
    patience = (deadline - ctx.clock()).total_seconds()
    waited = 0.0
    while True:
        delay = 0.0
        try:
            return await _submit(venue, order, limit)
        except VenueRateLimited as error:
            # Refused before it was processed: not taken. Wait, then the same id again.
            limited += 1
            delay = _backoff(ctx, error.retry_after, limited)
            if waited + delay > patience:
                await ctx.journal.move_order(cid, "rejected", reason="rate_limited")
                return Stop(
                    "timed_out",
                    f"{cid} was refused by rate limits {limited} times until the run's deadline: not placed",
                )
            log.warning("placing %s: %s (again in %.2f s, the same id)", cid, error, delay)
            waited += delay
        except (OrderRejected, VenueAuthError) as error:
            return await _refused(ctx, venue, cid, error)
        except VenueError as error:
            # No answer (or the venue says the id is in use): the outcome is unknown until found or proven
            # absent. Never rejected: the venue may hold it.
            sends += 1
            await ctx.journal.move_order(cid, "outcome_unknown", reason=type(error).__name__)
            log.warning("placing %s: %s: looking it up", cid, error)
            found = await search(ctx, venue, order)
            if isinstance(found, Unanswered):
                return Unknown(f"{cid} outcome unknown ({found.reason}): left to reconcile")
            if isinstance(found, OrderState):
                return found
            if isinstance(error, ClientIdInUse) or sends >= execution.placement_attempts:
                return Unknown(f"{cid} not shown by the venue after {sends} sends: left to reconcile")
            delay = min(execution.retry_base_seconds * 2 ** (sends - 1), execution.retry_max_seconds)
            await ctx.journal.move_order(cid, "submitted")  # proven absent: sent again, under the same id
        await ctx.sleep(delay)


async def _submit(venue: Venue, order: OrderRecord, limit: Limit | None) -> OrderState:
    """One submit: a market order, or a limit order on its terms."""
    if limit is None:
        return await venue.place_order(
            order.account, order.client_order_id, order.symbol, order.side, order.amount
        )
    return await venue.place_order(
        order.account,
        order.client_order_id,
        order.symbol,
        order.side,
        order.amount,
        price=limit.price,
        post_only=limit.post_only,
    )


def _backoff(ctx: Context, retry_after: float | None, refusals: int) -> float:
    """How long to wait after a rate limit: the venue's Retry-After, else base·2^(n-1), capped."""
    execution = ctx.settings.execution
    delay = (
        retry_after if retry_after is not None else execution.rate_limit_base_seconds * 2 ** (refusals - 1)
    )
    return min(delay, execution.rate_limit_max_seconds)


async def _refused(
    ctx: Context, venue: Venue, cid: str, error: OrderRejected | VenueAuthError
) -> Rejected | Stop:
    """A definite refusal: the venue holds no order under the id (or refuses our keys: stop trading)."""
    if isinstance(error, OrderRejected):
        await ctx.journal.move_order(cid, "rejected", reason=error.reason)
        return Rejected(error.reason, isinstance(error, InsufficientFunds))
    log.error("venue %s refused our credentials placing %s: %s", venue.name, cid, error)
    await ctx.journal.move_order(cid, "rejected", reason="authentication refused")
    return Stop("error", f"authentication refused by {venue.name}: {error}; trading stopped")


async def search(ctx: Context, venue: Venue, order: OrderRecord) -> OrderState | Absent | Unanswered:
    """Look the order up by its client id every `lookup_interval_seconds` until it is found, or proven
    absent (at least `lookup_queries` look-ups spanning `lookup_window_seconds`, every one answered "not
    found"), or twice the window passed without that proof (look-ups failing: still unknown)."""
    execution = ctx.settings.execution
    window, interval = execution.lookup_window_seconds, execution.lookup_interval_seconds
    elapsed = 0.0
    answered: list[float] = []
    failure = ""
    while True:
        try:
            state = await venue.order(order.account, order.client_order_id, symbol=order.symbol)
        except VenueError as error:
            failure = f"look-ups failed: {type(error).__name__}"
            log.warning("looking %s up: %s (proves nothing)", order.client_order_id, error)
        else:
            if state is not None:
                return state
            answered.append(elapsed)
        if len(answered) >= execution.lookup_queries and answered[-1] - answered[0] >= window:
            return Absent(len(answered), answered[-1] - answered[0])
        if elapsed >= 2 * window:
            return Unanswered(failure or "no look-up answered")
        await ctx.sleep(interval)
        elapsed += interval


async def settle(
    ctx: Context, venue: Venue, order: OrderRecord, state: OrderState, timeout: float | None = None
) -> OrderState:
    """Record what the venue shows, and look the order up until it is final or the timeout passes
    (`order_timeout_seconds` unless given)."""
    execution = ctx.settings.execution
    timeout = execution.order_timeout_seconds if timeout is None else timeout
    waited = 0.0
    await adopt(ctx, order, state)
    while stage_of(state.status, state.filled) not in ORDER_FINAL and waited < timeout:
        await ctx.sleep(execution.poll_interval_seconds)
        waited += execution.poll_interval_seconds
        state = await lookup(venue, order) or state
        await adopt(ctx, order, state)
    return state


async def lookup(venue: Venue, order: OrderRecord) -> OrderState | None:
    """One look-up (None: not shown now, or the look-up failed: neither proves anything)."""
    try:
        return await venue.order(order.account, order.client_order_id, symbol=order.symbol)
    except VenueError as error:
        log.warning("looking %s up: %s", order.client_order_id, error)
        return None


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


async def judge_lost(ctx: Context, order: OrderRecord, absent: Absent) -> str:
    """Record an order proven never seen by the venue, that will not be sent again, as `lost`."""
    reason = (
        f"{order.client_order_id} never reached the venue: judged lost after {absent.queries} look-ups "
        f"over {absent.seconds:g} s"
    )
    await ctx.journal.move_order(order.client_order_id, "lost", reason=reason)
    log.warning("%s", reason)
    return reason

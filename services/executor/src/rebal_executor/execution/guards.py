"""Pre-trade checks: whether a run may start, whether it may go on before its next leg, whether an order
may be sent (notional limits) and whether prices moved too far for the buys. Each answers with a reason
(or `Stop`), never by acting: the steps decide what to do with it. The rules themselves are pure
(`rebal.core.execution`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from rebal.core.display import percent_text, price_text
from rebal.core.execution import notional_refusal, price_moved
from rebal.core.numbers import dec_str
from rebal.events import PlannedOrder, RebalancePlanned
from rebal_executor.execution.outcomes import Stop
from rebal_executor.execution.ports import Context


def started(ctx: Context, plan: RebalancePlanned) -> datetime:
    """When the run's clock started: its plan's time, or the operator's latest confirmation of a bank
    transfer its buys waited for (days may pass in between: the buys then have the whole timeout)."""
    restarted = ctx.restarted.get(plan.event_id)
    return plan.occurred_at if restarted is None else max(plan.occurred_at, restarted)


def deadline(ctx: Context, plan: RebalancePlanned) -> datetime:
    """When the run must have ended: its clock's start (`started`) + run_timeout_seconds."""
    return started(ctx, plan) + timedelta(seconds=ctx.settings.execution.run_timeout_seconds)


def seconds_late(ctx: Context, plan: RebalancePlanned) -> float:
    """Seconds past the run's deadline (`deadline`); <= 0 while in time."""
    return (ctx.clock() - deadline(ctx, plan)).total_seconds()


async def refusal(ctx: Context, plan: RebalancePlanned) -> str:
    """Why a queued run must not start ("" when it may): halted, too old, or live trading off."""
    if await ctx.journal.halted(plan.portfolio_id):
        return f"trading is halted for portfolio {plan.portfolio_id}: the run was not started"
    if seconds_late(ctx, plan) > 0:
        timeout = ctx.settings.execution.run_timeout_seconds
        return f"the plan is more than {timeout:g} s old: not started (re-plan with fresh prices)"
    if not ctx.settings.live:
        return (
            "live trading is disabled: nothing was sent (set live = true, REBAL__LIVE=true, in the "
            "executor's configuration to execute plans)"
        )
    return ""


async def stale(ctx: Context, plan: RebalancePlanned) -> str:
    """Why a plan must not run because what it was made from is out of date ("" when it may): its snapshot
    was taken before the end of the portfolio's last run that traded, so it plans again what that run
    already did (a second trigger on the same facts; a plan made while a run was under way)."""
    taken = plan.snapshot_taken_at
    ended = await ctx.journal.last_run_end(plan.portfolio_id)
    if taken is None or ended is None or taken > ended:
        return ""
    return (
        f"the plan was made from snapshot {plan.snapshot_id} taken at {taken.isoformat()}, not after the "
        f"end of portfolio {plan.portfolio_id}'s last run ({ended.isoformat()}): not started (re-plan from "
        "a newer snapshot)"
    )


async def stop_before_leg(ctx: Context, plan: RebalancePlanned) -> Stop | None:
    """Whether a running run must stop before its next leg: halted mid-run, or past its deadline."""
    if await ctx.journal.halted(plan.portfolio_id):
        return Stop("cancelled_mid_run", f"trading halted for portfolio {plan.portfolio_id} mid-run")
    if seconds_late(ctx, plan) > 0:
        timeout = ctx.settings.execution.run_timeout_seconds
        return Stop(
            "timed_out",
            f"the run did not end within {timeout:g} s of its plan: stopped before its next leg",
        )
    return None


async def notional_limit(
    ctx: Context, plan: RebalancePlanned, leg: int, order: PlannedOrder, amount: Decimal, price: Decimal
) -> str:
    """Why an order of `amount` at `price` may not be sent under the notional limits ("" if it may)."""
    execution = ctx.settings.execution
    notional = amount * price
    # What the run sent so far is a sum over its orders: asked only when a run limit needs it (asked for
    # every leg, it made a 100k-order run quadratic).
    sent = Decimal(0)
    if execution.max_run_notional is not None:
        sent = await ctx.journal.sent_notional(plan.event_id)
    refused = notional_refusal(notional, sent, execution.max_order_notional, execution.max_run_notional)
    if not refused:
        return ""
    limit = execution.max_order_notional if refused.endswith("order_notional") else execution.max_run_notional
    return (
        f"leg {leg} {order.symbol} {order.side} skipped: {refused} ({dec_str(amount)} x "
        f"{dec_str(price)} = {dec_str(notional)}, limit {dec_str(limit or Decimal(0))})"
    )


async def prices_moved(ctx: Context, plan: RebalancePlanned, legs: Sequence[tuple[int, PlannedOrder]]) -> str:
    """Why the buys must not go on (a price moved beyond the tolerance since the plan), or ""."""
    tolerance = ctx.settings.execution.max_price_move
    by_venue: dict[str, list[PlannedOrder]] = {}
    written = await ctx.journal.legs_written(plan.event_id)
    for leg, order in legs:
        if leg not in written and order.est_price > 0:
            by_venue.setdefault(order.exchange, []).append(order)
    for exchange, orders in sorted(by_venue.items()):
        venue = ctx.venues.get(exchange)
        if venue is None:
            continue
        prices = await venue.prices(sorted({o.symbol for o in orders}))
        for order in orders:
            now = prices.get(order.symbol)
            if now is not None and price_moved(order.est_price, now, tolerance):
                quote = order.symbol.partition("/")[2]
                moved = percent_text(abs(now / order.est_price - 1))
                limit = dec_str(tolerance * 100)
                return (
                    f"re-plan needed: {order.symbol} is at {price_text(now, quote)}, planned at "
                    f"{price_text(order.est_price, quote)} ({moved} away, more than {limit}%);"
                    " the buys were not placed"
                )
    return ""

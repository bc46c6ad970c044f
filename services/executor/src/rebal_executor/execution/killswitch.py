"""The kill switch: a halt is persisted per portfolio (it survives restarts), refuses new runs, stops a
running one before its next leg, and cancels our open orders where the venue can (a fill that wins the
race with the cancel is recorded and published like any other); a resume lifts it.
Halt and resume arrive on two consumers: the later command, by its own time, wins."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from rebal import metrics
from rebal.events import HaltApplied, HaltTrading, ResumeTrading
from rebal.venue import VenueError
from rebal_executor.execution.legs import adopt_found
from rebal_executor.execution.ports import Cancels, Context

log = logging.getLogger("rebal.executor")


async def halt(ctx: Context, command: HaltTrading) -> None:
    """Refuse new runs for the portfolio (persisted) and cancel our open orders where the venue can."""
    in_force = await ctx.journal.set_halted(
        command.portfolio_id, True, command.reason, command.requested_by, command.occurred_at
    )
    # The operator's answer: recorded (or not, when a newer resume was), before the cancels, which may
    # take long; a redelivered halt publishes the same id again, which the bus drops.
    await ctx.publisher.publish(
        command.caused(HaltApplied, now=ctx.clock(), reason=command.reason, in_force=in_force)
    )
    if not in_force:
        return  # a newer resume (or halt) is already recorded
    metrics.TRADING_HALTED.labels(portfolio=command.portfolio_id).set(1)
    log.warning("trading halted for %s by %s: %s", command.portfolio_id, command.requested_by, command.reason)
    for order in await ctx.journal.open_orders(command.portfolio_id):
        venue = ctx.venues.get(order.exchange)
        if isinstance(venue, Cancels):
            try:
                state = await venue.cancel_order(order.account, order.client_order_id, order.symbol)
            except VenueError as error:
                log.error("cancelling %s on halt: %s", order.client_order_id, error)
                continue
            if state is not None:
                await adopt_found(ctx, order, state)  # a fill that won the race is published too


async def resume(ctx: Context, command: ResumeTrading) -> None:
    if not await ctx.journal.set_halted(
        command.portfolio_id, False, "", command.requested_by, command.occurred_at
    ):
        return
    metrics.TRADING_HALTED.labels(portfolio=command.portfolio_id).set(0)
    log.warning("trading resumed for %s by %s", command.portfolio_id, command.requested_by)


async def restore_halts(ctx: Context, portfolios: Iterable[str]) -> None:
    """Set the halted gauge from the journal at start (a halt survives restarts)."""
    halted = set(await ctx.journal.halted_portfolios())
    for portfolio in sorted(halted | set(portfolios)):
        metrics.TRADING_HALTED.labels(portfolio=portfolio).set(1 if portfolio in halted else 0)

"""One leg of a plan: its order written to the journal (state `created`) before it is sent, under a
guardrail check; driven at the venue; resized once after an insufficient-funds refusal (a new attempt,
so a new client id); published as `OrderPlaced`/`OrderFilled`; and its outcome recorded for the run
report (filled, failed or skipped, with the reason)."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from rebal import metrics
from rebal.core.execution import sell_amount
from rebal.core.numbers import dec_str
from rebal.core.sizing import BuyRequest, size_buys
from rebal.events import OrderFilled, OrderPlaced, PlannedOrder, RebalancePlanned
from rebal.venue import TERMINAL_STATUSES, OrderState, Venue
from rebal_executor.execution import guards, working
from rebal_executor.execution.orders import STALE_UNSENT, adopt, drive, judge_lost, lookup, moved_from, search
from rebal_executor.execution.outcomes import (
    Absent,
    Rejected,
    Stop,
    Unanswered,
    Unknown,
    describe,
    market_of,
)
from rebal_executor.execution.ports import MAYBE_LIVE, Context, OrderRecord, RunRecord

log = logging.getLogger("rebal.executor")


async def skip(ctx: Context, plan: RebalancePlanned, leg: int, reason: str) -> None:
    await ctx.journal.note(plan.event_id, f"leg-{leg}", reason)
    await ctx.journal.finish_leg(plan.event_id, leg, "skipped", placed=False)


async def fail(ctx: Context, plan: RebalancePlanned, leg: int, reason: str, placed: bool = False) -> None:
    await ctx.journal.note(plan.event_id, f"leg-{leg}", reason)
    await ctx.journal.finish_leg(plan.event_id, leg, "failed", placed=placed)
    metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="failed").inc()
    log.warning("%s", reason)


async def place(
    ctx: Context,
    record: RunRecord,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    existing: OrderRecord | None,
    *,
    venue: Venue | None = None,
    resizable: bool = True,
    budget: Decimal | None = None,
) -> Stop | None:
    """Write (unless already written), send, settle and report one leg; a `Stop` ends the run. `venue`
    places it instead of the plan's exchange (a futures leg's), only a `resizable` leg is sized again
    after an insufficient-funds refusal, and a worked buy never spends more than its `budget` (its share
    of its group's sizing)."""
    plan = record.plan
    what = describe(leg, order)
    venue = venue or ctx.venues.get(order.exchange)
    if venue is None:
        await fail(ctx, plan, leg, f"{what} failed: no venue {order.exchange!r}")
        return None
    if await working.is_worked(ctx, order, amount, venue, existing):
        whole = existing.leg_amount if existing is not None and existing.leg_amount else amount
        return await work(ctx, record, leg, order, whole, venue, budget)
    return await _market(ctx, record, leg, order, amount, existing, venue, resizable)


async def _market(
    ctx: Context,
    record: RunRecord,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    existing: OrderRecord | None,
    venue: Venue,
    resizable: bool,
) -> Stop | None:
    """A leg placed as one market order (resized once after an insufficient-funds refusal)."""
    plan = record.plan
    what = describe(leg, order)
    if existing is None:
        existing = await write(ctx, plan, leg, order, amount, 0, venue)
        if existing is None:
            return None
    deadline = guards.deadline(ctx, plan)
    written = existing
    moved = ""

    async def stale() -> str:
        # Written before a restart and proven never seen: sent only while the price it was written at
        # (its notional: the venue's last price then) still holds, as a worked leg's orders are.
        nonlocal moved
        now = (await venue.prices([written.symbol]))[written.symbol]
        moved = moved_from(ctx, written.notional / written.amount, now)
        return moved

    outcome = await drive(ctx, venue, existing, deadline, stale=stale)
    if isinstance(outcome, Rejected) and outcome.reason == STALE_UNSENT:
        await skip(
            ctx, plan, leg, f"{what} not sent: it never reached the venue before a restart, and was {moved}"
        )
        return Stop("replan_needed", f"re-plan needed: {what} was {moved}; the run stopped before sending it")
    if isinstance(outcome, Rejected) and outcome.insufficient_funds and existing.attempt == 0 and resizable:
        resized = await resize(ctx, plan, leg, order, existing, venue)
        if resized is not None:
            outcome = await drive(ctx, venue, resized, deadline)
            existing = resized
    if isinstance(outcome, Stop):
        await fail(ctx, plan, leg, f"{what} failed: {outcome.reason}")
        return outcome
    if isinstance(outcome, Rejected):
        await fail(ctx, plan, leg, f"{what} rejected: {outcome.reason}")
        return None
    if isinstance(outcome, Unknown):
        await fail(ctx, plan, leg, f"{what} failed: {outcome.reason}", placed=False)
        return None
    await publish(ctx, plan, record.run_id, existing, order, outcome)
    if outcome.status == "filled":
        await ctx.journal.finish_leg(plan.event_id, leg, "filled", placed=True)
        metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="filled").inc()
    elif outcome.status in ("cancelled", "rejected", "expired"):
        detail = f": {outcome.reason}" if outcome.reason else ""
        await fail(ctx, plan, leg, f"{what} {outcome.status}{detail}", placed=outcome.status != "rejected")
    else:
        timeout = ctx.settings.execution.order_timeout_seconds
        await fail(
            ctx, plan, leg, f"{what} still {outcome.status} after {timeout:g} s: left to reconcile", True
        )
    return None


async def work(
    ctx: Context,
    record: RunRecord,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    venue: Venue,
    budget: Decimal | None = None,
) -> Stop | None:
    """A leg worked as several orders (`working`): each order published as it ends, the leg reported as
    filled when all of it did, else failed with what filled and why it stopped."""
    plan = record.plan
    what = describe(leg, order)

    async def report(sent: OrderRecord, state: OrderState) -> None:
        await publish(ctx, plan, record.run_id, sent, order, state)

    deadline = guards.deadline(ctx, plan)
    worked = await working.work(ctx, plan, leg, order, amount, venue, deadline, report, budget)
    if not worked.reason:
        await ctx.journal.finish_leg(plan.event_id, leg, "filled", placed=True)
        metrics.ORDERS.labels(portfolio=plan.portfolio_id, status="filled").inc()
        return None
    base = order.symbol.partition("/")[0]
    done = f"{dec_str(worked.filled)} of {dec_str(worked.amount)} {base} filled"
    await fail(ctx, plan, leg, f"{what} stopped, {done}: {worked.reason}", placed=worked.placed)
    return worked.stop


async def resolve(ctx: Context, record: RunRecord, leg: int) -> None:
    """End a leg the run will not go on with (it stopped): an order of it the venue may hold is searched
    for, or judged lost when look-ups over the window prove it never arrived; found still open (a worked
    leg's resting limit order), it is cancelled, so that nothing of a run that ended stays live at the
    venue, and what it filled is recorded; the leg is skipped when it never had an order."""
    plan = record.plan
    order = await ctx.journal.latest_order(plan.event_id, leg)
    venue = ctx.venues.get(order.exchange) if order is not None else None
    if order is None or venue is None or order.state not in MAYBE_LIVE:
        await ctx.journal.finish_leg(plan.event_id, leg, "skipped", placed=False)
        return
    what = describe(leg, planned_of(plan, order))
    found: OrderState | None
    if order.state in ("submitted", "outcome_unknown"):
        searched = await search(ctx, venue, order)
        if isinstance(searched, Absent):
            await fail(ctx, plan, leg, f"{what} failed: {await judge_lost(ctx, order, searched)}")
            return
        if isinstance(searched, Unanswered):
            await fail(ctx, plan, leg, f"{what} failed: outcome unknown ({searched.reason})")
            return
        found = searched
    else:
        found = await lookup(venue, order)  # accepted: the venue holds it
    ended = await _end_found(ctx, record, order, venue, found)
    if isinstance(ended, OrderState) and ended.status == "filled":
        await ctx.journal.finish_leg(plan.event_id, leg, "filled", placed=True)
        return
    detail = ended.status if isinstance(ended, OrderState) else f"failed: {ended.reason}"
    await ctx.journal.note(plan.event_id, f"leg-{leg}", f"{what} {detail}")
    await ctx.journal.finish_leg(plan.event_id, leg, "failed", placed=True)


async def _end_found(
    ctx: Context, record: RunRecord, order: OrderRecord, venue: Venue, found: OrderState | None
) -> OrderState | Unknown:
    """How a stopped leg's order found at the venue ended: adopted when final, else cancelled first (what
    it filled, also in a race with the cancel, recorded and published); unknown when the venue does not
    show it or the cancel is not confirmed (left to reconcile)."""
    if found is None:
        return Unknown(f"{order.client_order_id} not shown by the venue: left to reconcile")
    if found.status in TERMINAL_STATUSES:
        await adopt_found(ctx, order, found)
        return found
    ended = await working.cancel(ctx, venue, order, found)
    if isinstance(ended, OrderState):
        plan = record.plan
        await publish(ctx, plan, record.run_id, order, planned_of(plan, order), ended)
    return ended


async def write(
    ctx: Context,
    plan: RebalancePlanned,
    leg: int,
    order: PlannedOrder,
    amount: Decimal,
    attempt: int,
    venue: Venue,
) -> OrderRecord | None:
    """The order written to the journal (state created) before it is sent, or None when a guardrail
    refuses it (the leg is skipped with the reason)."""
    written = await working.record(ctx, plan, leg, order, amount, attempt, venue)
    if isinstance(written, str):
        await skip(ctx, plan, leg, written)
        return None
    return written


async def resize(
    ctx: Context, plan: RebalancePlanned, leg: int, order: PlannedOrder, rejected: OrderRecord, venue: Venue
) -> OrderRecord | None:
    """After an insufficient-funds rejection: refresh the balance and size the leg again, once (a new
    attempt, so a new client id: the venue recorded the first one as rejected)."""
    info = (await venue.markets()).get(order.symbol)
    if info is None:
        return None
    free = (await venue.balances(order.account)).free
    if order.side == "sell":
        amount = sell_amount(rejected.amount, free.get(info.base, Decimal(0)), info.amount_step)
    else:
        price = (await venue.prices([order.symbol]))[order.symbol]
        sizing = size_buys(
            [BuyRequest(leg, rejected.amount, price, market_of(info))],
            free.get(info.quote, Decimal(0)),
            ctx.settings.execution.price_buffer,
        )
        amount = sizing.buys[0].amount if sizing.buys else Decimal(0)
    if amount <= 0 or amount >= rejected.amount:
        return None
    await ctx.journal.note(
        plan.event_id,
        f"refunded-{leg}",
        f"leg {leg} {order.symbol} {order.side} resized from {dec_str(rejected.amount)} to "
        f"{dec_str(amount)} after insufficient funds",
    )
    return await write(ctx, plan, leg, order, amount, rejected.attempt + 1, venue)


async def publish(
    ctx: Context,
    plan: RebalancePlanned,
    run_id: uuid.UUID,
    record: OrderRecord,
    order: PlannedOrder,
    state: OrderState,
) -> None:
    """`OrderPlaced` and an `OrderFilled` per fill, their ids derived from the order and the trade."""
    placed = plan.caused(
        OrderPlaced,
        now=ctx.clock(),
        key=record.client_order_id,
        correlation_id=run_id,
        client_order_id=record.client_order_id,
        account=order.account,
        exchange=order.exchange,
        symbol=order.symbol,
        side=order.side,
        amount=state.amount,
        phase=order.phase,
    )
    await ctx.publisher.publish(placed)
    for fill in state.fills:
        await ctx.publisher.publish(
            placed.caused(
                OrderFilled,
                now=ctx.clock(),
                key=fill.trade_id,
                client_order_id=record.client_order_id,
                trade_id=fill.trade_id,
                symbol=order.symbol,
                side=order.side,
                amount=fill.amount,
                price=fill.price,
                fee=fill.fee,
                fee_asset=fill.fee_asset,
            )
        )


async def adopt_found(ctx: Context, order: OrderRecord, state: OrderState) -> int:
    """`adopt` for an order of ours found outside its leg (reconciled, cancelled to release funds): new
    fills are published under their run, like any other."""
    new_fills = await adopt(ctx, order, state)
    record = await ctx.journal.run(order.plan_id)
    if new_fills and record is not None:
        await publish(ctx, record.plan, record.run_id, order, planned_of(record.plan, order), state)
    return new_fills


def planned_of(plan: RebalancePlanned, order: OrderRecord) -> PlannedOrder:
    """The plan's order of a leg; a leg the run added (unwinding a routed buy) as its journaled order."""
    if order.leg < len(plan.orders):
        return plan.orders[order.leg]
    return PlannedOrder(
        account=order.account,
        exchange=order.exchange,
        symbol=order.symbol,
        side=order.side,
        amount=order.amount,
        est_price=Decimal(0),
        est_cost=Decimal(0),
        est_fee=Decimal(0),
        phase=2,
    )

"""The end-of-run audit: each account a run trades is recorded when the run starts and when it ends, and
every asset whose total moved by more than the run's journaled fills explain is reported (a deposit, a
withdrawal, someone else's trade): a reason line, a warning and `rebal_balance_discrepancies_total`.
The rule is pure (`rebal.core.execution.balance_discrepancies`)."""

from __future__ import annotations

import logging

from rebal import metrics
from rebal.core.execution import ORDER_FINAL, balance_discrepancies, balance_tolerances, expected_change
from rebal.core.numbers import dec_str
from rebal.events import RebalancePlanned
from rebal.venue import VenueError
from rebal_executor.execution.ports import Context, RunRecord

log = logging.getLogger("rebal.executor")


def checked_accounts(plan: RebalancePlanned) -> list[tuple[str, str]]:
    """The accounts whose balances the run's fills alone should explain: those its orders trade, less
    those a transfer of the run moves assets out of or into (a transfer is not a fill)."""
    moved = {account for t in plan.transfers for account in (t.from_account, t.to_account)}
    return sorted({(o.exchange, o.account) for o in plan.orders if o.account not in moved})


async def record_balances(ctx: Context, record: RunRecord, moment: str) -> None:
    for exchange, account in checked_accounts(record.plan):
        venue = ctx.venues.get(exchange)
        if venue is None:
            continue
        try:
            balances = await venue.balances(account)
        except VenueError as error:
            log.warning("reading %s %s balances at the run's %s: %s", exchange, account, moment, error)
            continue
        await ctx.journal.record_balances(record.plan_id, moment, exchange, account, balances)


async def check_balances(ctx: Context, record: RunRecord) -> None:
    """At the end of a run that started: record the balances again and report every asset that moved by
    more than the run's journaled fills explain."""
    plan = record.plan
    start = await ctx.journal.run_balances(plan.event_id, "start")
    if not start:
        return  # never started (or started before balances were recorded)
    await record_balances(ctx, record, "end")
    end = await ctx.journal.run_balances(plan.event_id, "end")
    fills = await ctx.journal.run_fills(plan.event_id)
    # An order still unsettled (open, or its outcome unknown) may have fills the journal has not seen
    # yet: its account's balances cannot be explained yet, and are not checked.
    unsettled = {
        (o.exchange, o.account): o.client_order_id
        for o in await ctx.journal.orders(plan.event_id)
        if o.state not in ORDER_FINAL and o.state != "created"
    }
    for (exchange, account), before in sorted(start.items()):
        after = end.get((exchange, account))
        venue = ctx.venues.get(exchange)
        if after is None or venue is None:
            continue
        if (exchange, account) in unsettled:
            log.info(
                "run %s: balances of %s (%s) not checked: order %s is not settled",
                record.run_id,
                account,
                exchange,
                unsettled[(exchange, account)],
            )
            continue
        try:
            markets = (await venue.markets()).values()
        except VenueError as error:
            log.warning("reading %s markets for the balance check: %s", exchange, error)
            continue
        tolerances = balance_tolerances((m.base, m.amount_step) for m in markets)
        explained = expected_change(fills.get((exchange, account), ()))
        for found in balance_discrepancies(before, after, explained, tolerances):
            difference = found.difference
            reason = (
                f"balance of {found.asset} on {account} ({exchange}) moved by {dec_str(abs(difference))} "
                f"{'more' if difference > 0 else 'less'} than the fills explain "
                f"({dec_str(found.moved)} against {dec_str(found.explained)}): external activity"
            )
            key = f"balance-{exchange}-{account}-{found.asset}"
            if await ctx.journal.add_note(plan.event_id, key, reason):
                metrics.BALANCE_DISCREPANCIES.labels(exchange=exchange).inc()
                log.warning("run %s: %s", record.run_id, reason)

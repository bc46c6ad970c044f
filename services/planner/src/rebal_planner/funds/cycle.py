"""A fund's cycle in two phases: net sells, then net buys sized from the cash they really freed.

`start` nets every pending flow of the fund with the pure core (`rebal.core.funds`) into phase 1 (net
sells), sent as a non-dry-run `RebalancePlanned` to the executor. When its `RunFinished` arrives the fills
(`OrderFilled`, kept by trade id) are allocated to the users, phase 2 (net buys) is sized from the cash
they really hold and sent the same way; when that run finishes, the withdrawals are paid out and
`FundCycleSettled` reports it.

Every phase is recomputed from the cycle's stored inputs and the fills (`records.recompute`), so a
redelivered message or a restarted planner computes the same numbers. The ledger is changed by the
differences the cycle made, so a deposit credited while a run is under way is kept and never spent by
that run. A market that is delisted or inactive (or an asset without a price) puts the fund in
`needs_adjustment`: the running cycle is cancelled, its flows wait again, and no order is sent until the
fund is defined again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rebal import bus, fund_store
from rebal.core.fund_checks import account_holdings
from rebal.core.funds import CyclePlan, Due, NeedsAdjustment, Quote, fund_quotes, pay_out, plan_cycle, settle
from rebal.core.ledger import LEDGER_QUANTUM, Fund, Ledger, from_units
from rebal.core.numbers import dec_str
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    FundCyclePlanned,
    FundCycleSettled,
    FundNeedsAdjustment,
    OrderFilled,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    RunFundCycle,
    derive_id,
)
from rebal.fund_store import FundRecord
from rebal_planner.funds import store
from rebal_planner.funds.records import (
    check_splits,
    decode_inputs,
    due_of,
    encode_inputs,
    executions,
    ledger_rows,
    recompute,
)
from rebal_planner.planning import parse_snapshot

log = logging.getLogger("rebal.planner.funds")
Reject = Callable[[Event, str, str], Any]


class FillsPending(RuntimeError):
    """A run ended before all its fills were stored: the consumer retries the `RunFinished`."""


def phase_run(cycle_id: uuid.UUID, phase: int) -> uuid.UUID:
    """The run of a cycle's phase (its plan's correlation id)."""
    return derive_id("fund-run", cycle_id, phase)


@dataclass(frozen=True)
class Phase:
    """A phase to send: its plan, what the cycle owes, and the snapshot its quotes came from."""

    fund: Fund
    cycle_id: uuid.UUID
    number: int
    plan: CyclePlan
    due: Due
    snapshot_id: uuid.UUID


@dataclass
class Cycles:
    """`history` gives the latest balance snapshot (prices and markets) of a portfolio."""

    pool: Callable[[], asyncpg.Pool]
    history: bus.History
    publisher: bus.EventSink
    clock: Callable[[], datetime]
    reject: Reject

    async def start(self, command: RunFundCycle) -> None:
        started: Phase | None = None
        async with self.pool().acquire() as connection, connection.transaction():
            found = await fund_store.fund(connection, command.portfolio_id, lock=True)
            if found is None:
                await self.reject(command, f"no fund {command.portfolio_id}", "")
                return
            if found.status != "active":
                await self.reject(command, f"the fund needs adjustment: {found.reason}", "")
                return
            cycle_id = derive_id("fund-cycle", command.event_id)
            running = await store.running_cycle(connection, found.fund.fund_id)
            if running is not None and running != cycle_id:
                await self.reject(
                    command, f"cycle {running} is still running; the flows wait for the next", ""
                )
            if running is None:
                started = await self._open(connection, command, found, cycle_id)
        if running == cycle_id:  # a redelivered command: its plan may not have reached the bus
            await self._resend(command, cycle_id)
        elif started is not None:
            await self._send(command, started)

    async def _open(
        self, connection: Any, command: RunFundCycle, found: FundRecord, cycle_id: uuid.UUID
    ) -> Phase | None:
        """Take the pending flows into a new cycle (in the caller's transaction, the fund row locked)."""
        if await fund_store.cycle_exists(connection, cycle_id):
            return None  # a redelivered command whose cycle already ended
        snapshot_event = await self.history.latest(BalanceSnapshotTaken, found.prices_from)
        if snapshot_event is None:
            await self.reject(command, f"no balance snapshot of {found.prices_from} to price the fund", "")
            return None
        snapshot = parse_snapshot(snapshot_event)
        fund = found.fund
        ledger = await fund_store.ledger(connection, fund)
        flows = await store.pending_flows(connection, fund.fund_id)
        due = due_of(flows, command.rebalance)
        quotes = fund_quotes(fund, snapshot.prices, snapshot.markets, ledger.assets)
        frozen, ledger, free = await self._venue_checks(connection, fund, snapshot_event, ledger, quotes)
        inputs = encode_inputs(ledger, due, quotes, snapshot_event.event_id)
        inputs["frozen"] = sorted(frozen)
        inputs["split_reference"] = {asset: str(price) for asset, price in sorted(frozen.items())}
        inputs["free"] = (
            None if free is None else {asset: str(amount) for asset, amount in sorted(free.items())}
        )
        plan = plan_cycle(fund, ledger, due, quotes, free=free, frozen=frozenset(frozen))
        if isinstance(plan, NeedsAdjustment):
            await self._needs_adjustment(connection, command, plan)
            return None
        rejected = {r.user: r for r in plan.rejected}
        taken = []
        for flow in flows:
            if flow["kind"] == "withdrawal" and flow["user_id"] in rejected:
                r = rejected[flow["user_id"]]
                reason = f"asks {r.asked}, the holdings fetch {r.worth} after fees"
                await store.reject_flow(connection, flow["flow_id"], reason)
                await self.reject(command, reason, flow["user_id"])
            else:
                taken.append(flow["flow_id"])
        await store.open_cycle(
            connection, cycle_id, fund.fund_id, taken, phase_run(cycle_id, 1), inputs, self.clock()
        )
        return Phase(fund, cycle_id, 1, plan, due, snapshot_event.event_id)

    async def _venue_checks(
        self,
        connection: Any,
        fund: Fund,
        snapshot: BalanceSnapshotTaken,
        ledger: Ledger,
        quotes: Mapping[str, Quote],
    ) -> tuple[dict[str, Decimal], Ledger, dict[str, Decimal] | None]:
        """Splits and frozen assets (`records.check_splits`) when the snapshot of the account was taken
        after the last cycle ended; the account's holdings in it are also what a net sell may take (the
        free balance). Nothing frozen and no free balance (None) without such a snapshot."""
        last = await store.last_settled(connection, fund.fund_id)
        venue = account_holdings(snapshot.tree, fund.account)
        if last is None or venue is None or snapshot.occurred_at <= last["updated_at"]:
            return {}, ledger, None
        splits = check_splits(json.loads(last["inputs"]), ledger, venue, quotes)
        for note in splits.notes:
            log.warning("fund %s: %s", fund.fund_id, note)
        if splits.ledger is not ledger:
            await store.change(connection, fund.fund_id, ledger_rows(ledger, splits.ledger))
        return splits.frozen, splits.ledger, venue

    async def _needs_adjustment(self, connection: Any, cause: Event, result: NeedsAdjustment) -> None:
        reason = "; ".join(result.reasons)
        cancelled = await store.needs_adjustment(connection, result.fund_id, reason, self.clock())
        log.warning("fund %s needs adjustment: %s", result.fund_id, reason)
        await self.publisher.publish(
            cause.caused(FundNeedsAdjustment, now=self.clock(), reasons=result.reasons, cancelled=cancelled)
        )

    async def _send(self, cause: Event, phase: Phase) -> None:
        """Publish the phase's orders as a plan for the executor, or settle it at once when it has none."""
        run_id = phase_run(phase.cycle_id, phase.number)
        plan, fund, key = phase.plan, phase.fund, f"{phase.cycle_id}|{phase.number}"
        orders = plan.phase_orders(phase.number)
        now = self.clock()
        await self.publisher.publish(
            cause.caused(
                FundCyclePlanned,
                now=now,
                key=key,
                correlation_id=run_id,
                cycle_id=phase.cycle_id,
                phase=phase.number,
                deposits=len(phase.due.deposits),
                withdrawals=len(phase.due.withdrawals),
                rebalance=phase.due.rebalance,
                orders=len(orders),
                user_orders=plan.netting.user_orders,
                user_fees=plan.netting.user_fees,
                net_fees=plan.netting.net_fees,
                skipped=tuple(f"{s.asset} {s.side} {dec_str(s.amount)}: {s.reason}" for s in plan.skipped),
            )
        )
        if not orders:
            await self._finish(cause, run_id)
            return
        value = sum(
            (from_units(int(t)) * p for t, p in zip(plan.ledger.units.sum(axis=0), plan.prices, strict=True)),
            Decimal(0),
        )
        await self.publisher.publish(
            cause.caused(
                RebalancePlanned,
                now=now,
                key=key,
                correlation_id=run_id,
                dry_run=False,
                band=Decimal(0),
                snapshot_id=phase.snapshot_id,
                target_id=derive_id("fund", fund.fund_id),
                total_value=value.quantize(LEDGER_QUANTUM),
                orders=tuple(
                    PlannedOrder(
                        account=fund.account,
                        exchange=fund.exchange,
                        symbol=o.symbol,
                        side=o.side,
                        amount=o.amount,
                        est_price=o.est_price,
                        est_cost=(o.amount * o.est_price).quantize(LEDGER_QUANTUM),
                        est_fee=o.est_fee,
                        phase=phase.number,
                    )
                    for o in orders
                ),
            )
        )

    async def on_fill(self, fill: OrderFilled) -> None:
        if fill.correlation_id is not None:
            await store.add_fill(self.pool(), fill)

    async def on_run_finished(self, finished: RunFinished) -> None:
        run_id = finished.correlation_id
        if run_id is None:
            return
        # The fills come on another consumer: wait (a retry with backoff) until every filled order's are in.
        orders = await store.filled_orders(self.pool(), run_id)
        if orders < finished.filled and await store.is_fund_run(self.pool(), run_id):
            raise FillsPending(f"run {run_id}: {orders} of {finished.filled} filled orders in")
        await self._finish(finished, run_id)

    async def _finish(self, cause: Event, run_id: uuid.UUID) -> None:
        """Allocate the run's fills; after phase 1 send phase 2, after phase 2 pay out and report."""
        next_phase: Phase | None = None
        settled: FundCycleSettled | None = None
        resend: uuid.UUID | None = None
        async with self.pool().acquire() as connection, connection.transaction():
            cycle = await store.cycle_of_run(connection, run_id)
            if cycle is None or cycle["status"] == "cancelled":
                return  # not a fund run, or a cancelled cycle
            if cycle["status"] == "done":
                if cycle["run_ids"][-1] == run_id:  # a redelivery: the report may not have reached the bus
                    settled = self._settled(cause, cycle, run_id)
            elif cycle["run_ids"][-1] != run_id:
                resend = cycle["cycle_id"]  # phase 1 settled already: a redelivery of its end
            else:
                next_phase, settled = await self._settle(connection, cause, cycle, run_id)
        if resend is not None:
            await self._resend(cause, resend)
        if next_phase is not None:
            await self._send(cause, next_phase)
        if settled is not None:
            await self.publisher.publish(settled)

    async def _settle(
        self, connection: Any, cause: Event, cycle: Any, run_id: uuid.UUID
    ) -> tuple[Phase | None, FundCycleSettled | None]:
        """Allocate the finished run's phase (in the caller's transaction, the cycle row locked): after
        phase 1, what phase 2 is to send; after phase 2, the settled report."""
        found = await fund_store.fund(connection, cycle["fund_id"], lock=True)
        assert found is not None
        fund, cycle_id, run_ids = found.fund, cycle["cycle_id"], cycle["run_ids"]
        inputs = json.loads(cycle["inputs"])
        fills = await store.fills(connection, run_ids)
        by_run = {r: [f for f in fills if f["run_id"] == r] for r in run_ids}
        first = executions(by_run[run_ids[0]], fund.quote)
        chain = recompute(fund, inputs, first.by_asset)
        if isinstance(chain, NeedsAdjustment):
            await self._needs_adjustment(connection, cause, chain)
            return None, None
        assert chain.first is not None and chain.phase2 is not None
        now = self.clock()
        # What the executor reported adjusting (a sell released from our own open order, reduced to what
        # was free): kept with the cycle, shown in its report next to the payouts the fills gave. A phase with
        # no order is settled by the previous phase's end, whose reasons are already kept.
        run_reasons = [
            *inputs.get("run_reasons", ()),
            *(cause.reasons if isinstance(cause, RunFinished) and cause.correlation_id == run_id else ()),
        ]
        if cycle["phase"] == 1:
            await store.change(connection, fund.fund_id, ledger_rows(chain.plan.ledger, chain.first.ledger))
            await store.to_phase_two(connection, cycle_id, [run_id, phase_run(cycle_id, 2)], run_reasons, now)
            _, due, _ = decode_inputs(fund, inputs)
            return Phase(fund, cycle_id, 2, chain.phase2, due, uuid.UUID(inputs["snapshot_id"])), None
        last = executions(by_run[run_id], fund.quote)
        second = settle(chain.phase2, chain.first.ledger, 2, last.by_asset)
        unallocated: dict[str, Decimal] = defaultdict(Decimal)
        for fills_of_run in (first, last):
            for asset, fee in fills_of_run.unallocated_fees.items():
                unallocated[asset] += fee
        payout = pay_out(chain.phase2, second.ledger)
        await store.change(connection, fund.fund_id, ledger_rows(chain.first.ledger, payout.ledger))
        fees = from_units(int(chain.first.fees.sum() + second.fees.sum()))
        report = {
            "paid": {u: str(a) for u, a in payout.paid.items()},
            "short": {u: str(a) for u, a in payout.short.items()},
            "fees": str(fees),
            "unallocated_fees": {a: str(f) for a, f in sorted(unallocated.items())},
            "orders": len(chain.plan.phase_orders(1)) + len(chain.phase2.phase_orders(2)),
            "user_orders": chain.plan.netting.user_orders,
            "reasons": run_reasons,
        }
        await store.settle_cycle(connection, cycle_id, report, payout.paid, now)
        settled = cause.caused(
            FundCycleSettled,
            now=now,
            key=cycle_id,
            correlation_id=run_id,
            cycle_id=cycle_id,
            paid=dict(payout.paid),
            short=dict(payout.short),
            fees=fees,
            unallocated_fees=dict(unallocated),
        )
        return None, settled

    def _settled(self, cause: Event, cycle: Any, run_id: uuid.UUID) -> FundCycleSettled:
        report = json.loads(cycle["report"])
        return cause.caused(
            FundCycleSettled,
            now=self.clock(),
            key=cycle["cycle_id"],
            correlation_id=run_id,
            cycle_id=cycle["cycle_id"],
            paid={u: Decimal(a) for u, a in report["paid"].items()},
            short={u: Decimal(a) for u, a in report["short"].items()},
            fees=Decimal(report["fees"]),
            unallocated_fees={a: Decimal(f) for a, f in report.get("unallocated_fees", {}).items()},
        )

    async def _resend(self, cause: Event, cycle_id: uuid.UUID) -> None:
        """Publish the running phase of a cycle again (the same event ids: the bus drops what it has)."""
        async with self.pool().acquire() as connection:
            cycle = await store.running(connection, cycle_id)
            if cycle is None:
                return
            found = await fund_store.fund(connection, cycle["fund_id"])
            fills = await store.fills(connection, cycle["run_ids"][:1])
        assert found is not None
        fund, inputs, number = found.fund, json.loads(cycle["inputs"]), cycle["phase"]
        chain = recompute(fund, inputs, executions(fills, fund.quote).by_asset if number == 2 else None)
        if isinstance(chain, NeedsAdjustment):
            return
        plan = chain.plan if number == 1 else chain.phase2
        assert plan is not None
        _, due, _ = decode_inputs(fund, inputs)
        await self._send(cause, Phase(fund, cycle_id, number, plan, due, uuid.UUID(inputs["snapshot_id"])))

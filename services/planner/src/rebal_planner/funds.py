"""The planner's fund part: per-user ledgers in Postgres, flows in, one netted plan per cycle phase out.

- `RecordDeposit` credits the user's cash at once (`FundDeposited`); a later cycle invests it.
- `RequestWithdrawal` queues a withdrawal (`FundWithdrawalRequested`).
- `RunFundCycle` nets every pending flow of the fund with the pure core (`rebal.core.funds`) into phase 1
  (net sells), sent as a non-dry-run `RebalancePlanned` to the executor. When its `RunFinished` arrives the
  fills (`OrderFilled`, kept by trade id) are allocated to the users, phase 2 (net buys) is sized from the
  cash they really hold and sent the same way; when that run finishes, the withdrawals are paid out and
  `FundCycleSettled` reports it.

Every phase is recomputed from the cycle's stored inputs (the ledger, what was due, the prices and
markets) and the fills, so a redelivered message or a restarted planner computes the same numbers. The
ledger in Postgres is changed by the differences the cycle made, so a deposit credited while a run is
under way is kept and never spent by that run. A market that is delisted or inactive (or an asset without
a price) puts the fund in `needs_adjustment`: the running cycle is cancelled, its flows wait again, and no
order is sent until the fund is defined again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import numpy as np

from rebal import bus, db, service
from rebal.core.errors import InputError
from rebal.core.funds import (
    LEDGER_QUANTUM,
    CyclePlan,
    Due,
    Execution,
    Fund,
    Ledger,
    NeedsAdjustment,
    Quote,
    Settlement,
    account_holdings,
    apply_split,
    check_split,
    from_units,
    fund_quotes,
    pay_out,
    plan_cycle,
    resize_buys,
    settle,
)
from rebal.core.market import Market
from rebal.core.numbers import dec_str
from rebal.events import (
    BalanceSnapshotTaken,
    DefineFund,
    Event,
    FundCommandRejected,
    FundCyclePlanned,
    FundCycleSettled,
    FundDefined,
    FundDeposited,
    FundNeedsAdjustment,
    FundWithdrawalRequested,
    OrderFilled,
    PlannedOrder,
    RebalancePlanned,
    RecordDeposit,
    RequestWithdrawal,
    RunFinished,
    RunFundCycle,
    derive_id,
)
from rebal.settings import ServiceSettings
from rebal_planner.planning import ParsedSnapshot, parse_snapshot

log = logging.getLogger("rebal.planner.funds")
Pool = asyncpg.Pool


def quotes_for(fund: Fund, snapshot: ParsedSnapshot, assets: tuple[str, ...]) -> dict[str, Quote]:
    return fund_quotes(fund, snapshot.prices, snapshot.markets, assets)


def encode_inputs(
    ledger: Ledger, due: Due, quotes: Mapping[str, Quote], snapshot_id: uuid.UUID
) -> dict[str, Any]:
    return {
        "assets": list(ledger.assets),
        "users": list(ledger.users),
        "units": ledger.units.tolist(),
        "deposits": {u: str(a) for u, a in due.deposits.items()},
        "withdrawals": {u: None if a is None else str(a) for u, a in due.withdrawals.items()},
        "rebalance": due.rebalance,
        "snapshot_id": str(snapshot_id),
        "quotes": {
            asset: {
                "price": str(q.price),
                "active": q.active,
                "amount_step": str(q.market.amount_step),
                "min_amount": str(q.market.min_amount),
                "min_cost": str(q.market.min_cost),
                "fee_rate": str(q.market.fee_rate),
            }
            for asset, q in quotes.items()
        },
    }


def decode_inputs(fund: Fund, doc: Mapping[str, Any]) -> tuple[Ledger, Due, dict[str, Quote]]:
    units = np.array(doc["units"], dtype=np.int64).reshape(len(doc["users"]), len(doc["assets"]))
    ledger = Ledger(tuple(doc["assets"]), tuple(doc["users"]), units)
    due = Due(
        {u: Decimal(a) for u, a in doc["deposits"].items()},
        {u: None if a is None else Decimal(a) for u, a in doc["withdrawals"].items()},
        bool(doc["rebalance"]),
    )
    quotes = {
        asset: Quote(
            Market(
                asset,
                fund.quote,
                Decimal(q["amount_step"]),
                Decimal(q["min_amount"]),
                Decimal(q["min_cost"]),
                Decimal(q["fee_rate"]),
            ),
            Decimal(q["price"]),
            bool(q["active"]),
        )
        for asset, q in doc["quotes"].items()
    }
    return ledger, due, quotes


@dataclass(frozen=True)
class Chain:
    """A cycle recomputed from its inputs and the executions known so far."""

    plan: CyclePlan
    first: Settlement | None = None
    phase2: CyclePlan | None = None


def recompute(
    fund: Fund, inputs: Mapping[str, Any], first: Mapping[str, Execution] | None
) -> Chain | NeedsAdjustment:
    ledger, due, quotes = decode_inputs(fund, inputs)
    raw_free = inputs.get("free")
    free = None if raw_free is None else {asset: Decimal(amount) for asset, amount in raw_free.items()}
    plan = plan_cycle(fund, ledger, due, quotes, free=free, frozen=frozenset(inputs.get("frozen", ())))
    if isinstance(plan, NeedsAdjustment) or first is None:
        return plan if isinstance(plan, NeedsAdjustment) else Chain(plan)
    settled = settle(plan, plan.ledger, 1, first)
    return Chain(plan, settled, resize_buys(plan, settled.ledger, free=free))


@dataclass(frozen=True)
class Executions:
    """A run's fills per asset, and the fees the venue took in an asset the ledgers cannot charge."""

    by_asset: dict[str, Execution]
    unallocated_fees: dict[str, Decimal]


def executions(rows: list[asyncpg.Record], quote: str) -> Executions:
    """A run's fills summed per asset: amount, gross cost (each fill's amount x price to 1e-8, as the
    venue books it), the fee in the quote, and a buy's fee taken in the asset bought (the buyers receive
    that much less). A fee in any other asset (a third asset such as BNB, or a sell's fee in the asset
    sold) is not allocated to the users: it is reported with the cycle (and, if the fund holds that
    asset, shows as a shortfall in the account's reconciliation)."""
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
    others: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        base = row["symbol"].split("/")[0]
        total = totals[base]
        total[0] += row["amount"]
        total[1] += (row["amount"] * row["price"]).quantize(LEDGER_QUANTUM)
        if row["fee_asset"] == quote:
            total[2] += row["fee"]
        elif row["fee_asset"] == base and row["side"] == "buy":
            total[3] += row["fee"]
        elif row["fee"]:
            others[row["fee_asset"]] += row["fee"]
    return Executions({asset: Execution(*values) for asset, values in totals.items()}, dict(others))


def ledger_rows(before: Ledger, after: Ledger) -> list[tuple[str, str, Decimal]]:
    """(user, asset, change) for every amount the cycle changed (the same users and assets)."""
    delta = after.units - before.units
    return [
        (before.users[i], before.assets[j], from_units(int(delta[i, j])))
        for i, j in zip(*np.nonzero(delta), strict=True)
    ]


class FillsPending(RuntimeError):
    """A run ended before all its fills were stored: the consumer retries the `RunFinished`."""


@dataclass(frozen=True)
class FundRow:
    fund: Fund
    prices_from: str
    status: str
    reason: str


class FundStore:
    """The fund tables of migration 0006 (every method runs on the caller's connection)."""

    async def fund(self, connection: Any, fund_id: str, lock: bool = False) -> FundRow | None:
        row = await connection.fetchrow(
            "SELECT * FROM funds WHERE fund_id = $1" + (" FOR UPDATE" if lock else ""), fund_id
        )
        if row is None:
            return None
        weights = {a: Decimal(w) for a, w in json.loads(row["weights"]).items()}
        fund = Fund(row["fund_id"], row["exchange"], row["account"], row["quote"], weights)
        return FundRow(fund, row["prices_from"], row["status"], row["reason"])

    async def ledger(self, connection: Any, fund: Fund) -> Ledger:
        rows = await connection.fetch(
            "SELECT user_id, asset, amount FROM fund_ledger WHERE fund_id = $1", fund.fund_id
        )
        amounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for row in rows:
            amounts[row["user_id"]][row["asset"]] = row["amount"]
        assets = fund.assets(tuple({row["asset"] for row in rows}))
        return Ledger.from_amounts(assets, amounts)

    async def change(self, connection: Any, fund_id: str, rows: list[tuple[str, str, Decimal]]) -> None:
        await connection.executemany(
            "INSERT INTO fund_ledger (fund_id, user_id, asset, amount) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (fund_id, user_id, asset) DO UPDATE SET amount = fund_ledger.amount + $4",
            [(fund_id, user, asset, amount) for user, asset, amount in rows],
        )


@dataclass
class FundService:
    """The handlers; `history` gives the latest balance snapshot (prices and markets) of a portfolio."""

    database: service.Database
    history: bus.History
    publisher: bus.EventSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    store: FundStore = field(default_factory=FundStore)

    @property
    def pool(self) -> Pool:
        if self.database.pool is None:
            raise RuntimeError("the planner's database pool is not open")
        return self.database.pool

    async def start(self) -> None:
        """Open the pool and apply the migrations (0006 holds the fund tables)."""
        pool = await self.database.open()
        async with pool.acquire() as connection:
            await db.migrate(connection)

    async def _reject(self, command: Event, reason: str, user: str = "") -> None:
        log.info("%s rejected for %s: %s", command.type, command.portfolio_id, reason)
        await self.publisher.publish(
            command.caused(
                FundCommandRejected, now=self.clock(), command=command.type, user_id=user, reason=reason
            )
        )

    async def on_define(self, command: DefineFund) -> None:
        try:
            fund = Fund(
                command.portfolio_id, command.exchange, command.account, command.quote, command.weights
            )
        except InputError as exc:
            await self._reject(command, str(exc))
            return
        weights = json.dumps({a: str(w) for a, w in sorted(fund.weights.items())})
        await self.pool.execute(
            "INSERT INTO funds (fund_id, exchange, account, quote, weights, prices_from, status, reason,"
            " updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', '', $7) ON CONFLICT (fund_id) DO UPDATE"
            " SET exchange = $2, account = $3, quote = $4, weights = $5, prices_from = $6, status = 'active',"
            " reason = '', updated_at = $7",
            fund.fund_id,
            fund.exchange,
            fund.account,
            fund.quote,
            weights,
            command.prices_from,
            self.clock(),
        )
        await self.publisher.publish(
            command.caused(
                FundDefined,
                now=self.clock(),
                exchange=fund.exchange,
                account=fund.account,
                quote=fund.quote,
                weights=dict(fund.weights),
                prices_from=command.prices_from,
            )
        )

    async def on_deposit(self, command: RecordDeposit) -> None:
        if command.amount % LEDGER_QUANTUM != 0:
            await self._reject(
                command, f"amount {command.amount} is finer than {LEDGER_QUANTUM:f}", command.user_id
            )
            return
        async with self.pool.acquire() as connection, connection.transaction():
            found = await self.store.fund(connection, command.portfolio_id, lock=True)
            if found is None:
                await self._reject(command, f"no fund {command.portfolio_id}", command.user_id)
                return
            created = await connection.fetchval(
                "INSERT INTO fund_flows (flow_id, fund_id, user_id, kind, amount, status, created_at)"
                " VALUES ($1, $2, $3, 'deposit', $4, 'pending', $5) ON CONFLICT DO NOTHING RETURNING true",
                command.event_id,
                command.portfolio_id,
                command.user_id,
                command.amount,
                self.clock(),
            )
            if created:
                await self.store.change(
                    connection, command.portfolio_id, [(command.user_id, found.fund.quote, command.amount)]
                )
            cash = await connection.fetchval(
                "SELECT amount FROM fund_ledger WHERE fund_id = $1 AND user_id = $2 AND asset = $3",
                command.portfolio_id,
                command.user_id,
                found.fund.quote,
            )
        await self.publisher.publish(
            command.caused(
                FundDeposited, now=self.clock(), user_id=command.user_id, amount=command.amount, cash=cash
            )
        )

    async def on_withdraw(self, command: RequestWithdrawal) -> None:
        if command.amount is not None and command.amount % LEDGER_QUANTUM != 0:
            await self._reject(
                command, f"amount {command.amount} is finer than {LEDGER_QUANTUM:f}", command.user_id
            )
            return
        async with self.pool.acquire() as connection, connection.transaction():
            found = await self.store.fund(connection, command.portfolio_id, lock=True)
            held = await connection.fetchval(
                "SELECT count(*) FROM fund_ledger WHERE fund_id = $1 AND user_id = $2 AND amount > 0",
                command.portfolio_id,
                command.user_id,
            )
            if found is None or not held:
                reason = (
                    f"no fund {command.portfolio_id}" if found is None else f"{command.user_id} holds nothing"
                )
                await self._reject(command, reason, command.user_id)
                return
            await connection.execute(
                "INSERT INTO fund_flows (flow_id, fund_id, user_id, kind, amount, status, created_at)"
                " VALUES ($1, $2, $3, 'withdrawal', $4, 'pending', $5) ON CONFLICT DO NOTHING",
                command.event_id,
                command.portfolio_id,
                command.user_id,
                command.amount,
                self.clock(),
            )
        await self.publisher.publish(
            command.caused(
                FundWithdrawalRequested, now=self.clock(), user_id=command.user_id, amount=command.amount
            )
        )

    async def on_cycle(self, command: RunFundCycle) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await self.store.fund(connection, command.portfolio_id, lock=True)
            if found is None:
                await self._reject(command, f"no fund {command.portfolio_id}")
                return
            if found.status != "active":
                await self._reject(command, f"the fund needs adjustment: {found.reason}")
                return
            cycle_id = derive_id("fund-cycle", command.event_id)
            running = await connection.fetchval(
                "SELECT cycle_id FROM fund_cycles WHERE fund_id = $1 AND status = 'running'",
                found.fund.fund_id,
            )
            if running is not None and running != cycle_id:
                await self._reject(command, f"cycle {running} is still running; the flows wait for the next")
            started = None if running is not None else await self._start(connection, command, found, cycle_id)
        if running == cycle_id:  # a redelivered command: its plan may not have reached the bus
            await self._resend(command, cycle_id)
        elif started is not None:
            plan, due, snapshot_id = started
            await self._send_phase(command, found.fund, cycle_id, 1, plan, due, snapshot_id)

    async def _start(
        self, connection: Any, command: RunFundCycle, found: FundRow, cycle_id: uuid.UUID
    ) -> tuple[CyclePlan, Due, uuid.UUID] | None:
        """Take the pending flows into a new cycle (in the caller's transaction, the fund row locked)."""
        done = await connection.fetchval("SELECT true FROM fund_cycles WHERE cycle_id = $1", cycle_id)
        if done:
            return None  # a redelivered command whose cycle already ended
        snapshot_event = await self.history.latest(BalanceSnapshotTaken, found.prices_from)
        if snapshot_event is None:
            await self._reject(command, f"no balance snapshot of {found.prices_from} to price the fund")
            return None
        snapshot = parse_snapshot(snapshot_event)
        ledger = await self.store.ledger(connection, found.fund)
        flows = await connection.fetch(
            "SELECT flow_id, user_id, kind, amount FROM fund_flows"
            " WHERE fund_id = $1 AND status = 'pending' ORDER BY created_at, flow_id",
            found.fund.fund_id,
        )
        deposits: dict[str, Decimal] = defaultdict(Decimal)
        withdrawals: dict[str, Decimal | None] = {}
        for flow in flows:
            user = flow["user_id"]
            if flow["kind"] == "deposit":
                deposits[user] += flow["amount"]
            elif flow["amount"] is None or withdrawals.get(user, Decimal(0)) is None:
                withdrawals[user] = None
            else:
                withdrawals[user] = (withdrawals.get(user) or Decimal(0)) + flow["amount"]
        due = Due(dict(deposits), withdrawals, command.rebalance)
        quotes = quotes_for(found.fund, snapshot, ledger.assets)
        frozen, ledger, free = await self._venue_checks(
            connection, found.fund, snapshot_event, ledger, quotes
        )
        inputs = encode_inputs(ledger, due, quotes, snapshot_event.event_id)
        inputs["frozen"] = sorted(frozen)
        inputs["split_reference"] = {asset: str(price) for asset, price in sorted(frozen.items())}
        inputs["free"] = (
            None if free is None else {asset: str(amount) for asset, amount in sorted(free.items())}
        )
        plan = plan_cycle(found.fund, ledger, due, quotes, free=free, frozen=frozenset(frozen))
        if isinstance(plan, NeedsAdjustment):
            await self._needs_adjustment(connection, command, plan)
            return None
        rejected = {r.user: r for r in plan.rejected}
        for flow in flows:
            if flow["kind"] == "withdrawal" and flow["user_id"] in rejected:
                r = rejected[flow["user_id"]]
                reason = f"asks {r.asked}, the holdings fetch {r.worth} after fees"
                await connection.execute(
                    "UPDATE fund_flows SET status = 'rejected', reason = $2 WHERE flow_id = $1",
                    flow["flow_id"],
                    reason,
                )
                await self._reject(command, reason, flow["user_id"])
        taken = [f["flow_id"] for f in flows if not (f["kind"] == "withdrawal" and f["user_id"] in rejected)]
        await connection.execute(
            "UPDATE fund_flows SET status = 'running', cycle_id = $2 WHERE flow_id = ANY($1::uuid[])",
            taken,
            cycle_id,
        )
        run_id = derive_id("fund-run", cycle_id, 1)
        now = self.clock()
        await connection.execute(
            "INSERT INTO fund_cycles (cycle_id, fund_id, phase, run_ids, status, inputs, created_at,"
            " updated_at) VALUES ($1, $2, 1, $3, 'running', $4, $5, $5)",
            cycle_id,
            found.fund.fund_id,
            [run_id],
            json.dumps(inputs),
            now,
        )
        return plan, due, snapshot_event.event_id

    async def _venue_checks(
        self,
        connection: Any,
        fund: Fund,
        snapshot: BalanceSnapshotTaken,
        ledger: Ledger,
        quotes: Mapping[str, Quote],
    ) -> tuple[dict[str, Decimal], Ledger, dict[str, Decimal] | None]:
        """Splits: with a snapshot of the account taken after the last cycle ended (no fund fills since),
        an asset whose quantity x price jumped is frozen for this cycle; one whose quantity moved by the
        inverse of its price has split, and every user's amount is scaled to the venue's, exactly. A frozen
        asset keeps the price it had before the jump as its reference until the split shows. The account's
        holdings in that snapshot are also what a net sell may take (the free balance); None when there
        is no such snapshot."""
        last = await connection.fetchrow(
            "SELECT inputs, updated_at FROM fund_cycles WHERE fund_id = $1 AND status = 'done'"
            " ORDER BY updated_at DESC LIMIT 1",
            fund.fund_id,
        )
        venue = account_holdings(snapshot.tree, fund.account)
        if last is None or venue is None or snapshot.occurred_at <= last["updated_at"]:
            return {}, ledger, None
        last_inputs = json.loads(last["inputs"])
        references = {a: Decimal(p) for a, p in last_inputs.get("split_reference", {}).items()}
        references |= {
            a: Decimal(q["price"]) for a, q in last_inputs["quotes"].items() if a not in references
        }
        frozen: dict[str, Decimal] = {}
        totals = ledger.totals()
        for asset in ledger.assets[1:]:
            if asset not in references or asset not in quotes:
                continue
            check = check_split(
                totals[asset], venue.get(asset, Decimal(0)), references[asset], quotes[asset].price, False
            )
            if check.status == "frozen":
                log.warning("fund %s: %s frozen (%s)", fund.fund_id, asset, check.reason)
                frozen[asset] = references[asset]
            elif check.status == "split":
                log.warning("fund %s: %s split (%s)", fund.fund_id, asset, check.reason)
                split = apply_split(ledger, asset, venue[asset])
                await self.store.change(connection, fund.fund_id, ledger_rows(ledger, split))
                ledger = split
        return frozen, ledger, venue

    async def _needs_adjustment(self, connection: Any, cause: Event, result: NeedsAdjustment) -> None:
        reason = "; ".join(result.reasons)
        await connection.execute(
            "UPDATE funds SET status = 'needs_adjustment', reason = $2, updated_at = $3 WHERE fund_id = $1",
            result.fund_id,
            reason,
            self.clock(),
        )
        cancelled = await connection.fetch(
            "UPDATE fund_cycles SET status = 'cancelled', updated_at = $2"
            " WHERE fund_id = $1 AND status = 'running' RETURNING cycle_id",
            result.fund_id,
            self.clock(),
        )
        await connection.execute(
            "UPDATE fund_flows SET status = 'pending', cycle_id = NULL"
            " WHERE fund_id = $1 AND status = 'running'",
            result.fund_id,
        )
        log.warning("fund %s needs adjustment: %s", result.fund_id, reason)
        await self.publisher.publish(
            cause.caused(
                FundNeedsAdjustment,
                now=self.clock(),
                reasons=result.reasons,
                cancelled=len(cancelled),
            )
        )

    async def _send_phase(
        self,
        cause: Event,
        fund: Fund,
        cycle_id: uuid.UUID,
        phase: int,
        plan: CyclePlan,
        due: Due,
        snapshot_id: uuid.UUID,
    ) -> None:
        """Publish the phase's orders as a plan for the executor, or settle it at once when it has none."""
        run_id = derive_id("fund-run", cycle_id, phase)
        orders = plan.phase_orders(phase)
        now = self.clock()
        await self.publisher.publish(
            cause.caused(
                FundCyclePlanned,
                now=now,
                key=f"{cycle_id}|{phase}",
                correlation_id=run_id,
                cycle_id=cycle_id,
                phase=phase,
                deposits=len(due.deposits),
                withdrawals=len(due.withdrawals),
                rebalance=due.rebalance,
                orders=len(orders),
                user_orders=plan.netting.user_orders,
                user_fees=plan.netting.user_fees,
                net_fees=plan.netting.net_fees,
                skipped=tuple(f"{s.asset} {s.side} {dec_str(s.amount)}: {s.reason}" for s in plan.skipped),
            )
        )
        if not orders:
            await self._finish_phase(cause, run_id)
            return
        value = sum(
            (from_units(int(t)) * p for t, p in zip(plan.ledger.units.sum(axis=0), plan.prices, strict=True)),
            Decimal(0),
        )
        await self.publisher.publish(
            cause.caused(
                RebalancePlanned,
                now=now,
                key=f"{cycle_id}|{phase}",
                correlation_id=run_id,
                dry_run=False,
                band=Decimal(0),
                snapshot_id=snapshot_id,
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
                        phase=phase,
                    )
                    for o in orders
                ),
            )
        )

    async def _settle_phase(
        self, connection: Any, cause: Event, cycle: asyncpg.Record, run_id: uuid.UUID
    ) -> tuple[tuple[Fund, uuid.UUID, CyclePlan, Due, uuid.UUID] | None, FundCycleSettled | None]:
        """Allocate the finished run's phase (in the caller's transaction, the cycle row locked): after
        phase 1, what phase 2 is to send; after phase 2, the settled report."""
        next_phase: tuple[Fund, uuid.UUID, CyclePlan, Due, uuid.UUID] | None = None
        settled: FundCycleSettled | None = None
        found = await self.store.fund(connection, cycle["fund_id"], lock=True)
        assert found is not None
        fund = found.fund
        inputs = json.loads(cycle["inputs"])
        fills = await connection.fetch(
            "SELECT * FROM fund_fills WHERE run_id = ANY($1::uuid[])", cycle["run_ids"]
        )
        by_run = {r: [f for f in fills if f["run_id"] == r] for r in cycle["run_ids"]}
        first = executions(by_run[cycle["run_ids"][0]], fund.quote)
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
            await self.store.change(
                connection, fund.fund_id, ledger_rows(chain.plan.ledger, chain.first.ledger)
            )
            second_run = derive_id("fund-run", cycle["cycle_id"], 2)
            await connection.execute(
                "UPDATE fund_cycles SET phase = 2, run_ids = $2, updated_at = $3,"
                " inputs = inputs || jsonb_build_object('run_reasons', $4::jsonb) WHERE cycle_id = $1",
                cycle["cycle_id"],
                [run_id, second_run],
                now,
                json.dumps(run_reasons),
            )
            _, due, _ = decode_inputs(fund, inputs)
            next_phase = (fund, cycle["cycle_id"], chain.phase2, due, uuid.UUID(inputs["snapshot_id"]))
        else:
            last = executions(by_run[run_id], fund.quote)
            second = settle(chain.phase2, chain.first.ledger, 2, last.by_asset)
            unallocated: dict[str, Decimal] = defaultdict(Decimal)
            for fills_of_run in (first, last):
                for asset, fee in fills_of_run.unallocated_fees.items():
                    unallocated[asset] += fee
            payout = pay_out(chain.phase2, second.ledger)
            await self.store.change(connection, fund.fund_id, ledger_rows(chain.first.ledger, payout.ledger))
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
            await connection.execute(
                "UPDATE fund_cycles SET status = 'done', report = $2, updated_at = $3 WHERE cycle_id = $1",
                cycle["cycle_id"],
                json.dumps(report),
                now,
            )
            flows = await connection.fetch(
                "SELECT flow_id, user_id, kind FROM fund_flows WHERE cycle_id = $1", cycle["cycle_id"]
            )
            for flow in flows:
                paid = payout.paid.get(flow["user_id"]) if flow["kind"] == "withdrawal" else None
                await connection.execute(
                    "UPDATE fund_flows SET status = 'done', paid = $2 WHERE flow_id = $1",
                    flow["flow_id"],
                    paid,
                )
            settled = cause.caused(
                FundCycleSettled,
                now=now,
                key=cycle["cycle_id"],
                correlation_id=run_id,
                cycle_id=cycle["cycle_id"],
                paid=dict(payout.paid),
                short=dict(payout.short),
                fees=fees,
                unallocated_fees=dict(unallocated),
            )
        return next_phase, settled

    def _settled(self, cause: Event, cycle: asyncpg.Record, run_id: uuid.UUID) -> FundCycleSettled:
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
        async with self.pool.acquire() as connection:
            cycle = await connection.fetchrow(
                "SELECT * FROM fund_cycles WHERE cycle_id = $1 AND status = 'running'", cycle_id
            )
            if cycle is None:
                return
            found = await self.store.fund(connection, cycle["fund_id"])
            fills = await connection.fetch("SELECT * FROM fund_fills WHERE run_id = $1", cycle["run_ids"][0])
        assert found is not None
        fund, inputs, phase = found.fund, json.loads(cycle["inputs"]), cycle["phase"]
        chain = recompute(fund, inputs, executions(fills, fund.quote).by_asset if phase == 2 else None)
        if isinstance(chain, NeedsAdjustment):
            return
        plan = chain.plan if phase == 1 else chain.phase2
        assert plan is not None
        _, due, _ = decode_inputs(fund, inputs)
        await self._send_phase(cause, fund, cycle_id, phase, plan, due, uuid.UUID(inputs["snapshot_id"]))

    async def on_fill(self, fill: OrderFilled) -> None:
        if fill.correlation_id is None:
            return
        await self.pool.execute(
            "INSERT INTO fund_fills (trade_id, run_id, client_order_id, symbol, side, amount, price, fee,"
            " fee_asset) SELECT $1, $2, $9, $3, $4, $5, $6, $7, $8 WHERE EXISTS"
            " (SELECT 1 FROM fund_cycles WHERE $2 = ANY(run_ids)) ON CONFLICT DO NOTHING",
            fill.trade_id,
            fill.correlation_id,
            fill.symbol,
            fill.side,
            fill.amount,
            fill.price,
            fill.fee,
            fill.fee_asset,
            fill.client_order_id,
        )

    async def on_run_finished(self, finished: RunFinished) -> None:
        if finished.correlation_id is None:
            return
        # The fills come on another consumer: wait (a retry with backoff) until every filled order's are in.
        orders = await self.pool.fetchval(
            "SELECT count(DISTINCT client_order_id) FROM fund_fills WHERE run_id = $1",
            finished.correlation_id,
        )
        if orders < finished.filled and await self.pool.fetchval(
            "SELECT true FROM fund_cycles WHERE $1 = ANY(run_ids)", finished.correlation_id
        ):
            raise FillsPending(
                f"run {finished.correlation_id}: {orders} of {finished.filled} filled orders in"
            )
        await self._finish_phase(finished, finished.correlation_id)

    async def _finish_phase(self, cause: Event, run_id: uuid.UUID) -> None:
        """Allocate the run's fills; after phase 1 send phase 2, after phase 2 pay out and report."""
        next_phase: tuple[Fund, uuid.UUID, CyclePlan, Due, uuid.UUID] | None = None
        settled: FundCycleSettled | None = None
        async with self.pool.acquire() as connection, connection.transaction():
            cycle = await connection.fetchrow(
                "SELECT * FROM fund_cycles WHERE $1 = ANY(run_ids) FOR UPDATE", run_id
            )
            if cycle is None or cycle["status"] == "cancelled":
                return  # not a fund run, or a cancelled cycle
            if cycle["status"] == "done":
                if cycle["run_ids"][-1] == run_id:  # a redelivery: the report may not have reached the bus
                    settled = self._settled(cause, cycle, run_id)
                resend = None
            elif cycle["run_ids"][-1] != run_id:
                resend = cycle["cycle_id"]  # phase 1 settled already: a redelivery of its end
            else:
                resend = None
                next_phase, settled = await self._settle_phase(connection, cause, cycle, run_id)
        if resend is not None:
            await self._resend(cause, resend)
        if next_phase is not None:
            fund, cycle_id, plan, due, snapshot_id = next_phase
            await self._send_phase(cause, fund, cycle_id, 2, plan, due, snapshot_id)
        if settled is not None:
            await self.publisher.publish(settled)


def register(broker: Any, publisher: bus.Publisher, service: FundService) -> None:
    """The fund consumers: the four commands, and the fills and ends of runs (durable, in order)."""

    def on(kind: type[Any], durable: str, handler: Callable[[Any], Any]) -> None:
        bus.consume(broker, publisher, service="planner", kind=kind, durable=durable, handler=handler)

    on(DefineFund, "planner-fund-define", service.on_define)
    on(RecordDeposit, "planner-fund-deposits", service.on_deposit)
    on(RequestWithdrawal, "planner-fund-withdrawals", service.on_withdraw)
    on(RunFundCycle, "planner-fund-cycles", service.on_cycle)
    on(OrderFilled, "planner-fund-fills", service.on_fill)
    on(RunFinished, "planner-fund-runs", service.on_run_finished)


@dataclass(frozen=True)
class Wiring:
    """What the planner's app adds for funds: the Postgres readiness check and the start/stop hooks."""

    service: FundService

    def hooks(self) -> dict[str, Any]:
        database = self.service.database
        return {
            "checks": [("postgres", database.ping)],
            "on_startup": [self.service.start],
            "on_shutdown": [database.close],
        }


def wire(broker: Any, publisher: bus.Publisher, settings: ServiceSettings) -> Wiring:
    """The fund part on the planner's broker (one line in app.py)."""
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    fund_service = FundService(database, bus.StreamHistory(broker), publisher)
    register(broker, publisher, fund_service)
    return Wiring(fund_service)

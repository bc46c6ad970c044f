"""The executor's journal in memory (`rebal_executor.execution.Journal`): the engine's tests run on it as
well as on Postgres (`rebal_executor.journal.PostgresJournal`), and the stateful property test drives
thousands of runs on it. Same rules as the Postgres one: runs and orders move only through the pure
transition tables, a fill is recorded once per (exchange, trade id), a note once per key."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from rebal.core.execution import (
    RUN_FINAL,
    IllegalTransition,
    OrderStage,
    Queued,
    RunState,
    TradedFill,
    coalesce,
    order_transition,
    received,
    run_transition,
)
from rebal.events import RebalancePlanned
from rebal.venue import Balances, Fill, OrderState
from rebal_executor.execution.ports import (
    MAYBE_LIVE,
    UNFINISHED,
    OrderRecord,
    Report,
    RunRecord,
    TaskRecord,
)


@dataclass
class _Run:
    record: RunRecord
    arrived: int
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class MemoryJournal:
    runs: dict[uuid.UUID, _Run] = field(default_factory=dict)
    order_rows: dict[str, OrderRecord] = field(default_factory=dict)
    fills: dict[tuple[str, str], tuple[str, Fill]] = field(default_factory=dict)  # → (client id, fill)
    legs: dict[tuple[uuid.UUID, int], tuple[str, bool]] = field(default_factory=dict)
    notes: dict[uuid.UUID, dict[str, str]] = field(default_factory=dict)
    transitions: list[tuple[uuid.UUID, str | None, str | None, str, str]] = field(default_factory=list)
    balances: dict[tuple[uuid.UUID, str, str, str], dict[str, Decimal]] = field(default_factory=dict)
    halts: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    external: dict[tuple[str, str, str], OrderState] = field(default_factory=dict)
    task_rows: dict[str, TaskRecord] = field(default_factory=dict)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    # -- runs ------------------------------------------------------------------------------------------

    async def enqueue(self, run_id: uuid.UUID, plan: RebalancePlanned) -> bool:
        if plan.event_id in self.runs:
            return False
        record = RunRecord(plan.event_id, run_id, plan, "queued", "")
        self.runs[plan.event_id] = _Run(record, next(self._arrivals))
        self.transitions.append((plan.event_id, None, None, "queued", ""))
        return True

    async def run(self, plan_id: uuid.UUID) -> RunRecord | None:
        found = self.runs.get(plan_id)
        return None if found is None else found.record

    async def unfinished(self) -> list[RunRecord]:
        waiting = [r for r in self.runs.values() if r.record.state in UNFINISHED]
        waiting.sort(key=lambda r: (r.record.state == "queued", r.arrived, str(r.record.plan_id)))
        return [r.record for r in waiting]

    async def coalesce(self) -> dict[uuid.UUID, uuid.UUID]:
        queued = sorted(
            (r for r in self.runs.values() if r.record.state == "queued"), key=lambda r: r.arrived
        )
        items = tuple(
            Queued(str(r.record.plan_id), r.record.plan.portfolio_id, r.record.plan.occurred_at.isoformat())
            for r in queued
        )
        _, superseded = coalesce(items)
        return {uuid.UUID(old): uuid.UUID(new) for old, new in superseded.items()}

    async def last_run_end(self, portfolio_id: str) -> datetime | None:
        ends = [
            r.finished_at
            for r in self.runs.values()
            if r.record.plan.portfolio_id == portfolio_id and r.started_at is not None and r.finished_at
        ]
        return max(ends) if ends else None

    async def move_run(
        self, plan_id: uuid.UUID, wanted: RunState, reason: str = "", at: datetime | None = None
    ) -> RunState | IllegalTransition:
        found = self.runs.get(plan_id)
        if found is None:
            raise LookupError(f"no run {plan_id} in the journal")
        current = found.record.state
        result = run_transition(current, wanted)
        if isinstance(result, IllegalTransition) or result == current:
            return result
        found.record = replace(found.record, state=wanted, reason=reason)
        if wanted == "sells_in_progress":
            found.started_at = at
        if wanted in RUN_FINAL:
            found.finished_at = at
        self.transitions.append((plan_id, None, current, wanted, reason))
        return result

    # -- orders ----------------------------------------------------------------------------------------

    async def orders(self, plan_id: uuid.UUID) -> list[OrderRecord]:
        found = [o for o in self.order_rows.values() if o.plan_id == plan_id]
        return sorted(found, key=lambda o: (o.leg, o.attempt))

    async def latest_order(self, plan_id: uuid.UUID, leg: int) -> OrderRecord | None:
        found = [o for o in self.order_rows.values() if o.plan_id == plan_id and o.leg == leg]
        return max(found, key=lambda o: o.attempt) if found else None

    async def create_order(self, order: OrderRecord) -> OrderRecord:
        if order.client_order_id not in self.order_rows:
            self.order_rows[order.client_order_id] = order
            self.transitions.append((order.plan_id, order.client_order_id, None, order.state, ""))
        return self.order_rows[order.client_order_id]

    async def move_order(
        self, client_order_id: str, wanted: OrderStage, *, filled: Decimal | None = None, reason: str = ""
    ) -> OrderStage | IllegalTransition:
        row = self.order_rows.get(client_order_id)
        if row is None:
            raise LookupError(f"no order {client_order_id} in the journal")
        result = order_transition(row.state, wanted)
        if isinstance(result, IllegalTransition):
            return result
        new_filled = row.filled if filled is None else filled
        if result == row.state and new_filled == row.filled:
            return result
        self.order_rows[client_order_id] = replace(row, state=wanted, filled=new_filled, reason=reason)
        if result != row.state:
            self.transitions.append((row.plan_id, client_order_id, row.state, wanted, reason))
        return result

    async def record_fill(self, exchange: str, client_order_id: str, fill: Fill) -> bool:
        if (exchange, fill.trade_id) in self.fills:
            return False
        self.fills[(exchange, fill.trade_id)] = (client_order_id, fill)
        return True

    def _fills_of(self, plan_id: uuid.UUID) -> list[tuple[OrderRecord, Fill]]:
        return [
            (self.order_rows[cid], fill)
            for cid, fill in self.fills.values()
            if cid in self.order_rows and self.order_rows[cid].plan_id == plan_id
        ]

    async def delivered(self, plan_id: uuid.UUID, leg: int, base: str, quote: str) -> Decimal:
        return sum(
            (
                received("sell", f.amount, f.price, f.fee, f.fee_asset, base, quote)
                for o, f in self._fills_of(plan_id)
                if o.leg == leg
            ),
            Decimal(0),
        )

    async def leg_fills(self, plan_id: uuid.UUID, leg: int) -> list[TradedFill]:
        return [
            TradedFill(o.symbol, o.side, f.amount, f.price, f.fee, f.fee_asset)
            for o, f in self._fills_of(plan_id)
            if o.leg == leg
        ]

    async def leg_outcome(self, plan_id: uuid.UUID, leg: int) -> str | None:
        found = self.legs.get((plan_id, leg))
        return None if found is None else found[0]

    async def sent_notional(self, plan_id: uuid.UUID) -> Decimal:
        return sum(
            (o.notional for o in self.order_rows.values() if o.plan_id == plan_id and o.state != "rejected"),
            Decimal(0),
        )

    async def order(self, client_order_id: str) -> OrderRecord | None:
        return self.order_rows.get(client_order_id)

    async def open_orders(self, portfolio_id: str | None = None) -> list[OrderRecord]:
        return [
            o
            for o in self.order_rows.values()  # in the order they were written
            if o.state in MAYBE_LIVE
            and (portfolio_id is None or self.runs[o.plan_id].record.plan.portfolio_id == portfolio_id)
        ]

    async def record_transfer(self, plan_id: uuid.UUID, transfer_id: str, state: str, reason: str) -> None:
        self.transitions.append((plan_id, transfer_id, None, state, reason))

    async def open_task(self, task: TaskRecord) -> TaskRecord:
        return self.task_rows.setdefault(task.task_id, task)

    async def task(self, task_id: str) -> TaskRecord | None:
        return self.task_rows.get(task_id)

    async def tasks(self, plan_id: uuid.UUID) -> list[TaskRecord]:
        return sorted((t for t in self.task_rows.values() if t.plan_id == plan_id), key=lambda t: t.transfer)

    async def confirm_task(
        self, task_id: str, received: Decimal | None, by: str, at: datetime
    ) -> tuple[TaskRecord, bool] | None:
        task = self.task_rows.get(task_id)
        if task is None or task.state != "waiting":
            return None if task is None else (task, False)
        amount = task.amount if received is None else received
        task = replace(task, state="confirmed", received=amount, confirmed_at=at, confirmed_by=by)
        self.task_rows[task_id] = task
        self.transitions.append((task.plan_id, task_id, None, "confirmed", f"{amount} {task.asset} by {by}"))
        return task, True

    async def expire_task(self, task_id: str, reason: str) -> bool:
        task = self.task_rows.get(task_id)
        if task is None or task.state != "waiting":
            return False
        self.task_rows[task_id] = replace(task, state="expired", reason=reason)
        self.transitions.append((task.plan_id, task_id, None, "expired", reason))
        return True

    async def touched_accounts(self) -> list[tuple[str, str]]:
        return sorted({(o.exchange, o.account) for o in self.order_rows.values()})

    async def known_order(self, client_order_id: str) -> bool:
        return client_order_id in self.order_rows

    async def saw_external(self, exchange: str, order: OrderState, looks_ours: bool, at: datetime) -> bool:
        key = (exchange, order.account, order.client_order_id)
        first = key not in self.external
        self.external[key] = order
        return first

    # -- balances at the start and the end of a run ----------------------------------------------------

    async def record_balances(
        self, plan_id: uuid.UUID, moment: str, exchange: str, account: str, balances: Balances
    ) -> None:
        key = (plan_id, moment, exchange, account)
        if moment == "start" and key in self.balances:
            return  # the first start wins: a resumed run compares with the real start
        assets = set(balances.free) | set(balances.locked)
        self.balances[key] = {
            asset: balances.free.get(asset, Decimal(0)) + balances.locked.get(asset, Decimal(0))
            for asset in sorted(assets)
        }

    async def run_balances(
        self, plan_id: uuid.UUID, moment: str
    ) -> dict[tuple[str, str], dict[str, Decimal]]:
        return {
            (exchange, account): dict(totals)
            for (plan, at, exchange, account), totals in self.balances.items()
            if plan == plan_id and at == moment
        }

    async def run_fills(self, plan_id: uuid.UUID) -> dict[tuple[str, str], list[TradedFill]]:
        found: dict[tuple[str, str], list[TradedFill]] = {}
        for o, f in self._fills_of(plan_id):
            traded = TradedFill(o.symbol, o.side, f.amount, f.price, f.fee, f.fee_asset)
            found.setdefault((o.exchange, o.account), []).append(traded)
        return found

    # -- the run report --------------------------------------------------------------------------------

    async def add_note(self, plan_id: uuid.UUID, key: str, reason: str) -> bool:
        notes = self.notes.setdefault(plan_id, {})
        if key in notes:
            return False
        notes[key] = reason
        return True

    async def note(self, plan_id: uuid.UUID, key: str, reason: str) -> None:
        await self.add_note(plan_id, key, reason)

    async def leg_done(self, plan_id: uuid.UUID, leg: int) -> bool:
        return (plan_id, leg) in self.legs

    async def legs_done(self, plan_id: uuid.UUID) -> frozenset[int]:
        return frozenset(leg for plan, leg in self.legs if plan == plan_id)

    async def legs_written(self, plan_id: uuid.UUID) -> frozenset[int]:
        return frozenset(o.leg for o in self.order_rows.values() if o.plan_id == plan_id)

    async def finish_leg(self, plan_id: uuid.UUID, leg: int, outcome: str, placed: bool) -> None:
        self.legs.setdefault((plan_id, leg), (outcome, placed))

    async def report(self, plan_id: uuid.UUID) -> Report:
        ended = [value for (plan, _), value in self.legs.items() if plan == plan_id]
        return Report(
            placed=sum(1 for _, placed in ended if placed),
            filled=sum(1 for outcome, _ in ended if outcome == "filled"),
            skipped=sum(1 for outcome, _ in ended if outcome == "skipped"),
            failed=sum(1 for outcome, _ in ended if outcome == "failed"),
            reasons=tuple(self.notes.get(plan_id, {}).values()),
        )

    # -- the kill switch -------------------------------------------------------------------------------

    async def halted(self, portfolio_id: str) -> bool:
        found = self.halts.get(portfolio_id)
        return found is not None and found[0]

    async def set_halted(
        self, portfolio_id: str, halted: bool, reason: str, requested_by: str, at: datetime
    ) -> bool:
        found = self.halts.get(portfolio_id)
        if found is not None and found[1] > at:
            return False
        self.halts[portfolio_id] = (halted, at)
        return True

    async def halted_portfolios(self) -> list[str]:
        return sorted(portfolio for portfolio, (halted, _) in self.halts.items() if halted)

"""The executor's write-ahead journal in Postgres (migration 0003, schema `execution`): the service's
implementation of `rebal_executor.execution.ports.Journal`.

Written before the executor acts: a plan is queued before its message is acked, an order row (state
`created`) exists before the order is sent, each fill is recorded once by its trade id, and every state
change of a run or an order is appended to `execution.transitions`. State changes go through the pure
transition tables of `rebal.core.execution`; an illegal one is returned as a value and changes nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

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
from rebal.core.numbers import dec_str
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


def _run(row: asyncpg.Record) -> RunRecord:
    plan = RebalancePlanned.model_validate_json(row["plan"])
    return RunRecord(row["plan_id"], row["run_id"], plan, row["state"], row["reason"])


def _order(row: asyncpg.Record) -> OrderRecord:
    return OrderRecord(**{name: row[name] for name in OrderRecord.__dataclass_fields__})


def _task(row: asyncpg.Record) -> TaskRecord:
    return TaskRecord(**{name: row[name] for name in TaskRecord.__dataclass_fields__})


@dataclass
class PostgresJournal:
    pool: asyncpg.Pool

    # -- runs ------------------------------------------------------------------------------------------

    async def enqueue(self, run_id: uuid.UUID, plan: RebalancePlanned) -> bool:
        """Record a plan to run (state queued); False when it was already recorded (a redelivery)."""
        async with self.pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetchval(
                "INSERT INTO execution.runs (plan_id, run_id, portfolio_id, plan, state, planned_at)"
                " VALUES ($1, $2, $3, $4, 'queued', $5) ON CONFLICT DO NOTHING RETURNING true",
                plan.event_id,
                run_id,
                plan.portfolio_id,
                plan.model_dump_json(),
                plan.occurred_at,
            )
            if inserted:
                await connection.execute(
                    "INSERT INTO execution.transitions (plan_id, to_state) VALUES ($1, 'queued')",
                    plan.event_id,
                )
        return bool(inserted)

    async def run(self, plan_id: uuid.UUID) -> RunRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM execution.runs WHERE plan_id = $1", plan_id)
        return None if row is None else _run(row)

    async def unfinished(self) -> list[RunRecord]:
        """Runs not finished: in progress first (a crashed run resumes before anything new), then queued,
        each in the order it arrived."""
        rows = await self.pool.fetch(
            "SELECT * FROM execution.runs WHERE state = ANY($1::text[])"
            " ORDER BY state = 'queued', received_at, plan_id",
            list(UNFINISHED),
        )
        return [_run(row) for row in rows]

    async def coalesce(self) -> dict[uuid.UUID, uuid.UUID]:
        """Supersede older queued plans of a portfolio by its newest (`core.execution.coalesce`); returns
        superseded run → the run that supersedes it (the caller cancels them)."""
        rows = await self.pool.fetch(
            "SELECT plan_id, portfolio_id, planned_at FROM execution.runs WHERE state = 'queued'"
            " ORDER BY received_at, plan_id"
        )
        queue = tuple(Queued(str(r["plan_id"]), r["portfolio_id"], r["planned_at"].isoformat()) for r in rows)
        _, superseded = coalesce(queue)
        return {uuid.UUID(old): uuid.UUID(new) for old, new in superseded.items()}

    async def last_run_end(self, portfolio_id: str) -> datetime | None:
        """When the portfolio's latest run that started trading ended (None: none did)."""
        value = await self.pool.fetchval(
            "SELECT max(finished_at) FROM execution.runs WHERE portfolio_id = $1 AND started_at IS NOT NULL",
            portfolio_id,
        )
        return value if isinstance(value, datetime) else None

    async def move_run(
        self, plan_id: uuid.UUID, wanted: RunState, reason: str = "", at: datetime | None = None
    ) -> RunState | IllegalTransition:
        """Move a run to `wanted` if the table allows it from its current state (recorded once); `at` (the
        executor's clock) is kept as the run's start (sells_in_progress) or end (a final state)."""
        async with self.pool.acquire() as connection, connection.transaction():
            current = await connection.fetchval(
                "SELECT state FROM execution.runs WHERE plan_id = $1 FOR UPDATE", plan_id
            )
            if current is None:
                raise LookupError(f"no run {plan_id} in the journal")
            result = run_transition(current, wanted)
            if isinstance(result, IllegalTransition) or result == current:
                return result
            await connection.execute(
                "UPDATE execution.runs SET state = $2, reason = $3, updated_at = clock_timestamp(),"
                " started_at = CASE WHEN $2 = 'sells_in_progress' THEN $4 ELSE started_at END,"
                " finished_at = CASE WHEN $2 = ANY($5::text[]) THEN $4 ELSE finished_at END"
                " WHERE plan_id = $1",
                plan_id,
                wanted,
                reason,
                at,
                sorted(RUN_FINAL),
            )
            await connection.execute(
                "INSERT INTO execution.transitions (plan_id, from_state, to_state, reason)"
                " VALUES ($1, $2, $3, $4)",
                plan_id,
                current,
                wanted,
                reason,
            )
            return result

    # -- orders ----------------------------------------------------------------------------------------

    async def orders(self, plan_id: uuid.UUID) -> list[OrderRecord]:
        rows = await self.pool.fetch(
            "SELECT * FROM execution.orders WHERE plan_id = $1 ORDER BY leg, attempt", plan_id
        )
        return [_order(row) for row in rows]

    async def latest_order(self, plan_id: uuid.UUID, leg: int) -> OrderRecord | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM execution.orders WHERE plan_id = $1 AND leg = $2 ORDER BY attempt DESC LIMIT 1",
            plan_id,
            leg,
        )
        return None if row is None else _order(row)

    async def create_order(self, order: OrderRecord) -> OrderRecord:
        """Write the order (state created) before it is sent; the existing row if it is already there."""
        fields = list(OrderRecord.__dataclass_fields__)
        async with self.pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetchval(
                f"INSERT INTO execution.orders ({', '.join(fields)})"
                f" VALUES ({', '.join(f'${i + 1}' for i in range(len(fields)))})"
                " ON CONFLICT DO NOTHING RETURNING true",
                *(getattr(order, name) for name in fields),
            )
            if inserted:
                await connection.execute(
                    "INSERT INTO execution.transitions (plan_id, client_order_id, to_state)"
                    " VALUES ($1, $2, $3)",
                    order.plan_id,
                    order.client_order_id,
                    order.state,
                )
            row = await connection.fetchrow(
                "SELECT * FROM execution.orders WHERE client_order_id = $1", order.client_order_id
            )
        assert row is not None, "inserted or already there"
        return _order(row)

    async def move_order(
        self, client_order_id: str, wanted: OrderStage, *, filled: Decimal | None = None, reason: str = ""
    ) -> OrderStage | IllegalTransition:
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT plan_id, state, filled FROM execution.orders WHERE client_order_id = $1 FOR UPDATE",
                client_order_id,
            )
            if row is None:
                raise LookupError(f"no order {client_order_id} in the journal")
            result = order_transition(row["state"], wanted)
            if isinstance(result, IllegalTransition):
                return result
            new_filled = row["filled"] if filled is None else filled
            if result == row["state"] and new_filled == row["filled"]:
                return result
            await connection.execute(
                "UPDATE execution.orders SET state = $2, filled = $3, reason = $4,"
                " updated_at = clock_timestamp()"
                " WHERE client_order_id = $1",
                client_order_id,
                wanted,
                new_filled,
                reason,
            )
            if result != row["state"]:
                await connection.execute(
                    "INSERT INTO execution.transitions"
                    " (plan_id, client_order_id, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5)",
                    row["plan_id"],
                    client_order_id,
                    row["state"],
                    wanted,
                    reason,
                )
            return result

    async def record_fill(self, exchange: str, client_order_id: str, fill: Fill) -> bool:
        """Record a fill once by its trade id; False when it was already recorded."""
        inserted = await self.pool.fetchval(
            "INSERT INTO execution.fills (exchange, trade_id, client_order_id, amount, price, fee, fee_asset)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true",
            exchange,
            fill.trade_id,
            client_order_id,
            fill.amount,
            fill.price,
            fill.fee,
            fill.fee_asset,
        )
        return bool(inserted)

    async def delivered(self, plan_id: uuid.UUID, leg: int, base: str, quote: str) -> Decimal:
        """What a sell leg's fills delivered in its quote, net of fees charged in it (every attempt)."""
        rows = await self.pool.fetch(
            "SELECT f.amount, f.price, f.fee, f.fee_asset FROM execution.fills f"
            " JOIN execution.orders o USING (client_order_id) WHERE o.plan_id = $1 AND o.leg = $2",
            plan_id,
            leg,
        )
        return sum(
            (received("sell", r["amount"], r["price"], r["fee"], r["fee_asset"], base, quote) for r in rows),
            Decimal(0),
        )

    async def leg_fills(self, plan_id: uuid.UUID, leg: int) -> list[TradedFill]:
        rows = await self.pool.fetch(
            "SELECT o.symbol, o.side, f.amount, f.price, f.fee, f.fee_asset FROM execution.fills f"
            " JOIN execution.orders o USING (client_order_id) WHERE o.plan_id = $1 AND o.leg = $2"
            " ORDER BY f.recorded_at, f.trade_id",
            plan_id,
            leg,
        )
        return [
            TradedFill(r["symbol"], r["side"], r["amount"], r["price"], r["fee"], r["fee_asset"])
            for r in rows
        ]

    async def leg_outcome(self, plan_id: uuid.UUID, leg: int) -> str | None:
        value = await self.pool.fetchval(
            "SELECT outcome FROM execution.legs WHERE plan_id = $1 AND leg = $2", plan_id, leg
        )
        return None if value is None else str(value)

    async def sent_notional(self, plan_id: uuid.UUID) -> Decimal:
        """What the run's orders the venue took are worth (in their quotes), for the per-run limit."""
        value = await self.pool.fetchval(
            "SELECT coalesce(sum(notional), 0) FROM execution.orders"
            " WHERE plan_id = $1 AND state <> 'rejected'",
            plan_id,
        )
        return Decimal(value)

    async def order(self, client_order_id: str) -> OrderRecord | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM execution.orders WHERE client_order_id = $1", client_order_id
        )
        return None if row is None else _order(row)

    async def open_orders(self, portfolio_id: str | None = None) -> list[OrderRecord]:
        """Our orders (of one portfolio, or all) that may still be live at a venue: sent and not final."""
        rows = await self.pool.fetch(
            "SELECT o.* FROM execution.orders o JOIN execution.runs r USING (plan_id)"
            " WHERE ($1::text IS NULL OR r.portfolio_id = $1) AND o.state = ANY($2::text[])"
            " ORDER BY o.created_at, o.client_order_id",
            portfolio_id,
            list(MAYBE_LIVE),
        )
        return [_order(row) for row in rows]

    async def record_transfer(self, plan_id: uuid.UUID, transfer_id: str, state: str, reason: str) -> None:
        """A transfer's state change, in the transitions log (its id in `client_order_id`)."""
        await self.pool.execute(
            "INSERT INTO execution.transitions (plan_id, client_order_id, to_state, reason)"
            " VALUES ($1, $2, $3, $4)",
            plan_id,
            transfer_id,
            state,
            reason,
        )

    # -- operators' transfer tasks (migration 0095) ----------------------------------------------------

    async def open_task(self, task: TaskRecord) -> TaskRecord:
        """Record a task (state waiting) unless it is there; the stored row either way."""
        fields = list(TaskRecord.__dataclass_fields__)
        row = await self.pool.fetchrow(
            f"WITH new AS (INSERT INTO execution.transfer_tasks ({', '.join(fields)})"
            f" VALUES ({', '.join(f'${i + 1}' for i in range(len(fields)))})"
            " ON CONFLICT DO NOTHING RETURNING *)"
            " SELECT * FROM new UNION ALL SELECT * FROM execution.transfer_tasks WHERE task_id = $1",
            *(getattr(task, name) for name in fields),
        )
        assert row is not None, "inserted or already there"
        return _task(row)

    async def task(self, task_id: str) -> TaskRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM execution.transfer_tasks WHERE task_id = $1", task_id)
        return None if row is None else _task(row)

    async def tasks(self, plan_id: uuid.UUID) -> list[TaskRecord]:
        rows = await self.pool.fetch(
            "SELECT * FROM execution.transfer_tasks WHERE plan_id = $1 ORDER BY transfer", plan_id
        )
        return [_task(row) for row in rows]

    async def confirm_task(
        self, task_id: str, received: Decimal | None, by: str, at: datetime
    ) -> tuple[TaskRecord, bool] | None:
        """Confirm a waiting task (once: a second confirmation changes nothing and says so)."""
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "UPDATE execution.transfer_tasks SET state = 'confirmed',"
                " received = coalesce($2, amount), confirmed_at = $3, confirmed_by = $4"
                " WHERE task_id = $1 AND state = 'waiting' RETURNING *",
                task_id,
                received,
                at,
                by,
            )
            if row is not None:
                await connection.execute(
                    "INSERT INTO execution.transitions (plan_id, client_order_id, to_state, reason)"
                    " VALUES ($1, $2, 'confirmed', $3)",
                    row["plan_id"],
                    task_id,
                    f"{dec_str(row['received'])} {row['asset']} by {by}",
                )
                return _task(row), True
            found = await connection.fetchrow(
                "SELECT * FROM execution.transfer_tasks WHERE task_id = $1", task_id
            )
        return None if found is None else (_task(found), False)

    async def expire_task(self, task_id: str, reason: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            plan_id = await connection.fetchval(
                "UPDATE execution.transfer_tasks SET state = 'expired', reason = $2"
                " WHERE task_id = $1 AND state = 'waiting' RETURNING plan_id",
                task_id,
                reason,
            )
            if plan_id is not None:
                await connection.execute(
                    "INSERT INTO execution.transitions (plan_id, client_order_id, to_state, reason)"
                    " VALUES ($1, $2, 'expired', $3)",
                    plan_id,
                    task_id,
                    reason,
                )
        return plan_id is not None

    async def touched_accounts(self) -> list[tuple[str, str]]:
        """Every (exchange, account) the executor ever placed an order on."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT exchange, account FROM execution.orders ORDER BY exchange, account"
        )
        return [(row["exchange"], row["account"]) for row in rows]

    async def known_order(self, client_order_id: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT true FROM execution.orders WHERE client_order_id = $1", client_order_id
        )
        return bool(found)

    async def saw_external(self, exchange: str, order: OrderState, looks_ours: bool, at: datetime) -> bool:
        """Record an order at the venue that is not ours (first seen now, or seen again); True the first
        time."""
        inserted = await self.pool.fetchval(
            "INSERT INTO execution.external_orders (exchange, account, client_order_id, symbol, side, amount,"
            " looks_ours, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
            " ON CONFLICT (exchange, account, client_order_id) DO UPDATE"
            " SET last_seen = greatest(execution.external_orders.last_seen, $8), amount = $6"
            " RETURNING xmax = 0",
            exchange,
            order.account,
            order.client_order_id,
            order.symbol,
            order.side,
            order.amount,
            looks_ours,
            at,
        )
        return bool(inserted)

    # -- balances at the start and the end of a run ----------------------------------------------------

    async def record_balances(
        self, plan_id: uuid.UUID, moment: str, exchange: str, account: str, balances: Balances
    ) -> None:
        """The account's balances (free and total per asset) at the run's start (kept: the first record
        wins, so a resumed run compares with the real start) or end (the latest wins)."""
        assets = sorted(set(balances.free) | set(balances.locked))
        document = {
            asset: {
                "free": str(balances.free.get(asset, Decimal(0))),
                "total": str(balances.free.get(asset, Decimal(0)) + balances.locked.get(asset, Decimal(0))),
            }
            for asset in assets
        }
        await self.pool.execute(
            "INSERT INTO execution.run_balances (plan_id, moment, exchange, account, balances)"
            " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (plan_id, moment, exchange, account) DO "
            + (
                "NOTHING"
                if moment == "start"
                else "UPDATE SET balances = $5::jsonb, recorded_at = clock_timestamp()"
            ),
            plan_id,
            moment,
            exchange,
            account,
            json.dumps(document),
        )

    async def run_balances(
        self, plan_id: uuid.UUID, moment: str
    ) -> dict[tuple[str, str], dict[str, Decimal]]:
        """(exchange, account) → total per asset, as recorded at the run's `moment`."""
        rows = await self.pool.fetch(
            "SELECT exchange, account, balances FROM execution.run_balances"
            " WHERE plan_id = $1 AND moment = $2",
            plan_id,
            moment,
        )
        return {
            (row["exchange"], row["account"]): {
                asset: Decimal(values["total"]) for asset, values in json.loads(row["balances"]).items()
            }
            for row in rows
        }

    async def run_fills(self, plan_id: uuid.UUID) -> dict[tuple[str, str], list[TradedFill]]:
        """The run's journaled fills (every attempt), by (exchange, account)."""
        rows = await self.pool.fetch(
            "SELECT o.exchange, o.account, o.symbol, o.side, f.amount, f.price, f.fee, f.fee_asset"
            " FROM execution.fills f JOIN execution.orders o USING (client_order_id)"
            " WHERE o.plan_id = $1 ORDER BY f.recorded_at, f.trade_id",
            plan_id,
        )
        found: dict[tuple[str, str], list[TradedFill]] = {}
        for r in rows:
            fill = TradedFill(r["symbol"], r["side"], r["amount"], r["price"], r["fee"], r["fee_asset"])
            found.setdefault((r["exchange"], r["account"]), []).append(fill)
        return found

    async def add_note(self, plan_id: uuid.UUID, key: str, reason: str) -> bool:
        """`note`, saying whether it is new (a finish done again after a crash adds nothing)."""
        inserted = await self.pool.fetchval(
            "INSERT INTO execution.notes (plan_id, key, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            " RETURNING true",
            plan_id,
            key,
            reason,
        )
        return bool(inserted)

    # -- the run report --------------------------------------------------------------------------------

    async def leg_done(self, plan_id: uuid.UUID, leg: int) -> bool:
        found = await self.pool.fetchval(
            "SELECT true FROM execution.legs WHERE plan_id = $1 AND leg = $2", plan_id, leg
        )
        return bool(found)

    async def legs_done(self, plan_id: uuid.UUID) -> frozenset[int]:
        rows = await self.pool.fetch("SELECT leg FROM execution.legs WHERE plan_id = $1", plan_id)
        return frozenset(row["leg"] for row in rows)

    async def legs_written(self, plan_id: uuid.UUID) -> frozenset[int]:
        rows = await self.pool.fetch("SELECT DISTINCT leg FROM execution.orders WHERE plan_id = $1", plan_id)
        return frozenset(row["leg"] for row in rows)

    async def finish_leg(self, plan_id: uuid.UUID, leg: int, outcome: str, placed: bool) -> None:
        await self.pool.execute(
            "INSERT INTO execution.legs (plan_id, leg, outcome, placed) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            plan_id,
            leg,
            outcome,
            placed,
        )

    async def note(self, plan_id: uuid.UUID, key: str, reason: str) -> None:
        await self.pool.execute(
            "INSERT INTO execution.notes (plan_id, key, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            plan_id,
            key,
            reason,
        )

    async def report(self, plan_id: uuid.UUID) -> Report:
        counts = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE placed) AS placed,"
            " count(*) FILTER (WHERE outcome = 'filled') AS filled,"
            " count(*) FILTER (WHERE outcome = 'skipped') AS skipped,"
            " count(*) FILTER (WHERE outcome = 'failed') AS failed"
            " FROM execution.legs WHERE plan_id = $1",
            plan_id,
        )
        assert counts is not None, "an aggregate always has a row"
        reasons = await self.pool.fetch(
            "SELECT reason FROM execution.notes WHERE plan_id = $1 ORDER BY seq", plan_id
        )
        return Report(
            counts["placed"],
            counts["filled"],
            counts["skipped"],
            counts["failed"],
            tuple(r["reason"] for r in reasons),
        )

    # -- the kill switch -------------------------------------------------------------------------------

    async def halted(self, portfolio_id: str) -> bool:
        value = await self.pool.fetchval(
            "SELECT halted FROM execution.halts WHERE portfolio_id = $1", portfolio_id
        )
        return bool(value)

    async def set_halted(
        self, portfolio_id: str, halted: bool, reason: str, requested_by: str, at: datetime
    ) -> bool:
        """Record a halt or a resume commanded `at`; an older command than the one recorded changes nothing
        (halt and resume arrive on two consumers: their order is the commands' own times). True if applied
        (a redelivered command applies again: same values)."""
        applied = await self.pool.fetchval(
            "INSERT INTO execution.halts (portfolio_id, halted, reason, requested_by, changed_at)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (portfolio_id) DO UPDATE"
            " SET halted = $2, reason = $3, requested_by = $4, changed_at = $5"
            " WHERE execution.halts.changed_at <= $5 RETURNING true",
            portfolio_id,
            halted,
            reason,
            requested_by,
            at,
        )
        return bool(applied)

    async def halted_portfolios(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT portfolio_id FROM execution.halts WHERE halted ORDER BY portfolio_id"
        )
        return [row["portfolio_id"] for row in rows]

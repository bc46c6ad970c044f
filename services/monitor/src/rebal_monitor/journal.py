"""The monitor's journal: every event once, and the tables operators query (runs, orders, fills).

The journal row is inserted only if new, and the projections are applied only then, in the same
transaction, so a redelivered event changes nothing. Projections do not depend on arrival order (a
redelivery can bring a fill before its order, or a run's end before its plan): a late order picks up the
fills already recorded, and a run row is upserted by whichever of its events comes first. A snapshot's
value is kept in `portfolio_values` (the portfolio's performance is computed from them). A run's skips
are the plan's (listed with their reasons in `skips`) and the executor's (`run_skipped`, its reasons in
`reasons`): `skipped` is the larger count, whichever event came first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from rebal.core.errors import InputError
from rebal.db import Connection
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    OrderFilled,
    OrderPlaced,
    PlanFailed,
    RebalancePlanned,
    RunFinished,
    RunStarted,
)
from rebal_monitor import notices, transfer_tasks
from rebal_monitor.views import snapshot_value


async def record(pool: asyncpg.Pool, event: Event) -> bool:
    """Store the event; False when it was already stored (a redelivery)."""
    async with pool.acquire() as connection, connection.transaction():
        return await _record(connection, event)


async def record_many(pool: asyncpg.Pool, events: Sequence[Event]) -> int:
    """Store a batch in order, in one transaction; returns how many were new."""
    async with pool.acquire() as connection, connection.transaction():
        return sum([await _record(connection, event) for event in events])


async def _record(connection: Connection, event: Event) -> bool:
    inserted = await connection.fetchval(
        "INSERT INTO events (event_id, type, subject, portfolio_id, correlation_id, causation_id,"
        " occurred_at, emitted_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)"
        " ON CONFLICT (event_id) DO NOTHING RETURNING true",
        event.event_id,
        event.type,
        event.subject,
        event.portfolio_id,
        event.correlation_id,
        event.causation_id,
        event.occurred_at,
        event.emitted_at,
        event.model_dump_json(),
    )
    if not inserted:
        return False
    await _project(connection, event)
    await transfer_tasks.project(connection, event)
    await notices.project(connection, event)
    return True


async def _project(connection: Connection, event: Event) -> None:
    if isinstance(event, BalanceSnapshotTaken):
        await record_value(connection, event.event_id, event.portfolio_id, event.occurred_at,
                           event.model_dump(mode="json"))  # fmt: skip
    elif isinstance(event, RebalancePlanned):
        # Whatever came first (RunStarted, RunFinished after a redelivery) keeps its status.
        await connection.execute(
            "INSERT INTO runs (run_id, portfolio_id, plan_id, dry_run, status, orders, skipped, reasons,"
            " planned_at, skips) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb)"
            " ON CONFLICT (run_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, dry_run = EXCLUDED.dry_run,"
            " orders = EXCLUDED.orders, skips = EXCLUDED.skips,"
            " skipped = GREATEST(EXCLUDED.skipped, runs.run_skipped),"
            " planned_at = LEAST(runs.planned_at, EXCLUDED.planned_at)",
            event.correlation_id,
            event.portfolio_id,
            event.event_id,
            event.dry_run,
            "preview" if event.dry_run else "planned",
            len(event.orders),
            len(event.skipped),
            json.dumps(sorted({s.reason for s in event.skipped})),
            event.occurred_at,
            json.dumps([skip.model_dump(mode="json") for skip in event.skipped]),
        )
    elif isinstance(event, PlanFailed):
        await connection.execute(
            "INSERT INTO runs (run_id, portfolio_id, plan_id, dry_run, status, reasons, planned_at,"
            " finished_at) VALUES ($1, $2, $3, $4, 'plan_failed', $5::jsonb, $6, $6)"
            " ON CONFLICT (run_id) DO NOTHING",
            event.correlation_id,
            event.portfolio_id,
            event.event_id,
            event.dry_run,
            json.dumps([event.reason]),
            event.occurred_at,
        )
    elif isinstance(event, RunStarted):
        await connection.execute(
            "INSERT INTO runs (run_id, portfolio_id, plan_id, dry_run, status, orders, planned_at)"
            " VALUES ($1, $2, $3, false, 'running', $4, $5)"
            " ON CONFLICT (run_id) DO UPDATE SET status = 'running' WHERE runs.finished_at IS NULL",
            event.correlation_id,
            event.portfolio_id,
            event.plan_id,
            event.orders,
            event.occurred_at,
        )
    elif isinstance(event, OrderPlaced):
        await connection.execute(
            "INSERT INTO orders (client_order_id, run_id, portfolio_id, account, exchange, symbol, side,"
            " amount, phase, placed_at, filled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " (SELECT coalesce(sum(amount), 0) FROM fills WHERE client_order_id = $1))"
            " ON CONFLICT DO NOTHING",
            event.client_order_id,
            event.correlation_id,
            event.portfolio_id,
            event.account,
            event.exchange,
            event.symbol,
            event.side,
            event.amount,
            event.phase,
            event.occurred_at,
        )
    elif isinstance(event, OrderFilled):
        added = await connection.fetchval(
            "INSERT INTO fills (trade_id, client_order_id, run_id, portfolio_id, symbol, side, amount, price,"
            " fee, fee_asset, filled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT DO NOTHING RETURNING true",
            event.trade_id,
            event.client_order_id,
            event.correlation_id,
            event.portfolio_id,
            event.symbol,
            event.side,
            event.amount,
            event.price,
            event.fee,
            event.fee_asset,
            event.occurred_at,
        )
        if added:
            await connection.execute(
                "UPDATE orders SET filled = filled + $2 WHERE client_order_id = $1",
                event.client_order_id,
                event.amount,
            )
    elif isinstance(event, RunFinished):
        await connection.execute(
            "INSERT INTO runs (run_id, portfolio_id, plan_id, dry_run, status, placed, filled, skipped,"
            " run_skipped, failed, reasons, planned_at, finished_at)"
            " VALUES ($1, $2, $3, false, $4, $5, $6, $7, $7, $8, $9::jsonb, $10, $10)"
            " ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, placed = EXCLUDED.placed,"
            " filled = EXCLUDED.filled, run_skipped = EXCLUDED.run_skipped,"
            " skipped = GREATEST(EXCLUDED.run_skipped, jsonb_array_length(runs.skips)),"
            " failed = EXCLUDED.failed, reasons = EXCLUDED.reasons, finished_at = EXCLUDED.finished_at",
            event.correlation_id,
            event.portfolio_id,
            event.plan_id,
            event.status,
            event.placed,
            event.filled,
            event.skipped,
            event.failed,
            json.dumps(list(event.reasons)),
            event.occurred_at,
        )


async def record_value(
    connection: Connection, snapshot_id: Any, portfolio: str, at: datetime, payload: dict[str, Any]
) -> bool:
    """What the portfolio was worth at a snapshot (`portfolio_values`); False when the snapshot does not
    parse (it is journaled all the same, and the planner says why it cannot plan with it)."""
    try:
        value, quote = snapshot_value(payload)
    except (InputError, KeyError, TypeError):
        return False
    await connection.execute(
        "INSERT INTO portfolio_values (snapshot_id, portfolio_id, at, value, quote)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        snapshot_id,
        portfolio,
        at,
        value,
        quote,
    )
    return True

"""The monitor's journal: every event once, and the tables operators query (runs, orders, fills).

One transaction per event: the journal row is inserted only if new, and the projections are applied only
then, so a redelivered event changes nothing.
"""

from __future__ import annotations

import json

import asyncpg

from rebal.db import Connection
from rebal.events import (
    Event,
    OrderFilled,
    OrderPlaced,
    PlanFailed,
    RebalancePlanned,
    RunFinished,
    RunStarted,
)


async def record(pool: asyncpg.Pool, event: Event) -> bool:
    """Store the event; False when it was already stored (a redelivery)."""
    async with pool.acquire() as connection, connection.transaction():
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
        return True


async def _project(connection: Connection, event: Event) -> None:
    if isinstance(event, RebalancePlanned):
        await connection.execute(
            "INSERT INTO runs (run_id, portfolio_id, plan_id, dry_run, status, orders, skipped, reasons,"
            " planned_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) ON CONFLICT (run_id) DO NOTHING",
            event.correlation_id,
            event.portfolio_id,
            event.event_id,
            event.dry_run,
            "preview" if event.dry_run else "planned",
            len(event.orders),
            len(event.skipped),
            json.dumps(sorted({s.reason for s in event.skipped})),
            event.occurred_at,
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
            "UPDATE runs SET status = 'running' WHERE run_id = $1 AND finished_at IS NULL",
            event.correlation_id,
        )
    elif isinstance(event, OrderPlaced):
        await connection.execute(
            "INSERT INTO orders (client_order_id, run_id, portfolio_id, account, exchange, symbol, side,"
            " amount, phase, placed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
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
            "UPDATE runs SET status = $2, placed = $3, filled = $4, skipped = $5, failed = $6,"
            " reasons = $7::jsonb, finished_at = $8 WHERE run_id = $1",
            event.correlation_id,
            event.status,
            event.placed,
            event.filled,
            event.skipped,
            event.failed,
            json.dumps(list(event.reasons)),
            event.occurred_at,
        )

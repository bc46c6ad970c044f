"""Stored plans: a plan document in the `plans` table, read back one at a time, a page at a time or streamed
(the export), and marked approved."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import asyncpg

from rebal.core.numbers import dec_str
from rebal.db import Connection
from rebal.events import RebalancePlanned
from rebal_monitor import views
from rebal_monitor.queries import EXPORT_PREFETCH, JsonDict, jsonable

PLAN_COLUMNS = (
    "plan_id, run_id, portfolio_id, status, dry_run, band, snapshot_id, target_id, total_value,"
    " prices::text AS prices, orders::text AS orders, transfers::text AS transfers, skipped::text AS skipped,"
    " projected_weights::text AS projected_weights, costs::text AS costs, created_at, expires_at,"
    " approved_at, approval_run_id"
)


def plan_document(row: asyncpg.Record) -> JsonDict:
    return {
        "plan_id": str(row["plan_id"]),
        "run_id": str(row["run_id"]),
        "portfolio_id": row["portfolio_id"],
        "status": row["status"],
        "dry_run": row["dry_run"],
        "band": dec_str(row["band"]),
        "inputs": {
            "snapshot_id": str(row["snapshot_id"]),
            "target_id": str(row["target_id"]),
            "total_value": dec_str(row["total_value"]),
            "prices": json.loads(row["prices"]),
        },
        "orders": json.loads(row["orders"]),
        "transfers": json.loads(row["transfers"]),
        "skipped": json.loads(row["skipped"]),
        "projected_weights": json.loads(row["projected_weights"]),
        "costs": _costs(row["costs"]),
        "created_at": row["created_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat(),
        "approved_at": jsonable(row["approved_at"]),
        "approval_run_id": jsonable(row["approval_run_id"]),
    }


COSTS = ("fees", "spread", "withdrawal_fees", "total")


def _costs(stored: str | None) -> JsonDict | None:
    """The costs as `rebal plan --json` orders them (jsonb keeps keys in its own order)."""
    if stored is None:
        return None
    costs = json.loads(stored)
    return {key: costs[key] for key in COSTS}


def plan_of(plan: RebalancePlanned, prices: object, created_at: datetime, expires_at: datetime) -> JsonDict:
    """The document a plan event is stored as (`insert_plan`), with its snapshot's `prices`."""
    return {
        "plan_id": str(plan.event_id),
        "run_id": str(plan.correlation_id),
        "portfolio_id": plan.portfolio_id,
        "dry_run": plan.dry_run,
        "band": dec_str(plan.band),
        "inputs": {
            "snapshot_id": str(plan.snapshot_id),
            "target_id": str(plan.target_id),
            "total_value": dec_str(plan.total_value),
            "prices": prices,
        },
        "orders": [o.model_dump(mode="json") for o in plan.orders],
        "transfers": [t.model_dump(mode="json") for t in plan.transfers],
        "skipped": [s.model_dump(mode="json") for s in plan.skipped],
        "projected_weights": views.projected(plan.projected_weights),
        "costs": None if plan.costs is None else plan.costs.model_dump(mode="json"),
        "created_at": created_at,
        "expires_at": expires_at,
    }


async def insert_plan(pool: asyncpg.Pool | Connection, plan: JsonDict, status: str) -> JsonDict:
    """Store a plan document (once: the same plan id again returns what is stored)."""
    inputs = plan["inputs"]
    await pool.execute(
        "INSERT INTO plans (plan_id, run_id, portfolio_id, status, dry_run, band, snapshot_id, target_id,"
        " total_value, prices, orders, transfers, skipped, projected_weights, costs, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12::jsonb, $13::jsonb,"
        " $14::jsonb, $15::jsonb, $16, $17) ON CONFLICT (plan_id) DO NOTHING",
        uuid.UUID(plan["plan_id"]),
        uuid.UUID(plan["run_id"]),
        plan["portfolio_id"],
        status,
        plan["dry_run"],
        Decimal(plan["band"]),
        uuid.UUID(inputs["snapshot_id"]),
        uuid.UUID(inputs["target_id"]),
        Decimal(inputs["total_value"]),
        json.dumps(inputs["prices"]),
        json.dumps(plan["orders"]),
        json.dumps(plan["transfers"]),
        json.dumps(plan["skipped"]),
        json.dumps(plan["projected_weights"]),
        None if plan["costs"] is None else json.dumps(plan["costs"]),
        plan["created_at"],
        plan["expires_at"],
    )
    stored = await get_plan(pool, uuid.UUID(plan["plan_id"]))
    assert stored is not None
    return stored


async def get_plan(pool: asyncpg.Pool | Connection, plan_id: uuid.UUID) -> JsonDict | None:
    row = await pool.fetchrow(f"SELECT {PLAN_COLUMNS} FROM plans WHERE plan_id = $1", plan_id)
    return None if row is None else plan_document(row)


async def list_plans(
    pool: asyncpg.Pool, portfolio: str, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> tuple[list[JsonDict], tuple[datetime, uuid.UUID] | None]:
    if after is None:
        rows = await pool.fetch(
            f"SELECT {PLAN_COLUMNS} FROM plans WHERE portfolio_id = $1"
            " ORDER BY created_at DESC, plan_id DESC LIMIT $2",
            portfolio,
            limit + 1,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {PLAN_COLUMNS} FROM plans WHERE portfolio_id = $1 AND (created_at, plan_id) < ($2, $3)"
            " ORDER BY created_at DESC, plan_id DESC LIMIT $4",
            portfolio,
            after[0],
            after[1],
            limit + 1,
        )
    page = rows[:limit]
    more = (page[-1]["created_at"], page[-1]["plan_id"]) if len(rows) > limit else None
    return [plan_document(row) for row in page], more


async def mark_approved(pool: asyncpg.Pool, plan_id: uuid.UUID, at: datetime, run_id: uuid.UUID) -> None:
    await pool.execute(
        "UPDATE plans SET status = 'approved', approved_at = $2, approval_run_id = $3"
        " WHERE plan_id = $1 AND approved_at IS NULL",
        plan_id,
        at,
        run_id,
    )


async def plans(pool: asyncpg.Pool, portfolio: str) -> AsyncIterator[JsonDict]:
    query = f"SELECT {PLAN_COLUMNS} FROM plans WHERE portfolio_id = $1 ORDER BY created_at, plan_id"
    async with pool.acquire() as connection, connection.transaction():
        async for row in connection.cursor(query, portfolio, prefetch=EXPORT_PREFETCH):
            yield plan_document(row)

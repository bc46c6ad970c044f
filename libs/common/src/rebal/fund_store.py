"""Reading the funds back from Postgres (the tables of migration 0006), for the planner and the monitor.

The planner's fund part writes these tables (`rebal_planner.funds.store`); both it and the monitor's fund
endpoints read a fund, its ledger, its flows and its cycles through the functions here, so a query the
two share is written once. Every function runs on the caller's pool or connection (inside the caller's
transaction when it has one); amounts are exact decimals.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rebal.core.ledger import Fund, Ledger
from rebal.db import Connection

Queryable = asyncpg.Pool | Connection


@dataclass(frozen=True)
class FundRecord:
    """A defined fund, where its prices come from, and whether it may trade (`status`, with why not)."""

    fund: Fund
    prices_from: str
    status: str
    reason: str


@dataclass(frozen=True)
class Entry:
    """One user's amount of one asset."""

    user_id: str
    asset: str
    amount: Decimal


@dataclass(frozen=True)
class Flow:
    """A deposit or a withdrawal (`amount` None: everything), as recorded and as far as it got."""

    flow_id: uuid.UUID
    user_id: str
    kind: str
    amount: Decimal | None
    status: str
    paid: Decimal | None
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class CycleSummary:
    cycle_id: uuid.UUID
    phase: int
    status: str
    report: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    run_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class Traded:
    """What a cycle's runs really did on the venue: the orders that got a fill, the fills."""

    orders: int
    fills: int


async def fund(db: Queryable, fund_id: str, *, lock: bool = False) -> FundRecord | None:
    """The fund (its row locked for the caller's transaction with `lock`), or None when not defined."""
    row = await db.fetchrow(
        "SELECT * FROM funds WHERE fund_id = $1" + (" FOR UPDATE" if lock else ""), fund_id
    )
    if row is None:
        return None
    weights = {asset: Decimal(weight) for asset, weight in json.loads(row["weights"]).items()}
    defined = Fund(row["fund_id"], row["exchange"], row["account"], row["quote"], weights)
    return FundRecord(defined, row["prices_from"], row["status"], row["reason"])


async def entries(db: Queryable, fund_id: str, user: str | None = None) -> list[Entry]:
    """The ledger's amounts (one user's with `user`), by user then asset."""
    rows = await db.fetch(
        "SELECT user_id, asset, amount FROM fund_ledger"
        " WHERE fund_id = $1 AND ($2::text IS NULL OR user_id = $2) ORDER BY user_id, asset",
        fund_id,
        user,
    )
    return [Entry(row["user_id"], row["asset"], row["amount"]) for row in rows]


def ledger_of(fund: Fund, found: list[Entry]) -> Ledger:
    """The ledger the pure core works on: the fund's assets (and any other held) by the users holding."""
    amounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for entry in found:
        amounts[entry.user_id][entry.asset] = entry.amount
    return Ledger.from_amounts(fund.assets(tuple({entry.asset for entry in found})), amounts)


async def ledger(db: Queryable, fund: Fund) -> Ledger:
    return ledger_of(fund, await entries(db, fund.fund_id))


async def holds(db: Queryable, fund_id: str, user: str) -> bool:
    """Whether the user holds anything in the fund (what a withdrawal needs)."""
    held = await db.fetchval(
        "SELECT count(*) FROM fund_ledger WHERE fund_id = $1 AND user_id = $2 AND amount > 0", fund_id, user
    )
    return bool(held)


def _flow(row: Any) -> Flow:
    return Flow(
        row["flow_id"],
        row["user_id"],
        row["kind"],
        row["amount"],
        row["status"],
        row["paid"],
        row["reason"],
        row["created_at"],
    )


async def flow(db: Queryable, flow_id: uuid.UUID) -> Flow | None:
    row = await db.fetchrow("SELECT * FROM fund_flows WHERE flow_id = $1", flow_id)
    return None if row is None else _flow(row)


async def open_flows(db: Queryable, fund_id: str, user: str | None = None) -> list[Flow]:
    """The flows waiting for a cycle or taken by the running one, oldest first."""
    rows = await db.fetch(
        "SELECT * FROM fund_flows WHERE fund_id = $1 AND status IN ('pending', 'running')"
        " AND ($2::text IS NULL OR user_id = $2) ORDER BY created_at, flow_id",
        fund_id,
        user,
    )
    return [_flow(row) for row in rows]


async def cycle_exists(db: Queryable, cycle_id: uuid.UUID) -> bool:
    return bool(await db.fetchval("SELECT true FROM fund_cycles WHERE cycle_id = $1", cycle_id))


async def recent_cycles(db: Queryable, fund_id: str, limit: int) -> list[CycleSummary]:
    """The fund's latest cycles, newest first, with the report of each one settled."""
    rows = await db.fetch(
        "SELECT cycle_id, phase, status, report, created_at, updated_at, run_ids FROM fund_cycles"
        " WHERE fund_id = $1 ORDER BY created_at DESC LIMIT $2",
        fund_id,
        limit,
    )
    return [
        CycleSummary(
            row["cycle_id"],
            row["phase"],
            row["status"],
            json.loads(row["report"]) if row["report"] else None,
            row["created_at"],
            row["updated_at"],
            tuple(row["run_ids"]),
        )
        for row in rows
    ]


async def traded(db: Queryable, run_ids: list[uuid.UUID]) -> Traded:
    """The orders filled and the fills of a cycle's runs (a cycle can plan orders and trade nothing)."""
    row = await db.fetchrow(
        "SELECT count(DISTINCT client_order_id) AS orders, count(*) AS fills FROM fund_fills"
        " WHERE run_id = ANY($1::uuid[])",
        run_ids,
    )
    assert row is not None
    return Traded(int(row["orders"]), int(row["fills"]))

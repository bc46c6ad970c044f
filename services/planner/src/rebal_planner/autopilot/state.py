"""The autopilot's tables (migration 0070), as the planner writes them: each portfolio's memory and
latest decision (one row, locked while a decision is made, so replicas take turns), the decisions that
changed something, and the funds' scheduled ticks."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from rebal.core.autopilot import Memory
from rebal.db import Connection

JsonDict = dict[str, Any]


async def lock(connection: Connection, portfolio: str, now: datetime) -> tuple[Memory, JsonDict | None]:
    """The portfolio's memory and latest decision, its row locked until the transaction ends (made on
    first use)."""
    await connection.execute(
        "INSERT INTO autopilot_state (portfolio_id, memory, updated_at) VALUES ($1, '{}'::jsonb, $2)"
        " ON CONFLICT (portfolio_id) DO NOTHING",
        portfolio,
        now,
    )
    row = await connection.fetchrow(
        "SELECT memory::text, decision::text FROM autopilot_state WHERE portfolio_id = $1 FOR UPDATE",
        portfolio,
    )
    assert row is not None
    decision = None if row["decision"] is None else json.loads(row["decision"])
    return Memory.from_json(json.loads(row["memory"])), decision


async def save(connection: Connection, portfolio: str, memory: Memory, now: datetime) -> None:
    await connection.execute(
        "UPDATE autopilot_state SET memory = $2::jsonb, updated_at = $3 WHERE portfolio_id = $1",
        portfolio,
        json.dumps(memory.to_json()),
        now,
    )


async def decide(
    connection: Connection, portfolio: str, decision: JsonDict, now: datetime, changed: bool
) -> None:
    """Record the latest decision; one that changed something is kept in the decisions' history too."""
    await connection.execute(
        "UPDATE autopilot_state SET decision = $2::jsonb, decided_at = $3 WHERE portfolio_id = $1",
        portfolio,
        json.dumps(decision),
        now,
    )
    if changed:
        run = decision.get("run_id")
        await connection.execute(
            "INSERT INTO autopilot_decisions (decision_id, portfolio_id, decided_at, rebalance, run_id,"
            " decision) VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (decision_id) DO NOTHING",
            uuid.UUID(decision["decision_id"]),
            portfolio,
            now,
            decision["rebalance"],
            None if run is None else uuid.UUID(run),
            json.dumps(decision),
        )


async def last_fund_tick(connection: Connection, fund: str) -> datetime | None:
    value: datetime | None = await connection.fetchval(
        "SELECT last_tick FROM fund_schedule_ticks WHERE fund_id = $1 FOR UPDATE", fund
    )
    return value


async def fund_ticked(connection: Connection, fund: str, tick: datetime) -> None:
    await connection.execute(
        "INSERT INTO fund_schedule_ticks (fund_id, last_tick) VALUES ($1, $2)"
        " ON CONFLICT (fund_id) DO UPDATE SET last_tick = GREATEST(fund_schedule_ticks.last_tick, $2)",
        fund,
        tick,
    )

"""`make run`'s start-up console shows the autopilot's first decision of *this* run: a decision stored by an
earlier run (the data persists in var/) is not shown as current."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from rebal import db
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import PORTFOLIO, first_decision

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def record(dsn: str, summary: str, at: datetime) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO autopilot_state (portfolio_id, memory, updated_at, decision, decided_at)"
            " VALUES ($1, '{}'::jsonb, $2, $3::jsonb, $2) ON CONFLICT (portfolio_id) DO UPDATE"
            " SET decision = EXCLUDED.decision, decided_at = EXCLUDED.decided_at",
            PORTFOLIO,
            at,
            json.dumps({"summary": summary}),
        )
    finally:
        await connection.close()


async def started_a_rebalance(dsn: str, summary: str, at: datetime) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO autopilot_decisions (decision_id, portfolio_id, decided_at, rebalance, decision)"
            " VALUES ($1, $2, $3, true, $4::jsonb)",
            uuid.uuid4(),
            PORTFOLIO,
            at,
            json.dumps({"summary": summary}),
        )
    finally:
        await connection.close()


async def test_a_decision_of_an_earlier_run_is_not_shown_as_this_runs(database: FreshDatabase) -> None:
    connection = await asyncpg.connect(database.dsn)
    try:
        await db.migrate(connection)
    finally:
        await connection.close()
    started = datetime.now(UTC)
    await record(database.dsn, "no rebalance: next 14:00", started - timedelta(hours=3))

    assert await first_decision(database.dsn, started, timeout=0.6) is None

    await record(
        database.dsn, "rebalance: drift 6.1 points over the 5-point band", started + timedelta(seconds=1)
    )
    assert await first_decision(database.dsn, started, timeout=5) == (
        "rebalance: drift 6.1 points over the 5-point band"
    )


async def test_the_rebalance_this_run_started_is_shown_though_a_later_decision_replaced_it(
    database: FreshDatabase,
) -> None:
    connection = await asyncpg.connect(database.dsn)
    try:
        await db.migrate(connection)
    finally:
        await connection.close()
    started = datetime.now(UTC)
    await started_a_rebalance(database.dsn, "rebalance: an earlier run's", started - timedelta(hours=3))
    await started_a_rebalance(database.dsn, "rebalance: the schedule's tick", started + timedelta(seconds=1))
    await record(database.dsn, "no rebalance: run 27be2954 is under way", started + timedelta(seconds=2))

    assert await first_decision(database.dsn, started, timeout=5) == "rebalance: the schedule's tick"

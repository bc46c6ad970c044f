"""Operators' transfer tasks as the monitor shows them (`GET /transfers`, `rebal transfer list`): a
projection of the executor's `TransferTaskOpened`, `TransferConfirmed` and `TransferTaskExpired` into
`transfer_tasks` (migration 0095), applied in the journal's transaction, tolerant of the order the
events arrive in (a confirmation or an expiry never goes back to waiting)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from rebal.core.numbers import dec_str
from rebal.db import Connection
from rebal.events import Event, TransferConfirmed, TransferTaskExpired, TransferTaskOpened
from rebal.strategy_store import Connection as Reader


async def project(connection: Connection, event: Event) -> None:
    if isinstance(event, TransferTaskOpened):
        await connection.execute(
            "INSERT INTO transfer_tasks (task_id, portfolio_id, run_id, plan_id, transfer, asset,"
            " from_account, to_account, amount, state, opened_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'waiting', $10, $11)"
            " ON CONFLICT (task_id) DO UPDATE SET portfolio_id = $2, run_id = $3, plan_id = $4,"
            " transfer = $5, asset = $6, from_account = $7, to_account = $8, amount = $9,"
            " opened_at = $10, expires_at = $11",
            event.task_id,
            event.portfolio_id,
            event.correlation_id,
            event.plan_id,
            event.transfer,
            event.asset,
            event.from_account,
            event.to_account,
            event.amount,
            event.occurred_at,
            event.expires_at,
        )
    elif isinstance(event, TransferConfirmed):
        await connection.execute(
            "UPDATE transfer_tasks SET state = 'confirmed', received = $2, confirmed_at = $3,"
            " confirmed_by = $4 WHERE task_id = $1 AND state = 'waiting'",
            event.task_id,
            event.received,
            event.confirmed_at,
            event.requested_by,
        )
    elif isinstance(event, TransferTaskExpired):
        await connection.execute(
            "UPDATE transfer_tasks SET state = 'expired', reason = $2"
            " WHERE task_id = $1 AND state = 'waiting'",
            event.task_id,
            event.reason,
        )


def _shown(row: Any) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    def amount(value: Decimal | None) -> str | None:
        return None if value is None else dec_str(value)

    return {
        "task_id": row["task_id"],
        "portfolio_id": row["portfolio_id"],
        "run_id": None if row["run_id"] is None else str(row["run_id"]),
        "plan_id": str(row["plan_id"]),
        "transfer": row["transfer"],
        "asset": row["asset"],
        "from": row["from_account"],
        "to": row["to_account"],
        "amount": amount(row["amount"]),
        "state": row["state"],
        "received": amount(row["received"]),
        "opened_at": moment(row["opened_at"]),
        "expires_at": moment(row["expires_at"]),
        "confirmed_at": moment(row["confirmed_at"]),
        "confirmed_by": row["confirmed_by"],
        "reason": row["reason"],
    }


async def listed(connection: Reader, portfolios: list[str], state: str | None) -> list[dict[str, Any]]:
    """The tasks of `portfolios` (in one state, or all), oldest first."""
    rows = await connection.fetch(
        "SELECT * FROM transfer_tasks WHERE portfolio_id = ANY($1::text[])"
        " AND ($2::text IS NULL OR state = $2) ORDER BY opened_at, task_id",
        portfolios,
        state,
    )
    return [_shown(row) for row in rows]


async def one(connection: Reader, task_id: str) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM transfer_tasks WHERE task_id = $1", task_id)
    return None if row is None else _shown(row)


async def waiting(connection: Reader, portfolio: str) -> int:
    """How many of the portfolio's tasks wait for an operator."""
    count = await connection.fetchval(
        "SELECT count(*) FROM transfer_tasks WHERE portfolio_id = $1 AND state = 'waiting'", portfolio
    )
    return int(count or 0)

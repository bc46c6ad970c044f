"""The operators' targets in Postgres: every version of a portfolio's desired tree, with author and time.

The monitor's API writes a version (`add`) and publishes `SetTarget`; the optimizer publishes the latest
version as the portfolio's `TargetWeightsComputed` (its id from `event_key`, so the API, a restarted
optimizer and a redelivered command name the same event) and reads the versions back at start
(`current_all`). Versions only grow: a rollback adds a version with an older one's tree (`based_on`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from rebal.db import Connection

Queryable = asyncpg.Pool | Connection
# One writer at a time per portfolio: the next version number is taken under this advisory lock.
VERSION_LOCK = "rebal|target_versions|"
COLUMNS = "portfolio_id, version, tree::text AS tree, author, note, based_on, command_id, created_at"


@dataclass(frozen=True)
class Version:
    portfolio_id: str
    version: int
    tree: dict[str, Any]
    author: str
    note: str
    based_on: int | None
    command_id: uuid.UUID
    created_at: datetime

    @property
    def source(self) -> str:
        """The target's `source` when the optimizer publishes it."""
        return f"manual:v{self.version}"


def event_key(version: int) -> str:
    """The key of the `TargetWeightsComputed` that publishes a version (`new_event(..., key=...)`)."""
    return f"manual|v{version}"


def _version(row: Any) -> Version:
    return Version(
        row["portfolio_id"],
        row["version"],
        json.loads(row["tree"]),
        row["author"],
        row["note"],
        row["based_on"],
        row["command_id"],
        row["created_at"],
    )


async def add(
    pool: asyncpg.Pool,
    portfolio: str,
    tree: dict[str, Any],
    *,
    author: str,
    note: str,
    at: datetime,
    command_id: uuid.UUID,
    based_on: int | None = None,
) -> Version:
    """Store the next version of the portfolio's target (1, 2, ...) and return it."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", VERSION_LOCK + portfolio)
        number = await connection.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM target_versions WHERE portfolio_id = $1", portfolio
        )
        row = await connection.fetchrow(
            "INSERT INTO target_versions (portfolio_id, version, tree, author, note, based_on, command_id,"
            f" created_at) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8) RETURNING {COLUMNS}",
            portfolio,
            number,
            json.dumps(tree),
            author,
            note,
            based_on,
            command_id,
            at,
        )
    return _version(row)


async def current(db: Queryable, portfolio: str) -> Version | None:
    """The version in force: the latest."""
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM target_versions WHERE portfolio_id = $1 ORDER BY version DESC LIMIT 1",
        portfolio,
    )
    return None if row is None else _version(row)


async def current_all(db: Queryable) -> dict[str, Version]:
    """Every portfolio's version in force."""
    rows = await db.fetch(
        f"SELECT DISTINCT ON (portfolio_id) {COLUMNS} FROM target_versions"
        " ORDER BY portfolio_id, version DESC"
    )
    return {row["portfolio_id"]: _version(row) for row in rows}


async def get(db: Queryable, portfolio: str, version: int) -> Version | None:
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM target_versions WHERE portfolio_id = $1 AND version = $2", portfolio, version
    )
    return None if row is None else _version(row)


async def history(db: Queryable, portfolio: str, limit: int) -> list[Version]:
    """The portfolio's versions, newest first."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM target_versions WHERE portfolio_id = $1 ORDER BY version DESC LIMIT $2",
        portfolio,
        limit,
    )
    return [_version(row) for row in rows]

"""Postgres: numbered plain-SQL migrations, applied once each, in order, by whichever service starts first.

Migrations live in `rebal/migrations/NNNN_name.sql`. An advisory lock serialises concurrent starts; the
`schema_migrations` table records what ran. A migration runs in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection of its own or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy
MIGRATION_LOCK = 0x7265_6261_6C00  # "rebal\\0": one advisory lock for the whole schema
NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    found: list[Migration] = []
    for entry in resources.files("rebal.migrations").iterdir():
        match = NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {sorted(numbers)}")
    return found


async def migrate(connection: Connection) -> list[str]:
    """Apply what has not run yet; returns the names applied now."""
    applied_now: list[str] = []
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " number integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["number"] for row in await connection.fetch("SELECT number FROM schema_migrations")}
        for migration in migrations():
            if migration.number in done:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)",
                    migration.number,
                    migration.name,
                )
            applied_now.append(migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


async def pending(connection: Connection) -> list[str]:
    """Migrations not applied yet (for readiness checks and `rebal doctor`)."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {row["number"] for row in await connection.fetch("SELECT number FROM schema_migrations")}
    return [m.name for m in migrations() if m.number not in done]

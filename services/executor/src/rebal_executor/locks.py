"""One active writer per account: Postgres advisory locks held for the length of a run.

Executor replicas share one durable consumer, so two of them may be handed two plans for the same account
at once; the second waits here until the first run ends (its message's deadline is extended meanwhile). The
locks are session locks: a replica that crashes loses its connection and with it its locks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg

from rebal.events import derive_id


def lock_key(exchange: str, account: str) -> int:
    """A stable signed 64-bit key for one account of one exchange."""
    return int.from_bytes(derive_id("account-lock", exchange, account).bytes[:8], "big", signed=True)


@asynccontextmanager
async def account_locks(pool: asyncpg.Pool, accounts: Iterable[tuple[str, str]]) -> AsyncIterator[None]:
    """Hold the locks of these (exchange, account) pairs; taken in one order so replicas cannot deadlock."""
    keys = sorted({lock_key(exchange, account) for exchange, account in accounts})
    async with pool.acquire() as connection:
        taken: list[int] = []
        try:
            for key in keys:
                await connection.execute("SELECT pg_advisory_lock($1)", key)
                taken.append(key)
            yield
        finally:
            for key in reversed(taken):
                await connection.execute("SELECT pg_advisory_unlock($1)", key)

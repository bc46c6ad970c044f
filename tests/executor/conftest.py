from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.execution import Journal
from rebal_executor.journal import PostgresJournal
from tests.executor.memory_journal import MemoryJournal
from tests.paper_support import migrated_pool


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(database.dsn):
        yield value


@pytest.fixture(params=["postgres", "memory"])
def journal(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> Journal:
    """The engine's journal: Postgres (the service's) and in memory (the same port, the same tests)."""
    return PostgresJournal(pool) if request.param == "postgres" else MemoryJournal()

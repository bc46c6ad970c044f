"""One migrated database for the venue tests (made once per session), its paper tables emptied before each
test that takes `pool`: a fresh database per test cost about 1.5 s each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from rebal_devstack.postgres import create_database, drop_database
from tests.paper_support import migrated_pool

PAPER_TABLES = (
    "paper.fills, paper.orders, paper.balances, paper.transfers, paper.positions, paper.symbol_settings,"
    " paper.funding, paper.liquidations"
)


@pytest.fixture(scope="session")
def venues_dsn(postgres_admin_dsn: str) -> Iterator[str]:
    name = f"venues_{uuid.uuid4().hex[:12]}"
    yield create_database(postgres_admin_dsn, name, if_missing=False)
    drop_database(postgres_admin_dsn, name)


@pytest.fixture(scope="session")
async def shared_pool(venues_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(venues_dsn):
        yield value


@pytest.fixture
async def pool(shared_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    await shared_pool.execute(f"TRUNCATE {PAPER_TABLES}")
    yield shared_pool

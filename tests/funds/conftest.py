from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from rebal_devstack.pytest_plugin import FreshDatabase
from tests.paper_support import migrated_pool


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(database.dsn):
        yield value

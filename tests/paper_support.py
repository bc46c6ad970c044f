"""Shared pieces for tests on the paper exchange: a migrated database and small market documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from rebal import db

EXCHANGE = "paper"
T0 = datetime(2025, 1, 1, tzinfo=UTC)

MARKETS: dict[str, Any] = {
    EXCHANGE: {
        "BTC/USDT": {"amount_step": "0.00001", "min_amount": "0.00001", "min_cost": "5", "fee_rate": "0.001"},
        "ETH/USDT": {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"},
        "SOL/USDT": {"amount_step": "0.01", "min_amount": "0.01", "min_cost": "5", "fee_rate": "0.001"},
    }
}
PRICES: dict[str, Any] = {"quote": "USDT", "prices": {"BTC": "60000", "ETH": "3000", "SOL": "150"}}
# Prices that do not move: exact numbers in the tests.
STILL = {"amplitude": 0.0, "noise": 0.0}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def migrated_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    try:
        yield pool
    finally:
        await pool.close()

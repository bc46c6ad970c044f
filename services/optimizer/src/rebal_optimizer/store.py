"""The strategies' stored returns and positions (the tracker's `strategy_returns`), as the optimizer
reads them: the last N returns of each strategy in one query, aligned on the timestamps all share."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import numpy as np
import orjson

from rebal import strategy_store
from rebal.core.performance import align
from rebal_optimizer.allocator import ReturnMatrix

LAST_RETURNS = (
    "SELECT strategy_id, array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS stamps,"
    f" array_agg({strategy_store.RETURN_AS_FLOAT} ORDER BY ts) AS returns FROM ("
    "  SELECT strategy_id, ts, period_return,"
    "   row_number() OVER (PARTITION BY strategy_id ORDER BY ts DESC) AS age"
    "  FROM strategy_returns WHERE portfolio_id = $1 AND strategy_id = ANY($2::text[])"
    " ) recent WHERE age <= $3 GROUP BY strategy_id"
)
LATEST_POSITIONS = (
    "SELECT DISTINCT ON (strategy_id) strategy_id, positions FROM strategy_returns"
    " WHERE portfolio_id = $1 AND positions IS NOT NULL ORDER BY strategy_id, ts DESC"
)


@dataclass(frozen=True)
class PostgresStrategyData:
    pool: asyncpg.Pool

    async def strategies(self, portfolio: str) -> list[str]:
        return await strategy_store.strategies_of(self.pool, portfolio)

    async def matrix(self, portfolio: str, strategies: list[str], lookback: int) -> ReturnMatrix:
        rows = {
            row["strategy_id"]: row
            for row in await self.pool.fetch(LAST_RETURNS, portfolio, strategies, lookback)
        }
        names = tuple(sorted(strategies))
        if set(rows) != set(names):
            return ReturnMatrix(names, np.empty(0), np.empty((0, len(names))))
        # A row stored out of bounds (before they were enforced) is skipped and reported, not fatal.
        usable = [
            strategy_store.usable_returns(portfolio, n, rows[n]["stamps"], rows[n]["returns"]) for n in names
        ]
        stamps, matrix = align([kept[0] for kept in usable], [kept[1] for kept in usable])
        return ReturnMatrix(names, stamps[-lookback:], matrix[-lookback:])

    async def count(self, portfolio: str) -> int:
        value = await self.pool.fetchval(
            "SELECT count(*) FROM strategy_returns WHERE portfolio_id = $1", portfolio
        )
        return int(value)

    async def positions(self, portfolio: str) -> dict[str, dict[str, Decimal]]:
        out = {}
        for row in await self.pool.fetch(LATEST_POSITIONS, portfolio):
            held = orjson.loads(row["positions"])
            out[row["strategy_id"]] = {str(k): Decimal(str(v)) for k, v in held.items()}
        return out

"""Strategy statistics: recomputed from the stored returns of a portfolio when new returns arrive.

Ingest marks the portfolios it stored returns for as dirty; `StatsRefresher.run` recomputes each dirty
portfolio at most once per `debounce` seconds (a burst of returns costs one recompute) and waits at
least 9 times as long as the last recompute took (at most `LOAD_SHARE`, 10%, of its time on
statistics). It computes off the event loop and replaces the portfolio's rows in `strategy_stats` and
`strategy_correlations` in one transaction (readers see the old statistics or the new ones, never
half). One query reads a portfolio's returns as float arrays per strategy (`array_agg`), so a
recompute is one round trip plus numpy (bench/strategy_stats.py measures it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import numpy as np
import orjson

from rebal import strategy_store
from rebal.core.strategy_stats import (
    PairCorrelation,
    Series,
    WindowStats,
    pair_correlations,
    strategy_stats,
)

log = logging.getLogger("rebal.tracker")
# The largest share of its time the tracker spends recomputing statistics while returns keep arriving.
LOAD_SHARE = 0.1

# Unordered aggregates (both see the rows in the same order), sorted by numpy: sorting inside each
# aggregate made Postgres ~1.5x slower on long series.
SERIES = (
    "SELECT strategy_id, array_agg(extract(epoch FROM ts)::float8) AS stamps,"
    f" array_agg({strategy_store.RETURN_AS_FLOAT}) AS returns"
    " FROM strategy_returns WHERE portfolio_id = $1 GROUP BY strategy_id ORDER BY strategy_id"
)
STATS_INSERT = (
    "INSERT INTO strategy_stats (portfolio_id, strategy_id, window_label, computed_at, observations,"
    " cumulative_return, annualised_return, volatility, max_drawdown, sharpe, sortino, last_timestamp,"
    " frequency, periods_per_year, not_annualised)"
    " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::float8[],"
    " $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::timestamptz[],"
    " $13::text[], $14::float8[], $15::jsonb[])"
)
CORRELATIONS_INSERT = (
    "INSERT INTO strategy_correlations (portfolio_id, window_label, strategy_a, strategy_b, correlation,"
    " observations, computed_at)"
    " SELECT $1, *, $7 FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[], $6::int[])"
)


def _nullable(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class StatsStore:
    pool: asyncpg.Pool

    async def series(self, portfolio_id: str) -> list[Series]:
        out = []
        for row in await self.pool.fetch(SERIES, portfolio_id):
            # A row stored out of bounds (before they were enforced) is skipped and reported, not fatal.
            stamps, returns = strategy_store.usable_returns(
                portfolio_id, row["strategy_id"], row["stamps"], row["returns"]
            )
            order = np.argsort(stamps, kind="stable")
            out.append(Series(row["strategy_id"], stamps[order], returns[order]))
        return out

    async def replace(
        self,
        portfolio_id: str,
        stats: Sequence[WindowStats],
        pairs: Sequence[PairCorrelation],
        computed_at: datetime,
    ) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM strategy_stats WHERE portfolio_id = $1", portfolio_id)
            await connection.execute(
                "DELETE FROM strategy_correlations WHERE portfolio_id = $1", portfolio_id
            )
            await connection.execute(
                STATS_INSERT,
                portfolio_id,
                [s.strategy_id for s in stats],
                [s.window for s in stats],
                [computed_at] * len(stats),
                [s.performance.periods for s in stats],
                [_nullable(s.performance.cumulative_return) for s in stats],
                [_nullable(s.performance.annualised_return) for s in stats],
                [_nullable(s.performance.annualised_volatility) for s in stats],
                [_nullable(s.performance.max_drawdown) for s in stats],
                [_nullable(s.performance.sharpe) for s in stats],
                [_nullable(s.performance.sortino) for s in stats],
                [_stamp(s.last_timestamp) for s in stats],
                [s.performance.frequency for s in stats],
                [_nullable(s.performance.periods_per_year) for s in stats],
                [orjson.dumps(dict(s.performance.not_annualised)).decode() for s in stats],
            )
            await connection.execute(
                CORRELATIONS_INSERT,
                portfolio_id,
                [p.window for p in pairs],
                [p.strategy_a for p in pairs],
                [p.strategy_b for p in pairs],
                [p.correlation for p in pairs],
                [p.observations for p in pairs],
                computed_at,
            )


def compute(
    series: Sequence[Series], windows: Sequence[int]
) -> tuple[list[WindowStats], list[PairCorrelation]]:
    return strategy_stats(series, windows), pair_correlations(series, windows)


@dataclass
class StatsRefresher:
    """Recomputes the statistics of portfolios marked dirty, debounced."""

    store: StatsStore
    windows: Sequence[int]
    debounce: float
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    dirty: set[str] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def mark(self, portfolios: set[str]) -> None:
        if portfolios - self.dirty:
            self.dirty |= portfolios
            self._wake.set()

    async def refresh(self, portfolio_id: str) -> None:
        series = await self.store.series(portfolio_id)
        stats, pairs = await asyncio.to_thread(compute, series, self.windows)
        await self.store.replace(portfolio_id, stats, pairs, self.clock())

    async def refresh_dirty(self) -> None:
        portfolios, self.dirty = sorted(self.dirty), set()
        for portfolio in portfolios:
            try:
                await self.refresh(portfolio)
            except Exception:  # logged with its traceback; the next return marks it dirty again
                log.exception("recomputing the strategy statistics of %s failed", portfolio)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            await self.refresh_dirty()
            took = time.monotonic() - started
            # At least `debounce`, and at most LOAD_SHARE of the time recomputing: a portfolio whose
            # history makes a recompute slow is recomputed less often.
            await asyncio.sleep(max(self.debounce, took * (1 / LOAD_SHARE - 1)))

"""Issue 19, point 3: a return stored before the bounds were enforced (``rebal backfill`` of
``2030-01-01,1e400`` did it) breaks no statistic: the tracker's, the strategies' figures in the monitor's
``/portfolio/performance``, and the optimizer's data skip the row and report it; ``/portfolio/equity`` (the
portfolio's own curve, from its snapshots) still answers.

Before: the tracker's recompute failed every time (Postgres refuses to cast 1e400 to a float), and both
endpoints answered 500 until the row was deleted by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from rebal import metrics, strategy_store
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_optimizer.store import PostgresStrategyData
from rebal_tracker.stats import StatsRefresher, StatsStore
from tests.monitor.running import monitor_settings, running_monitor
from tests.paper_support import migrated_pool

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the pool fixture's loop
T0 = datetime(2030, 1, 1, tzinfo=UTC)
GOOD = ["0.01", "-0.02", "0.03"]
# What older versions let in, one row each among trend's good ones.
BAD: list[tuple[datetime, str]] = [
    (T0 + timedelta(days=10), "1e400"),
    (T0 + timedelta(days=11), "-5"),
    (T0 + timedelta(days=12), "1e-400"),
    (T0 + timedelta(days=13), "NaN"),
    (datetime(2200, 1, 1, tzinfo=UTC), "0.01"),
    (datetime(1, 1, 1, tzinfo=UTC), "0.01"),
]


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(database.dsn):
        # The table as it was before migration 0040 (which refuses such rows from now on).
        for name in ("period_return_bounds", "ts_bounds"):
            await value.execute(f"ALTER TABLE strategy_returns DROP CONSTRAINT strategy_returns_{name}")
        await value.executemany(
            "INSERT INTO strategy_returns (strategy_id, ts, period_return, portfolio_id)"
            " VALUES ($1, $2, $3::numeric, 'demo')",
            [
                *[
                    (name, T0 + timedelta(days=day), v)
                    for name in ("trend", "arb")
                    for day, v in enumerate(GOOD)
                ],
                *[("trend", ts, v) for ts, v in BAD],
            ],
        )
        yield value


def unusable(strategy: str) -> float:
    return float(metrics.STRATEGY_RETURNS_UNUSABLE.labels(portfolio="demo", strategy=strategy)._value.get())


async def test_the_tracker_computes_statistics_without_the_bad_rows(pool: asyncpg.Pool) -> None:
    refresher = StatsRefresher(StatsStore(pool), windows=[], debounce=0.01, clock=lambda: T0)
    await refresher.refresh("demo")  # raised NumericValueOutOfRangeError before
    stats = {s.strategy_id: s for s in await strategy_store.load_stats(pool, "demo")}
    assert stats["trend"].observations == 3 and stats["arb"].observations == 3
    assert stats["trend"].cumulative_return == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    assert stats["trend"].last_timestamp == T0 + timedelta(days=2)
    assert (unusable("trend"), unusable("arb")) == (len(BAD), 0)


async def test_the_monitor_serves_performance_and_equity_without_the_bad_rows(
    pool: asyncpg.Pool, nats_url: str, database: FreshDatabase
) -> None:
    async with running_monitor(monitor_settings(nats_url, database.dsn)) as running:
        performance = await running.client.get("/portfolio/performance")
        equity = await running.client.get("/portfolio/equity")
    assert performance.status_code == 200, performance.text
    by_name = {s["strategy_id"]: s for s in performance.json()["strategies"]}
    assert by_name["trend"]["observations"] == 3
    assert by_name["trend"]["cumulative_return"] == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    assert performance.json()["combined"]["cumulative_return"] == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    # The equity curve is the portfolio's own, from its snapshots (none here): the strategies' rows, bad
    # or good, are not part of it, and must not break it.
    assert equity.status_code == 200, equity.text
    assert equity.json()["source"] == "snapshots" and equity.json()["points"] == []
    assert performance.json()["portfolio"]["source"] == "snapshots"
    assert unusable("trend") == len(BAD)


async def test_the_optimizer_reads_the_returns_without_the_bad_rows(pool: asyncpg.Pool) -> None:
    data = await PostgresStrategyData(pool).matrix("demo", ["arb", "trend"], lookback=100)
    assert data.returns.shape == (3, 2)
    assert data.returns[:, 1].tolist() == pytest.approx([0.01, -0.02, 0.03])

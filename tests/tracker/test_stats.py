"""Strategy statistics: worked numbers for the pure core, and the tracker's recompute into Postgres read
back through `rebal.strategy_store` (what the monitor's API serves)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import asyncpg
import numpy as np
import pytest

from rebal import strategy_store
from rebal.core.strategy_stats import Series, pair_correlations, strategy_stats
from rebal.events import StrategyReturnReported, new_event
from rebal_tracker.returns import ReturnsIngest, ReturnsStore
from rebal_tracker.stats import StatsRefresher, StatsStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = 86_400.0


def series(name: str, returns: list[float], start_day: int = 0) -> Series:
    days = np.arange(start_day, start_day + len(returns), dtype=np.float64)
    return Series(name, T0.timestamp() + days * DAY, np.asarray(returns))


def test_inception_and_window_statistics_by_hand() -> None:
    # Days 0..3; the 2-day window keeps days 2 and 3 (less than 2 days older than day 3).
    [inception, window] = strategy_stats([series("a", [0.1, -0.05, 0.02, 0.01])], [2])
    assert inception.window == "inception" and window.window == "2d"
    assert inception.performance.periods == 4 and window.performance.periods == 2
    assert inception.performance.cumulative_return == pytest.approx(1.1 * 0.95 * 1.02 * 1.01 - 1)
    assert inception.performance.max_drawdown == pytest.approx(0.05)
    assert window.performance.cumulative_return == pytest.approx(1.02 * 1.01 - 1)
    assert window.performance.max_drawdown == 0.0
    # Four days are too few to annualise: no figure, and the reason.
    assert math.isnan(inception.performance.annualised_volatility)
    assert inception.performance.not_annualised["sharpe"] == "needs ≥ 30 periods (has 4)"
    assert inception.last_timestamp == T0.timestamp() + 3 * DAY
    # Forty days: daily spacing, 365.25 periods a year; the annualised return still needs a year.
    returns = np.random.default_rng(3).normal(0.001, 0.01, 40)
    [forty] = strategy_stats([series("b", returns.tolist())], [])
    assert forty.performance.frequency == "daily" and forty.performance.periods_per_year == 365.25
    volatility = float(np.std(returns, ddof=1)) * math.sqrt(365.25)
    assert forty.performance.annualised_volatility == pytest.approx(volatility)
    assert forty.performance.sharpe == pytest.approx(
        returns.mean() / np.std(returns, ddof=1) * math.sqrt(365.25)
    )
    assert math.isnan(forty.performance.annualised_return)


def test_correlations_use_the_common_timestamps_of_each_pair() -> None:
    a = series("a", [0.01, -0.02, 0.03, 0.0])
    double = series("b", [0.02, -0.04, 0.06, 0.0])
    opposite = series("c", [0.03, -0.045, 0.0], start_day=1)  # days 1..3: -1.5 x a there
    pairs = {(p.window, p.strategy_a, p.strategy_b): p for p in pair_correlations([opposite, a, double], [])}
    assert pairs["inception", "a", "b"].correlation == pytest.approx(1.0)
    assert pairs["inception", "b", "a"].correlation == pytest.approx(1.0)
    assert pairs["inception", "a", "c"].correlation == pytest.approx(-1.0)
    assert pairs["inception", "a", "c"].observations == 3
    assert pairs["inception", "c", "c"].correlation == 1.0


def report(strategy: str, day: int, value: str, portfolio: str = "fund") -> StrategyReturnReported:
    ts = T0 + timedelta(days=day)
    return new_event(
        StrategyReturnReported,
        key=f"{strategy}|{ts.isoformat()}",
        now=ts,
        portfolio_id=portfolio,
        strategy_id=strategy,
        timestamp=ts,
        period_return=D(value),
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_the_tracker_recomputes_and_the_store_reads_back(pool: asyncpg.Pool) -> None:
    refresher = StatsRefresher(StatsStore(pool), windows=[2], debounce=0.01, clock=lambda: T0)
    ingest = ReturnsIngest(ReturnsStore(pool), on_stored=refresher.mark)
    a = ["0.1", "-0.05", "0.02", "0.01"]
    b = ["0.2", "-0.1", "0.04", "0.02"]
    # Out of order, with a duplicate and another portfolio's strategy.
    await ingest.on_returns([report("b", d, v) for d, v in reversed(list(enumerate(b)))])
    await ingest.on_returns([report("a", d, v) for d, v in enumerate(a)] + [report("a", 0, "0.1")])
    await ingest.on_returns([report("x", 0, "0.5", portfolio="other")])
    assert refresher.dirty == {"fund", "other"}
    await refresher.refresh_dirty()

    stats = await strategy_store.load_stats(pool, "fund")
    assert [(s.strategy_id, s.window, s.observations) for s in stats] == [
        ("a", "2d", 2),
        ("a", "inception", 4),
        ("b", "2d", 2),
        ("b", "inception", 4),
    ]
    a_all = stats[1]
    assert a_all.cumulative_return == pytest.approx(1.1 * 0.95 * 1.02 * 1.01 - 1)
    assert a_all.max_drawdown == pytest.approx(0.05)
    assert a_all.last_timestamp == T0 + timedelta(days=3)
    assert a_all.computed_at == T0
    [other] = [s for s in await strategy_store.load_stats(pool, "other") if s.window == "inception"]
    assert other.observations == 1 and other.volatility is None and other.sharpe is None

    by_window = {c.window: c for c in await strategy_store.load_correlations(pool, "fund")}
    assert by_window.keys() == {"2d", "inception"}
    assert by_window["inception"].strategies == ("a", "b")
    assert by_window["inception"].get("a", "b") == pytest.approx(1.0)
    assert by_window["inception"].observations == 4

    [curve] = await strategy_store.load_equity_curve(pool, "fund", "a")
    assert curve.returns == (D("0.1"), D("-0.05"), D("0.02"), D("0.01"))
    assert curve.equity[-1] == pytest.approx(1.1 * 0.95 * 1.02 * 1.01)
    assert [c.strategy_id for c in await strategy_store.load_equity_curve(pool, "fund")] == ["a", "b"]
    assert await strategy_store.load_equity_curve(pool, "fund", "nobody") == []
    assert await strategy_store.strategies_of(pool, "fund") == ["a", "b"]

    # A new return replaces the statistics (no rows left over from the previous recompute).
    await ingest.on_returns([report("a", 4, "0.03")])
    await refresher.refresh_dirty()
    stats = await strategy_store.load_stats(pool, "fund")
    assert len(stats) == 4 and stats[1].observations == 5

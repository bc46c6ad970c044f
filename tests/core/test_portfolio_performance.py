"""The portfolio's own performance (rebal.core.portfolio_performance): worked numbers, flows, the grid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.market import Prices
from rebal.core.portfolio_performance import (
    MIN_ANNUALISED_PERIODS,
    describe_step,
    grid_step,
    portfolio_performance,
    tree_value,
)
from rebal.core.tree import parse_tree


def test_time_weighted_return_and_drawdown_of_a_worked_series() -> None:
    # +10%, -10%, +10% a minute apart: 1.1 * 0.9 * 1.1 - 1 = 8.9%; the fall from 110 to 99 is 10%.
    result = portfolio_performance([0, 60, 120, 180], [100, 110, 99, 108.9])
    assert result is not None
    assert result.step_seconds == 60 and result.periods == 3
    assert result.time_weighted_return == pytest.approx(0.089)
    assert result.max_drawdown == pytest.approx(0.1)
    assert result.volatility_per_period == pytest.approx(float(np.std([0.1, -0.1, 0.1], ddof=1)))
    assert result.index.tolist() == pytest.approx([1.0, 1.1, 0.99, 1.089])


def test_a_deposit_is_not_a_gain_and_a_withdrawal_not_a_loss() -> None:
    # 50 deposited between the first and second minute: 110 -> 160 is no return; then +10%.
    deposit = portfolio_performance([0, 60, 120, 180], [100, 110, 160, 176], [100], [50])
    assert deposit is not None
    assert deposit.time_weighted_return == pytest.approx(1.1 * 1.0 * 1.1 - 1)
    assert deposit.net_flows == 50 and deposit.max_drawdown == 0
    withdrawal = portfolio_performance([0, 60, 120], [100, 40, 44], [30], [-60])
    assert withdrawal is not None
    assert withdrawal.time_weighted_return == pytest.approx(0.1)  # 100 -> 40 + 60 out: 0%, then +10%


def test_irregular_snapshots_are_resampled_to_a_stated_regular_step() -> None:
    # Every 10 s and two on demand: the median spacing is about 10 s; the grid is 10 s.
    times = [0, 10, 13, 20, 30, 31, 40, 50, 60]
    values = [100, 101, 150, 102, 103, 104, 105, 106, 107]
    result = portfolio_performance(times, values)
    assert result is not None and result.step_seconds == 10 and describe_step(10) == "10 s"
    # The on-demand value at 13 s is replaced by the 20 s one at the 20 s point.
    assert result.values.tolist() == [100, 101, 102, 103, 105, 106, 107]
    # A year of 10-second snapshots is not 3 million periods: a coarser step keeps at most 2000.
    assert grid_step(np.arange(0, 365 * 86400, 10.0)) == 86400.0
    assert describe_step(86400) == "1 day" and describe_step(4 * 3600) == "4 h"


def test_annualised_figures_only_with_enough_periods_over_enough_time() -> None:
    minutes = portfolio_performance(np.arange(0, 3600, 10.0), 100 + np.sin(np.arange(360)))
    assert minutes is not None and minutes.annualised is None
    assert minutes.not_annualised is not None and "annualised figures need at least 30 periods" in (
        minutes.not_annualised
    )
    rng = np.random.default_rng(7)
    daily = 100 * np.cumprod(1 + rng.normal(0.001, 0.02, 120))
    days = portfolio_performance(np.arange(120) * 86400.0, daily)
    assert days is not None and days.annualised is not None and days.not_annualised is None
    assert days.step_seconds == 86400 and days.periods == 119 >= MIN_ANNUALISED_PERIODS
    assert days.annualised.periods_per_year == pytest.approx(365.25)
    assert 0.1 < days.annualised.volatility < 1.0  # 2% a day is about 38% a year
    assert days.annualised.sharpe is not None and abs(days.annualised.sharpe) < 10


def test_the_value_of_a_tree_is_its_free_value() -> None:
    tree = parse_tree(
        {
            "name": "p",
            "children": [
                {"name": "btc", "asset": "BTC", "amount": "1", "locks": [{"owner": "bot", "amount": "0.25"}]},
                {"name": "usdt", "asset": "USDT", "amount": "100"},
                {"name": "doge", "asset": "DOGE", "amount": "5"},
            ],
        },
        "real",
    )
    prices = Prices.parse({"quote": "USDT", "prices": {"BTC": "60000"}})
    assert tree_value(tree, prices) == pytest.approx(0.75 * 60000 + 100)


def test_too_little_data_is_no_performance() -> None:
    assert portfolio_performance([0], [100]) is None
    assert portfolio_performance([], []) is None


@given(
    st.lists(st.floats(min_value=1, max_value=1e6), min_size=2, max_size=50),
    st.floats(min_value=0.5, max_value=5),
)
def test_with_no_flows_the_twr_is_the_value_ratio(values: list[float], spacing: float) -> None:
    times = [i * spacing for i in range(len(values))]
    result = portfolio_performance(times, values, step=spacing)
    assert result is not None
    assert result.time_weighted_return == pytest.approx(values[-1] / values[0] - 1, rel=1e-9, abs=1e-9)
    assert 0 <= result.max_drawdown <= 1


def test_a_stretch_without_valuations_is_a_gap_not_a_flat_line_of_periods() -> None:
    # Snapshots every 10 s for a minute, the system stopped for 52 min 20 s, then a minute more.
    times = [*range(0, 70, 10), *range(3200, 3270, 10)]
    values = [*range(100, 107), *range(120, 127)]
    result = portfolio_performance(times, values)
    assert result is not None and result.step_seconds == 10
    # 6 periods before and 6 after; the return across the gap (106 -> 120) is not a 10 s period.
    assert result.periods == 12 and result.gaps == 1 and result.gap_seconds == 3140
    inside = (result.grid > 60) & (result.grid < 3200)
    assert np.isnan(result.values[inside]).all() and np.isnan(result.index[inside]).all()
    assert not np.isnan(result.values[~inside]).any()
    # ... but it counts in the time-weighted return: the money was at the market meanwhile.
    assert result.time_weighted_return == pytest.approx(126 / 100 - 1)
    assert result.index[-1] == pytest.approx(1.26)
    assert result.not_annualised is not None
    assert result.not_annualised.startswith(
        "12 periods of 10 s over 54 min (52 min of it without valuations):"
    )
    # The per-period volatility is of the 12 ten-second returns only, without the 13% jump.
    steps = np.diff(np.array(values, dtype=float))
    ten_second = np.concatenate((steps[:6] / values[:6], steps[7:] / values[7:13]))
    assert result.volatility_per_period == pytest.approx(float(np.std(ten_second, ddof=1)))


def test_a_fall_across_a_gap_is_in_the_drawdown_and_a_missed_snapshot_is_no_gap() -> None:
    fall = portfolio_performance([0, 10, 20, 1000, 1010], [100, 100, 100, 80, 80])
    assert fall is not None and fall.gaps == 1 and fall.max_drawdown == pytest.approx(0.2)
    # One snapshot missed (20 s instead of 10 s) is forward-filled as before: no gap.
    missed = portfolio_performance([0, 10, 30, 40, 50], [100, 101, 102, 103, 104])
    assert missed is not None and missed.gaps == 0 and not np.isnan(missed.values).any()
    assert missed.periods == 5

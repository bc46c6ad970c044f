"""Strategy performance: worked numbers on hand-computable series, and the invariants as properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rebal.core import performance as perf

APPROX = 1e-12
returns_lists = st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=2, max_size=60)


def test_worked_example_two_periods() -> None:
    # +10% then -10%: equity 1.1 then 0.99.
    result = perf.performance([0.1, -0.1], periods_per_year=2)
    assert result.periods == 2
    assert result.cumulative_return == pytest.approx(-0.01, abs=APPROX)
    # two periods are one year: annualised equals cumulative.
    assert result.annualised_return == pytest.approx(-0.01, abs=APPROX)
    # sample std of (0.1, -0.1) is sqrt(0.02); annualised by sqrt(2) gives 0.2.
    assert result.annualised_volatility == pytest.approx(0.2, abs=APPROX)
    # the peak 1.1 falls to 0.99: 0.11 / 1.1 = 10%.
    assert result.max_drawdown == pytest.approx(0.1, abs=APPROX)
    # mean zero: Sharpe and Sortino are zero.
    assert result.sharpe == pytest.approx(0.0, abs=APPROX)
    assert result.sortino == pytest.approx(0.0, abs=APPROX)


def test_worked_sharpe_and_sortino_with_a_risk_free_rate() -> None:
    returns = [0.02, -0.01, 0.03, 0.0]  # quarterly, mean 0.01
    # a 4% annual rate is 1% a quarter: the excess returns average zero.
    result = perf.performance(returns, periods_per_year=4, risk_free=0.04, target=0.04)
    assert result.sharpe == pytest.approx(0.0, abs=APPROX)
    assert result.sortino == pytest.approx(0.0, abs=APPROX)
    plain = perf.performance(returns, periods_per_year=4)
    mean = 0.01
    std = math.sqrt(((0.01) ** 2 + 0.02**2 + 0.02**2 + 0.01**2) / 3)
    assert plain.sharpe == pytest.approx(mean / std * 2, rel=1e-12)
    downside = math.sqrt(0.01**2 / 4)  # only -0.01 is below 0, averaged over all 4 periods
    assert plain.sortino == pytest.approx(mean / downside * 2, rel=1e-12)
    assert plain.sortino == pytest.approx(4.0, rel=1e-12)


def test_drawdown_counts_a_first_period_loss_from_the_start() -> None:
    assert perf.performance([-0.2, 0.1]).max_drawdown == pytest.approx(0.2, abs=APPROX)
    assert perf.performance([0.1, 0.2, 0.3]).max_drawdown == 0.0


def test_annualised_return_compounds() -> None:
    # 12 months of +1% each: one year, cumulative 1.01**12 - 1.
    result = perf.performance([0.01] * 12, periods_per_year=12)
    assert result.annualised_return == pytest.approx(1.01**12 - 1, rel=1e-12)
    # half a year of data at the same pace annualises to the same figure.
    half = perf.performance([0.01] * 6, periods_per_year=12)
    assert half.annualised_return == pytest.approx(1.01**12 - 1, rel=1e-12)


def test_undefined_values_are_nan_not_errors() -> None:
    flat = perf.performance([0.01, 0.01, 0.01])
    assert math.isnan(flat.sharpe)  # zero deviation
    assert math.isnan(flat.sortino)  # nothing below the target
    single = perf.performance([0.05])
    assert math.isnan(single.annualised_volatility) and math.isnan(single.sharpe)
    assert single.cumulative_return == pytest.approx(0.05)
    empty = perf.performance([])
    assert empty.periods == 0 and math.isnan(empty.max_drawdown) and math.isnan(empty.annualised_return)


def test_bad_returns_are_a_broken_invariant() -> None:
    with pytest.raises(ValueError, match="below -1"):
        perf.performance([0.1, -1.5])
    with pytest.raises(ValueError, match="finite"):
        perf.performance([0.1, float("nan")])


def test_rolling_worked_example() -> None:
    result = perf.rolling([0.1, -0.1, 0.1, 0.0], window=2, periods_per_year=2)
    assert np.isnan(result.cumulative_return[0])
    assert result.cumulative_return[1:] == pytest.approx([-0.01, -0.01, 0.1])
    assert result.max_drawdown[1:] == pytest.approx([0.1, 0.1, 0.0])
    too_short = perf.rolling([0.1], window=3)
    assert np.isnan(too_short.sharpe).all()


@given(returns_lists, st.integers(2, 10))
def test_rolling_equals_the_statistics_of_each_window(returns: list[float], window: int) -> None:
    result = perf.rolling(returns, window, periods_per_year=12, risk_free=0.01)
    for end in range(window - 1, len(returns)):
        alone = perf.performance(returns[end - window + 1 : end + 1], periods_per_year=12, risk_free=0.01)
        np.testing.assert_allclose(
            [result.cumulative_return[end], result.max_drawdown[end], result.sharpe[end]],
            [alone.cumulative_return, alone.max_drawdown, alone.sharpe],
            rtol=1e-9,
            atol=1e-12,
        )


@given(returns_lists)
def test_drawdown_is_a_fraction(returns: list[float]) -> None:
    assert 0.0 <= perf.performance(returns).max_drawdown <= 1.0


@given(st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=2, max_size=60), st.floats(0.1, 10.0))
def test_sharpe_is_scale_invariant(returns: list[float], scale: float) -> None:
    # scaling returns (leverage without financing cost) leaves Sharpe and Sortino unchanged
    base = perf.performance(returns)
    scaled = perf.performance([r * scale for r in returns])
    if not math.isnan(base.sharpe):
        assert scaled.sharpe == pytest.approx(base.sharpe, rel=1e-6, abs=1e-9)
    if not math.isnan(base.sortino):
        assert scaled.sortino == pytest.approx(base.sortino, rel=1e-6, abs=1e-9)


@given(arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 5)), elements=st.floats(-0.1, 0.1)))
def test_correlation_is_symmetric_with_unit_diagonal(data: np.ndarray) -> None:
    data = data.copy()
    data[:, 0] = 0.001  # a constant column: uncorrelated with everything
    matrix = perf.correlation(data)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert np.all(np.abs(matrix) <= 1.0)
    assert np.all(matrix[0, 1:] == 0.0)


def test_correlation_matches_numpy_on_worked_series() -> None:
    a = np.array([0.01, -0.02, 0.03, 0.0])
    data = np.column_stack([a, 2 * a + 0.001, -a])
    np.testing.assert_allclose(perf.correlation(data), [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)


def test_align_keeps_common_timestamps_in_order() -> None:
    stamps, matrix = perf.align([[3, 1, 2], [2, 3, 4]], [[0.3, 0.1, 0.2], [0.02, 0.03, 0.04]])
    assert stamps.tolist() == [2, 3]
    assert matrix.tolist() == [[0.2, 0.02], [0.3, 0.03]]


def test_periods_per_year_from_daily_timestamps() -> None:
    day = 86_400
    assert perf.periods_per_year_from([0, day, 2 * day, 4 * day]) == pytest.approx(365.25)
    with pytest.raises(ValueError):
        perf.periods_per_year_from([5, 5])


def test_usable_keeps_the_periods_in_bounds_and_names_the_others() -> None:
    day = 86_400.0
    stamps = [0.0, day, 2 * day, 3 * day, 4 * day, 5 * day, 4_102_444_800.0, -day]
    returns = [0.01, float("nan"), -5.0, 1e30, -1.0, float("inf"), 0.02, 0.03]
    kept_stamps, kept, skipped = perf.usable(stamps, returns)
    assert kept_stamps.tolist() == [0.0, 4 * day] and kept.tolist() == [0.01, -1.0]
    assert skipped.tolist() == [day, 2 * day, 3 * day, 5 * day, 4_102_444_800.0, -day]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_what_usable_keeps_never_breaks_the_statistics(values: list[float]) -> None:
    _, kept, skipped = perf.usable(np.arange(len(values), dtype=np.float64), values)
    assert kept.size + skipped.size == len(values)
    with np.errstate(over="ignore", invalid="ignore"):
        perf.performance(kept)  # no ValueError, whatever was stored

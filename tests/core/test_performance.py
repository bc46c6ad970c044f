"""Strategy performance: worked numbers on hand-computable series, and the invariants as properties."""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime

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
    result = perf.performance([0.1, -0.1], periods_per_year=2, min_periods=2)
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
    result = perf.performance(returns, periods_per_year=4, risk_free=0.04, target=0.04, min_periods=4)
    assert result.sharpe == pytest.approx(0.0, abs=APPROX)
    assert result.sortino == pytest.approx(0.0, abs=APPROX)
    plain = perf.performance(returns, periods_per_year=4, min_periods=4)
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
    # two years at the same pace annualise to the same figure.
    two = perf.performance([0.01] * 24, periods_per_year=12)
    assert two.annualised_return == pytest.approx(1.01**12 - 1, rel=1e-12)
    # half a year is not annualised (GIPS): n/a, with the reason.
    half = perf.performance([0.01] * 6, periods_per_year=12)
    assert math.isnan(half.annualised_return)
    assert half.not_annualised["annualised_return"] == "needs a year of returns, ≥ 12 periods (has 6)"
    assert half.cumulative_return == pytest.approx(1.01**6 - 1, rel=1e-12)


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


DAY = 86_400.0


def test_periods_per_year_from_daily_timestamps() -> None:
    days = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]  # one day missing (a bot that was down): still daily
    assert perf.periods_per_year_from([d * DAY for d in days]) == pytest.approx(365.25)
    assert perf.frequency_of([d * DAY for d in days]) == perf.Frequency("daily", DAY, 365.25, missing=1)
    with pytest.raises(ValueError, match="must increase"):
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


def test_the_frequency_is_named_from_the_dates() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    weekly = perf.frequency_of([start + 7 * DAY * i for i in range(10)])
    assert isinstance(weekly, perf.Frequency) and weekly.name == "weekly"
    assert weekly.periods_per_year == pytest.approx(365.25 / 7)
    month_ends = [datetime(2024, m, 1, tzinfo=UTC).timestamp() for m in range(1, 13)]
    monthly = perf.frequency_of(month_ends)
    assert isinstance(monthly, perf.Frequency) and (monthly.name, monthly.periods_per_year) == ("monthly", 12)
    hourly = perf.frequency_of([start + 3600 * i for i in range(48)])
    assert isinstance(hourly, perf.Frequency) and hourly.describe() == "intraday (every 1 hour)"
    assert hourly.periods_per_year == pytest.approx(365.25 * 24)
    every_second = perf.frequency_of([start + i for i in range(60)])
    assert isinstance(every_second, perf.Frequency) and every_second.periods_per_year == pytest.approx(
        31_557_600
    )


def test_irregular_dates_are_refused_with_where() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    odd = perf.frequency_of([start, start + DAY, start + 2 * DAY, start + 3.5 * DAY, start + 4.5 * DAY])
    assert odd == perf.Irregular(
        "irregular dates: 2024-01-03 to 2024-01-04T12:00:00Z is 1.50 days, not a whole number of the "
        "usual 1 day"
    )
    weekdays = [start + d * DAY for d in range(60) if (d % 7) < 5]  # exchange days: 3-day weekend gaps
    found = perf.frequency_of(weekdays)
    assert isinstance(found, perf.Irregular) and "resample" in found.reason
    assert isinstance(perf.frequency_of([start]), perf.Irregular)


def test_performance_at_the_dates_frequency_and_not_annualised_when_too_short() -> None:
    rng = np.random.default_rng(1)
    returns = rng.normal(0.001, 0.01, 60)
    weekly = perf.performance_at([7 * DAY * i for i in range(60)], returns)
    assert weekly.frequency == "weekly"
    expected = np.std(returns, ddof=1) * math.sqrt(365.25 / 7)
    assert weekly.annualised_volatility == pytest.approx(expected, rel=1e-12)
    assert weekly.annualised_return == pytest.approx(np.prod(1 + returns) ** (365.25 / 7 / 60) - 1)
    daily = perf.performance_at([DAY * i for i in range(60)], returns)
    assert math.isnan(daily.annualised_return)  # 60 days: not a year
    assert daily.annualised_volatility == pytest.approx(np.std(returns, ddof=1) * math.sqrt(365.25))
    short = perf.performance_at([DAY * i for i in range(10)], returns[:10])
    assert math.isnan(short.annualised_volatility) and math.isnan(short.sharpe)
    assert short.not_annualised["sharpe"] == "needs ≥ 30 periods (has 10)"
    odd = perf.performance_at([0, DAY, 2.5 * DAY], [0.01, 0.02, 0.0])
    assert odd.frequency == "unknown" and "irregular dates" in odd.not_annualised["annualised_volatility"]
    assert odd.cumulative_return == pytest.approx(1.01 * 1.02 - 1)


def test_a_return_every_second_never_overflows() -> None:
    # The demo bot's former per-second returns: 31.5 million periods a year. Nothing is annualised from a
    # minute, and nothing overflows or warns even when asked to (the annualised return of a day of it).
    returns = np.full(86_400, 0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minute = perf.performance_at(np.arange(60.0), returns[:60])
        day = perf.annualised_return(returns, periods_per_year=perf.SECONDS_PER_YEAR)
    assert math.isnan(minute.annualised_return)
    assert math.isnan(float(day))  # e^(31.5M * log 1.001) is past the float range: undefined

"""Covariance estimators, the risk factor, and volatility targeting with the portfolio_config document."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from rebal_allocation.estimate import (
    MEMORY_LIMIT_BYTES,
    ROLLING_REFRESH,
    Estimator,
    Method,
    Rolling,
    TooLarge,
    correlation_of,
    estimate,
    estimate_rolling,
    factor,
)
from rebal_allocation.optimize import Constraints, MaxSharpe, MinVariance, RiskParity, Solved
from rebal_allocation.volatility import leverage_for, portfolio_config, target_volatility
from tests.allocation.cases import random_returns, returns_with


def test_sample_estimate_is_the_sample_mean_and_covariance() -> None:
    covariance = np.array([[1e-4, 2e-5], [2e-5, 4e-4]])
    returns = returns_with(np.array([0.001, -0.002]), covariance, periods=50)
    result = estimate(returns, Estimator("sample"))
    np.testing.assert_allclose(result.mean, [0.001, -0.002], atol=1e-15)
    np.testing.assert_allclose(result.covariance, covariance, rtol=1e-10)


def test_ewma_with_a_long_halflife_tends_to_the_sample_covariance() -> None:
    returns = random_returns(3, periods=200)
    sample = np.cov(returns, rowvar=False)
    slow = estimate(returns, Estimator("ewma", halflife=1e9)).covariance
    np.testing.assert_allclose(slow, sample, rtol=1e-6)


def test_ewma_weighs_the_newest_periods_most() -> None:
    # calm for 100 days, then 20 wild ones: a short halflife sees mostly the wild ones
    rng = np.random.default_rng(4)
    returns = np.vstack([rng.normal(0, 0.001, (100, 1)), rng.normal(0, 0.05, (20, 1))])
    fast = estimate(returns, Estimator("ewma", halflife=5)).covariance[0, 0]
    assert fast > 5 * np.cov(returns[:, 0])


def test_ledoit_wolf_is_sklearns_and_well_conditioned_with_few_periods() -> None:
    returns = random_returns(40, periods=30)  # fewer periods than strategies: sample covariance singular
    result = estimate(returns, Estimator("ledoit_wolf")).covariance
    np.testing.assert_allclose(result, LedoitWolf().fit(returns).covariance_)
    assert np.linalg.eigvalsh(result).min() > 0


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 8), st.integers(2, 30), st.integers(0, 100))
def test_the_factor_reproduces_the_covariance(count: int, periods: int, seed: int) -> None:
    returns = random_returns(count, periods=periods, seed=seed)
    covariance = estimate(returns, Estimator("sample")).covariance  # singular when periods <= count
    f = factor(covariance)
    np.testing.assert_allclose(f.T @ f, covariance, atol=1e-9 * np.mean(np.diag(covariance)))
    corr = correlation_of(covariance)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, corr.T)


def test_leverage_is_target_over_realised_capped() -> None:
    assert leverage_for(0.2, 0.1, 3.0) == pytest.approx(0.5)
    assert leverage_for(0.02, 0.1, 3.0) == 3.0
    assert leverage_for(0.0, 0.1, 3.0) == 3.0
    # The workflow's example: 30% over 11.45% with no cap.
    assert leverage_for(0.1145, 0.30, math.inf) == pytest.approx(2.62, abs=0.005)
    with pytest.raises(ValueError, match="no leverage cap"):
        leverage_for(0.0, 0.1, math.inf)
    with pytest.raises(ValueError, match="finite"):
        leverage_for(0.1, math.nan, 3.0)


def test_portfolio_config_worked_example() -> None:
    # two strategies, each with daily returns of +-1% alternating in opposite phase: a 50/50 mix is flat
    # and a 100/0 mix has a daily std of 1% * sqrt(4/3) for 4 periods (ddof=1)
    a = np.array([0.01, -0.01, 0.01, -0.01])
    returns = np.column_stack([a, -a])
    config = target_volatility(["trend", "arb"], np.array([1.0, 0.0]), returns, 100_000.0, 0.1, 2.0, 365)
    realised = 0.01 * np.sqrt(4 / 3) * np.sqrt(365)
    assert config.realised_volatility == pytest.approx(realised)
    assert config.leverage == pytest.approx(0.1 / realised)
    document = portfolio_config(config)
    # The strategy manager's keys, in its order, volatilities in percent; no float noise (0.1 x 100).
    assert list(document) == ["account_value", "weights", "ann_volatility_pct", "target_vol_pct", "leverage"]
    assert document == {
        "account_value": 100_000.0,
        "weights": {"arb": 0.0, "trend": 1.0},
        "ann_volatility_pct": pytest.approx(realised * 100, rel=1e-9),
        "target_vol_pct": 10.0,
        "leverage": pytest.approx(0.1 / realised, rel=1e-9),
    }
    assert repr(portfolio_config(replace(config, target_volatility=0.3))["target_vol_pct"]) == "30.0"
    flat = target_volatility(["trend", "arb"], np.array([0.5, 0.5]), returns, 1.0, 0.1, 2.0)
    assert flat.leverage == 2.0


@pytest.mark.parametrize("method", ["sample", "ledoit_wolf"])
def test_rolling_moments_give_the_fresh_estimate_day_after_day(method: Method) -> None:
    history = random_returns(12, periods=600, seed=5) + 0.01  # a mean large against the noise
    estimator = Estimator(method)
    rolling: Rolling | None = None
    windows = [history[day : day + 300] for day in range(40)]  # one new day at a time
    windows += [history[43:343], history[43:350], history[45:350]]  # three days, a growing, a shrinking
    windows += [history[100:400][::-1]]  # not a continuation: recomputed
    for window in windows:
        rolled, rolling = estimate_rolling(window, estimator, rolling)
        fresh = estimate(window, estimator)
        np.testing.assert_allclose(rolled.mean, fresh.mean, rtol=1e-13)
        np.testing.assert_allclose(
            rolled.covariance, fresh.covariance, rtol=1e-11, atol=1e-13 * fresh.covariance.max()
        )
    assert rolling is not None and rolling.updates == 0  # the reversed window started afresh


def test_rolling_moments_start_afresh_after_the_refresh_count() -> None:
    history = random_returns(3, periods=ROLLING_REFRESH + 60, seed=6)
    rolling: Rolling | None = None
    for day in range(ROLLING_REFRESH + 3):
        _, rolling = estimate_rolling(history[day : day + 50], Estimator("sample"), rolling)
        assert rolling is not None and rolling.updates == day % (ROLLING_REFRESH + 1)


@pytest.mark.parametrize("method", ["sample", "ewma", "ledoit_wolf"])
def test_returns_whose_moments_overflow_are_refused_not_estimated(method: Method) -> None:
    returns = np.array([[1e200, 0.01], [-0.5, 0.02], [1e200, 0.01]])
    with pytest.raises(TooLarge, match=r"too large to estimate from \(the largest is 1e\+200\)"):
        estimate(returns, Estimator(method))
    with pytest.raises(TooLarge):
        estimate_rolling(returns, Estimator(method), None)
    with pytest.raises(TooLarge, match="not all finite"):
        RiskParity(2).solve([[np.inf, 0.01], [0.0, 0.02], [0.01, 0.0]])


def test_too_many_strategies_are_refused_before_any_matrix_is_made() -> None:
    too_many = 9000  # 4 matrices of 9000 x 9000 floats: 2.4 GiB
    assert 4 * 8 * too_many**2 > MEMORY_LIMIT_BYTES
    with pytest.raises(TooLarge, match=r"9000 strategies: estimating their covariance would take 2\.4 GiB"):
        estimate(np.zeros((3, too_many)), Estimator())


def test_a_problem_too_large_to_set_up_is_refused_before_cvxpy_builds_it() -> None:
    """1000 strategies with a correlation cap: the maximum Sharpe ratio has no exact path for pair caps,
    and cvxpy would take 8 x 1001 x 1000001 bytes (7.5 GiB) to set up the risk term. The minimum variance
    has one (the active-set path): solved, without cvxpy, so not refused."""
    rng = np.random.default_rng(5)
    returns = rng.normal(0.001, 0.02, (5, 1000))
    capped = Constraints(correlation_threshold=0.5, pair_cap=0.5)
    with pytest.raises(
        TooLarge, match=r"1000 strategies: setting up the optimisation problem would take 7\.5 GiB"
    ):
        MaxSharpe(1000, constraints=capped).solve(returns)
    assert isinstance(MinVariance(1000, constraints=capped).solve(returns), Solved)

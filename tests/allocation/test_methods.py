"""Every method against a closed form or an independent solver on small cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from rebal_allocation.compounded import compounded_slope_over_std
from rebal_allocation.estimate import estimate
from rebal_allocation.optimize import (
    MaxSharpe,
    MeanVariance,
    MinVariance,
    Mix,
    RiskParity,
    SlopeStd,
    Solved,
    additive_max_drawdown,
    parity_gap,
    slope_over_std,
)
from tests.allocation.cases import SAMPLE, random_returns, returns_with

# Weights from a solver with default tolerances on rescaled O(1) data agree with closed forms to this.
CLOSE = 1e-5
# A brute-force grid is only as fine as its step; the solver must be at least as good as its best point.
GRID_STEP = 0.01


def solved(result: object) -> Solved:
    assert isinstance(result, Solved), result
    return result


def test_min_variance_two_uncorrelated_assets_is_inverse_variance() -> None:
    variances = np.array([1e-4, 4e-4])  # daily-sized: 1% and 2% a day
    returns = returns_with(np.array([0.001, 0.002]), np.diag(variances))
    weights = solved(MinVariance(2, estimator=SAMPLE).solve(returns)).weights
    expected = (1 / variances) / np.sum(1 / variances)  # (0.8, 0.2)
    np.testing.assert_allclose(weights, expected, atol=CLOSE)


def test_min_variance_matches_the_analytic_solution_when_it_is_long_only() -> None:
    vols = np.array([0.01, 0.012, 0.015])
    corr = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.4], [0.2, 0.4, 1.0]])
    covariance = corr * np.outer(vols, vols)
    analytic = np.linalg.solve(covariance, np.ones(3))
    analytic /= analytic.sum()
    assert np.all(analytic > 0)  # so the long-only optimum is the unconstrained one
    result = solved(MinVariance(3, estimator=SAMPLE).solve(returns_with(np.zeros(3), covariance)))
    np.testing.assert_allclose(result.weights, analytic, atol=CLOSE)
    assert result.objective == pytest.approx(1 / np.sum(np.linalg.solve(covariance, np.ones(3))), rel=1e-8)


def test_mean_variance_two_uncorrelated_assets_closed_form() -> None:
    # max mu'w - g/2 w'Σw with w1 + w2 = 1: w1 = (mu1 - mu2 + g s2) / (g (s1 + s2)), interior here.
    mean, variances, aversion = np.array([0.002, 0.001]), np.array([1e-4, 2e-4]), 20.0
    returns = returns_with(mean, np.diag(variances))
    weights = solved(MeanVariance(2, risk_aversion=aversion, estimator=SAMPLE).solve(returns)).weights
    first = (mean[0] - mean[1] + aversion * variances[1]) / (aversion * variances.sum())
    assert 0 < first < 1
    np.testing.assert_allclose(weights, [first, 1 - first], atol=CLOSE)


def test_max_sharpe_is_the_tangency_portfolio() -> None:
    vols = np.array([0.01, 0.02, 0.015])
    corr = np.array([[1.0, 0.2, 0.1], [0.2, 1.0, 0.3], [0.1, 0.3, 1.0]])
    covariance = corr * np.outer(vols, vols)
    mean = np.array([0.0008, 0.0015, 0.001])
    tangency = np.linalg.solve(covariance, mean)
    tangency /= tangency.sum()
    assert np.all(tangency > 0)
    result = solved(MaxSharpe(3, estimator=SAMPLE).solve(returns_with(mean, covariance)))
    np.testing.assert_allclose(result.weights, tangency, atol=CLOSE)
    best = mean @ tangency / np.sqrt(tangency @ covariance @ tangency) * np.sqrt(365.25)
    assert result.objective == pytest.approx(best, rel=1e-8)


def test_max_sharpe_with_a_risk_free_rate_uses_excess_returns() -> None:
    covariance = np.diag([1e-4, 1e-4])
    mean = np.array([0.002, 0.001])
    rate = (
        0.36525 * 0.5
    )  # 0.0005 a day (365.25 days a year): excess (0.0015, 0.0005), weights proportional to them
    result = solved(MaxSharpe(2, risk_free=rate, estimator=SAMPLE).solve(returns_with(mean, covariance)))
    np.testing.assert_allclose(result.weights, [0.75, 0.25], atol=CLOSE)


def test_risk_parity_is_inverse_volatility_when_uncorrelated() -> None:
    vols = np.array([0.01, 0.02, 0.04, 0.05])
    returns = returns_with(np.zeros(4), np.diag(vols**2))
    result = solved(RiskParity(4, estimator=SAMPLE).solve(returns))
    np.testing.assert_allclose(result.weights, (1 / vols) / np.sum(1 / vols), atol=CLOSE)


def test_risk_parity_equalises_contributions_when_correlated() -> None:
    returns = random_returns(6, seed=3)
    result = solved(RiskParity(6, estimator=SAMPLE).solve(returns))
    assert parity_gap(result.weights, np.cov(returns, rowvar=False)) < 1e-4
    assert result.objective < 1e-4


def simplex_grid(count: int, step: float) -> np.ndarray:
    ticks = round(1 / step)
    points = [p for p in itertools.product(range(ticks + 1), repeat=count - 1) if sum(p) <= ticks]
    return np.array([[*p, ticks - sum(p)] for p in points], dtype=np.float64) / ticks


@pytest.mark.parametrize("equity", ["additive", "compounded"])
@pytest.mark.parametrize(("count", "seed"), [(2, 1), (3, 2), (3, 5)])
def test_slope_std_beats_a_brute_force_grid(count: int, seed: int, equity: str) -> None:
    returns = random_returns(count, periods=400, seed=seed)
    window = returns[-365:]
    definition = slope_over_std if equity == "additive" else compounded_slope_over_std
    result = solved(SlopeStd(count, lookback=365, equity=equity).solve(returns))  # type: ignore[arg-type]
    grid = simplex_grid(count, GRID_STEP)
    scores = np.array([definition(window, w) for w in grid])
    best = grid[int(np.argmax(scores))]
    ours = definition(window, result.weights)
    assert result.objective == pytest.approx(ours, rel=1e-9)
    assert ours >= scores.max() - 1e-9
    np.testing.assert_allclose(result.weights, best, atol=2 * GRID_STEP)


def test_the_compounded_curve_is_the_default_and_differs_from_the_additive() -> None:
    # Large returns make compounding matter: the two curves' optima are apart, each the best on its curve.
    rng = np.random.default_rng(11)
    returns = rng.normal([0.004, 0.002, 0.003], [0.06, 0.02, 0.04], (365, 3))
    default = solved(SlopeStd(3).solve(returns))
    additive = solved(SlopeStd(3, equity="additive").solve(returns))
    assert SlopeStd(3).equity == "compounded"
    assert np.abs(default.weights - additive.weights).max() > 1e-3
    assert compounded_slope_over_std(returns, default.weights) > compounded_slope_over_std(
        returns, additive.weights
    )
    assert slope_over_std(returns, additive.weights) > slope_over_std(returns, default.weights)


def test_mix_is_at_least_as_good_as_a_grid_and_nelder_mead() -> None:
    returns = random_returns(3, periods=200, seed=7)
    optimizer = Mix(3, return_weight=1.0, volatility_weight=0.5, drawdown_weight=2.0, lookback=150)
    result = solved(optimizer.solve(returns))
    est = estimate(returns, optimizer.estimator)

    def loss(w: np.ndarray) -> float:
        return -optimizer.objective(np.abs(w) / np.abs(w).sum(), returns, est)

    grid = simplex_grid(3, GRID_STEP)
    losses = [loss(w) for w in grid]
    refined = minimize(loss, grid[int(np.argmin(losses))], method="Nelder-Mead")
    assert -result.objective <= min(*losses, refined.fun) + 1e-7
    assert result.objective == pytest.approx(
        optimizer.weights_of[0] * 365.25 * est.mean @ result.weights
        - optimizer.weights_of[1] * np.sqrt(365.25 * result.weights @ est.covariance @ result.weights)
        - optimizer.weights_of[2] * additive_max_drawdown(returns[-150:], result.weights)
    )


def test_the_drawdown_proxy_on_a_worked_curve() -> None:
    # one strategy: +10%, -5%, -10%, +20%: the curve 0, .1, .05, -.05, .15 falls .15 from its peak .1
    window = np.array([[0.1], [-0.05], [-0.1], [0.2]])
    assert additive_max_drawdown(window, np.array([1.0])) == pytest.approx(0.15)

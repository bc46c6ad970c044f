"""The direct numpy path (active set, Newton on the risk-parity barrier) against closed forms and against
the cvxpy problem solved to tight tolerances; warm starts give what a cold solve gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal_allocation.direct import KKT_TOLERANCE, _primal, _primal_dual, _still_feasible, box_qp, risk_parity
from rebal_allocation.optimize import (
    Constraints,
    Infeasible,
    MaxSharpe,
    MeanVariance,
    MinVariance,
    Optimizer,
    RiskParity,
    SlopeStd,
    Solved,
)
from tests.allocation.cases import SAMPLE, random_returns, returns_with

# CLARABEL's tolerances pushed to the limit of double precision: the independent reference.
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
# The direct path is exact to rounding: closed forms hold to this.
EXACT = 1e-12
# Against the tight interior-point reference: objectives to this (relative), weights to WEIGHTS.
OBJECTIVE = 1e-8
WEIGHTS = 1e-5
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def solved(result: object) -> Solved:
    assert isinstance(result, Solved), result
    return result


def test_risk_parity_of_uncorrelated_strategies_is_inverse_volatility_exactly() -> None:
    vols = np.array([0.01, 0.02, 0.005, 0.03])
    returns = returns_with(np.zeros(4), np.diag(vols**2), periods=100)
    result = solved(RiskParity(4, estimator=SAMPLE).solve(returns))
    np.testing.assert_allclose(result.weights, (1 / vols) / np.sum(1 / vols), rtol=EXACT)
    assert result.objective < EXACT


def test_min_variance_with_a_binding_cap_gives_the_rest_by_inverse_variance() -> None:
    # unconstrained: w ∝ (1, 1/2, 1/4) = (0.571, 0.286, 0.143); a 0.5 cap binds on the first strategy and
    # the remaining 0.5 splits over the others by inverse variance: (1/3, 1/6).
    variances = np.array([1e-4, 2e-4, 4e-4])
    returns = returns_with(np.zeros(3), np.diag(variances), periods=100)
    optimizer = MinVariance(3, estimator=SAMPLE, constraints=Constraints(max_weight=0.5))
    np.testing.assert_allclose(solved(optimizer.solve(returns)).weights, [0.5, 1 / 3, 1 / 6], rtol=EXACT)


def test_max_sharpe_of_uncorrelated_strategies_is_proportional_to_mean_over_variance() -> None:
    mean, variances = np.array([0.001, 0.002, 0.0005]), np.array([1e-4, 4e-4, 1e-4])
    returns = returns_with(mean, np.diag(variances), periods=100)
    expected = (mean / variances) / np.sum(mean / variances)
    np.testing.assert_allclose(
        solved(MaxSharpe(3, estimator=SAMPLE).solve(returns)).weights, expected, rtol=EXACT
    )


def test_max_sharpe_drops_a_strategy_with_a_negative_mean() -> None:
    mean, variances = np.array([0.001, -0.002, 0.0005]), np.array([1e-4, 1e-4, 1e-4])
    returns = returns_with(mean, np.diag(variances), periods=100)
    np.testing.assert_allclose(
        solved(MaxSharpe(3, estimator=SAMPLE).solve(returns)).weights, [2 / 3, 0, 1 / 3]
    )


def test_max_sharpe_with_nothing_beating_the_risk_free_rate_is_infeasible_on_the_direct_path() -> None:
    returns = returns_with(np.array([-0.001, -0.002]), np.diag([1e-4, 1e-4]), periods=50)
    assert isinstance(MaxSharpe(2).solve(returns), Infeasible)


@st.composite
def bounded_cases(draw: st.DrawFn) -> tuple[int, int, Constraints]:
    count = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 10_000))
    high = draw(st.floats(1.0 / count + 0.02, 1.0))
    low = draw(st.floats(0.0, 1.0 / count - 0.01))
    return count, seed, Constraints(min_weight=low, max_weight=high)


@FAST
@given(bounded_cases())
def test_min_and_mean_variance_with_bounds_match_a_tight_interior_point_solve(
    case: tuple[int, int, Constraints],
) -> None:
    count, seed, constraints = case
    returns = random_returns(count, periods=120, seed=seed)
    for build in (MinVariance, lambda n, **o: MeanVariance(n, risk_aversion=5.0, **o)):
        ours = solved(build(count, constraints=constraints).solve(returns))
        reference = solved(
            build(count, constraints=constraints, direct=False, solver_options=TIGHT).solve(returns)
        )
        assert ours.objective == pytest.approx(reference.objective, rel=OBJECTIVE, abs=1e-14)
        np.testing.assert_allclose(ours.weights, reference.weights, atol=WEIGHTS)
        assert constraints.min_weight - EXACT <= ours.weights.min()
        assert ours.weights.max() <= constraints.max_weight + EXACT


@FAST
@given(st.integers(2, 15), st.integers(0, 10_000))
def test_max_sharpe_slope_std_and_risk_parity_match_the_cvxpy_problems(count: int, seed: int) -> None:
    returns = random_returns(count, periods=150, seed=seed)
    builds: list[type[Optimizer]] = [MaxSharpe, RiskParity]
    for build in builds:
        first = build(count).solve(returns)
        second = build(count, direct=False, solver_options=TIGHT).solve(returns)
        if isinstance(second, Infeasible):  # no positive mean: both paths say so
            assert first == second
            continue
        ours, reference = solved(first), solved(second)
        np.testing.assert_allclose(ours.weights, reference.weights, atol=WEIGHTS)
        if build is MaxSharpe:
            assert ours.objective >= reference.objective * (1 - OBJECTIVE)
        else:
            assert ours.objective < EXACT  # equal risk contributions to rounding
    slope = SlopeStd(count, lookback=100)
    ours, reference = slope.solve(returns), SlopeStd(count, lookback=100, direct=False).solve(returns)
    if isinstance(reference, Solved):
        assert solved(ours).objective >= reference.objective * (1 - 1e-6)


def test_a_warm_restart_gives_what_a_cold_solve_gives_and_is_marked_not_rebuilt() -> None:
    history = random_returns(30, periods=401, seed=3)
    methods: list[type[Optimizer]] = [MinVariance, MaxSharpe, RiskParity]
    for build in methods:
        kept = build(30)
        assert solved(kept.solve(history[:-1])).rebuilt
        warm = solved(kept.solve(history[1:]))
        cold = solved(build(30).solve(history[1:]))
        assert not warm.rebuilt and cold.rebuilt
        np.testing.assert_allclose(warm.weights, cold.weights, atol=1e-10)


def test_the_active_set_of_the_optimum_needs_one_factorisation() -> None:
    covariance = np.cov(random_returns(40, periods=300, seed=8), rowvar=False)
    scaled = covariance / np.mean(np.diag(covariance))
    ones, zeros = np.ones(40), np.zeros(40)
    cold = box_qp(scaled, zeros, ones, 1.0, zeros, ones)
    assert cold is not None and cold.iterations > 1
    assert not cold.active.low.all() and cold.active.low.any()  # some strategies are left out
    warm = box_qp(scaled, zeros, ones, 1.0, zeros, ones, cold.active)
    assert warm is not None and warm.iterations == 1
    np.testing.assert_allclose(warm.x, cold.x, atol=EXACT)


def test_the_direct_methods_give_no_answer_rather_than_a_wrong_one() -> None:
    ones, zeros = np.ones(3), np.zeros(3)
    assert box_qp(np.zeros((3, 3)), zeros, ones, 1.0, zeros, ones) is None  # singular: no certificate
    assert risk_parity(np.zeros((3, 3))) is None


def test_a_singular_covariance_falls_back_to_the_cvxpy_problem() -> None:
    returns = random_returns(30, periods=10, seed=2)  # sample covariance of rank 9 < 30
    ours = solved(MinVariance(30, estimator=SAMPLE).solve(returns))
    reference = solved(MinVariance(30, estimator=SAMPLE, direct=False).solve(returns))
    assert ours.objective == pytest.approx(reference.objective, rel=1e-6, abs=1e-12)


def test_a_guess_that_cannot_meet_the_budget_hands_over_to_the_primal_method() -> None:
    # the projection of c = (1.2, 1.2, -1.3) onto {sum x = 1, 0 <= x <= 0.375}: the unconstrained guess
    # (1.17, 1.17, -1.33) sends every variable to a bound, where the weights sum to 0.75, not 1
    quadratic, linear = np.eye(3), np.array([1.2, 1.2, -1.3])
    ones, zeros, cap = np.ones(3), np.zeros(3), np.full(3, 0.375)
    assert _primal_dual(quadratic, linear, ones, 1.0, zeros, cap, None) is None
    solution = box_qp(quadratic, linear, ones, 1.0, zeros, cap)
    assert solution is not None
    np.testing.assert_allclose(solution.x, [0.375, 0.375, 0.25], atol=EXACT)


def test_a_cap_of_exactly_one_over_n_leaves_one_feasible_point_and_is_solved_directly() -> None:
    covariance = np.cov(random_returns(10, periods=200, seed=9), rowvar=False)
    scaled, mean = covariance / np.mean(np.diag(covariance)), np.linspace(-1, 1, 10)
    ones, zeros, cap = np.ones(10), np.zeros(10), np.full(10, 0.1)
    solution = _primal_dual(50 * scaled, mean, ones, 1.0, zeros, cap, None)
    assert solution is not None
    np.testing.assert_allclose(solution.x, cap, atol=EXACT)


@FAST
@given(bounded_cases(), st.one_of(st.just(0.0), st.floats(0.1, 20.0)))
def test_the_active_set_method_itself_answers_bounded_problems(
    case: tuple[int, int, Constraints], aversion: float
) -> None:
    # the Optimizer falls back to cvxpy silently; this checks the direct method needs no fallback for
    # minimum variance (aversion 0) and usual aversions (a nearly linear problem, aversion ~1e-10, may
    # miss the KKT certificate and go to cvxpy)
    count, seed, constraints = case
    est_returns = random_returns(count, periods=120, seed=seed)
    covariance = np.cov(est_returns, rowvar=False)
    scale = 1 / np.mean(np.diag(covariance))
    quadratic, linear = (
        (aversion or 1.0) * scale * covariance,
        scale * est_returns.mean(axis=0) * (aversion > 0),
    )
    low, high = np.full(count, float(constraints.min_weight)), np.full(count, float(constraints.max_weight))
    solution = box_qp(quadratic, linear, np.ones(count), 1.0, low, high)
    assert solution is not None
    # certified to the KKT tolerance
    assert solution.x.sum() == pytest.approx(1.0, abs=KKT_TOLERANCE)
    assert np.all(solution.x >= low - KKT_TOLERANCE) and np.all(solution.x <= high + KKT_TOLERANCE)


def test_the_primal_method_restarts_from_the_previous_solution() -> None:
    covariance = np.cov(random_returns(40, periods=300, seed=8), rowvar=False)
    scaled = covariance / np.mean(np.diag(covariance))
    ones, zeros = np.ones(40), np.zeros(40)
    cold = _primal(scaled, zeros, ones, 1.0, zeros, ones)
    assert cold is not None and cold.iterations > 5  # one bound per step from the box diagonal
    warm = _primal(scaled, zeros, ones, 1.0, zeros, ones, cold.x)
    assert warm is not None and warm.iterations == 1
    np.testing.assert_allclose(warm.x, cold.x, atol=EXACT)
    # a homogenised max-Sharpe point is rescaled onto the new mean's plane a'y = 1
    mean, unbounded = np.linspace(0.5, 1.0, 40), np.full(40, np.inf)
    moved = _still_feasible(2.0 * cold.x / float(mean @ cold.x), mean, 1.0, zeros, unbounded)
    assert moved is not None
    assert float(mean @ moved) == pytest.approx(1.0, abs=EXACT)


def test_a_minimum_weight_smaller_than_the_tolerances_is_still_kept() -> None:
    # Without the bound the first weight would be -1e-9 (x ∝ Q⁻¹1 with Q = [[4, b], [b, 1]], b = 1 + 3e-9):
    # a minimum of 1e-10 must hold it at 1e-10, not leave it at -1e-9 "within tolerance" (cleaned to 0).
    b = 1 + 3e-9
    quadratic = np.array([[4.0, b], [b, 1.0]])
    low, high = np.full(2, 1e-10), np.ones(2)
    for solve in (box_qp, _primal):
        found = solve(quadratic, np.zeros(2), np.ones(2), 1.0, low, high)
        assert found is not None and found.x[0] >= 1e-10, (solve, found)
    returns = returns_with(np.zeros(2), quadratic * 1e-4, periods=100)
    result = solved(
        MinVariance(2, estimator=SAMPLE, constraints=Constraints(min_weight=1e-10)).solve(returns)
    )
    assert result.weights[0] == pytest.approx(1e-10, rel=1e-9)

"""Constraint properties for every method that takes them, and results as values, never exceptions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal_allocation.estimate import Estimator, correlation_of, estimate
from rebal_allocation.optimize import (
    WEIGHT_TOLERANCE,
    Constraints,
    Group,
    Infeasible,
    MaxSharpe,
    MeanVariance,
    MinVariance,
    Mix,
    Optimizer,
    RiskParity,
    SlopeStd,
    Solved,
    SolverFailed,
)
from tests.allocation.cases import random_returns

COUNT = 5
METHODS: list[type[Optimizer]] = [MinVariance, MeanVariance, MaxSharpe, SlopeStd, Mix]
RETURNS = {seed: random_returns(COUNT, periods=250, seed=seed) for seed in range(4)}
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def constraint_sets(draw: st.DrawFn) -> Constraints:
    high = draw(st.floats(0.25, 1.0))
    low = draw(st.floats(0.0, 0.15))
    members = tuple(sorted(draw(st.sets(st.integers(0, COUNT - 1), min_size=2, max_size=3))))
    return Constraints(
        min_weight=low,
        max_weight=high,
        groups=(Group(members, draw(st.floats(low * len(members) + 0.05, 1.0))),),
        correlation_threshold=draw(st.sampled_from([None, 0.0, 0.1, 0.3])),
        pair_cap=draw(st.floats(0.5, 1.0)),
        turnover=draw(st.sampled_from([None, 0.3, 1.0])),
    )


def check(weights: np.ndarray, constraints: Constraints, returns: np.ndarray, current: np.ndarray) -> None:
    slack = WEIGHT_TOLERANCE
    assert weights.sum() == pytest.approx(1.0, abs=slack)
    assert np.all(weights >= constraints.min_weight - slack)
    assert np.all(weights <= np.asarray(constraints.max_weight) + slack)
    for group in constraints.groups:
        assert weights[list(group.members)].sum() <= group.cap + slack
    if constraints.correlation_threshold is not None:
        corr = correlation_of(estimate(returns, Estimator()).covariance)
        for i in range(COUNT):
            for j in range(i + 1, COUNT):
                if corr[i, j] > constraints.correlation_threshold:
                    assert weights[i] + weights[j] <= constraints.pair_cap + slack
    if constraints.turnover is not None:
        assert np.abs(weights - current).sum() <= constraints.turnover + slack


@FAST
@given(constraint_sets(), st.sampled_from(METHODS), st.sampled_from(sorted(RETURNS)))
def test_weights_respect_every_constraint_or_the_result_says_why(
    constraints: Constraints, method: type[Optimizer], seed: int
) -> None:
    returns = RETURNS[seed]
    current = np.full(COUNT, 1.0 / COUNT)
    result = method(COUNT, constraints=constraints).solve(returns, current)
    assert isinstance(result, Solved | Infeasible), result
    if isinstance(result, Solved):
        check(result.weights, constraints, returns, current)


@pytest.mark.parametrize("method", [*METHODS, RiskParity])
@pytest.mark.parametrize(
    ("constraints", "why"),
    [
        (Constraints(min_weight=0.3), "minimum weights sum"),
        (Constraints(max_weight=0.1), "maximum weights sum"),
        (Constraints(min_weight=(0.5, 0, 0, 0, 0), max_weight=(0.4, 1, 1, 1, 1)), "exceeds its maximum"),
    ],
)
def test_impossible_bounds_are_an_infeasible_value(
    method: type[Optimizer], constraints: Constraints, why: str
) -> None:
    if method is RiskParity:
        with pytest.raises(ValueError, match="risk parity takes no constraint"):
            method(COUNT, constraints=constraints)
        return
    result = method(COUNT, constraints=constraints).solve(RETURNS[0])
    assert isinstance(result, Infeasible) and why in result.reason


@pytest.mark.parametrize("method", METHODS)
def test_a_turnover_the_bounds_cannot_meet_is_infeasible_from_the_solver(method: type[Optimizer]) -> None:
    # all capital in strategy 0, which may hold at most 50%: reaching it needs turnover 1.0 > 0.2
    constraints = Constraints(max_weight=(0.5, 1, 1, 1, 1), turnover=0.2)
    result = method(COUNT, constraints=constraints).solve(RETURNS[1], np.array([1.0, 0, 0, 0, 0]))
    assert isinstance(result, Infeasible), result
    assert "admit no portfolio" in result.reason


def test_max_sharpe_with_nothing_above_the_risk_free_rate_is_infeasible() -> None:
    losing = RETURNS[0] - 0.01
    result = MaxSharpe(COUNT).solve(losing)
    assert result == Infeasible("no strategy's expected return exceeds the risk-free rate")


def test_a_solver_that_gives_up_is_a_value() -> None:
    result = MinVariance(COUNT, solver_options={"max_iter": 1}, direct=False).solve(RETURNS[0])
    assert isinstance(result, SolverFailed), result


def test_the_pair_cap_binds_on_correlated_strategies() -> None:
    rng = np.random.default_rng(11)
    common = rng.normal(0.002, 0.02, (300, 1))
    returns = np.hstack([common + rng.normal(0, 0.002, (300, 2)), rng.normal(0.0002, 0.02, (300, 3))])
    free = MaxSharpe(COUNT).solve(returns)
    assert isinstance(free, Solved) and free.weights[0] + free.weights[1] > 0.5
    capped = MaxSharpe(COUNT, constraints=Constraints(correlation_threshold=0.8, pair_cap=0.5)).solve(returns)
    assert isinstance(capped, Solved)
    assert capped.weights[0] + capped.weights[1] == pytest.approx(0.5, abs=WEIGHT_TOLERANCE)


def test_turnover_binds_relative_to_the_current_weights() -> None:
    current = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    free = MinVariance(COUNT).solve(RETURNS[2], current)
    assert isinstance(free, Solved) and np.abs(free.weights - current).sum() > 0.2
    limited = MinVariance(COUNT, constraints=Constraints(turnover=0.2)).solve(RETURNS[2], current)
    assert isinstance(limited, Solved)
    assert np.abs(limited.weights - current).sum() == pytest.approx(0.2, abs=WEIGHT_TOLERANCE)


def test_a_turnover_limit_without_current_weights_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="current weights"):
        MinVariance(COUNT, constraints=Constraints(turnover=0.2)).solve(RETURNS[0])

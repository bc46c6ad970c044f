"""The exact active-set path for constrained problems (group caps, pair caps, turnover, the mix) against
the same problem solved by CLARABEL at tight tolerances (the cvxpy path, `direct=False`); warm re-solves
against cold ones. Not timed: bench/optimizer.py measures speed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal_allocation import constrained
from rebal_allocation.estimate import correlation_of, estimate
from rebal_allocation.optimize import (
    Constraints,
    Group,
    MeanVariance,
    MinVariance,
    Mix,
    Optimizer,
    Solved,
    violation,
)
from tests.allocation.cases import random_returns

# CLARABEL's tolerances pushed to the limit of double precision: the independent reference.
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
# The target: the objective within 1e-6 of the reference (relative); the active set is exact to rounding,
# so it meets a much tighter bound, checked here.
OBJECTIVE = 1e-8
COUNT = 24
HISTORY = random_returns(COUNT, periods=400, seed=31)
CURRENT = np.linspace(0.5, 1.5, COUNT) / np.linspace(0.5, 1.5, COUNT).sum()
GROUPS = tuple(Group(tuple(range(i, COUNT, 4)), 0.3) for i in range(4))


def threshold(returns: np.ndarray, quantile: float) -> float:
    correlations = correlation_of(estimate(returns, MinVariance(COUNT).estimator).covariance)
    return float(np.quantile(correlations[np.triu_indices(COUNT, 1)], quantile))


CASES: dict[str, tuple[type[Optimizer], dict[str, object]]] = {
    "min-variance, groups": (MinVariance, {"constraints": Constraints(groups=GROUPS, max_weight=0.15)}),
    "min-variance, pairs": (
        MinVariance,
        {"constraints": Constraints(correlation_threshold=threshold(HISTORY, 0.8), pair_cap=0.08)},
    ),
    "min-variance, turnover": (MinVariance, {"constraints": Constraints(turnover=0.1)}),
    "mean-variance, groups and turnover": (
        MeanVariance,
        {"risk_aversion": 5.0, "constraints": Constraints(groups=GROUPS, turnover=0.3, max_weight=0.3)},
    ),
    "mix": (Mix, {"lookback": 365}),
    "mix, groups": (Mix, {"lookback": 365, "constraints": Constraints(groups=GROUPS)}),
    "mix, pairs and turnover": (
        Mix,
        {
            "lookback": 365,
            "drawdown_weight": 3.0,
            "constraints": Constraints(
                correlation_threshold=threshold(HISTORY, 0.8), pair_cap=0.2, turnover=0.5, max_weight=0.3
            ),
        },
    ),
}


def solved(result: object) -> Solved:
    assert isinstance(result, Solved), result
    return result


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_active_set_path_matches_a_tight_clarabel_solve(name: str) -> None:
    method, options = CASES[name]
    ours = method(COUNT, **options)  # type: ignore[arg-type]
    first = solved(ours.solve(HISTORY[:-1], CURRENT))
    again = solved(ours.solve(HISTORY[1:], CURRENT))
    assert isinstance(ours._warm, constrained.Warm), "the active-set path answered, not the cvxpy problem"
    assert first.rebuilt and not again.rebuilt  # the re-solve started from the previous active sets
    reference = solved(
        method(COUNT, direct=False, solver_options=TIGHT, **options).solve(HISTORY[1:], CURRENT)
    )  # type: ignore[arg-type]
    gap = (again.objective - reference.objective) / abs(reference.objective)
    # maximised objectives (mean-variance, mix) may only be higher, minimised ones (variance) lower
    better = gap if method is MinVariance else -gap
    assert better <= OBJECTIVE, (name, gap)
    assert abs(gap) <= OBJECTIVE, (name, gap)
    cold = solved(method(COUNT, **options).solve(HISTORY[1:], CURRENT))  # type: ignore[arg-type]
    np.testing.assert_allclose(again.weights, cold.weights, atol=1e-9)
    pairs = ()
    if ours.constraints.correlation_threshold is not None:
        from rebal_allocation.optimize import correlated_pairs

        covariance = estimate(HISTORY[1:], ours.estimator).covariance
        pairs = correlated_pairs(covariance, ours.constraints.correlation_threshold)
        assert pairs, "the case caps at least one pair"
    assert violation(again.weights, ours.constraints, pairs, CURRENT) <= 1e-12


@st.composite
def problems(draw: st.DrawFn) -> tuple[Constraints, int, float]:
    members = tuple(sorted(draw(st.sets(st.integers(0, 7), min_size=2, max_size=4))))
    cap = draw(st.floats(0.15, 0.6))
    turnover = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    constraints = Constraints(
        max_weight=draw(st.floats(0.2, 1.0)), groups=(Group(members, cap),), turnover=turnover
    )
    return constraints, draw(st.integers(0, 3)), draw(st.floats(0.5, 20.0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_constrained_problems_match_clarabel(problem: tuple[Constraints, int, float]) -> None:
    constraints, seed, aversion = problem
    returns = random_returns(8, periods=120, seed=seed)
    current = np.full(8, 1 / 8)
    for method, options in ((MinVariance, {}), (MeanVariance, {"risk_aversion": aversion})):
        ours = method(8, constraints=constraints, **options).solve(returns, current)  # type: ignore[arg-type]
        reference = method(8, constraints=constraints, direct=False, solver_options=TIGHT, **options).solve(  # type: ignore[arg-type]
            returns, current
        )
        assert type(ours) is type(reference), (ours, reference)
        if isinstance(ours, Solved) and isinstance(reference, Solved):
            scale = max(abs(reference.objective), 1e-12)
            assert abs(ours.objective - reference.objective) / scale <= 1e-6

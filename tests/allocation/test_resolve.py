"""A problem built once and re-solved with new data gives what a fresh build gives."""

from __future__ import annotations

import numpy as np
import pytest

from rebal_allocation.optimize import (
    Constraints,
    MaxSharpe,
    MeanVariance,
    MinVariance,
    Mix,
    Optimizer,
    RiskParity,
    SlopeStd,
    Solved,
)
from tests.allocation.cases import random_returns

COUNT = 6
# Two solves of the same data agree to about the solver tolerance: objectives closely, weights less so
# where the objective is flat (the mix trades two strategies at almost no cost).
SAME = 1e-6
SAME_WEIGHTS = 1e-5
HISTORY = random_returns(COUNT, periods=420, seed=21)
BUILDS = {
    "min-variance": lambda: MinVariance(COUNT, constraints=Constraints(max_weight=0.4, turnover=0.8)),
    "mean-variance": lambda: MeanVariance(COUNT, risk_aversion=10.0, constraints=Constraints(max_weight=0.5)),
    "max-sharpe": lambda: MaxSharpe(COUNT, constraints=Constraints(max_weight=0.5, turnover=1.0)),
    "risk-parity": lambda: RiskParity(COUNT),
    "slope-std": lambda: SlopeStd(COUNT, lookback=365),
    "mix": lambda: Mix(COUNT, lookback=365, constraints=Constraints(max_weight=0.6)),
}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_a_resolve_after_one_new_day_equals_a_fresh_build(name: str) -> None:
    current = np.full(COUNT, 1.0 / COUNT)
    kept: Optimizer = BUILDS[name]()
    first = kept.solve(HISTORY[:-1], current)
    assert isinstance(first, Solved) and first.rebuilt
    again = kept.solve(HISTORY[1:], first.weights)
    fresh = BUILDS[name]().solve(HISTORY[1:], first.weights)
    assert isinstance(again, Solved) and isinstance(fresh, Solved)
    assert not again.rebuilt and fresh.rebuilt
    np.testing.assert_allclose(again.weights, fresh.weights, atol=SAME_WEIGHTS)
    assert again.objective == pytest.approx(fresh.objective, rel=SAME, abs=SAME)


@pytest.mark.parametrize("direct", [False, True])
def test_a_new_set_of_correlated_pairs_rebuilds_the_problem(direct: bool) -> None:
    # The cvxpy problem is rebuilt for the new pair; the active-set path takes the new row as it comes.
    constraints = Constraints(correlation_threshold=0.2, pair_cap=0.5)
    optimizer = MinVariance(COUNT, constraints=constraints, direct=direct)
    first = optimizer.solve(HISTORY)
    copied = HISTORY.copy()
    copied[:, 1] = copied[:, 0] + 0.001  # strategy 1 now moves with strategy 0
    second = optimizer.solve(copied)
    assert isinstance(first, Solved) and isinstance(second, Solved)
    assert second.rebuilt is not direct
    assert second.weights[0] + second.weights[1] <= 0.5 + SAME

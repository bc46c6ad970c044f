"""The allocation methods by name and the optimizer an `Allocation` makes (constraints resolved from
strategy ids to indices)."""

from __future__ import annotations

from typing import Any

from rebal.core.performance import DAYS_PER_YEAR
from rebal_allocation.allocation import INTEGER_PARAMETERS, Allocation
from rebal_allocation.estimate import Estimator
from rebal_allocation.optimize import (
    Constraints,
    Group,
    MaxSharpe,
    MeanVariance,
    MinVariance,
    Mix,
    Optimizer,
    RiskParity,
    SlopeStd,
)

METHODS: dict[str, type[Optimizer]] = {
    "min_variance": MinVariance,
    "mean_variance": MeanVariance,
    "max_sharpe": MaxSharpe,
    "risk_parity": RiskParity,
    "slope_std": SlopeStd,
    "mix": Mix,
}


def make_optimizer(
    allocation: Allocation, names: tuple[str, ...], periods_per_year: float = DAYS_PER_YEAR
) -> Optimizer:
    """The allocation's method over these strategies (constraints resolved to their indices), annualising
    with the allocation's `periods_per_year` when it sets one, else with the one given (the returns'
    frequency, `rebal.core.performance.frequency_of`); a `ValueError` when the method cannot take the
    constraints (risk parity takes none) or a parameter is not finite."""
    index = {name: i for i, name in enumerate(names)}
    groups = tuple(
        Group(tuple(index[m] for m in group.members if m in index), group.cap)
        for _, group in sorted(allocation.groups.items())
        if any(m in index for m in group.members)
    )
    constraints = Constraints(
        min_weight=allocation.min_weight,
        max_weight=allocation.max_weight,
        groups=groups,
        correlation_threshold=allocation.correlation_threshold,
        pair_cap=allocation.pair_cap,
        turnover=allocation.turnover,
    )
    parameters: dict[str, Any] = {
        key: int(value) if key in INTEGER_PARAMETERS and value == int(value) else value
        for key, value in allocation.parameters.items()
    }
    if allocation.method == "slope_std":
        parameters["equity"] = allocation.equity
    return METHODS[allocation.method](
        len(names),
        constraints=constraints,
        estimator=Estimator(method=allocation.estimator, halflife=allocation.halflife),
        periods_per_year=allocation.periods_per_year or periods_per_year,
        **parameters,
    )

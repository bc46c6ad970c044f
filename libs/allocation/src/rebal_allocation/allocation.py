"""What an allocation is: a method with its parameters, constraints by strategy id, a covariance
estimator, the periods per year and a volatility target (docs/bots.md, "The optimizer").

The optimizer service's settings extend `Allocation` with what the service needs besides (which
strategies, the schedule, the capital); the offline `rebal optimize` builds one from its options. Both
solve it through `rebal_allocation.methods.make_optimizer`, so an allocation means the same wherever it
is solved. Only pydantic here: reading options does not import the solvers.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from rebal.settings import Section

Method = Literal["min_variance", "mean_variance", "max_sharpe", "risk_parity", "slope_std", "mix"]
# The parameters each method takes (passed to its constructor in `rebal_allocation.optimize`).
METHOD_PARAMETERS: dict[str, frozenset[str]] = {
    "min_variance": frozenset(),
    "mean_variance": frozenset({"risk_aversion"}),
    "max_sharpe": frozenset({"risk_free"}),
    "risk_parity": frozenset(),
    "slope_std": frozenset({"lookback"}),
    "mix": frozenset({"return_weight", "volatility_weight", "drawdown_weight", "lookback"}),
}
INTEGER_PARAMETERS = frozenset({"lookback"})
# What each parameter must be, besides finite (NaN and infinities are refused for every one).
POSITIVE_PARAMETERS = frozenset({"risk_aversion"})
NON_NEGATIVE_PARAMETERS = frozenset({"return_weight", "volatility_weight", "drawdown_weight"})
SMALLEST_LOOKBACK = 3  # the slope of a curve needs three points to mean anything
Equity = Literal["compounded", "additive"]


def parameter_problem(name: str, value: float) -> str | None:
    """Why a method parameter's value is refused (None when it is fine)."""
    if not math.isfinite(value):
        return f"{name} must be a finite number, not {value}"
    if name in INTEGER_PARAMETERS and (value != int(value) or value < SMALLEST_LOOKBACK):
        return f"{name} must be a whole number of periods of at least {SMALLEST_LOOKBACK}, not {value:g}"
    if name in POSITIVE_PARAMETERS and value <= 0:
        return f"{name} must be positive, not {value:g}"
    if name in NON_NEGATIVE_PARAMETERS and value < 0:
        return f"{name} must be non-negative, not {value:g}"
    return None


class GroupSettings(Section):
    members: list[str]
    cap: float = Field(ge=0, le=1)


class Allocation(Section):
    """How capital is allocated across strategies (docs/bots.md, "The optimizer"). Every number must be
    finite: NaN and infinities are refused wherever an allocation is read (settings, `rebal optimize`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Method = "risk_parity"
    parameters: dict[str, float] = Field(default_factory=dict)
    # slope_std: the equity curve whose slope is measured, compounded (the value of 1 invested,
    # prod(1 + r)) or additive (the sum of the returns, cumsum(r)); docs/strategies.md.
    equity: Equity = "compounded"
    # Constraints.
    min_weight: float = Field(default=0.0, ge=0, le=1)
    max_weight: float = Field(default=1.0, gt=0, le=1)
    groups: dict[str, GroupSettings] = Field(default_factory=dict)
    correlation_threshold: float | None = Field(default=None, ge=-1, le=1)
    pair_cap: float = Field(default=1.0, ge=0, le=1)
    turnover: float | None = Field(default=None, ge=0)
    # Estimation: covariance estimator and EWMA half-life (periods).
    estimator: Literal["sample", "ewma", "ledoit_wolf"] = "ledoit_wolf"
    halflife: float = Field(default=60.0, gt=0)
    # None: from the dates of the returns (rebal.core.performance.frequency_of: daily 365.25, weekly
    # 365.25 / 7, monthly 12, intraday by the spacing); a number overrides it.
    periods_per_year: float | None = Field(default=None, gt=0)
    # Volatility targeting (portfolio_config.json): leverage = target / realised, at most max_leverage.
    target_volatility: float = Field(default=0.10, ge=0)
    max_leverage: float | None = Field(default=1.0, gt=0)  # None: no cap

    @model_validator(mode="after")
    def _method_fits(self) -> Allocation:
        unknown = set(self.parameters) - METHOD_PARAMETERS[self.method]
        if unknown:
            allowed = ", ".join(sorted(METHOD_PARAMETERS[self.method])) or "none"
            raise ValueError(
                f"{self.method} takes no parameter {', '.join(sorted(unknown))} (allowed: {allowed})"
            )
        problems = [parameter_problem(k, v) for k, v in sorted(self.parameters.items())]
        if any(problems):
            raise ValueError("; ".join(p for p in problems if p))
        if self.min_weight > self.max_weight:
            raise ValueError("min_weight is above max_weight")
        return self

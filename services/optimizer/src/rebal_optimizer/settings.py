"""Optimizer settings: target files, and per portfolio the allocation across its strategies."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rebal.settings import Section, ServiceSettings

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


class TargetSettings(Section):
    # The operator's desired tree per portfolio (docs/formats.md); re-read when it changes. For a portfolio
    # with an allocation (below) it is the base tree whose strategy nodes get the optimizer's weights.
    files: dict[str, Path] = Field(default_factory=lambda: {"demo": Path("examples/demo/target.json")})
    # How often the file is checked and the target republished (idempotent: same content, same id).
    interval_seconds: float = Field(default=30.0, gt=0)


class GroupSettings(Section):
    members: list[str]
    cap: float = Field(ge=0, le=1)


class AllocationSettings(Section):
    """How one portfolio's capital is allocated across its strategies (docs/bots.md, "The optimizer")."""

    method: Method = "risk_parity"
    parameters: dict[str, float] = Field(default_factory=dict)
    # Strategy id -> the path of its node in the base tree ("paper/spot/trend", below the root). Empty:
    # every strategy reporting for the portfolio whose id names exactly one node of the tree.
    strategies: dict[str, str] = Field(default_factory=dict)
    # Constraints.
    min_weight: float = Field(default=0.0, ge=0, le=1)
    max_weight: float = Field(default=1.0, gt=0, le=1)
    groups: dict[str, GroupSettings] = Field(default_factory=dict)
    correlation_threshold: float | None = Field(default=None, ge=-1, le=1)
    pair_cap: float = Field(default=1.0, ge=0, le=1)
    turnover: float | None = Field(default=None, ge=0)
    # Estimation: covariance estimator, EWMA half-life (periods), and the data used: the last
    # `lookback_periods` returns every strategy has, at least `min_observations` of them.
    estimator: Literal["sample", "ewma", "ledoit_wolf"] = "ledoit_wolf"
    halflife: float = Field(default=60.0, gt=0)
    lookback_periods: int = Field(default=365, ge=2)
    min_observations: int = Field(default=30, ge=2)
    periods_per_year: float = Field(default=365.0, gt=0)
    # Volatility targeting (portfolio_config.json): leverage = target / realised, at most max_leverage.
    target_volatility: float = Field(default=0.10, ge=0)
    max_leverage: float = Field(default=1.0, gt=0)
    # The capital allocated; None: the latest balance snapshot's total value.
    account_value: Decimal | None = Field(default=None, gt=0)
    # Schedules: every `interval_seconds` (86400 daily, 604800 weekly; 0 = never), when
    # `after_new_returns` returns arrived since the last solve (0 = never), and on `RunOptimization`.
    interval_seconds: float = Field(default=86_400.0, ge=0)
    after_new_returns: int = Field(default=0, ge=0)
    poll_seconds: float = Field(default=5.0, gt=0)
    # "weights": strategy nodes of the base tree get the weights. "reconciler": the target is the position
    # per instrument, account value x leverage x strategy weight x strategy position, summed over
    # strategies (spot: a net short is held at 0, and more than the account is scaled down, with notes);
    # republished whenever a strategy's reported positions change. `quote_wallet` holds the rest.
    mode: Literal["weights", "reconciler"] = "weights"
    quote_wallet: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AllocationSettings:
        unknown = set(self.parameters) - METHOD_PARAMETERS[self.method]
        if unknown:
            allowed = ", ".join(sorted(METHOD_PARAMETERS[self.method])) or "none"
            raise ValueError(
                f"{self.method} takes no parameter {', '.join(sorted(unknown))} (allowed: {allowed})"
            )
        if self.min_weight > self.max_weight:
            raise ValueError("min_weight is above max_weight")
        if self.mode == "reconciler" and not self.quote_wallet:
            raise ValueError("reconciler mode needs quote_wallet: the path of the wallet that holds the rest")
        return self


class OptimizerSettings(ServiceSettings):
    service: ClassVar[str] = "optimizer"
    targets: TargetSettings = TargetSettings()
    # Portfolio id -> its allocation across strategies; portfolios not listed get their target file as is.
    allocations: dict[str, AllocationSettings] = Field(default_factory=dict)
    # BLAS threads for the solves: one is fastest for these sizes on a machine shared with other services
    # (measured by bench/optimizer.py: two threads made every library 10-40x slower on 2 shared cores).
    blas_threads: int = Field(default=1, ge=1, le=256)

    @model_validator(mode="after")
    def _bases(self) -> OptimizerSettings:
        missing = sorted(set(self.allocations) - set(self.targets.files))
        if missing:
            raise ValueError(f"allocations for {', '.join(missing)}: give each a base tree in targets.files")
        return self

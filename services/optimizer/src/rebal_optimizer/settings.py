"""Optimizer settings: target files, and per portfolio the allocation across its strategies."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from rebal.schedule import CronSchedule, zone
from rebal.settings import Section, ServiceSettings
from rebal_allocation.allocation import Allocation

# The old `interval_seconds` values that name a calendar period, as the schedule each now means (the old
# ticks were aligned on the Unix epoch: "weekly" fell on Thursdays at 00:00 UTC). Other values are refused.
INTERVAL_SCHEDULES = {0.0: "", 3_600.0: "0 * * * *", 86_400.0: "0 0 * * *", 604_800.0: "0 0 * * MON"}


class TargetSettings(Section):
    # The operator's desired tree per portfolio (docs/formats.md); re-read when it changes. For a portfolio
    # with an allocation (below) it is the base tree whose strategy nodes get the optimizer's weights.
    files: dict[str, Path] = Field(default_factory=lambda: {"demo": Path("examples/demo/target.json")})
    # How often the file is checked and the target republished (idempotent: same content, same id).
    interval_seconds: float = Field(default=30.0, gt=0)


class AllocationSettings(Allocation):
    """One portfolio's allocation (the method, its constraints and estimator: `Allocation`) and what the
    service needs besides: which strategies, how much of their history, the capital, when to solve."""

    # Strategy id -> the path of its node in the base tree ("paper/spot/trend", below the root). Empty:
    # every strategy reporting for the portfolio whose id names exactly one node of the tree.
    strategies: dict[str, str] = Field(default_factory=dict)
    # The data used: the last `lookback_periods` returns every strategy has, at least `min_observations`.
    lookback_periods: int = Field(default=365, ge=2)
    min_observations: int = Field(default=30, ge=2)
    # The capital allocated; None: the latest balance snapshot's total value.
    account_value: Decimal | None = Field(default=None, gt=0)
    # Schedules: at each tick of `schedule`, a cron expression (minute hour day-of-month month
    # day-of-week; "0 0 * * *" daily at midnight, "0 0 * * MON" weekly on Monday 00:00, "" never) read
    # on the wall clock of `timezone` (an IANA zone); when `after_new_returns` returns arrived since the
    # last solve (0 = never); and on `RunOptimization`. A tick is due when it falls after the last solve
    # (of any trigger) and at or before now: one solve per tick, a tick missed while the service was
    # down is solved once at start. The old `interval_seconds` is read as the schedule it names
    # (`INTERVAL_SCHEDULES`) and refused otherwise.
    schedule: str = "0 0 * * *"
    timezone: str = "UTC"
    after_new_returns: int = Field(default=0, ge=0)
    poll_seconds: float = Field(default=5.0, gt=0)
    # "weights": strategy nodes of the base tree get the weights. "reconciler": the target is the position
    # per instrument, account value x leverage x strategy weight x strategy position, summed over
    # strategies (spot: a net short is held at 0, and more than the account is scaled down, with notes);
    # republished whenever a strategy's reported positions change. `quote_wallet` holds the rest.
    mode: Literal["weights", "reconciler"] = "weights"
    quote_wallet: str | None = None
    # Reconciler mode on a perpetual futures account (a node of kind "futures" of the base tree, by path):
    # the targets are its positions, shorts and leverage included, each symbol set to `symbol_leverage`
    # (unset: the smallest whole leverage at or above the allocation's) in `margin_mode` before trading.
    futures_account: str | None = None
    symbol_leverage: int | None = Field(default=None, ge=1, le=125)
    margin_mode: Literal["cross", "isolated"] = "cross"
    # The manager's portfolio_config.json (docs/strategies.md): when set, its account_value, weights and
    # leverage are traded as written (re-read when the file changes) instead of solving from the returns.
    portfolio_config: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _interval(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "interval_seconds" not in data:
            return data
        data = dict(data)
        raw = data.pop("interval_seconds")
        if "schedule" in data:
            raise ValueError("give schedule (a cron expression) or the old interval_seconds, not both")
        try:
            data["schedule"] = INTERVAL_SCHEDULES[float(raw)]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"interval_seconds {raw!r} is no longer read: give schedule, a cron expression in timezone "
                "('0 0 * * *' daily at midnight, '0 0 * * MON' weekly on Mondays, '0 * * * *' hourly, "
                "'' never); interval_seconds is only read as 0, 3600, 86400 or 604800"
            ) from None
        return data

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return "" if not value.strip() else CronSchedule(value).expression

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> AllocationSettings:
        if self.mode == "reconciler" and not (self.quote_wallet or self.futures_account):
            raise ValueError(
                "reconciler mode needs quote_wallet (the path of the wallet that holds the rest) or "
                "futures_account (the path of the futures account whose positions are the targets)"
            )
        if self.futures_account and self.quote_wallet:
            raise ValueError("give quote_wallet (spot) or futures_account, not both")
        return self

    def cron(self) -> CronSchedule | None:
        """The schedule's ticks (None: no schedule)."""
        return CronSchedule(self.schedule, self.timezone) if self.schedule else None


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

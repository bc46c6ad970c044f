"""The optimizer walked forward over strategy returns: re-optimised on a schedule with only the data known
at the time, and judged on what came after (out of sample).

A walk-forward file (docs/backtest.md, "The optimizer, out of sample") names the schedule, the window
each solve sees and the methods to compare; each method is an `Allocation` (as the optimizer service and
`rebal optimize` take it) or ``equal_weight``. At each re-optimisation the method solves on the last
`lookback` periods before it (never the period it will hold) through `make_optimizer`, the optimizer
service's own path, warm-started from its previous solve; with volatility targeting (`target_volatility`
set) the weights are scaled by ``min(target / realised, max_leverage)`` over the same window
(`rebal_allocation.volatility`). Between re-optimisations the weights are held, rebalanced every period
(the optimizer's convention: ``r_t = leverage x w . R_t``, the rest in cash at 0); a solve that fails
keeps the previous weights, as the service keeps the previous target. Re-allocating costs `fee_rate`
times the weight moved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from rebal.settings import Section
from rebal_allocation.allocation import Allocation
from rebal_allocation.methods import make_optimizer
from rebal_allocation.optimize import Solved
from rebal_allocation.volatility import leverage_for

Floats = NDArray[np.float64]
EQUAL_WEIGHT = "equal_weight"
CandidateMethod = Literal[
    "min_variance", "mean_variance", "max_sharpe", "risk_parity", "slope_std", "mix", "equal_weight"
]


class Candidate(Allocation):
    """One method to compare: an allocation, or ``equal_weight`` (the benchmark every method must beat)."""

    method: CandidateMethod = "risk_parity"  # type: ignore[assignment]  # Allocation's methods and one more

    @model_validator(mode="after")
    def _method_fits(self) -> Candidate:  # replaces Allocation's check, which knows no equal_weight
        if self.method == EQUAL_WEIGHT:
            if self.parameters:
                raise ValueError("equal_weight takes no parameters")
            return self
        checked = Allocation.__pydantic_decorators__.model_validators["_method_fits"].func(self)
        assert isinstance(checked, Candidate)
        return checked

    @property
    def vol_targeted(self) -> bool:
        return "target_volatility" in self.model_fields_set


class WalkForward(Section):
    """A walk-forward file: when to re-optimise, on how much history, and the methods to compare."""

    schedule: str = "0 0 1 * *"  # cron (rebal.schedule), re-optimise at each tick
    timezone: str = "UTC"
    lookback: int = Field(default=365, ge=2)  # periods each solve sees
    min_history: int = Field(default=60, ge=2)  # periods before the first solve
    fee_rate: float = Field(default=0.0, ge=0, lt=1)  # cost per unit of weight moved
    methods: dict[str, Candidate] = Field(min_length=1)

    @model_validator(mode="after")
    def _history_within_lookback(self) -> WalkForward:
        if self.min_history > self.lookback:
            raise ValueError("min_history is longer than lookback")
        return self


@dataclass(frozen=True, eq=False)
class Walk:
    """One method walked forward: its out-of-sample period returns and what re-allocating did."""

    name: str
    method: str
    returns: Floats  # per period from the first re-optimisation on
    weights: Floats  # (re-optimisations x strategies), leverage included
    leverage: Floats  # per re-optimisation
    turnover: float  # weight moved in all
    failures: int  # solves that found no allocation (the previous weights stayed)


def walk(
    name: str,
    candidate: Candidate,
    returns: Floats,
    rows: Sequence[int],
    lookback: int,
    fee_rate: float,
    periods_per_year: float = 365.25,
) -> Walk:
    """Walk `candidate` over `returns` (periods x strategies), re-optimising before each of `rows` (the
    first period each new allocation holds; increasing) with the `lookback` periods before it."""
    count = returns.shape[1]
    optimizer = None if candidate.method == EQUAL_WEIGHT else make_optimizer(candidate, _names(count))
    start = rows[0]
    out = np.zeros(returns.shape[0] - start)
    held = np.zeros(count)
    weights, leverages, moved, failures = [], [], 0.0, 0
    for k, row in enumerate(rows):
        window = returns[max(0, row - lookback) : row]
        if optimizer is None:
            chosen: Floats | None = np.full(count, 1.0 / count)
        else:
            result = optimizer.solve(window, held / held.sum() if held.sum() > 0 else None)
            chosen = result.weights if isinstance(result, Solved) else None
        if chosen is None:
            failures += 1
            target = held
        else:
            leverage = 1.0
            if candidate.vol_targeted:
                # The candidate's own periods a year, else the dates' (`periods_per_year`); no cap: inf.
                per_year = candidate.periods_per_year or periods_per_year
                cap = math.inf if candidate.max_leverage is None else candidate.max_leverage
                realised = float(np.std(window @ chosen, ddof=1) * np.sqrt(per_year))
                leverage = leverage_for(realised, candidate.target_volatility, cap)
            target = chosen * leverage
        moved += float(np.abs(target - held).sum())
        end = rows[k + 1] if k + 1 < len(rows) else returns.shape[0]
        out[row - start : end - start] = returns[row:end] @ target
        out[row - start] -= fee_rate * float(np.abs(target - held).sum())
        held = target
        weights.append(target)
        leverages.append(float(target.sum()))
    return Walk(name, candidate.method, out, np.array(weights), np.array(leverages), moved, failures)


def _names(count: int) -> tuple[str, ...]:
    return tuple(f"s{i}" for i in range(count))

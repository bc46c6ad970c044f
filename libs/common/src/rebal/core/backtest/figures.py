"""A replay's figures: what it traded and cost, how closely it tracked the target, how it performed.

Conventions (docs/backtest.md, "Figures"), on the rows' values after each row's flow and trades:

- Period returns are time-weighted, net of flows: ``r_t = (V_t - F_t) / V_(t-1) - 1``; the statistics are
  `rebal.core.performance`'s (CAGR is its annualised return, Sharpe with no risk-free rate), annualised
  with the periods per year the dates imply (365.25 days a year).
- `turnover`: the value traded (buys and sells) over the average portfolio value, per year.
- `tracking_error`: the annualised standard deviation of ``r_t - b_t``, where ``b_t`` is the baseline's
  return: the target rebalanced at every row without costs.
- `max_drift` / `mean_drift`: the largest and the average, over the rows, of the largest absolute
  difference between a wallet's share of the portfolio and its desired share, in percentage points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rebal.core import performance
from rebal.core.backtest.replay import Run
from rebal.core.tree import FloatArray


@dataclass(frozen=True)
class Figures:
    rebalances: int
    orders: int
    turnover: float
    fees: float
    tracking_error: float
    max_drift: float  # percentage points
    mean_drift: float
    final_value: float
    cagr: float
    volatility: float
    max_drawdown: float
    sharpe: float


def returns_of(value: FloatArray, flow: FloatArray) -> FloatArray:
    """Time-weighted period returns: ``(V_t - F_t) / V_(t-1) - 1`` (0 after a period worth nothing)."""
    before = value[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(before > 0, (value[1:] - flow[1:]) / before - 1.0, 0.0)
    return np.maximum(returns, -1.0)


def baseline_values(prices: FloatArray, shares: FloatArray, start: float, flow: FloatArray) -> FloatArray:
    """The target rebalanced at every row without costs: `shares` of the value in each price column
    (the rest in the valuation currency), starting from `start` after row 0's flow."""
    growth = prices[1:] / prices[:-1]
    returns = growth @ shares + (1.0 - shares.sum()) - 1.0
    value = np.empty(prices.shape[0])
    value[0] = start
    for row, factor in enumerate(returns.tolist(), start=1):  # flows keep this a recurrence
        value[row] = value[row - 1] * (1.0 + factor) + flow[row]
    return value


def figures(run: Run, baseline: FloatArray | None, periods_per_year: float) -> Figures:
    """The figures of `run`; `baseline` is the baseline's returns (None: the run is the baseline)."""
    returns = returns_of(run.value, run.flow)
    years = returns.size / periods_per_year if periods_per_year > 0 else 0.0
    average = float(run.value.mean()) if run.value.size else 0.0
    turnover = float(run.traded.sum()) / average / years if average > 0 and years > 0 else 0.0
    if baseline is None or returns.size < 2:
        tracking = 0.0
    else:
        tracking = float(performance.annualised_volatility(returns - baseline, periods_per_year))
    return Figures(
        rebalances=run.rebalances,
        orders=int(run.orders.sum()),
        turnover=turnover,
        fees=float(run.fees.sum()),
        tracking_error=tracking,
        max_drift=float(run.drift.max(initial=0.0)) * 100,
        mean_drift=float(run.drift.mean()) * 100 if run.drift.size else 0.0,
        final_value=float(run.value[-1]) if run.value.size else 0.0,
        cagr=float(performance.annualised_return(returns, periods_per_year)),
        volatility=float(performance.annualised_volatility(returns, periods_per_year)),
        max_drawdown=float(performance.max_drawdown(returns)),
        sharpe=float(performance.sharpe(returns, periods_per_year)),
    )

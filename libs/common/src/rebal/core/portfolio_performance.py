"""A portfolio's own performance, from what it was worth over time: pure numpy, no clock.

The strategies' statistics (`rebal.core.performance`) describe what bots report; this describes what
the portfolio holds. Its inputs are the portfolio's valuations (the free value of each balance snapshot,
`tree_value`, the same total the weights show) and the money that came in or went out meanwhile
(deposits and withdrawals, in the valuation currency): a deposit is not a gain.

- **A regular grid.** Snapshots come every few seconds and on demand, so their spacing is irregular.
  The valuations are resampled to the smallest step of `GRID_STEPS` that is at least their median
  spacing and at least the span over `MAX_PERIODS`. Each grid point takes the last valuation at or
  before it; each period's flows are those after the previous point up to it. The result states the
  step, which is the frequency every figure is at.
- **Gaps stay gaps.** Two valuations more than `GAP_STEPS` steps apart (the system was stopped, the
  tracker could not reach a venue) leave a gap: the grid points between them have no value (NaN: a
  chart shows a break) and are not periods. The change across the gap, from the last value before it
  to the first after, is one return that counts in the time-weighted return and the drawdown (the
  money was at the market meanwhile) but not in the per-period figures (volatility, Sharpe, Sortino,
  the period count), since it spans more than one step.
- **Time-weighted return.** Each period's return is ``(V_i - F_i) / V_{i-1} - 1``: the flows of the
  period are taken out of its end value (as if they arrived at its end), so deposits and withdrawals do
  not count as performance; a period that starts at no value has no return. The TWR is their product.
- **Drawdown** is the largest fall of the compounded TWR curve from its running peak (in [0, 1]).
- **Annualised figures** (return, volatility, Sharpe, Sortino, with `rebal.core.performance`'s
  conventions and the grid's periods per year) are given only with at least `MIN_ANNUALISED_PERIODS`
  periods spanning at least `MIN_ANNUALISED_DAYS` days: minutes of data say nothing of a year. Otherwise
  `annualised` is None and `not_annualised` says why; the per-period volatility is always given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rebal.core import performance as perf
from rebal.core.market import Prices
from rebal.core.tree import Tree

Floats = NDArray[np.float64]
# The grid steps a portfolio's valuations are resampled to, in seconds: 10 s (the tracker's snapshot
# interval), 1 min, 5 min, 15 min, 1 h, 4 h, 1 day, 1 week.
GRID_STEPS = (10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)
# At most this many periods: a year of snapshots is resampled to a coarser step, not 3 million points.
MAX_PERIODS = 2000
# A grid point without a valuation in the last this many steps is in a gap (see the module doc).
GAP_STEPS = 3
# Annualising needs this many periods over at least this many days (a month of data at least).
MIN_ANNUALISED_PERIODS = 30
MIN_ANNUALISED_DAYS = 30.0
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Annualised:
    periods_per_year: float
    annualised_return: float
    volatility: float
    sharpe: float | None
    sortino: float | None


@dataclass(frozen=True)
class PortfolioPerformance:
    """The portfolio's performance over the grid; floats are None where undefined."""

    step_seconds: float
    periods: int
    observations: int
    first_at: float
    last_at: float
    first_value: float
    last_value: float
    net_flows: float
    time_weighted_return: float
    max_drawdown: float
    volatility_per_period: float | None
    annualised: Annualised | None
    not_annualised: str | None
    grid: Floats  # the grid's times (seconds since the epoch), the first point included
    values: Floats  # the value at each grid point (NaN inside a gap)
    index: Floats  # the growth of 1 net of flows at each grid point (1 at the first; NaN inside a gap)
    gaps: int = 0  # stretches of the grid without valuations
    gap_seconds: float = 0.0  # the time they span, from the last valuation before to the first after


def tree_value(tree: Tree, prices: Prices) -> float:
    """The free value of a real tree (amounts less what owners' locks hold) at `prices`: the total
    the weights and the planner use. An asset without a price counts nothing."""
    total = 0.0
    cache: dict[str, float] = {}
    for node in np.flatnonzero(tree.wallet).tolist():
        asset = tree.assets[node]
        if asset is None:
            continue
        if asset not in cache:
            price = prices.get(asset)
            cache[asset] = float(price) if price is not None else 0.0
        free = max(float(tree.amount[node]) - float(tree.locked[node]), 0.0)
        total += free * cache[asset]
    return total


def grid_step(times: ArrayLike) -> float:
    """The step of the grid for observations at `times` (increasing seconds): see the module doc."""
    stamps = np.asarray(times, dtype=np.float64)
    if stamps.shape[0] < 2:
        return GRID_STEPS[0]
    spacing = float(np.median(np.diff(stamps)))
    wanted = max(spacing, (float(stamps[-1]) - float(stamps[0])) / MAX_PERIODS)
    return next((step for step in GRID_STEPS if step >= wanted), GRID_STEPS[-1])


def describe_step(seconds: float) -> str:
    """``10 s``, ``1 min``, ``4 h``, ``1 day``, ``1 week``."""
    for unit, size in (("week", 7 * 86400.0), ("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit in ('week', 'day') and count > 1 else ''}"
    return f"{seconds:g} s"


def describe_span(seconds: float) -> str:
    """A duration as operators read it: ``40 s``, ``12 min``, ``5.5 h``, ``3.2 days``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def portfolio_performance(
    times: ArrayLike,
    values: ArrayLike,
    flow_times: ArrayLike = (),
    flows: ArrayLike = (),
    *,
    step: float | None = None,
    risk_free: float = 0.0,
) -> PortfolioPerformance | None:
    """The performance of valuations `values` at `times` (seconds, increasing) with `flows` (money in:
    positive; out: negative, in the valuation currency) at `flow_times`. None without two valuations."""
    stamps = np.asarray(times, dtype=np.float64)
    worth = np.asarray(values, dtype=np.float64)
    if stamps.shape != worth.shape or stamps.ndim != 1:
        raise ValueError("one value per time")
    if stamps.shape[0] < 2 or float(stamps[-1]) <= float(stamps[0]):
        return None
    if np.any(np.diff(stamps) < 0) or not np.all(np.isfinite(worth)):
        raise ValueError("times must increase and values be finite")
    chosen = step if step is not None else grid_step(stamps)
    start, end = float(stamps[0]), float(stamps[-1])
    grid: Floats = start + chosen * np.arange(int((end - start) // chosen) + 1, dtype=np.float64)
    if grid[-1] < end:
        grid = np.append(grid, end)  # the last valuation closes the last (shorter) period
    at = np.searchsorted(stamps, grid, side="right") - 1
    spacing = np.append(np.diff(stamps), 0.0)  # from each valuation to the next (none after the last)
    stale = (grid > stamps[at]) & (spacing[at] > GAP_STEPS * chosen)
    on_grid = np.where(stale, np.nan, worth[at])
    # Each observed point's return runs from the last observed point before it; across a gap that
    # is one bridging return (all the gap's flows in it).
    positions = np.arange(grid.shape[0])
    observed = np.maximum.accumulate(np.where(stale, -1, positions))
    anchor = np.concatenate(([0], observed[:-1]))[1:]
    flow_at = np.asarray(flow_times, dtype=np.float64)
    flow_amount = np.asarray(flows, dtype=np.float64)
    inside = (flow_at > start) & (flow_at <= end)
    period = np.searchsorted(grid, flow_at[inside], side="left")  # (grid[i-1], grid[i]] -> i
    per_period = np.bincount(period, weights=flow_amount[inside], minlength=grid.shape[0])
    flows_to = np.cumsum(per_period)
    previous, current = on_grid[anchor], on_grid[1:]
    moved = flows_to[1:] - flows_to[anchor]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(previous > 0, (current - moved) / previous - 1.0, np.nan)
    returns = np.maximum(returns, -1.0)  # never more than everything lost
    bridging = anchor != positions[:-1]
    everything = returns[np.isfinite(returns)]  # the gaps' bridging returns too: TWR and drawdown
    defined = returns[np.isfinite(returns) & ~bridging]
    growth = np.concatenate(([1.0], np.cumprod(1.0 + np.nan_to_num(returns, nan=0.0))))
    growth[stale] = np.nan
    periods = int(defined.shape[0])
    span = end - start
    per_period_volatility = float(np.std(defined, ddof=1)) if periods >= 2 else None
    # Each gap, from the last valuation before its first stale point to the valuation after that one.
    first_stale = np.flatnonzero(stale & ~np.concatenate(([False], stale[:-1])))
    last_before = at[first_stale]
    gap_seconds = float(np.sum(stamps[last_before + 1] - stamps[last_before]))
    annualised, why = _annualised(defined, chosen, span, risk_free, gap_seconds)
    return PortfolioPerformance(
        step_seconds=chosen,
        periods=periods,
        observations=int(stamps.shape[0]),
        first_at=start,
        last_at=end,
        first_value=float(worth[0]),
        last_value=float(worth[-1]),
        net_flows=float(flow_amount[inside].sum()),
        time_weighted_return=float(growth[-1] - 1.0),
        max_drawdown=float(perf.max_drawdown(everything)) if everything.shape[0] else 0.0,
        volatility_per_period=per_period_volatility,
        annualised=annualised,
        not_annualised=why,
        grid=grid,
        values=on_grid,
        index=growth,
        gaps=int(first_stale.shape[0]),
        gap_seconds=gap_seconds,
    )


def _annualised(
    returns: Floats, step: float, span: float, risk_free: float, gap: float = 0.0
) -> tuple[Annualised | None, str | None]:
    days = span / SECONDS_PER_DAY
    if returns.shape[0] < MIN_ANNUALISED_PERIODS or days < MIN_ANNUALISED_DAYS:
        count = returns.shape[0]
        return None, (
            f"{count} period{'' if count == 1 else 's'} of {describe_step(step)} over {describe_span(span)}"
            + (f" ({describe_span(gap)} of it without valuations)" if gap else "")
            + ":"
            " annualised"
            f" figures need at least {MIN_ANNUALISED_PERIODS} periods over at least"
            f" {MIN_ANNUALISED_DAYS:g} days"
        )
    per_year = perf.SECONDS_PER_YEAR / step
    stats = perf.performance(returns, per_year, risk_free=risk_free)
    return (
        Annualised(
            periods_per_year=per_year,
            annualised_return=_finite(stats.annualised_return) or 0.0,
            volatility=_finite(stats.annualised_volatility) or 0.0,
            sharpe=_finite(stats.sharpe),
            sortino=_finite(stats.sortino),
        ),
        None,
    )


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None

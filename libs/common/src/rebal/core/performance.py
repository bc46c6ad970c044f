"""A strategy's performance from its period returns: pure numpy, no clock.

Conventions (one place, so the tracker, the monitor and the optimizer agree):

- Inputs are *simple* period returns ``r_t`` (0.01 is +1%), one per period, oldest first; a return below
  -1 (more than everything lost) is a broken invariant and raises ``ValueError``.
- ``periods_per_year`` annualises: 365 for daily crypto strategies (the default), 252 for exchange-traded
  daily data, 52 weekly, 12 monthly. ``periods_per_year_from`` derives it from timestamps.
- Cumulative return: ``prod(1 + r) - 1``. Annualised return: geometric, ``(1 + cum) ** (P / T) - 1``.
- Annualised volatility: sample standard deviation (``ddof=1``) times ``sqrt(P)``.
- Maximum drawdown: the largest fall of the compounded equity curve from its running peak, as a fraction
  of that peak (in [0, 1]); the curve starts at 1 before the first return, so a first-period loss counts.
- Sharpe: ``mean(r - rf) / std(r, ddof=1) * sqrt(P)`` where ``rf = risk_free / P`` is the annual
  risk-free rate spread evenly over the periods (simple, not compounded).
- Sortino: ``mean(r - t) / downside * sqrt(P)`` with ``t = target / P`` and the downside deviation
  ``sqrt(mean(min(r - t, 0) ** 2))`` over *all* periods (Sortino & Price), so it is comparable with Sharpe.
- Stored returns are filtered first (`usable`): a row outside the bounds every entry enforces
  (`rebal.core.bounds`; stored before they were) is skipped and reported by the caller, never fatal.
- Undefined values are NaN, never an exception: fewer than two returns for volatility, Sharpe and
  Sortino; a zero standard deviation for Sharpe; no period below the target for Sortino; an empty series
  for everything.

Every statistic works along the last axis, so ``rolling`` evaluates all windows at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rebal.core import bounds

DEFAULT_PERIODS_PER_YEAR = 365.0
SECONDS_PER_YEAR = 365.25 * 24 * 3600
# A standard deviation (per period) below this is treated as zero: the ratio over it is undefined.
ZERO_DEVIATION = 1e-15

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Performance:
    """The statistics of one series (or one window); floats are NaN where undefined (see module doc)."""

    periods: int
    cumulative_return: float
    annualised_return: float
    annualised_volatility: float
    max_drawdown: float
    sharpe: float
    sortino: float


@dataclass(frozen=True)
class Rolling:
    """Each statistic over the window ending at each period; NaN before the first full window."""

    window: int
    cumulative_return: Floats
    annualised_return: Floats
    annualised_volatility: Floats
    max_drawdown: Floats
    sharpe: Floats
    sortino: Floats


def _floats(values: object) -> Floats:
    return np.asarray(values, dtype=np.float64)


def as_returns(returns: ArrayLike) -> Floats:
    """A float array of period returns; raises ``ValueError`` on NaN, infinities or returns below -1."""
    array = np.asarray(returns, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("returns must be finite")
    if np.any(array < -1.0):
        raise ValueError("a period return below -1 (more than everything lost)")
    return array


def usable(timestamps: ArrayLike, returns: ArrayLike) -> tuple[Floats, Floats, Floats]:
    """(timestamps, returns) of the stored periods statistics can use, and the timestamps of the others:
    a return that is not finite (NaN stands for one a float cannot hold), below -1 or not below
    `bounds.DECIMAL_LIMIT`, or a time outside `bounds.TIME_FROM`..`bounds.TIME_UNTIL`."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    values = np.asarray(returns, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = (
            np.isfinite(values)
            & (values >= float(bounds.MIN_RETURN))
            & (values < float(bounds.DECIMAL_LIMIT))
            & (stamps >= bounds.TIME_FROM)
            & (stamps < bounds.TIME_UNTIL)
        )
    return stamps[keep], values[keep], stamps[~keep]


def cumulative_return(returns: Floats) -> Floats:
    return _floats(np.prod(1.0 + returns, axis=-1) - 1.0)


def annualised_return(returns: Floats, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> Floats:
    count = returns.shape[-1]
    if count == 0:
        return np.full(returns.shape[:-1], np.nan)
    growth = np.prod(1.0 + returns, axis=-1)
    return _floats(np.power(growth, periods_per_year / count) - 1.0)


def _deviation(returns: Floats) -> Floats:
    if returns.shape[-1] < 2:
        return np.full(returns.shape[:-1], np.nan)
    return _floats(np.std(returns, axis=-1, ddof=1))


def annualised_volatility(returns: Floats, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> Floats:
    return _floats(_deviation(returns) * np.sqrt(periods_per_year))


def drawdowns(returns: Floats) -> Floats:
    """The drawdown after each period: ``1 - equity / running peak``, the peak including the start (1)."""
    equity = np.cumprod(1.0 + returns, axis=-1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=-1), 1.0)
    return 1.0 - equity / peak


def max_drawdown(returns: Floats) -> Floats:
    if returns.shape[-1] == 0:
        return np.full(returns.shape[:-1], np.nan)
    return _floats(np.max(drawdowns(returns), axis=-1))


def _ratio(numerator: Floats, denominator: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > ZERO_DEVIATION, numerator / denominator, np.nan)


def sharpe(
    returns: Floats, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, risk_free: float = 0.0
) -> Floats:
    if returns.shape[-1] < 2:
        return np.full(returns.shape[:-1], np.nan)
    excess = returns - risk_free / periods_per_year
    return _floats(_ratio(np.mean(excess, axis=-1), _deviation(returns)) * np.sqrt(periods_per_year))


def sortino(
    returns: Floats, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, target: float = 0.0
) -> Floats:
    if returns.shape[-1] < 2:
        return np.full(returns.shape[:-1], np.nan)
    excess = returns - target / periods_per_year
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2, axis=-1))
    return _floats(_ratio(np.mean(excess, axis=-1), downside) * np.sqrt(periods_per_year))


def performance(
    returns: ArrayLike,
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    risk_free: float = 0.0,
    target: float = 0.0,
) -> Performance:
    """Since-inception statistics of one series of period returns."""
    series = as_returns(returns)
    if series.ndim != 1:
        raise ValueError("performance() takes one series; use rolling() or the array functions for more")
    return Performance(
        periods=int(series.shape[0]),
        cumulative_return=float(cumulative_return(series)),
        annualised_return=float(annualised_return(series, periods_per_year)),
        annualised_volatility=float(annualised_volatility(series, periods_per_year)),
        max_drawdown=float(max_drawdown(series)),
        sharpe=float(sharpe(series, periods_per_year, risk_free)),
        sortino=float(sortino(series, periods_per_year, target)),
    )


def rolling(
    returns: ArrayLike,
    window: int,
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    risk_free: float = 0.0,
    target: float = 0.0,
) -> Rolling:
    """Every statistic over each window of ``window`` periods, aligned with the input (NaN-padded)."""
    series = as_returns(returns)
    if series.ndim != 1 or window < 1:
        raise ValueError("rolling() takes one series and a window of at least one period")
    count = series.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(series, window) if count >= window else None

    def padded(values: Floats) -> Floats:
        out = np.full(count, np.nan)
        out[window - 1 :] = values
        return out

    def each(statistic: Floats | None) -> Floats:
        return np.full(count, np.nan) if statistic is None else padded(statistic)

    return Rolling(
        window=window,
        cumulative_return=each(None if windows is None else cumulative_return(windows)),
        annualised_return=each(None if windows is None else annualised_return(windows, periods_per_year)),
        annualised_volatility=each(
            None if windows is None else annualised_volatility(windows, periods_per_year)
        ),
        max_drawdown=each(None if windows is None else max_drawdown(windows)),
        sharpe=each(None if windows is None else sharpe(windows, periods_per_year, risk_free)),
        sortino=each(None if windows is None else sortino(windows, periods_per_year, target)),
    )


def periods_per_year_from(timestamps: ArrayLike) -> float:
    """Periods per year implied by the median spacing of increasing timestamps (seconds since the epoch)."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    if stamps.ndim != 1 or stamps.shape[0] < 2:
        raise ValueError("at least two timestamps are needed to infer a period")
    spacing = float(np.median(np.diff(stamps)))
    if spacing <= 0:
        raise ValueError("timestamps must be increasing")
    return SECONDS_PER_YEAR / spacing


def align(timestamps: list[ArrayLike], returns: list[ArrayLike]) -> tuple[Floats, Floats]:
    """The timestamps every series has, and a (periods x series) matrix of their returns at those times."""
    if len(timestamps) != len(returns) or not timestamps:
        raise ValueError("one timestamp array per return series, at least one series")
    stamps = [np.asarray(t, dtype=np.float64) for t in timestamps]
    common = stamps[0]
    for other in stamps[1:]:
        common = np.intersect1d(common, other)
    columns = []
    for stamp, series in zip(stamps, returns, strict=True):
        values = as_returns(series)
        order = np.argsort(stamp, kind="stable")
        positions = order[np.searchsorted(stamp[order], common)]
        columns.append(values[positions])
    matrix = np.column_stack(columns) if columns else np.empty((0, 0))
    return common, matrix


def correlation(matrix: ArrayLike) -> Floats:
    """Pearson correlations between the columns of aligned returns (periods x strategies).

    Symmetric with a unit diagonal. A constant column has no defined correlation; it is reported as
    uncorrelated (0) with every other strategy, so downstream constraints treat it as diversifying.
    """
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError("correlation() takes a (periods x strategies) matrix")
    count = data.shape[1]
    if data.shape[0] < 2:
        return np.eye(count)
    centred = data - data.mean(axis=0)
    norms = np.sqrt(np.sum(centred**2, axis=0))
    live = norms > ZERO_DEVIATION * np.sqrt(data.shape[0])
    scaled = np.zeros_like(centred)
    scaled[:, live] = centred[:, live] / norms[live]
    result = np.clip(scaled.T @ scaled, -1.0, 1.0)
    result = (result + result.T) / 2.0
    np.fill_diagonal(result, 1.0)
    return _floats(result)

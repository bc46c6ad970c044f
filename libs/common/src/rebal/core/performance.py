"""A strategy's performance from its period returns: pure numpy, no clock.

Conventions (one place, so the tracker, the monitor and the optimizer agree):

- Inputs are *simple* period returns ``r_t`` (0.01 is +1%), one per period, oldest first; a return below
  -1 (more than everything lost) is a broken invariant and raises ``ValueError``.
- One convention for the length of a year, everywhere (optimizer, tracker, monitor, dashboard, CLI):
  calendar time, a year of 365.25 days (crypto trades every day; there is no 252-trading-day year here).
  ``periods_per_year`` is how many of the data's periods a year holds, derived from the dates by
  ``frequency_of``: daily 365.25, weekly 365.25 / 7, monthly 12, intraday 365.25 days over the spacing
  (hourly 8766). Dates that are not evenly spaced are refused (``Irregular``, with the reason), never
  guessed at; periods missing here and there (a bot that was down) are allowed and counted.
- Too few periods to annualise: a figure scaled to a year from a handful of periods means nothing, so
  ``performance`` reports annualised volatility, Sharpe and Sortino only from ``MIN_PERIODS_TO_ANNUALISE``
  periods on, and the annualised return only from a year of data on (GIPS: returns for periods of less
  than a year must not be annualised); otherwise the figure is NaN and ``Performance.not_annualised``
  says why (``None``/``null`` with that reason in the API, ``n/a (needs ≥ 30 periods)`` in text).
  Nothing overflows: growth is compounded in logarithms and a figure beyond float range is undefined.
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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rebal.core import bounds

DAYS_PER_YEAR = 365.25
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_YEAR = DAYS_PER_YEAR * SECONDS_PER_DAY
# Daily data: what a series with no dates (or one) is taken to be.
DEFAULT_PERIODS_PER_YEAR = DAYS_PER_YEAR
# Annualised volatility, Sharpe and Sortino from this many periods on (a month of daily data): below it
# the standard error of a standard deviation is over 13% and the figure is noise scaled up.
MIN_PERIODS_TO_ANNUALISE = 30
# Dates are evenly spaced when every gap is a whole number of periods within this share of a period
# (daily: 14 minutes), and at least REGULAR_SHARE of the gaps are exactly one period.
SPACING_TOLERANCE = 0.01
REGULAR_SHARE = 0.9
# Monthly data: a median gap between these many days, each gap a calendar month.
MONTH_DAYS = (27.5, 31.5)
# A standard deviation (per period) below this is treated as zero: the ratio over it is undefined.
ZERO_DEVIATION = 1e-15

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Performance:
    """The statistics of one series (or one window); floats are NaN where undefined (see module doc).
    ``not_annualised`` maps each annualised statistic that is NaN for want of data to the reason."""

    periods: int
    cumulative_return: float
    annualised_return: float
    annualised_volatility: float
    max_drawdown: float
    sharpe: float
    sortino: float
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR
    frequency: str = "daily"
    not_annualised: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Frequency:
    """How often a series has a return: ``name`` is daily, weekly, monthly, intraday or ``every N days``;
    ``period_seconds`` the spacing; ``missing`` the periods skipped between the first and last date."""

    name: str
    period_seconds: float
    periods_per_year: float
    missing: int = 0

    def describe(self) -> str:
        if self.name != "intraday":
            return self.name
        return f"intraday (every {_duration(self.period_seconds)})"


@dataclass(frozen=True)
class Irregular:
    """Dates whose spacing names no frequency; ``reason`` says where."""

    reason: str


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
    """``growth ** (P / T) - 1``, compounded in logarithms; NaN where it would pass the float range."""
    count = returns.shape[-1]
    if count == 0:
        return np.full(returns.shape[:-1], np.nan)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        logs = np.sum(np.log1p(returns), axis=-1) * (periods_per_year / count)
        value = np.expm1(logs)
    return _floats(np.where(np.isfinite(value), value, np.nan))


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


def not_annualised(periods: int, periods_per_year: float, min_periods: int) -> dict[str, str]:
    """The annualised statistics `periods` returns are too few for, each with the reason."""
    out: dict[str, str] = {}
    if periods < min_periods:
        reason = f"needs ≥ {min_periods} periods (has {periods})"
        out.update(annualised_volatility=reason, sharpe=reason, sortino=reason)
    a_year = math.ceil(periods_per_year - 1e-9)
    if periods < a_year:
        out["annualised_return"] = f"needs a year of returns, ≥ {a_year} periods (has {periods})"
    return out


def performance(
    returns: ArrayLike,
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    risk_free: float = 0.0,
    target: float = 0.0,
    *,
    frequency: str = "daily",
    min_periods: int = MIN_PERIODS_TO_ANNUALISE,
) -> Performance:
    """Since-inception statistics of one series of period returns; the annualised ones only where there
    are enough periods (see the module doc; ``min_periods`` for volatility, Sharpe and Sortino)."""
    series = as_returns(returns)
    if series.ndim != 1:
        raise ValueError("performance() takes one series; use rolling() or the array functions for more")
    count = int(series.shape[0])
    missing = not_annualised(count, periods_per_year, min_periods)

    def unless(name: str, value: Floats) -> float:
        return math.nan if name in missing else float(value)

    return Performance(
        periods=count,
        cumulative_return=float(cumulative_return(series)),
        annualised_return=unless("annualised_return", annualised_return(series, periods_per_year)),
        annualised_volatility=unless(
            "annualised_volatility", annualised_volatility(series, periods_per_year)
        ),
        max_drawdown=float(max_drawdown(series)),
        sharpe=unless("sharpe", sharpe(series, periods_per_year, risk_free)),
        sortino=unless("sortino", sortino(series, periods_per_year, target)),
        periods_per_year=periods_per_year,
        frequency=frequency,
        not_annualised=missing,
    )


def performance_at(
    timestamps: ArrayLike,
    returns: ArrayLike,
    risk_free: float = 0.0,
    target: float = 0.0,
    *,
    min_periods: int = MIN_PERIODS_TO_ANNUALISE,
) -> Performance:
    """``performance`` at the frequency of the dates (seconds since the epoch, increasing): what the
    tracker and the monitor report."""
    found = frequency_of(timestamps)
    return performance_in(found, returns, risk_free, target, min_periods=min_periods)


def performance_in(
    found: Frequency | Irregular,
    returns: ArrayLike,
    risk_free: float = 0.0,
    target: float = 0.0,
    *,
    min_periods: int = MIN_PERIODS_TO_ANNUALISE,
) -> Performance:
    """``performance`` at a frequency found by ``frequency_of``; dates too few or too irregular to name
    one annualise nothing, and ``not_annualised`` gives that reason."""
    if isinstance(found, Frequency):
        return performance(
            returns,
            found.periods_per_year,
            risk_free,
            target,
            frequency=found.describe(),
            min_periods=min_periods,
        )
    plain = performance(returns, DEFAULT_PERIODS_PER_YEAR, risk_free, target, frequency="unknown")
    reasons = dict.fromkeys(("annualised_return", "annualised_volatility", "sharpe", "sortino"), found.reason)
    return Performance(
        periods=plain.periods,
        cumulative_return=plain.cumulative_return,
        annualised_return=math.nan,
        annualised_volatility=math.nan,
        max_drawdown=plain.max_drawdown,
        sharpe=math.nan,
        sortino=math.nan,
        periods_per_year=math.nan,
        frequency="unknown",
        not_annualised=reasons,
    )


def rolling(
    returns: ArrayLike,
    window: int,
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    risk_free: float = 0.0,
    target: float = 0.0,
    *,
    min_periods: int = MIN_PERIODS_TO_ANNUALISE,
) -> Rolling:
    """Every statistic over each window of ``window`` periods, aligned with the input (NaN-padded); the
    annualised ones NaN when a window is too short for them (as in ``performance``)."""
    series = as_returns(returns)
    if series.ndim != 1 or window < 1:
        raise ValueError("rolling() takes one series and a window of at least one period")
    count = series.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(series, window) if count >= window else None

    def padded(values: Floats) -> Floats:
        out = np.full(count, np.nan)
        out[window - 1 :] = values
        return out

    short = not_annualised(window, periods_per_year, min_periods)

    def each(statistic: Floats | None, name: str = "") -> Floats:
        return np.full(count, np.nan) if statistic is None or name in short else padded(statistic)

    return Rolling(
        window=window,
        cumulative_return=each(None if windows is None else cumulative_return(windows)),
        annualised_return=each(
            None if windows is None else annualised_return(windows, periods_per_year), "annualised_return"
        ),
        annualised_volatility=each(
            None if windows is None else annualised_volatility(windows, periods_per_year),
            "annualised_volatility",
        ),
        max_drawdown=each(None if windows is None else max_drawdown(windows)),
        sharpe=each(None if windows is None else sharpe(windows, periods_per_year, risk_free), "sharpe"),
        sortino=each(None if windows is None else sortino(windows, periods_per_year, target), "sortino"),
    )


def periods_per_year_from(timestamps: ArrayLike) -> float:
    """Periods per year of evenly spaced dates (``frequency_of``); ``ValueError`` with the reason when
    they are not."""
    found = frequency_of(timestamps)
    if isinstance(found, Irregular):
        raise ValueError(found.reason)
    return found.periods_per_year


def frequency_of(timestamps: ArrayLike) -> Frequency | Irregular:
    """The frequency of increasing dates (seconds since the epoch): the median gap names it (a calendar
    month for gaps of 27.5 to 31.5 days), every gap must be a whole number of periods (within
    ``SPACING_TOLERANCE``) and at least ``REGULAR_SHARE`` of them exactly one; else ``Irregular``."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    if stamps.ndim != 1 or stamps.shape[0] < 2:
        return Irregular("one date or none: no spacing to tell the frequency from")
    gaps = np.diff(stamps)
    if not np.all(gaps > 0):
        at = int(np.argmax(~(gaps > 0)))
        return Irregular(f"the dates must increase: {_date(stamps[at + 1])} follows {_date(stamps[at])}")
    spacing = float(np.median(gaps))
    if MONTH_DAYS[0] * SECONDS_PER_DAY <= spacing <= MONTH_DAYS[1] * SECONDS_PER_DAY:
        months = np.array([_month_index(stamp) for stamp in stamps])
        steps = np.diff(months)
        return _regular(stamps, steps, "monthly", DAYS_PER_YEAR / 12 * SECONDS_PER_DAY, 12.0)
    ratio = gaps / spacing
    steps = np.rint(ratio)
    uneven = (np.abs(ratio - steps) > SPACING_TOLERANCE) | (steps < 1)
    if uneven.any():
        at = int(np.argmax(uneven))
        return Irregular(
            f"irregular dates: {_date(stamps[at])} to {_date(stamps[at + 1])} is {_duration(gaps[at])}, "
            f"not a whole number of the usual {_duration(spacing)}"
        )
    name = _name(spacing)
    return _regular(stamps, steps.astype(np.int64), name, spacing, SECONDS_PER_YEAR / spacing)


def _regular(
    stamps: Floats, steps: NDArray[np.int64], name: str, period: float, per_year: float
) -> Frequency | Irregular:
    if np.any(steps < 1):
        at = int(np.argmax(steps < 1))
        return Irregular(
            f"irregular dates: {_date(stamps[at])} and {_date(stamps[at + 1])} fall in one {name} period"
        )
    single = float(np.mean(steps == 1))
    if single < REGULAR_SHARE:
        return Irregular(
            f"irregular dates: only {single:.0%} of the gaps are one {name} period (at least "
            f"{REGULAR_SHARE:.0%} needed); resample to a coarser frequency or fill the missing periods"
        )
    return Frequency(name, period, per_year, int(np.sum(steps - 1)))


def _name(spacing: float) -> str:
    days = spacing / SECONDS_PER_DAY
    if days < 1 - SPACING_TOLERANCE:
        return "intraday"
    if abs(days - 1) <= SPACING_TOLERANCE:
        return "daily"
    if abs(days - 7) <= 7 * SPACING_TOLERANCE:
        return "weekly"
    return f"every {_duration(spacing)}"


def _month_index(stamp: float) -> int:
    return int(np.datetime64(int(stamp), "s").astype("datetime64[M]").astype(np.int64))


def _date(stamp: float) -> str:
    """An ISO date, or an ISO time in UTC when it is not midnight (numpy: the core reads no clock)."""
    moment = np.datetime64(int(stamp), "s")
    if float(stamp) % SECONDS_PER_DAY == 0:
        return str(np.datetime_as_string(moment, unit="D"))
    return str(np.datetime_as_string(moment, unit="s", timezone="UTC"))


def _duration(seconds: float) -> str:
    for unit, size in (("day", SECONDS_PER_DAY), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            count = seconds / size
            text = f"{count:.0f}" if abs(count - round(count)) < 1e-9 else f"{count:.2f}"
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{seconds:g} s"


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

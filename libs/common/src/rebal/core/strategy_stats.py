"""Per-strategy statistics over windows, and the correlations between strategies: pure numpy.

Each strategy's series is its period returns with their timestamps (seconds since the epoch). Windows:
``inception`` (every return) and ``<N>d``: the returns less than N days older than the strategy's latest
return (for a correlation: than the latest return of either strategy of the pair). Annualisation uses the
frequency of the strategy's own dates (`rebal.core.performance.frequency_of`: a bot reporting daily gets
365.25 periods a year, hourly 8766); a window too short to annualise, or dates too irregular to name a
frequency, give no annualised figure and say why (`Performance.not_annualised`). A pair's correlation uses the
timestamps both strategies reported (`rebal.core.performance.correlation`, so a constant series is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rebal.core.performance import (
    Performance,
    correlation,
    frequency_of,
    performance_in,
)

Floats = NDArray[np.float64]
INCEPTION = "inception"
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Series:
    strategy_id: str
    timestamps: Floats  # seconds since the epoch, increasing
    returns: Floats


@dataclass(frozen=True)
class WindowStats:
    strategy_id: str
    window: str
    performance: Performance
    last_timestamp: float | None


@dataclass(frozen=True)
class PairCorrelation:
    window: str
    strategy_a: str
    strategy_b: str
    correlation: float
    observations: int


def window_label(days: int | None) -> str:
    return INCEPTION if days is None else f"{days}d"


def _cut(series: Series, days: int | None, end: float | None = None) -> tuple[Floats, Floats]:
    if days is None or series.timestamps.shape[0] == 0:
        return series.timestamps, series.returns
    last = float(series.timestamps[-1]) if end is None else end
    keep = series.timestamps > last - days * SECONDS_PER_DAY
    return series.timestamps[keep], series.returns[keep]


def strategy_stats(series: Sequence[Series], windows: Sequence[int]) -> list[WindowStats]:
    """Since inception and over each rolling window of `windows` days, per strategy (sorted by id)."""
    out = []
    for one in sorted(series, key=lambda s: s.strategy_id):
        found = frequency_of(one.timestamps)
        for days in (None, *windows):
            stamps, returns = _cut(one, days)
            stats = performance_in(found, returns)
            out.append(
                WindowStats(
                    strategy_id=one.strategy_id,
                    window=window_label(days),
                    performance=stats,
                    last_timestamp=float(stamps[-1]) if stamps.shape[0] else None,
                )
            )
    return out


def pair_correlations(series: Sequence[Series], windows: Sequence[int]) -> list[PairCorrelation]:
    """Both orders of every pair and the unit diagonal, for inception and each window."""
    ordered = sorted(series, key=lambda s: s.strategy_id)
    out = []
    for days in (None, *windows):
        label = window_label(days)
        shared = _shared_matrix(ordered, days)
        if shared is not None:  # every strategy reported at the same times: one matrix for all pairs
            matrix = correlation(shared)
            count = int(shared.shape[0])
            for i, a in enumerate(ordered):
                for j, b in enumerate(ordered):
                    value = 1.0 if i == j else float(matrix[i, j])
                    out.append(PairCorrelation(label, a.strategy_id, b.strategy_id, value, count))
            continue
        for i, a in enumerate(ordered):
            out.append(PairCorrelation(label, a.strategy_id, a.strategy_id, 1.0, int(a.returns.shape[0])))
            for b in ordered[i + 1 :]:
                end = max(_last(a), _last(b))
                stamps_a, returns_a = _cut(a, days, end)
                stamps_b, returns_b = _cut(b, days, end)
                common, at_a, at_b = np.intersect1d(stamps_a, stamps_b, return_indices=True)
                matrix = np.column_stack([returns_a[at_a], returns_b[at_b]])
                value = float(correlation(matrix)[0, 1])
                count = int(common.shape[0])
                out.append(PairCorrelation(label, a.strategy_id, b.strategy_id, value, count))
                out.append(PairCorrelation(label, b.strategy_id, a.strategy_id, value, count))
    return out


def _shared_matrix(ordered: Sequence[Series], days: int | None) -> Floats | None:
    """The (periods x strategies) returns in the window when every strategy has the same timestamps."""
    if not ordered:
        return None
    first = ordered[0].timestamps
    if any(not np.array_equal(one.timestamps, first) for one in ordered[1:]):
        return None
    return np.column_stack([_cut(one, days)[1] for one in ordered])


def _last(series: Series) -> float:
    return float(series.timestamps[-1]) if series.timestamps.shape[0] else float("-inf")

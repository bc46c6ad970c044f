"""Reading the strategies' returns, statistics and correlations back from Postgres (migration 0004).

The tracker writes these tables; the monitor's API, the dashboard and the optimizer read them through the
functions here, which return plain frozen dataclasses (floats for statistics, ``None`` where a statistic
is undefined; exact ``Decimal`` period returns where a caller needs them).

A strategy belongs to the portfolio named in its returns' envelope (``StrategyReturnReported.portfolio_id``).
Windows are labelled ``'inception'`` (every return) or ``'<N>d'`` (the returns of the last N days up to the
strategy's latest return).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from numpy.typing import ArrayLike

from rebal import metrics
from rebal.core import performance

log = logging.getLogger("rebal.strategies")
Connection = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
INCEPTION = "inception"
# A stored return as a float8, for statistics, without failing on one a float cannot hold (stored before
# the bounds of `rebal.core.bounds` were enforced: Postgres refuses to cast 1e400 or 1e-400): NaN, which
# `usable_returns` skips and reports.
RETURN_AS_FLOAT = (
    "CASE WHEN period_return = 0 OR abs(period_return) BETWEEN 1e-300 AND 1e300"
    " THEN period_return::float8 ELSE 'NaN'::float8 END"
)
_REPORTED: dict[tuple[str, str], int] = {}


def usable_returns(
    portfolio_id: str, strategy_id: str, timestamps: ArrayLike, returns: ArrayLike
) -> tuple[performance.Floats, performance.Floats]:
    """A strategy's stored (timestamps, returns) that statistics can use (`performance.usable`); the
    others are skipped, counted in ``rebal_strategy_returns_unusable`` and logged when their number
    changes, naming the first, so that an operator can delete or fix those rows."""
    stamps, values, skipped = performance.usable(timestamps, returns)
    metrics.STRATEGY_RETURNS_UNUSABLE.labels(portfolio=portfolio_id, strategy=strategy_id).set(skipped.size)
    if _REPORTED.get((portfolio_id, strategy_id), 0) != skipped.size:
        _REPORTED[(portfolio_id, strategy_id)] = skipped.size
        if skipped.size:
            first = _when(float(skipped[0]))
            log.warning(
                "%s (%s): %d stored returns are out of bounds and skipped by the statistics (the first"
                " at %s; SELECT * FROM strategy_returns WHERE strategy_id = '%s' shows them)",
                strategy_id,
                portfolio_id,
                skipped.size,
                first,
                strategy_id,
            )
    return stamps, values


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s from the epoch"


@dataclass(frozen=True)
class StrategyStats:
    """One strategy's statistics over one window (see `rebal.core.performance` for the conventions)."""

    portfolio_id: str
    strategy_id: str
    window: str
    computed_at: datetime
    observations: int
    cumulative_return: float | None
    annualised_return: float | None
    volatility: float | None
    max_drawdown: float | None
    sharpe: float | None
    sortino: float | None
    last_timestamp: datetime | None
    # The frequency the figures were annualised at ('daily', 'weekly', 'monthly', 'intraday (every 1
    # hour)'; 'unknown' when the dates name none) and why an annualised figure is None, by its name.
    frequency: str = "unknown"
    periods_per_year: float | None = None
    not_annualised: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Correlations:
    """The correlation matrix of a portfolio's strategies over one window; rows and columns follow
    `strategies` (sorted). `observations` is the fewest common returns any pair had."""

    portfolio_id: str
    window: str
    strategies: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    observations: int
    computed_at: datetime

    def get(self, a: str, b: str) -> float:
        return self.matrix[self.strategies.index(a)][self.strategies.index(b)]


@dataclass(frozen=True)
class EquityCurve:
    """A strategy's returns, oldest first, and the equity they compound to from 1.0 (`equity[i]` is the
    value after `returns[i]`); `reported_equity` is what the bot reported, when it did."""

    strategy_id: str
    timestamps: tuple[datetime, ...]
    returns: tuple[Decimal, ...]
    equity: tuple[float, ...]
    reported_equity: tuple[Decimal | None, ...]


def _float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


STATS = (
    "SELECT portfolio_id, strategy_id, window_label, computed_at, observations, cumulative_return,"
    " annualised_return, volatility, max_drawdown, sharpe, sortino, last_timestamp, frequency,"
    " periods_per_year, not_annualised"
    " FROM strategy_stats WHERE portfolio_id = $1 ORDER BY strategy_id, window_label"
)


async def load_stats(pool: Connection, portfolio_id: str) -> list[StrategyStats]:
    """Every strategy's statistics of the portfolio, by strategy then window; [] when none yet."""
    rows = await pool.fetch(STATS, portfolio_id)
    return [
        StrategyStats(
            portfolio_id=row["portfolio_id"],
            strategy_id=row["strategy_id"],
            window=row["window_label"],
            computed_at=row["computed_at"],
            observations=row["observations"],
            cumulative_return=_float(row["cumulative_return"]),
            annualised_return=_float(row["annualised_return"]),
            volatility=_float(row["volatility"]),
            max_drawdown=_float(row["max_drawdown"]),
            sharpe=_float(row["sharpe"]),
            sortino=_float(row["sortino"]),
            last_timestamp=row["last_timestamp"],
            frequency=row["frequency"],
            periods_per_year=_float(row["periods_per_year"]),
            not_annualised=_reasons(row["not_annualised"]),
        )
        for row in rows
    ]


def _reasons(raw: str | None) -> dict[str, str]:
    """The `not_annualised` column ({"volatility": "needs ≥ 30 periods (has 4)"}), statistic names as the
    rows name them (`annualised_volatility` is the row's `volatility`)."""
    loaded = orjson.loads(raw) if raw else {}
    return {("volatility" if k == "annualised_volatility" else str(k)): str(v) for k, v in loaded.items()}


CORRELATIONS = (
    "SELECT window_label, strategy_a, strategy_b, correlation, observations, computed_at"
    " FROM strategy_correlations WHERE portfolio_id = $1 ORDER BY window_label, strategy_a, strategy_b"
)


async def load_correlations(pool: Connection, portfolio_id: str) -> list[Correlations]:
    """The portfolio's correlation matrices, one per window (sorted by label); [] when none yet."""
    by_window: dict[str, list[asyncpg.Record]] = {}
    for row in await pool.fetch(CORRELATIONS, portfolio_id):
        by_window.setdefault(row["window_label"], []).append(row)
    out = []
    for window, rows in sorted(by_window.items()):
        names = tuple(sorted({row["strategy_a"] for row in rows} | {row["strategy_b"] for row in rows}))
        index = {name: i for i, name in enumerate(names)}
        matrix = [[1.0 if i == j else 0.0 for j in range(len(names))] for i in range(len(names))]
        for row in rows:
            matrix[index[row["strategy_a"]]][index[row["strategy_b"]]] = float(row["correlation"])
        out.append(
            Correlations(
                portfolio_id=portfolio_id,
                window=window,
                strategies=names,
                matrix=tuple(tuple(line) for line in matrix),
                observations=min(row["observations"] for row in rows),
                computed_at=max(row["computed_at"] for row in rows),
            )
        )
    return out


RETURNS = (
    "SELECT strategy_id, ts, period_return, equity FROM strategy_returns"
    " WHERE portfolio_id = $1 AND ($2::text IS NULL OR strategy_id = $2)"
    " AND ($3::timestamptz IS NULL OR ts >= $3) ORDER BY strategy_id, ts"
)


async def load_equity_curve(
    pool: Connection, portfolio_id: str, strategy_id: str | None = None, since: datetime | None = None
) -> list[EquityCurve]:
    """The equity curve of one strategy (a list of one, or [] when it has no returns) or, with
    `strategy_id=None`, of every strategy of the portfolio (sorted by strategy id); from `since` on when
    given (the curve then starts at 1.0 at the first return kept)."""
    rows = await pool.fetch(RETURNS, portfolio_id, strategy_id, since)
    grouped: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        grouped.setdefault(row["strategy_id"], []).append(row)
    return [_curve(name, grouped[name]) for name in sorted(grouped)]


def _curve(strategy_id: str, rows: Sequence[asyncpg.Record]) -> EquityCurve:
    equity = []
    value = 1.0
    for row in rows:
        value *= 1.0 + float(row["period_return"])
        equity.append(value)
    return EquityCurve(
        strategy_id=strategy_id,
        timestamps=tuple(row["ts"] for row in rows),
        returns=tuple(row["period_return"] for row in rows),
        equity=tuple(equity),
        reported_equity=tuple(row["equity"] for row in rows),
    )


async def strategies_of(pool: Connection, portfolio_id: str) -> list[str]:
    """The strategies that reported returns for the portfolio, sorted."""
    rows = await pool.fetch(
        "SELECT DISTINCT strategy_id FROM strategy_returns WHERE portfolio_id = $1 ORDER BY strategy_id",
        portfolio_id,
    )
    return [row["strategy_id"] for row in rows]

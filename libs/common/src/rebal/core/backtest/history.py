"""A price history as the replay reads it: one row per instant, one column per asset, in one valuation
currency (the currency itself is worth 1 and needs no column)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from rebal.core import performance
from rebal.core.market import Prices
from rebal.core.tree import FloatArray, IntArray


@dataclass(frozen=True, eq=False)
class History:
    """Rows of prices: `times` (whole seconds since the epoch, strictly increasing), `prices[row, column]`
    (positive, in `quote`) for the assets named by `assets`."""

    times: IntArray
    assets: tuple[str, ...]
    prices: FloatArray
    quote: str
    _columns: dict[str, int] = field(default_factory=dict, repr=False)
    _tables: dict[tuple[str, ...], IntArray] = field(default_factory=dict, repr=False)  # a few shapes
    _lists: dict[int, tuple[list[str], IntArray]] = field(default_factory=dict, repr=False)  # by list

    def __post_init__(self) -> None:
        if self.prices.shape != (self.times.size, len(self.assets)):
            raise ValueError("one price per row and asset")
        if self.times.size and np.any(np.diff(self.times) <= 0):
            raise ValueError("times must be strictly increasing")
        self._columns.update({asset: i for i, asset in enumerate(self.assets)})

    def __len__(self) -> int:
        return int(self.times.size)

    def column(self, asset: str) -> int | None:
        """The asset's column; None for the valuation currency (worth 1) and for an unknown asset."""
        return self._columns.get(asset)

    def has(self, asset: str) -> bool:
        return asset == self.quote or asset in self._columns

    def price_of(self, asset: str, row: int) -> float:
        column = self._columns.get(asset)
        return 1.0 if column is None else float(self.prices[row, column])

    def row_prices(self, row: int) -> Prices:
        """The core's prices at `row`: each float's exact value as a decimal (it reads back as the same
        float, which is what the diff and the planner compute with), made when the core asks for it."""
        return Prices(self.quote, _Row(self, row))

    def row_values(self, row: int) -> Mapping[str, float]:
        """The valuation price of each asset at `row` (the valuation currency's is 1), read when asked."""
        return _RowValues(self, row)

    def price_table(self, names: list[str], row: int) -> FloatArray:
        """The prices of `names` (assets of the history or its valuation currency) at `row`, as floats:
        the table `DiffShape.diff` takes, equal to what the core reads from `row_prices`."""
        known = self._lists.get(id(names))
        if known is None or known[0] is not names:  # a shape's list of names, asked for at every row
            if len(self._lists) >= SHAPES_KEPT:
                self._lists.clear()
            known = self._lists[id(names)] = (names, self._table_columns(tuple(names)))
        extended = np.concatenate((self.prices[row], _ONE))  # the last column: the valuation currency
        table: FloatArray = extended[known[1]]
        return table

    def _table_columns(self, names: tuple[str, ...]) -> IntArray:
        known = self._tables.get(names)
        if known is None:
            columns = [self._columns.get(name, -1 if name == self.quote else None) for name in names]
            if any(column is None for column in columns):
                raise ValueError("an asset without a price in the history")
            known = self._tables[names] = np.array(columns, dtype=np.int64)
        return known


_ONE = np.ones(1)
# Lists of asset names (one per shape of holdings) whose columns a history keeps; then it starts again.
SHAPES_KEPT = 64


class _Row(Mapping[str, Decimal]):
    """One row's prices as exact decimals, each made when it is read."""

    def __init__(self, history: History, row: int) -> None:
        self._history, self._row = history, row

    def __getitem__(self, asset: str) -> Decimal:
        column = self._history._columns[asset]
        return Decimal(float(self._history.prices[self._row, column]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._history.assets)

    def __len__(self) -> int:
        return len(self._history.assets)


class _RowValues(Mapping[str, float]):
    """One row's valuation prices as floats, the valuation currency's 1 included, each read when asked."""

    def __init__(self, history: History, row: int) -> None:
        self._history, self._row = history, row

    def __getitem__(self, asset: str) -> float:
        history = self._history
        if asset == history.quote:
            return 1.0
        return float(history.prices[self._row, history._columns[asset]])

    def __iter__(self) -> Iterator[str]:
        history = self._history
        yield from (asset for asset in history.assets if asset != history.quote)
        yield history.quote

    def __len__(self) -> int:
        return sum(1 for _ in self)


# A step between rows longer than this many usual steps is a gap (monthly rows: 28..31 days pass).
GAP_FACTOR = 1.5
# A step is the usual one when it is within this share of it (daily rows: 14 minutes), as
# `rebal.core.performance` counts a regular spacing.
STEP_TOLERANCE = performance.SPACING_TOLERANCE
# Rows a calendar month or more apart are counted in calendar months: each step a whole number of months
# and within these many days per month of them (a quarter of 90 to 92 days is three months).
MONTH_DAYS = performance.MONTH_DAYS


@dataclass(frozen=True)
class Spacing:
    """How often a history's rows come: `label` as the output states it (``1d``, ``1h``, ``7d``, ``1mo``,
    ``3mo``, ``1y``) and the periods a year that annualise its figures."""

    label: str
    periods_per_year: float


@dataclass(frozen=True)
class Uneven:
    """Rows not regularly spaced: `row` is the first whose step from the row above is not the usual one
    (`gap`: it is longer than `GAP_FACTOR` usual steps, rows are missing), `step` and `usual` say it."""

    row: int
    step: str
    usual: str
    gap: bool


def spacing_of(times: IntArray, wall: IntArray) -> Spacing | Uneven:
    """The spacing of rows at `times` (seconds since the epoch, strictly increasing, two at least) whose
    dates as written are `wall` (the same instants on the clock of their own offset: a daily row at
    local midnight is 24 hours after the one before it on that clock, 23 or 25 across a change of summer
    time). Every step must be the usual one (the median), on the clock or in time:

    - a median step under `MONTH_DAYS[0]` days is a fixed step (``1d``, ``1h``, ``7d``), annualised at
      `performance.SECONDS_PER_YEAR` over it;
    - a longer one is counted in calendar months of the dates as written (``1mo``, ``3mo``, ``1y``): every
      step the same whole number of months, 12 a year over it.
    """
    steps, clock = np.diff(times), np.diff(wall)
    if float(np.median(clock)) >= MONTH_DAYS[0] * performance.SECONDS_PER_DAY:
        return _monthly(wall, clock)
    usual = float(np.median(clock))
    tolerance = STEP_TOLERANCE * usual
    regular = (np.abs(clock - usual) <= tolerance) | (np.abs(steps - usual) <= tolerance)
    if not regular.all():
        at = int(np.argmax(~regular))
        gap = bool(min(steps[at], clock[at]) > GAP_FACTOR * usual)
        return Uneven(at + 1, duration_text(int(steps[at])), duration_text(int(usual)), gap)
    return Spacing(duration_text(int(usual)), performance.SECONDS_PER_YEAR / usual)


def _monthly(wall: IntArray, clock: IntArray) -> Spacing | Uneven:
    months = wall.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    counts = np.diff(months)
    usual = max(1, round(float(np.median(counts))))
    day = performance.SECONDS_PER_DAY
    days = (clock >= usual * MONTH_DAYS[0] * day) & (clock <= usual * MONTH_DAYS[1] * day)
    regular = (counts == usual) & days
    label = _months(usual)
    if not regular.all():
        at = int(np.argmax(~regular))
        return Uneven(at + 1, duration_text(int(clock[at])), label, bool(counts[at] > usual))
    return Spacing(label, 12.0 / usual)


def _months(count: int) -> str:
    return f"{count // 12}y" if count % 12 == 0 else f"{count}mo"


def duration_text(seconds: int) -> str:
    """``1d``, ``7d``, ``1h``, ``1d12h``, ``30m``, ``90s``: a step between rows as people write it."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)

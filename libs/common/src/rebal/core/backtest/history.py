"""A price history as the replay reads it: one row per instant, one column per asset, in one valuation
currency (the currency itself is worth 1 and needs no column)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from rebal.core.market import Prices
from rebal.core.tree import FloatArray, IntArray, assembled


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
        return assembled(Prices, quote=self.quote, prices=_Row(self, row), venues={})

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

"""A price history as the replay reads it: one row per instant, one column per asset, in one valuation
currency (the currency itself is worth 1 and needs no column)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

import numpy as np

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

    @cached_property
    def _texts(self) -> list[str]:
        return list(self.assets)

    def row_prices(self, row: int) -> Prices:
        """The core's prices at `row`: each float's exact value as a decimal (it reads back as the same
        float, which is what the diff and the planner compute with)."""
        return Prices(
            self.quote, dict(zip(self._texts, map(Decimal, self.prices[row].tolist()), strict=True))
        )

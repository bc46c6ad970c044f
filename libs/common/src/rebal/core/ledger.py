"""A fund's ledger: many users' shares of one venue account, kept exactly.

A fund is a target composition (asset → weight, the quote asset is cash) traded on one account. Each
user's part is a row of the `Ledger`: whole `LEDGER_QUANTUM` units per asset (int64), so every sum is
exact and the users' rows add up to what the fund holds on the venue. `apportion` splits a total over
rows in whole units (largest remainders), so the parts add up exactly too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cached_property

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError

Units = npt.NDArray[np.int64]

# Every ledger amount is a whole number of these (of any asset): 1e-8 is a satoshi and the paper
# exchange's quote quantum. A market's amount step must be a whole number of them.
LEDGER_QUANTUM = Decimal("1e-8")


def to_units(amount: Decimal, where: str = "amount") -> int:
    """An exact amount as whole ledger units; InputError when it is not a whole number of them."""
    units = amount / LEDGER_QUANTUM
    if units != units.to_integral_value():
        raise InputError(where, f"{amount:f} is not a whole multiple of {LEDGER_QUANTUM:f}")
    return int(units)


def floor_units(amount: Decimal) -> int:
    """Whole units in an amount, truncated: what a user may be credited from a venue amount."""
    return int((amount / LEDGER_QUANTUM).to_integral_value(rounding=ROUND_FLOOR))


def ceil_units(amount: Decimal) -> int:
    """Whole units of an amount rounded up: what a user is debited for a venue payment."""
    return int((amount / LEDGER_QUANTUM).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    return LEDGER_QUANTUM * int(units)


def apportion(total: int, weights: Units) -> Units:
    """`total` split in proportion to `weights` in whole units, summing exactly to `total`.

    Largest remainders: each part is the floor or the ceiling of its exact share, so a part never exceeds
    its weight when `total <= sum(weights)`. All-zero weights get nothing (and `total` must then be 0).
    """
    weights = np.asarray(weights, dtype=np.int64)
    parts = np.zeros(weights.shape, dtype=np.int64)
    weight_sum = int(weights.sum())
    if total == 0:
        return parts
    if weight_sum <= 0 or total < 0:
        raise ValueError(f"cannot apportion {total} over weights summing to {weight_sum}")
    if total == weight_sum:
        return weights.copy()
    exact = weights.astype(np.float64) * (total / weight_sum)
    parts = np.floor(exact).astype(np.int64)
    parts = np.minimum(parts, np.maximum(weights, 0) if total <= weight_sum else parts)
    left = total - int(parts.sum())
    if left > 0:
        order = np.argsort(-(exact - parts), kind="stable")
        eligible = order[weights[order] > 0]
        take = eligible[: min(left, len(eligible))]
        parts[take] += 1
        left -= len(take)
        while left > 0:  # only with total > sum(weights): spread the rest over the weighted parts
            extra = eligible[: min(left, len(eligible))]
            parts[extra] += 1
            left -= len(extra)
    elif left < 0:
        order = np.argsort(exact - parts, kind="stable")
        eligible = order[parts[order] > 0]
        take = eligible[:-left]
        parts[take] -= 1
    return parts


def give(total: int, sells: Units, first: npt.NDArray[np.bool_]) -> Units:
    """Units each seller gives when only `total` of the `sells` legs are sold (crossed or filled): the
    legs of the `first` rows (partial withdrawals, who must receive what they asked) are served in full
    before the others share the rest pro rata; what stays unsold falls on the others first."""
    served = np.where(first, sells, 0)
    head = int(served.sum())
    if total <= head:
        return apportion(total, served)
    return served + apportion(total - head, sells - served)


@dataclass(frozen=True)
class Fund:
    """A fund: its account, its quote (cash) and its target weights (asset → weight, summing to 1)."""

    fund_id: str
    exchange: str
    account: str
    quote: str
    weights: Mapping[str, Decimal]

    def __post_init__(self) -> None:
        if not self.weights:
            raise InputError(f"funds.{self.fund_id}.weights", "a fund needs at least one weight")
        for asset, weight in self.weights.items():
            if weight < 0:
                raise InputError(f"funds.{self.fund_id}.weights.{asset}", f"weight {weight} is negative")
        total = sum(self.weights.values(), Decimal(0))
        if abs(total - 1) > Decimal("1e-9"):
            raise InputError(f"funds.{self.fund_id}.weights", f"weights sum to {total}, not 1")

    def assets(self, held: Sequence[str] = ()) -> tuple[str, ...]:
        """The quote first, then every other asset of the weights (and `held`) in name order."""
        others = sorted((set(self.weights) | set(held)) - {self.quote})
        return (self.quote, *others)


@dataclass(frozen=True)
class Ledger:
    """Each user's amount of each asset in whole `LEDGER_QUANTUM` units; column 0 is the quote (cash)."""

    assets: tuple[str, ...]
    users: tuple[str, ...]
    units: Units

    def __post_init__(self) -> None:
        if self.units.shape != (len(self.users), len(self.assets)):
            raise ValueError(f"units {self.units.shape} do not match {len(self.users)}x{len(self.assets)}")

    @classmethod
    def empty(cls, assets: Sequence[str]) -> Ledger:
        return cls(tuple(assets), (), np.zeros((0, len(assets)), dtype=np.int64))

    @classmethod
    def from_amounts(cls, assets: Sequence[str], amounts: Mapping[str, Mapping[str, Decimal]]) -> Ledger:
        users = tuple(sorted(amounts))
        column = {asset: j for j, asset in enumerate(assets)}
        units = np.zeros((len(users), len(assets)), dtype=np.int64)
        for i, user in enumerate(users):
            for asset, amount in amounts[user].items():
                if asset not in column:
                    raise InputError(f"{user}.{asset}", "asset is not one of the fund's")
                units[i, column[asset]] = to_units(amount, f"{user}.{asset}")
        return cls(tuple(assets), users, units)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {user: i for i, user in enumerate(self.users)}

    def row(self, user: str) -> int | None:
        return self._index.get(user)

    def amounts(self, user: str) -> dict[str, Decimal]:
        i = self.row(user)
        if i is None:
            return {}
        return {asset: from_units(int(self.units[i, j])) for j, asset in enumerate(self.assets)}

    def totals(self) -> dict[str, Decimal]:
        sums = self.units.sum(axis=0)
        return {asset: from_units(int(sums[j])) for j, asset in enumerate(self.assets)}

    def with_assets(self, assets: Sequence[str]) -> Ledger:
        """The same ledger over `assets` (a superset, quote first): new columns hold nothing."""
        if assets[0] != self.assets[0] or not set(self.assets) <= set(assets):
            raise ValueError(f"{assets} must start with {self.assets[0]} and include {self.assets}")
        units = np.zeros((len(self.users), len(assets)), dtype=np.int64)
        for j, asset in enumerate(self.assets):
            units[:, assets.index(asset)] = self.units[:, j]
        return Ledger(tuple(assets), self.users, units)

    def credit(self, user: str, asset: str, amount: Decimal) -> Ledger:
        """`amount` more (or less, when negative) of `asset` for `user`; a new user gets a row."""
        if asset not in self.assets:
            raise InputError(asset, "asset is not one of the fund's")
        j = self.assets.index(asset)
        delta = to_units(amount, f"{user}.{asset}")
        i = self.row(user)
        if i is None:
            users = tuple(sorted((*self.users, user)))
            i = users.index(user)
            units = np.insert(self.units, i, np.zeros(len(self.assets), dtype=np.int64), axis=0)
        else:
            users, units = self.users, self.units.copy()
        units[i, j] += delta
        if units[i, j] < 0:
            raise InputError(
                f"{user}.{asset}", f"a debit of {-amount} exceeds the {from_units(units[i, j] - delta)} held"
            )
        return Ledger(self.assets, users, units)

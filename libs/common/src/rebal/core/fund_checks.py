"""A fund's ledger held against the venue: the account's holdings in a snapshot, dust, drift from the
target, splits (a price jump with no fills) and the reconciliation of the ledger's totals with the venue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rebal.core.funds import Quote
from rebal.core.ledger import LEDGER_QUANTUM, Fund, Ledger, apportion, floor_units, from_units
from rebal.core.numbers import parse_decimal

# quantity × price moving by more than this fraction with no fills is taken for a split (or a
# corporate action): the asset is frozen until the venue's positions reflect it.
SPLIT_JUMP = Decimal("0.2")
# A venue quantity / ledger quantity ratio within this of the inverse price ratio confirms a split.
SPLIT_TOLERANCE = Decimal("0.01")


def account_holdings(tree: Mapping[str, Any], account: str) -> dict[str, Decimal] | None:
    """The amount of each asset under the account's node (`user/exchange/account`) of a snapshot tree;
    None when the tree does not hold the account."""
    names = account.split("/")
    node: Any = tree
    if not isinstance(node, Mapping) or node.get("name") != names[0]:
        return None
    for name in names[1:]:
        children = node.get("children") or []
        node = next((c for c in children if isinstance(c, Mapping) and c.get("name") == name), None)
        if node is None:
            return None
    found: dict[str, Decimal] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if "asset" in current:
            asset, amount = str(current["asset"]), parse_decimal(current.get("amount", "0"))
            if amount is None:
                return None
            found[asset] = found.get(asset, Decimal(0)) + amount
        stack.extend(c for c in current.get("children") or [] if isinstance(c, Mapping))
    return dict(found)


def dust(ledger: Ledger, quotes: Mapping[str, Quote]) -> npt.NDArray[np.bool_]:
    """Holdings too small to sell on their own (under one step or a market minimum), user × asset."""
    mask = np.zeros(ledger.units.shape, dtype=np.bool_)
    for j, asset in enumerate(ledger.assets[1:], start=1):
        quote = quotes.get(asset)
        if quote is None:
            continue
        market = quote.market
        amounts = ledger.units[:, j].astype(np.float64) * float(LEDGER_QUANTUM)
        whole = np.floor(amounts / float(market.amount_step)) * float(market.amount_step)
        small = (
            (whole <= 0)
            | (whole < float(market.min_amount))
            | (whole * float(quote.price) < float(market.min_cost))
        )
        mask[:, j] = (ledger.units[:, j] > 0) & small
    return mask


def drift(ledger: Ledger, fund: Fund, quotes: Mapping[str, Quote]) -> dict[str, Decimal]:
    """The fund's drift per asset (value share minus weight), with dust left out of values and total."""
    kept = np.where(dust(ledger, quotes), 0, ledger.units).sum(axis=0)
    prices = [Decimal(1)] + [quotes[a].price if a in quotes else Decimal(0) for a in ledger.assets[1:]]
    values = [from_units(int(kept[j])) * prices[j] for j in range(len(ledger.assets))]
    total = sum(values, Decimal(0))
    if total == 0:
        return {asset: Decimal(0) for asset in ledger.assets}
    return {
        asset: (values[j] / total - fund.weights.get(asset, Decimal(0))).quantize(Decimal("1e-12"))
        for j, asset in enumerate(ledger.assets)
    }


SplitStatus = Literal["ok", "frozen", "split"]


@dataclass(frozen=True)
class SplitCheck:
    status: SplitStatus
    ratio: Decimal = Decimal(1)
    reason: str = ""


def check_split(
    ledger_total: Decimal,
    venue_amount: Decimal,
    last_price: Decimal,
    price: Decimal,
    filled_since: bool,
) -> SplitCheck:
    """Is an asset in the middle of a split? quantity × price jumping by more than `SPLIT_JUMP` with no
    fills freezes it; once the venue's quantity moved by the inverse of the price move (within
    `SPLIT_TOLERANCE`) the split is confirmed, with its ratio (apply it with `apply_split`)."""
    if filled_since or ledger_total <= 0 or last_price <= 0 or price <= 0:
        return SplitCheck("ok")
    price_ratio = last_price / price
    quantity_ratio = venue_amount / ledger_total
    if quantity_ratio != 1 and abs(quantity_ratio * price / last_price - 1) <= SPLIT_TOLERANCE:
        return SplitCheck(
            "split", quantity_ratio, f"quantity x{quantity_ratio} with price x{1 / price_ratio}"
        )
    jump = abs(venue_amount * price / (ledger_total * last_price) - 1)
    if jump > SPLIT_JUMP:
        return SplitCheck("frozen", Decimal(1), f"value moved {jump:.4f} with no fills")
    return SplitCheck("ok")


def apply_split(ledger: Ledger, asset: str, venue_amount: Decimal) -> Ledger:
    """Every user's `asset` scaled so the ledger holds exactly `venue_amount` (pro rata, exact)."""
    j = ledger.assets.index(asset)
    units = ledger.units.copy()
    units[:, j] = apportion(floor_units(venue_amount), ledger.units[:, j])
    return Ledger(ledger.assets, ledger.users, units)


@dataclass(frozen=True)
class Reconciliation:
    """Venue balance minus the ledgers' sum per asset: within one step is exact; beyond, `unattributed`
    (more on the venue than any user owns: never assigned) or `missing` (less than the users own)."""

    unattributed: Mapping[str, Decimal]
    missing: Mapping[str, Decimal]

    @property
    def consistent(self) -> bool:
        return not self.missing


def reconcile(ledger: Ledger, venue: Mapping[str, Decimal], steps: Mapping[str, Decimal]) -> Reconciliation:
    return reconcile_totals(ledger.totals(), venue, steps)


def reconcile_totals(
    totals: Mapping[str, Decimal], venue: Mapping[str, Decimal], steps: Mapping[str, Decimal]
) -> Reconciliation:
    """`reconcile` from the ledgers' sums per asset (an asset's step defaults to `LEDGER_QUANTUM`)."""
    unattributed: dict[str, Decimal] = {}
    missing: dict[str, Decimal] = {}
    for asset in sorted(set(totals) | set(venue)):
        difference = venue.get(asset, Decimal(0)) - totals.get(asset, Decimal(0))
        step = steps.get(asset, LEDGER_QUANTUM)
        if difference >= step:
            unattributed[asset] = difference
        elif difference <= -step:
            missing[asset] = -difference
    return Reconciliation(unattributed, missing)

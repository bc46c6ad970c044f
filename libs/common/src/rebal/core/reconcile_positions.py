"""Reconciler mode: the value wanted per instrument from the strategies' weights and reported positions.

Each strategy reports a signed position per instrument in -1..1: the fraction of the capital allocated
to it that it wants in that instrument (negative: short). The target of an instrument is

    target_i = account_value x leverage x sum_s (weight_s x position_s,i)

On spot (the only kind of account this mode trades) two rules follow, each reported in `notes`:

- a net short cannot be held: an instrument whose target is negative is held at 0;
- the targets cannot add up to more than the account: when the (non-negative) targets sum above
  `account_value`, every one is scaled down by the same factor.

A position outside -1..1 is clipped to the range (noted). Values are exact decimals, quantized to
`VALUE_QUANTUM` (truncated, so a sum never grows past the account by rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

VALUE_QUANTUM = Decimal("1e-8")
ONE = Decimal(1)


@dataclass(frozen=True)
class Reconciled:
    targets: dict[str, Decimal]  # instrument -> value wanted, in the account's quote, >= 0
    notes: tuple[str, ...]


def _clip(value: Decimal) -> Decimal:
    return max(-ONE, min(ONE, value))


def target_positions(
    account_value: Decimal,
    leverage: Decimal,
    weights: Mapping[str, Decimal],
    positions: Mapping[str, Mapping[str, Decimal]],
) -> Reconciled:
    """The value wanted per instrument (sorted by instrument); see the module doc."""
    if account_value < 0 or leverage < 0:
        raise ValueError("the account value and the leverage must be non-negative")
    notes: list[str] = []
    wanted: dict[str, Decimal] = {}
    for strategy in sorted(positions):
        weight = weights.get(strategy, Decimal(0))
        for instrument, raw in sorted(positions[strategy].items()):
            position = _clip(raw)
            if position != raw:
                notes.append(
                    f"{strategy}: position {raw} in {instrument} is outside -1..1: taken as {position}"
                )
            wanted[instrument] = wanted.get(instrument, Decimal(0)) + weight * position
    targets: dict[str, Decimal] = {}
    for instrument, share in sorted(wanted.items()):
        value = account_value * leverage * share
        if value < 0:
            notes.append(
                f"{instrument}: the strategies are net short {(-value).quantize(VALUE_QUANTUM)}: "
                "spot cannot be short, held at 0"
            )
            value = Decimal(0)
        targets[instrument] = value
    total = sum(targets.values(), Decimal(0))
    if total > account_value:
        factor = account_value / total
        notes.append(
            f"the targets add up to {total.quantize(VALUE_QUANTUM)}, more than the account's "
            f"{account_value}: scaled by {factor.quantize(Decimal('1e-6'))}"
        )
        targets = {name: value * factor for name, value in targets.items()}
    return Reconciled(
        {name: value.quantize(VALUE_QUANTUM, rounding=ROUND_DOWN) for name, value in targets.items()},
        tuple(notes),
    )

"""Reconciler mode: the value wanted per instrument from the strategies' weights and reported positions.

Each strategy reports a signed position per instrument in -1..1: the fraction of the capital allocated
to it that it wants in that instrument (negative: short). The target of an instrument is

    target_i = account_value x leverage x sum_s (weight_s x position_s,i)

On spot two rules follow, each reported in `notes`:

- a net short cannot be held: an instrument whose target is negative is held at 0;
- the targets cannot add up to more than the account: when the (non-negative) targets sum above
  `account_value`, every one is scaled down by the same factor.

On a perpetual futures account (`derivatives`) the targets are traded as they are, shorts and leverage
included: target_i is the signed notional of instrument i's position (the executor's pre-trade checks
bound the leverage and the distance to liquidation).

A position outside -1..1 is clipped to the range (noted). Values are exact decimals, quantized to
`VALUE_QUANTUM` (truncated toward zero, so a sum never grows past the account by rounding).

`parse_portfolio_config` reads the manager's `portfolio_config.json` (docs/strategies.md): the
allocation the reconciler trades as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from rebal.core.errors import InputError
from rebal.core.numbers import parse_decimal

VALUE_QUANTUM = Decimal("1e-8")
ONE = Decimal(1)


@dataclass(frozen=True)
class Reconciled:
    targets: dict[str, Decimal]  # instrument -> value wanted, in the account's quote (>= 0 on spot)
    notes: tuple[str, ...]


def _clip(value: Decimal) -> Decimal:
    return max(-ONE, min(ONE, value))


def target_positions(
    account_value: Decimal,
    leverage: Decimal,
    weights: Mapping[str, Decimal],
    positions: Mapping[str, Mapping[str, Decimal]],
    derivatives: bool = False,
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
        if value < 0 and not derivatives:
            notes.append(
                f"{instrument}: the strategies are net short {(-value).quantize(VALUE_QUANTUM)}: "
                "spot cannot be short, held at 0"
            )
            value = Decimal(0)
        targets[instrument] = value
    total = sum(targets.values(), Decimal(0))
    if total > account_value and not derivatives:
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


@dataclass(frozen=True)
class ManagerConfig:
    """The manager's `portfolio_config.json`: the capital, the strategies' weights (before leverage), the
    portfolio's annualised volatility and its target (percent), and the leverage."""

    account_value: Decimal
    weights: dict[str, Decimal]
    ann_volatility_pct: Decimal | None
    target_vol_pct: Decimal
    leverage: Decimal


CONFIG_KEYS = ("account_value", "weights", "ann_volatility_pct", "target_vol_pct", "leverage")


def parse_portfolio_config(doc: object) -> ManagerConfig:
    """`portfolio_config.json` (its five keys; extra keys may follow and are ignored); `InputError` naming
    the key."""
    if not isinstance(doc, dict):
        raise InputError("", "portfolio_config must be a mapping with " + ", ".join(CONFIG_KEYS))
    missing = [key for key in CONFIG_KEYS if key not in doc]
    if missing:
        raise InputError("", f"missing key(s) {', '.join(missing)}")

    def number(key: str, raw: object, *, positive: bool = False) -> Decimal:
        value = parse_decimal(raw) if not isinstance(raw, str) else None
        if value is None or value < 0 or (positive and value == 0):
            wanted = "a positive number" if positive else "a number >= 0"
            raise InputError(key, f"{raw!r} is not {wanted}")
        return value

    weights = doc["weights"]
    if not isinstance(weights, dict) or not weights:
        raise InputError("weights", "must map each strategy id to its weight")
    parsed = {str(name): number(f"weights.{name}", raw) for name, raw in sorted(weights.items())}
    if sum(parsed.values(), Decimal(0)) == 0:
        raise InputError("weights", "the weights sum to zero")
    volatility = doc["ann_volatility_pct"]
    return ManagerConfig(
        account_value=number("account_value", doc["account_value"], positive=True),
        weights=parsed,
        ann_volatility_pct=None if volatility is None else number("ann_volatility_pct", volatility),
        target_vol_pct=number("target_vol_pct", doc["target_vol_pct"]),
        leverage=number("leverage", doc["leverage"], positive=True),
    )

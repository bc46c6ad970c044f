"""Networks: how an asset leaves one exchange and enters another, at what fee, from what minimum.

The optional file `--network NETWORK.json` (docs/formats.md)::

    {"withdrawals": {"<exchange>": {"<ASSET>": {"fee": "0.0002", "min_amount": "0.001", "enabled": true}}},
     "deposits": {"<exchange>": {"<ASSET>": {"enabled": true}}}}

An asset may list its networks instead: ``{"networks": {"TRC20": {...}, "ERC20": {...}}}`` (on either side).
A transfer needs a withdrawal entry at the source and a deposit entry at the destination, both enabled, on
a common network (an entry without networks matches any network of the other side); of those, the one
with the lowest fee the amount clears (at least its minimum, more than its fee) is taken, ties by name.
Between two accounts of one exchange a transfer is internal: free, always open. The fee is charged in the
asset and taken from the amount (the destination receives amount - fee).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from rebal.core.errors import InputError, spelled
from rebal.core.numbers import RANGE, in_range, parse_decimal

# The network of an entry that lists none, and of a transfer inside one exchange.
DEFAULT_NETWORK = "default"
INTERNAL_NETWORK = "internal"
# Why a transfer cannot be planned (a transfer skip's reason).
NO_NETWORK = "no_network"
NETWORK_DISABLED = "network_disabled"
BELOW_NETWORK_MIN = "below_network_min"
NOT_ABOVE_FEE = "not_above_network_fee"
WITHDRAWAL_KEYS = frozenset({"fee", "min_amount", "enabled"})
DEPOSIT_KEYS = frozenset({"enabled"})


@dataclass(frozen=True)
class Withdrawal:
    """One way out of an exchange; `network` None for an entry that names none."""

    network: str | None
    fee: Decimal
    min_amount: Decimal
    enabled: bool


@dataclass(frozen=True)
class Deposit:
    network: str | None
    enabled: bool


@dataclass(frozen=True)
class Way:
    """The network a transfer takes, its fee (in the asset, taken from the amount) and its minimum."""

    network: str
    fee: Decimal
    min_amount: Decimal


INTERNAL = Way(INTERNAL_NETWORK, Decimal(0), Decimal(0))


@dataclass(frozen=True)
class Networks:
    withdrawals: Mapping[str, Mapping[str, tuple[Withdrawal, ...]]] = field(default_factory=dict)
    deposits: Mapping[str, Mapping[str, tuple[Deposit, ...]]] = field(default_factory=dict)
    # The ways of each (source, destination, asset), found once: a plan asks for them per transfer.
    _ways: dict[tuple[str, str, str], tuple[Way, ...] | str] = field(
        default_factory=dict, compare=False, repr=False
    )

    def ways(self, source: str, destination: str, asset: str) -> tuple[Way, ...] | str:
        """Every open way from exchange `source` to `destination` for `asset`, cheapest first (then by
        name), or why there is none (`NO_NETWORK`, `NETWORK_DISABLED`)."""
        key = (source, destination, asset)
        if key not in self._ways:
            self._ways[key] = self._find(source, destination, asset)
        return self._ways[key]

    def _find(self, source: str, destination: str, asset: str) -> tuple[Way, ...] | str:
        if source == destination:
            return (INTERNAL,)
        outs = self.withdrawals.get(source, {}).get(asset, ())
        ins = self.deposits.get(destination, {}).get(asset, ())
        if not outs or not ins:
            return NO_NETWORK
        found: dict[str, Way] = {}
        matched = False
        for out in outs:
            for into in ins:
                if out.network is not None and into.network is not None and out.network != into.network:
                    continue
                matched = True
                if out.enabled and into.enabled:
                    name = out.network or into.network or DEFAULT_NETWORK
                    way = Way(name, out.fee, out.min_amount)
                    if name not in found or way.fee < found[name].fee:
                        found[name] = way
        if not found:
            return NETWORK_DISABLED if matched else NO_NETWORK
        return tuple(sorted(found.values(), key=lambda way: (way.fee, way.network)))

    def choose(self, source: str, destination: str, asset: str, amount: Decimal) -> Way | str:
        """The cheapest open way `amount` clears (at least the minimum, more than the fee), or why none."""
        # Asked per transfer, move and relocation (tens of thousands a plan): the ways found once, read here.
        ways = self._ways.get((source, destination, asset)) or self.ways(source, destination, asset)
        if isinstance(ways, str):
            return ways
        for way in ways:
            if amount >= way.min_amount and amount > way.fee:
                return way
        return BELOW_NETWORK_MIN if all(amount < way.min_amount for way in ways) else NOT_ABOVE_FEE

    def refused_at_deposit(self, source: str, destination: str, asset: str, amount: Decimal) -> bool:
        """Whether only the destination refuses `amount` of `asset`: `source` has an open withdrawal it
        clears (at least the minimum, more than the fee), `destination` takes no open deposit of it."""
        if source == destination:
            return False
        outs = self.withdrawals.get(source, {}).get(asset, ())
        ins = self.deposits.get(destination, {}).get(asset, ())
        return not any(into.enabled for into in ins) and any(
            out.enabled and amount >= out.min_amount and amount > out.fee for out in outs
        )

    @classmethod
    def parse(cls, doc: object) -> Networks:
        if not isinstance(doc, dict):
            raise InputError("", 'a network file is a mapping {"withdrawals": {...}, "deposits": {...}}')
        unknown = doc.keys() - {"withdrawals", "deposits"}
        if unknown:
            raise InputError("", f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        return cls(
            withdrawals=_side(doc.get("withdrawals", {}), "withdrawals", _withdrawal),
            deposits=_side(doc.get("deposits", {}), "deposits", _deposit),
        )


T = TypeVar("T", Withdrawal, Deposit)


def _side(
    raw: object, where: str, entry: Callable[[str | None, object, str], T]
) -> dict[str, dict[str, tuple[T, ...]]]:
    if not isinstance(raw, dict):
        raise InputError(where, "must map exchanges to {ASSET: {...}}")
    parsed: dict[str, dict[str, tuple[T, ...]]] = {}
    for exchange, assets in raw.items():
        if not isinstance(assets, dict):
            raise InputError(f"{where}.{exchange}", "must map assets to their network entries")
        found: dict[str, tuple[T, ...]] = {}
        for asset, value in assets.items():
            at = f"{where}.{exchange}.{asset}"
            if not isinstance(value, dict):
                raise InputError(at, "must be a mapping")
            if "networks" in value:
                if len(value) != 1 or not isinstance(value["networks"], dict) or not value["networks"]:
                    raise InputError(at, "'networks' must be the only key, a non-empty mapping of networks")
                if any(not str(name).strip() for name in value["networks"]):
                    raise InputError(f"{at}.networks", 'a network\'s name must be a non-empty string, not ""')
                found[str(asset)] = tuple(
                    entry(str(name), params, f"{at}.networks.{name}")
                    for name, params in sorted(value["networks"].items(), key=lambda item: str(item[0]))
                )
            else:
                found[str(asset)] = (entry(None, value, at),)
        parsed[str(exchange)] = found
    return parsed


def _keys(raw: object, allowed: frozenset[str], where: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise InputError(where, "must be a mapping")
    unknown = raw.keys() - allowed
    if unknown:
        raise InputError(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return raw


def _enabled(raw: dict[str, object], where: str) -> bool:
    enabled = raw.get("enabled", True)
    if type(enabled) is not bool:
        raise InputError(f"{where}.enabled", "must be true or false")
    return enabled


def _amount(raw: dict[str, object], key: str, where: str) -> Decimal:
    value = parse_decimal(raw[key]) if key in raw else Decimal(0)
    if value is None or value < 0:
        raise InputError(f"{where}.{key}", f"{spelled(raw[key])} is not a decimal >= 0")
    if not in_range(value):
        raise InputError(f"{where}.{key}", f"{raw[key]} is outside the supported range ({RANGE})")
    return value


def _withdrawal(network: str | None, raw: object, where: str) -> Withdrawal:
    values = _keys(raw, WITHDRAWAL_KEYS, where)
    if "fee" not in values:
        raise InputError(where, "a withdrawal needs its 'fee' (a transfer of unknown fee is never planned)")
    return Withdrawal(
        network, _amount(values, "fee", where), _amount(values, "min_amount", where), _enabled(values, where)
    )


def _deposit(network: str | None, raw: object, where: str) -> Deposit:
    return Deposit(network, _enabled(_keys(raw, DEPOSIT_KEYS, where), where))

"""Positions of perpetual futures accounts, as trees carry them.

An account of kind ``futures`` (an account like any other: its wallets hold its collateral, in its quote)
lists its perpetual positions in ``positions`` (docs/formats.md):

- in a real tree, what the venue holds, one entry per symbol (one-way mode)::

      {"symbol": "BTC/USDT:USDT", "side": "short", "amount": "0.174", "entry_price": "60000",
       "mark_price": "60100", "leverage": 3, "margin_mode": "cross", "liquidation_price": "85123.4",
       "unrealized_pnl": "-17.4"}

  `symbol`, `side` (``long``/``short``), `amount` (>= 0, in the base), `entry_price` and `mark_price` are
  required; `leverage` is the symbol's setting (1 when absent), `margin_mode` ``cross`` (the default) or
  ``isolated``, `unrealized_pnl` ``amount·(mark − entry)`` signed by the side when absent;

- in a desired tree, the position wanted per symbol as a signed notional in the account's quote (negative
  is short, 0 closes it), with the leverage and margin mode to set on the symbol before trading it::

      {"symbol": "BTC/USDT:USDT", "notional": "-10480", "leverage": 3, "margin_mode": "cross"}

  A futures account of a desired tree that lists ``positions`` closes every position it does not list
  (unless the account says ``keep_unlisted``); one without ``positions`` leaves its positions as they are.

`parse_positions` validates one account's list; the tree parser names the account in its error.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NamedTuple, get_args

from rebal.core.contracts import leverage_problem, parse_leverage, perpetual
from rebal.core.errors import InputError
from rebal.core.numbers import RANGE, in_range, parse_decimal

FUTURES = "futures"
MarginMode = Literal["cross", "isolated"]
MARGIN_MODES: tuple[MarginMode, ...] = get_args(MarginMode)
SIDES = ("long", "short")
POSITION_KEYS = frozenset(
    {
        "symbol",
        "side",
        "amount",
        "entry_price",
        "mark_price",
        "leverage",
        "margin_mode",
        "liquidation_price",
        "unrealized_pnl",
    }
)
TARGET_KEYS = frozenset({"symbol", "notional", "leverage", "margin_mode"})


class Position(NamedTuple):
    """A position held: `amount` is signed (short < 0)."""

    symbol: str
    amount: Decimal
    entry_price: Decimal
    mark_price: Decimal
    leverage: int = 1
    margin_mode: MarginMode = "cross"
    liquidation_price: Decimal | None = None
    unrealized_pnl: Decimal = Decimal(0)

    @property
    def side(self) -> str:
        return "short" if self.amount < 0 else "long"

    @property
    def notional(self) -> Decimal:
        """The signed value of the position at its mark price."""
        return self.amount * self.mark_price

    def document(self) -> dict[str, object]:
        """The entry a real tree holds for this position."""
        doc: dict[str, object] = {
            "symbol": self.symbol,
            "side": self.side,
            "amount": _text(abs(self.amount)),
            "entry_price": _text(self.entry_price),
            "mark_price": _text(self.mark_price),
            "leverage": self.leverage,
            "margin_mode": self.margin_mode,
            "unrealized_pnl": _text(self.unrealized_pnl),
        }
        if self.liquidation_price is not None:
            doc["liquidation_price"] = _text(self.liquidation_price)
        return doc


class TargetPosition(NamedTuple):
    """A position wanted: a signed notional in the quote, and the symbol's settings (None: leave them)."""

    symbol: str
    notional: Decimal
    leverage: int | None = None
    margin_mode: MarginMode | None = None

    def document(self) -> dict[str, object]:
        doc: dict[str, object] = {"symbol": self.symbol, "notional": _text(self.notional)}
        if self.leverage is not None:
            doc["leverage"] = self.leverage
        if self.margin_mode is not None:
            doc["margin_mode"] = self.margin_mode
        return doc


def _text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


def parse_positions(raw: object, target: bool) -> tuple[Position, ...] | tuple[TargetPosition, ...]:
    """One account's `positions` list (real or desired); `InputError` with an empty `where` (the tree
    parser names the account) and the entry's number in the message."""
    entries = _entries(raw, TARGET_KEYS if target else POSITION_KEYS)
    if target:
        return tuple(_target(symbol, entry) for symbol, entry in entries)
    return tuple(_held(symbol, entry) for symbol, entry in entries)


def _entries(raw: object, keys: frozenset[str]) -> list[tuple[str, dict[str, object]]]:
    """(symbol, entry) of every entry of a positions list, each a mapping of known keys and a linear
    perpetual listed once."""
    if not isinstance(raw, list):
        raise InputError("", "'positions' must be a list of positions")
    seen: set[str] = set()
    found: list[tuple[str, dict[str, object]]] = []
    for number, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            raise InputError("", f"position #{number} must be a mapping")
        unknown = entry.keys() - keys
        if unknown:
            raise InputError("", f"position #{number}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        symbol = entry.get("symbol")
        if not isinstance(symbol, str) or perpetual(symbol) is None:
            raise InputError(
                "", f"position #{number}: symbol {symbol!r} is not a linear perpetual BASE/QUOTE:QUOTE"
            )
        if symbol in seen:
            raise InputError("", f"position #{number}: {symbol} is listed twice")
        seen.add(symbol)
        found.append((symbol, entry))
    return found


def _number(entry: dict[str, object], key: str, what: str, *, signed: bool = False) -> Decimal:
    value = parse_decimal(entry[key])
    if value is None:
        raise InputError("", f"{what}: {key} {entry[key]!r} is not a decimal number")
    if not signed and value < 0:
        raise InputError("", f"{what}: {key} {entry[key]} must not be negative")
    if not in_range(value):
        raise InputError("", f"{what}: {key} {entry[key]} is outside the supported range ({RANGE})")
    return value


def _settings(entry: dict[str, object], what: str) -> tuple[int | None, MarginMode | None]:
    leverage = None
    if "leverage" in entry:
        leverage = parse_leverage(entry["leverage"])
        if leverage is None:
            raise InputError("", f"{what}: {leverage_problem(entry['leverage'])}")
    raw = entry.get("margin_mode")
    mode = next((known for known in MARGIN_MODES if known == raw), None)
    if raw is not None and mode is None:
        raise InputError("", f"{what}: margin_mode {raw!r} is not 'cross' or 'isolated'")
    return leverage, mode


def _held(symbol: str, entry: dict[str, object]) -> Position:
    what = f"position {symbol}"
    for key in ("side", "amount", "entry_price", "mark_price"):
        if key not in entry:
            raise InputError("", f"{what} needs '{key}'")
    side = entry["side"]
    if side not in SIDES:
        raise InputError("", f"{what}: side {side!r} is not 'long' or 'short'")
    size = _number(entry, "amount", what)
    entry_price, mark_price = _number(entry, "entry_price", what), _number(entry, "mark_price", what)
    if mark_price == 0 or (size > 0 and entry_price == 0):
        raise InputError("", f"{what}: prices must be positive")
    amount = -size if side == "short" else size
    leverage, mode = _settings(entry, what)
    liquidation = _number(entry, "liquidation_price", what) if "liquidation_price" in entry else None
    pnl = (
        _number(entry, "unrealized_pnl", what, signed=True)
        if "unrealized_pnl" in entry
        else amount * (mark_price - entry_price)
    )
    return Position(
        symbol,
        amount,
        entry_price,
        mark_price,
        leverage or 1,
        mode or "cross",
        liquidation or None,
        pnl,
    )


def _target(symbol: str, entry: dict[str, object]) -> TargetPosition:
    what = f"position {symbol}"
    if "notional" not in entry:
        raise InputError("", f"{what} needs its 'notional' (signed, in the account's quote; 0 closes it)")
    leverage, mode = _settings(entry, what)
    return TargetPosition(
        symbol,
        _number(entry, "notional", what, signed=True),
        leverage,
        mode,
    )

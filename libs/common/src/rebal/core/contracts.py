"""Perpetual futures contracts: what a futures account trades, with the steps, limits and rates the venue
states for each.

A linear perpetual is named as ccxt names it, ``BASE/QUOTE:SETTLE`` with the settlement asset equal to the
quote (``BTC/USDT:USDT``, Binance's USDⓈ-M BTCUSDT): its amount is in the base (a contract of size 1), its
price, notional, margin, fees, profit and funding in the quote. Only linear perpetuals are supported;
an inverse (``BTC/USD:BTC``) or dated (``BTC/USDT:USDT-250627``) contract is refused by name.

A contracts document (docs/formats.md) lists them per exchange, as a snapshot carries them::

    {"paper": {"BTC/USDT:USDT": {"amount_step": "0.001", "min_amount": "0.001", "min_cost": "5",
                                 "fee_rate": "0.0005", "max_leverage": 125,
                                 "maintenance_margin_rate": "0.004", "mark_price": "60000"}}}

`min_cost` is the smallest notional an order may have (Binance's MIN_NOTIONAL filter, which reduce-only
orders are exempt from); `maintenance_margin_rate` is the rate of the first notional bracket (one bracket
is modelled: its maintenance amount is 0); `mark_price` is the price the venue marks positions at when the
document was made (absent: none known).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from rebal.core.errors import InputError, spelled
from rebal.core.market import Prices
from rebal.core.numbers import RANGE, in_range, parse_decimal

CONTRACT_KEYS = frozenset(
    {
        "amount_step",
        "min_amount",
        "min_cost",
        "fee_rate",
        "max_leverage",
        "maintenance_margin_rate",
        "mark_price",
    }
)
# Binance's documented leverage range for USDⓈ-M contracts: a whole number from 1 to 125.
MAX_LEVERAGE = 125


def perpetual(symbol: str) -> tuple[str, str] | None:
    """(base, quote) of a linear perpetual's symbol ``BASE/QUOTE:QUOTE``; None for anything else."""
    pair, colon, settle = symbol.partition(":")
    base, slash, quote = pair.partition("/")
    if not (colon and slash and base and quote) or settle != quote or "/" in quote or ":" in settle:
        return None
    return base, quote


def perpetual_of(instrument: str, quote: str) -> str:
    """The linear perpetual of an instrument: a symbol as it is, an asset as ``ASSET/QUOTE:QUOTE``."""
    return instrument if ":" in instrument else f"{instrument}/{quote}:{quote}"


def parse_leverage(raw: object) -> int | None:
    """A leverage: a whole number from 1 to `MAX_LEVERAGE` (``3``, ``"3"``, ``3.0``); None if not one."""
    value = parse_decimal(raw)
    if value is None or value != value.to_integral_value() or not 1 <= value <= MAX_LEVERAGE:
        return None
    return int(value)


def leverage_problem(raw: object) -> str:
    return f"leverage {raw!r} is not a whole number from 1 to {MAX_LEVERAGE}"


@dataclass(frozen=True)
class Contract:
    """One linear perpetual on one exchange."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal
    min_amount: Decimal = Decimal(0)
    min_cost: Decimal = Decimal(0)
    fee_rate: Decimal = Decimal(0)
    max_leverage: int = MAX_LEVERAGE
    maintenance_margin_rate: Decimal = Decimal(0)
    mark_price: Decimal | None = None

    def document(self) -> dict[str, object]:
        """The contract as a contracts document holds it (decimals as strings)."""
        doc: dict[str, object] = {
            "amount_step": _text(self.amount_step),
            "min_amount": _text(self.min_amount),
            "min_cost": _text(self.min_cost),
            "fee_rate": _text(self.fee_rate),
            "max_leverage": self.max_leverage,
            "maintenance_margin_rate": _text(self.maintenance_margin_rate),
        }
        if self.mark_price is not None:
            doc["mark_price"] = _text(self.mark_price)
        return doc


def _text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


@dataclass(frozen=True)
class Contracts:
    """Known perpetual contracts per exchange (an exchange or symbol not listed: not tradable)."""

    exchanges: Mapping[str, Mapping[str, Contract]] = field(default_factory=dict)

    def get(self, exchange: str, symbol: str) -> Contract | None:
        return self.exchanges.get(exchange, {}).get(symbol)

    def marked(self, prices: Prices) -> Contracts:
        """Each contract without a mark price marked at its base's price in `prices` when they are in the
        contract's quote (an offline plan's prices file); the others as they are."""
        exchanges = {
            exchange: {
                symbol: contract
                if contract.mark_price is not None or prices.quote != contract.quote
                else replace(contract, mark_price=prices.get(contract.base))
                for symbol, contract in symbols.items()
            }
            for exchange, symbols in self.exchanges.items()
        }
        return Contracts(exchanges=exchanges)

    @classmethod
    def parse(cls, doc: object) -> Contracts:
        """``{EXCHANGE: {"BASE/QUOTE:QUOTE": {amount_step, ...}}}`` (see the module doc); None: none."""
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise InputError("", "contracts must be a mapping of exchange to {symbol: contract}")
        exchanges: dict[str, dict[str, Contract]] = {}
        for exchange, symbols in doc.items():
            if not isinstance(symbols, dict):
                raise InputError(str(exchange), "must map symbols 'BASE/QUOTE:QUOTE' to contract parameters")
            exchanges[str(exchange)] = {
                str(symbol): _contract(f"{exchange}.{symbol}", str(symbol), params)
                for symbol, params in symbols.items()
            }
        return cls(exchanges=exchanges)


def _contract(where: str, symbol: str, params: object) -> Contract:
    names = perpetual(symbol)
    if names is None:
        raise InputError(where, "a contract must be a linear perpetual named BASE/QUOTE:QUOTE")
    if not isinstance(params, dict):
        raise InputError(where, "contract parameters must be a mapping")
    unknown = params.keys() - CONTRACT_KEYS
    if unknown:
        raise InputError(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if "amount_step" not in params:
        raise InputError(where, "a contract needs its 'amount_step'")
    values: dict[str, Decimal] = {}
    for key in sorted(CONTRACT_KEYS - {"max_leverage"} & params.keys()):
        value = parse_decimal(params[key])
        if value is None or value < 0:
            raise InputError(f"{where}.{key}", f"{spelled(params[key])} is not a decimal >= 0")
        if not in_range(value):
            raise InputError(f"{where}.{key}", f"{params[key]} is outside the supported range ({RANGE})")
        values[key] = value
    if values["amount_step"] == 0:
        raise InputError(f"{where}.amount_step", "must be positive")
    if values.get("fee_rate", Decimal(0)) >= 1 or values.get("maintenance_margin_rate", Decimal(0)) >= 1:
        raise InputError(where, "fee_rate and maintenance_margin_rate must be below 1")
    if "mark_price" in values and values["mark_price"] == 0:
        raise InputError(f"{where}.mark_price", "must be positive")
    leverage = parse_leverage(params.get("max_leverage", MAX_LEVERAGE))
    if leverage is None:
        raise InputError(f"{where}.max_leverage", leverage_problem(params["max_leverage"]))
    base, quote = names
    return Contract(
        symbol=symbol,
        base=base,
        quote=quote,
        amount_step=values["amount_step"],
        min_amount=values.get("min_amount", Decimal(0)),
        min_cost=values.get("min_cost", Decimal(0)),
        fee_rate=values.get("fee_rate", Decimal(0)),
        max_leverage=leverage,
        maintenance_margin_rate=values.get("maintenance_margin_rate", Decimal(0)),
        mark_price=values.get("mark_price"),
    )

"""Prices and markets: what an asset is worth and where it can be traded, with which steps and minimums."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from rebal.core.errors import InputError, spelled
from rebal.core.numbers import DEFAULT_AMOUNT_STEP, RANGE, in_range, parse_decimal
from rebal.core.venues import Quote, check_against, parse_venues

MARKET_KEYS = frozenset({"amount_step", "min_amount", "min_cost", "fee_rate"})


@dataclass(frozen=True)
class Prices:
    """Prices of assets in one valuation currency (`quote`); the quote itself is worth 1. `venues`: the bid
    and ask per exchange and asset (`rebal.core.venues`), empty when the file gives none."""

    quote: str
    prices: Mapping[str, Decimal]
    venues: Mapping[str, Mapping[str, Quote]] = field(default_factory=dict)

    def get(self, asset: str) -> Decimal | None:
        if asset == self.quote and asset not in self.prices:
            return Decimal(1)
        return self.prices.get(asset)

    @classmethod
    def parse(cls, doc: object) -> Prices:
        if not isinstance(doc, dict):
            raise InputError("", 'prices must be a mapping {"quote": ..., "prices": {ASSET: PRICE}}')
        unknown = doc.keys() - {"quote", "prices", "venues"}
        if unknown:
            raise InputError("", f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        quote = doc.get("quote")
        if not isinstance(quote, str) or not quote:
            raise InputError("quote", "the valuation currency 'quote' must be a non-empty string")
        raw = doc.get("prices")
        if not isinstance(raw, dict):
            raise InputError("prices", "'prices' must be a mapping of asset to price")
        parsed: dict[str, Decimal] = {}
        for asset, value in raw.items():
            price = parse_decimal(value)
            if price is None:
                raise InputError(f"prices.{asset}", f"price {spelled(value)} is not a decimal number")
            if price <= 0:
                raise InputError(f"prices.{asset}", f"price {value} must be positive")
            if not in_range(price):
                raise InputError(f"prices.{asset}", f"price {value} is outside the supported range ({RANGE})")
            parsed[str(asset)] = price
        prices = cls(quote=quote, prices=parsed)
        if "venues" not in doc:
            return prices
        venues = parse_venues(doc["venues"])
        check_against(venues, prices.get)
        return cls(quote=quote, prices=parsed, venues=venues)


@dataclass(frozen=True)
class Market:
    """One tradable symbol ``BASE/QUOTE`` on one exchange."""

    base: str
    quote: str
    amount_step: Decimal = DEFAULT_AMOUNT_STEP
    min_amount: Decimal = Decimal(0)
    min_cost: Decimal = Decimal(0)
    fee_rate: Decimal = Decimal(0)

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"

    @cached_property
    def floats(self) -> tuple[float, float, float, float]:
        """(amount_step, min_amount, min_cost, fee_rate) as floats, made once: the planner's columns."""
        return float(self.amount_step), float(self.min_amount), float(self.min_cost), float(self.fee_rate)


@dataclass(frozen=True)
class Route:
    """How to turn an asset into an account's quote: one direct market, or two (or three) through
    intermediates; or, `inverse`, the one market listed the other way round (``QUOTE/ASSET``): a sell of
    the asset buys the quote with it, a buy of the asset sells the quote for it (amounts in the quote)."""

    legs: tuple[Market, ...]
    inverse: bool = False


@dataclass(frozen=True)
class Markets:
    """Known markets per exchange. An exchange without an entry is unconstrained: every direct pair
    exists with `DEFAULT_AMOUNT_STEP`, no minimums and no fee."""

    exchanges: Mapping[str, Mapping[str, Market]] = field(default_factory=dict)
    # What the planner derived from these markets for a set of routes (`rebal.core.plan`), remembered.
    tables: dict[Hashable, object] = field(default_factory=dict, compare=False, repr=False)

    def route(self, exchange: str, asset: str, quote: str) -> Route | None:
        """The direct market, else one intermediate (alphabetically first), else the inverse market
        ``QUOTE/ASSET``, else None (``no_market``)."""
        known = self.exchanges.get(exchange)
        if known is None:
            return Route((Market(base=asset, quote=quote),))
        direct = known.get(f"{asset}/{quote}")
        if direct is not None:
            return Route((direct,))
        candidates = sorted(
            market.quote
            for market in known.values()
            if market.base == asset and f"{market.quote}/{quote}" in known
        )
        if not candidates:
            inverse = known.get(f"{quote}/{asset}")
            return None if inverse is None else Route((inverse,), inverse=True)
        middle = candidates[0]
        return Route((known[f"{asset}/{middle}"], known[f"{middle}/{quote}"]))

    @classmethod
    def parse(cls, doc: object) -> Markets:
        """``{EXCHANGE: {"BASE/QUOTE": {amount_step, min_amount, min_cost, fee_rate}}}``."""
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise InputError("", "markets must be a mapping of exchange to {symbol: market}")
        exchanges: dict[str, dict[str, Market]] = {}
        for exchange, symbols in doc.items():
            if not isinstance(symbols, dict):
                raise InputError(str(exchange), "must map symbols 'BASE/QUOTE' to market parameters")
            parsed: dict[str, Market] = {}
            for symbol, params in symbols.items():
                where = f"{exchange}.{symbol}"
                base, sep, quote = str(symbol).partition("/")
                if not sep or not base or not quote or "/" in quote:
                    raise InputError(where, "a symbol must look like BASE/QUOTE")
                params = {} if params is None else params  # noqa: PLW2901 - a bare symbol means defaults
                if not isinstance(params, dict):
                    raise InputError(where, "market parameters must be a mapping")
                unknown = params.keys() - MARKET_KEYS
                if unknown:
                    raise InputError(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
                values: dict[str, Decimal] = {}
                for key in MARKET_KEYS & params.keys():
                    value = parse_decimal(params[key])
                    if value is None or value < 0:
                        raise InputError(f"{where}.{key}", f"{spelled(params[key])} is not a decimal >= 0")
                    if not in_range(value):
                        raise InputError(
                            f"{where}.{key}", f"{params[key]} is outside the supported range ({RANGE})"
                        )
                    values[key] = value
                if "amount_step" in values and values["amount_step"] == 0:
                    raise InputError(f"{where}.amount_step", "must be positive")
                if values.get("fee_rate", Decimal(0)) >= 1:
                    raise InputError(f"{where}.fee_rate", "must be below 1")
                parsed[f"{base}/{quote}"] = Market(base=base, quote=quote, **values)
            exchanges[str(exchange)] = parsed
        return cls(exchanges=exchanges)

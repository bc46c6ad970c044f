"""Prices per venue: what an asset fetches (bid) and costs (ask) on one exchange, in the valuation currency.

The prices file may add ``"venues": {"<exchange>": {"<ASSET>": {"bid": "59900", "ask": "59920"}}}``
(docs/formats.md). Valuation stays on the reference ``prices``; a trade on an exchange is estimated at that
exchange's bid (a sell) or ask (a buy) when given, else at the reference price. A market ``BASE/QUOTE``
sells at bid(BASE) / ask(QUOTE) and buys at ask(BASE) / bid(QUOTE): the quote asset (USDT) usually has no
entry and stands at its reference price.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from rebal.core.errors import InputError, spelled
from rebal.core.numbers import RANGE, in_range, parse_decimal

QUOTE_KEYS = frozenset({"bid", "ask"})
# How far a venue's bid or ask may stand from the asset's reference price: within [1/2, 2] x the reference.
# Real venues quote an asset within a few percent of each other; a figure outside this is a typo, a wrong
# unit or a dead market, and planned on it would claim absurd savings, so the prices are refused.
MAX_VENUE_FACTOR = Decimal(2)


@dataclass(frozen=True)
class Quote:
    """The best bid and ask of an asset on one exchange (either may be unknown: the reference price)."""

    bid: Decimal | None = None
    ask: Decimal | None = None


VenueQuotes = Mapping[str, Mapping[str, Quote]]


def parse_venues(raw: object) -> dict[str, dict[str, Quote]]:
    """``{EXCHANGE: {ASSET: {"bid": .., "ask": ..}}}``: positive decimals in `RANGE`, bid <= ask. Errors
    name the path (``venues.binance.BTC.bid``)."""
    if not isinstance(raw, dict):
        raise InputError("venues", "'venues' must map exchanges to {ASSET: {bid, ask}}")
    parsed: dict[str, dict[str, Quote]] = {}
    for exchange, assets in raw.items():
        where = f"venues.{exchange}"
        if not isinstance(assets, dict):
            raise InputError(where, "must map assets to {bid, ask}")
        quotes: dict[str, Quote] = {}
        for asset, sides in assets.items():
            at = f"{where}.{asset}"
            if not isinstance(sides, dict) or not sides:
                raise InputError(at, "must be a mapping with 'bid' and/or 'ask'")
            unknown = sides.keys() - QUOTE_KEYS
            if unknown:
                raise InputError(at, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            values: dict[str, Decimal] = {}
            for side in sorted(QUOTE_KEYS & sides.keys()):
                value = parse_decimal(sides[side])
                if value is None or value <= 0:
                    raise InputError(f"{at}.{side}", f"{spelled(sides[side])} is not a positive decimal")
                if not in_range(value):
                    raise InputError(
                        f"{at}.{side}", f"{sides[side]} is outside the supported range ({RANGE})"
                    )
                values[side] = value
            if "bid" in values and "ask" in values and values["bid"] > values["ask"]:
                raise InputError(at, f"bid {sides['bid']} is above ask {sides['ask']}")
            quotes[str(asset)] = Quote(values.get("bid"), values.get("ask"))
        parsed[str(exchange)] = quotes
    return parsed


def implausible(value: Decimal, reference: Decimal) -> bool:
    """Whether a venue's bid or ask `value` stands outside [1/`MAX_VENUE_FACTOR`, `MAX_VENUE_FACTOR`] x
    the asset's `reference` price."""
    return value > reference * MAX_VENUE_FACTOR or value * MAX_VENUE_FACTOR < reference


def check_against(venues: VenueQuotes, reference: Callable[[str], Decimal | None]) -> None:
    """Refuse (`InputError` naming ``venues.EXCHANGE.ASSET.SIDE``) a bid or ask `implausible` against the
    asset's reference price, and (naming ``venues.EXCHANGE.ASSET``) an asset without one: its quotes could
    be checked against nothing, and an asset the prices do not know is none the plan can value."""
    for exchange, quotes in venues.items():
        for asset, quote in quotes.items():
            price = reference(asset)
            if price is None:
                raise InputError(
                    f"venues.{exchange}.{asset}",
                    f"{asset} has no reference price (prices.{asset}): a venue's bid and ask are checked "
                    "against it",
                )
            for side, value in (("bid", quote.bid), ("ask", quote.ask)):
                if price is not None and value is not None and implausible(value, price):
                    raise InputError(
                        f"venues.{exchange}.{asset}.{side}",
                        f"{value} is more than {MAX_VENUE_FACTOR}x away from the reference price {price} "
                        f"(prices.{asset}: a venue's price must lie within "
                        f"{price / MAX_VENUE_FACTOR} to {price * MAX_VENUE_FACTOR})",
                    )

"""Prices per venue: what an asset fetches (bid) and costs (ask) on one exchange, in the valuation currency.

The prices file may add ``"venues": {"<exchange>": {"<ASSET>": {"bid": "59900", "ask": "59920"}}}``
(docs/formats.md). Valuation stays on the reference ``prices``; a trade on an exchange is estimated at that
exchange's bid (a sell) or ask (a buy) when given, else at the reference price. A market ``BASE/QUOTE``
sells at bid(BASE) / ask(QUOTE) and buys at ask(BASE) / bid(QUOTE): the quote asset (USDT) usually has no
entry and stands at its reference price.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from rebal.core.errors import InputError
from rebal.core.numbers import RANGE, in_range, parse_decimal

QUOTE_KEYS = frozenset({"bid", "ask"})


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
                    raise InputError(f"{at}.{side}", f"{sides[side]!r} is not a positive decimal")
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

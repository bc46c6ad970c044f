"""A prices file's `venues` against its reference `prices`: a bid or ask more than `MAX_VENUE_FACTOR` away
from the reference (a typo, a wrong unit) is refused naming the place, instead of planning absurd savings;
a price derived from two quotes keeps the digits quoted."""

from __future__ import annotations

from typing import Any

import pytest

from rebal.core.errors import InputError
from rebal.core.market import Market, Prices
from rebal.core.numbers import dec_str
from rebal.core.trading import VENUE_PRICE_DIGITS, VenuePrices
from rebal.core.venues import MAX_VENUE_FACTOR, Quote
from tests.support import D


def doc(venues: dict[str, Any]) -> dict[str, Any]:
    return {"quote": "USD", "prices": {"BTC": "60000", "ETH": "1200", "USDT": "1"}, "venues": venues}


@pytest.mark.parametrize(
    ("venues", "where", "shown"),
    [
        ({"binance": {"BTC": {"bid": "6000000", "ask": "6000100"}}}, "venues.binance.BTC.bid", "6000000"),
        ({"kraken": {"BTC": {"bid": "29000", "ask": "60010"}}}, "venues.kraken.BTC.bid", "29000"),
        ({"kraken": {"BTC": {"ask": "120001"}}}, "venues.kraken.BTC.ask", "120001"),
        ({"kraken": {"USDT": {"bid": "0.4999"}}}, "venues.kraken.USDT.bid", "0.4999"),
        ({"kraken": {"USD": {"ask": "2.5"}}}, "venues.kraken.USD.ask", "2.5"),  # the quote is worth 1
    ],
)
def test_a_venue_price_outside_half_to_twice_the_reference_is_refused_naming_it(
    venues: dict[str, Any], where: str, shown: str
) -> None:
    with pytest.raises(InputError) as refused:
        Prices.parse(doc(venues))
    assert refused.value.where == where
    assert refused.value.message.startswith(f"{shown} is more than 2x away from the reference price")


def test_venue_prices_at_half_and_twice_the_reference_are_kept() -> None:
    assert MAX_VENUE_FACTOR == 2
    parsed = Prices.parse(
        doc({"a": {"BTC": {"bid": "30000", "ask": "120000"}}, "b": {"ETH": {"bid": "600", "ask": "2400"}}})
    )
    assert parsed.venues["a"]["BTC"] == Quote(D("30000"), D("120000"))
    assert parsed.venues["b"]["ETH"] == Quote(D("600"), D("2400"))


def test_a_venue_asset_without_a_reference_price_is_refused_naming_it() -> None:
    """Its bid and ask could be checked against nothing (it was accepted and went unused)."""
    with pytest.raises(InputError) as refused:
        Prices.parse(doc({"binance": {"DOGE": {"bid": "0.1", "ask": "0.2"}}}))
    assert refused.value.where == "venues.binance.DOGE"
    assert refused.value.message.startswith("DOGE has no reference price (prices.DOGE)")


def test_a_price_derived_from_two_venue_quotes_keeps_the_digits_quoted_not_a_division_s_tail() -> None:
    """60390 / 1.001 was 60329.6703296703297 (and so its estimated cost and fee): at least
    `VENUE_PRICE_DIGITS` significant digits, or as many as the more precise quote has."""
    quoted = doc(
        {
            "binance": {"BTC": {"bid": "60390", "ask": "60410"}, "USDT": {"bid": "0.999", "ask": "1.001"}},
            "kraken": {"BTC": {"bid": "59990.123456789"}, "ETH": {"ask": "1199.98"}},
        }
    )
    quoted["prices"]["ETH"] = "1200"
    venues = VenuePrices(Prices.parse(quoted))
    btc, eth_btc = Market("BTC", "USDT"), Market("ETH", "BTC")
    assert VENUE_PRICE_DIGITS == 8
    assert dec_str(venues.exact("binance", btc, sell=True)) == "60329.67"  # 60390 / 1.001
    assert (
        dec_str(venues.exact("binance", btc, sell=False)) == "60470.47"
    )  # 60410 / 0.999 (60470.4704704704705)
    assert dec_str(venues.exact("kraken", btc, sell=True)) == "59990.123456789"  # USDT at 1: as quoted
    assert dec_str(venues.exact("binance", eth_btc, sell=False)) == "0.01987084"  # 1200 / 60390
    assert dec_str(venues.exact("kraken", eth_btc, sell=False)) == "0.02000295933487"  # 13 digits quoted

"""A prices file's `venues` against its reference `prices`: a bid or ask more than `MAX_VENUE_FACTOR` away
from the reference (a typo, a wrong unit) is refused naming the place, instead of planning absurd savings."""

from __future__ import annotations

from typing import Any

import pytest

from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.venues import MAX_VENUE_FACTOR, Quote
from tests.support import D


def doc(venues: dict[str, Any]) -> dict[str, Any]:
    return {"quote": "USD", "prices": {"BTC": "60000", "USDT": "1"}, "venues": venues}


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
        doc({"a": {"BTC": {"bid": "30000", "ask": "120000"}}, "b": {"ETH": {"bid": "1", "ask": "9"}}})
    )
    assert parsed.venues["a"]["BTC"] == Quote(D("30000"), D("120000"))
    assert parsed.venues["b"]["ETH"] == Quote(D("1"), D("9"))  # no reference price: the tree's checks say

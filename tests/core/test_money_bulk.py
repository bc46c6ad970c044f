"""The money transfers' amounts, networks and values worked out in bulk (`rebal.core.plan`) are exactly
what the decimals give one transfer at a time: whole satoshis near and far from a whole count, the way
`Networks.choose` takes (or why none), and ``float(exact decimal product)``."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.core.market import Prices
from rebal.core.networks import Networks
from rebal.core.numbers import DEFAULT_AMOUNT_STEP
from rebal.core.plan import (
    _MONEY_NOISE,
    NEEDS_CONVERSION,
    _exact_money_steps,
    _money_steps,
    _money_ways,
    _MoneyWorth,
    _PriceOf,
)

PRICES = st.sampled_from(("1", "0.9998", "1.0001", "0.99987654321", "2500.5", "60321.17", "0.00001234"))


def price_of(price: str) -> _PriceOf:
    return _PriceOf(Prices.parse({"quote": "USD", "prices": {"USDT": price}}))


@settings(max_examples=300, deadline=None)
@given(
    PRICES,
    st.lists(
        st.one_of(
            st.floats(0, 1e9, allow_nan=False),
            # Whole satoshis and a hair either side: where floats cannot tell, the decimals do.
            st.integers(1, 10**15).map(lambda n: n / 1e8),
            st.integers(1, 10**12).map(lambda n: float(Decimal(n) / 10**8 * Decimal("0.9998"))),
            st.floats(-10, 0),
        ),
        max_size=40,
    ),
)
def test_money_steps_are_the_exact_decimals_whole_steps(price: str, values: list[float]) -> None:
    """The exact decimal count of satoshis in each float value, truncated, but the nearest whole count
    where it is within float noise (`_MONEY_NOISE`, relative) of it."""
    prices = price_of(price)
    bulk = _money_steps(np.array(values, dtype=np.float64), ["USDT"] * len(values), prices)
    assert bulk == [whole_or_truncated(value, Decimal(price)) for value in values]


def whole_or_truncated(value: float, price: Decimal) -> int:
    """The float count of satoshis rounded where it is within `_MONEY_NOISE` of a whole number (below
    2**52), else the exact decimal count truncated."""
    count = value / float(price) * 10**8
    if value > 0 and count < 2**52 and abs(count - round(count)) <= max(count, 1.0) * _MONEY_NOISE:
        return round(count)
    return _exact_money_steps(value, price)


def test_whole_satoshis_and_the_float_just_below_them() -> None:
    # 1234.5 USDT at 1 is 123450000000 satoshis exactly; the float 0.3 lies just below 0.3, within float
    # noise of 30000000 satoshis: that many (it was cut to 29999999, a transfer of 0.29999999), and
    # 29870.099999999998 (29900 less a 0.1% fee in floats) is 29870.1.
    assert _money_steps(np.array([1234.5, 0.1, 0.3, 29900 * 0.999]), ["USDT"] * 4, price_of("1")) == [
        123450000000,
        10000000,
        30000000,
        2987010000000,
    ]


@settings(max_examples=300, deadline=None)
@given(PRICES, st.lists(st.integers(1, 2**53), max_size=30))
def test_money_worth_is_the_float_of_the_exact_product(price: str, steps: list[int]) -> None:
    worth = _MoneyWorth(price_of(price))
    for count in steps:
        assert worth.of_steps("USDT", count) == float(DEFAULT_AMOUNT_STEP * count * Decimal(price))


NETWORK = Networks.parse(
    {
        "withdrawals": {
            "a": {"USDT": {"networks": {"TRC20": {"fee": "1", "min_amount": "10"}, "ERC20": {"fee": "5"}}}},
            "b": {"USDT": {"fee": "0.12345678", "min_amount": "0.5", "enabled": True}},
            "c": {"USDT": {"fee": "1", "enabled": False}},
        },
        "deposits": {
            "a": {"USDT": {"enabled": True}},
            "b": {"USDT": {"networks": {"TRC20": {}, "ERC20": {}}}},
            "c": {"USDT": {"enabled": True}},
        },
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.sampled_from("abcd"),
            st.sampled_from(("USDT", "USDT", "USDC")),
            st.one_of(st.integers(1, 2 * 10**9), st.sampled_from((12345678, 12345679, 10**9, 5 * 10**8))),
        ),
        max_size=40,
    )
)
def test_money_ways_are_what_choose_takes(rows: list[tuple[str, str, str, int]]) -> None:
    out_of = [row[0] for row in rows]
    into = [row[1] for row in rows]
    received_as = [row[2] for row in rows]
    steps = [row[3] for row in rows]
    chosen = _money_ways(NETWORK, out_of, into, ["USDT"] * len(rows), received_as, steps)
    expected = [
        NEEDS_CONVERSION
        if received != "USDT"
        else NETWORK.choose(source, destination, "USDT", DEFAULT_AMOUNT_STEP * count)
        for source, destination, received, count in rows
    ]
    assert chosen == expected

"""Computed numbers are written as the decimals they stand for, without float noise (docs/formats.md,
"Numbers"): at most 15 significant digits, a tail of rounding after a run of 0s or 9s dropped, a
difference's digits counted from the numbers it is the difference of (issue 14's third review)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.bulk import rows, shown_texts
from rebal.core.numbers import AMOUNT_PLACES, MONEY_PLACES, dec_str, shown_str
from tests.support import account, folder, nodes_by_path, prices, run, wallet


def test_a_pools_cash_at_its_exact_target_is_written_exactly() -> None:
    """14% of 39155.015075 USD is 5481.7021105 exactly: main wrote the desired amount 5481.702110500002
    and the difference 4549.847035500002 (the value, to 8 places, was right)."""
    real = folder(
        "alice",
        account(
            "bn",
            wallet("abc", "ABC", "386"),
            wallet("sol", "SOL", "193.29"),
            wallet("usd", "USD", "931.855075"),
            quote="USD",
        ),
    )
    target = {"name": "alice", "pool": {"ABC": "6%", "SOL": "80%", "USD": "14%"}}
    markets = {"ex": {"ABC/USD": {"amount_step": "1"}, "SOL/USD": {"amount_step": "0.01"}}}
    _, _, doc = run(real, target, prices(ABC="9.89", SOL="178", USD="1"), markets)
    usd = nodes_by_path(doc["diff"])["alice/bn/usd"]
    assert (usd["desired_value"], usd["desired_amount"], usd["diff_amount"]) == (
        "5481.7021105",
        "5481.7021105",
        "4549.8470355",
    )
    abc = nodes_by_path(doc["diff"])["alice/bn/abc"]
    assert abc["desired_amount"] == "237.543064155713"  # a quotient: its 15 digits (it was so already)


def test_a_wallet_sold_whole_differs_by_its_amount() -> None:
    """64947.56 DOGE the target leaves out: main wrote diff_amount -64947.559999999998 (the float)."""
    real = folder("alice", account("bn", wallet("doge", "DOGE", "64947.56"), wallet("usdt", "USDT", "10")))
    target = folder("alice", folder("bn", wallet("usdt", "USDT", weight="100%"), weight="100%"))
    _, _, doc = run(real, target, prices(DOGE="0.14356755"), {"ex": {"DOGE/USDT": {"amount_step": "1"}}})
    doge = nodes_by_path(doc["diff"])["alice/bn/doge"]
    assert (doge["desired_amount"], doge["diff_amount"]) == ("0", "-64947.56")
    assert doge["current_value"] == "9324.36206768"  # 64947.56 x 0.14356755, to 8 places
    assert doc["skipped"] == [] and doc["orders"][0]["amount"] == "64947"


def test_the_rule_on_the_documented_examples() -> None:
    assert shown_str(1500.000000000003, AMOUNT_PLACES) == "1500"
    assert shown_str(5402.86647999965, AMOUNT_PLACES) == "5402.86648"
    assert shown_str(23132.3214289993, AMOUNT_PLACES) == "23132.321429"
    assert shown_str(0.1 + 0.2, MONEY_PLACES) == "0.3"
    assert shown_str(1 / 3, AMOUNT_PLACES) == "0.333333333333"
    assert shown_str(333608.18244823994, AMOUNT_PLACES) == "333608.18244824"  # 15 digits, not 18
    assert shown_str(51234.56789123, AMOUNT_PLACES) == "51234.56789123"  # an exact input stays exact
    assert shown_str(1234567890.1234567, MONEY_PLACES) == "1234567890.12346"
    assert shown_str(27744.36501671121, MONEY_PLACES) == "27744.36501671"  # to 8 places, as before
    # A difference of two amounts that are one: 0, not the 1e-11 the floats differ by.
    assert shown_str(-5.8e-11, AMOUNT_PLACES, 64947.56) == "0"
    assert shown_str(1500.000000000003 - 1500, AMOUNT_PLACES, 1500.000000000003) == "0"
    assert shown_str(0.12, AMOUNT_PLACES, 1500.0) == "0.12"


floats = st.floats(min_value=-1e18, max_value=1e18, allow_nan=False, allow_infinity=False)


@given(st.lists(floats, min_size=1, max_size=40), st.sampled_from([0, 2, 8, 12, 15]), st.data())
def test_in_bulk_as_one_at_a_time(values: list[float], places: int, data: st.DataObject) -> None:
    magnitude = data.draw(st.lists(floats, min_size=len(values), max_size=len(values)))
    texts = rows(shown_texts(np.array(values), places))
    assert texts == [shown_str(value, places) for value in values]
    texts = rows(shown_texts(np.array(values), places, np.array(magnitude)))
    assert texts == [shown_str(value, places, size) for value, size in zip(values, magnitude, strict=True)]


@given(st.integers(min_value=1, max_value=10**10 - 1), st.integers(min_value=-8, max_value=1))
def test_a_short_decimal_a_few_ulps_off_is_written_as_that_decimal(digits: int, exponent: int) -> None:
    """Up to 10 significant digits, nudged by up to 64 ulps either way (float noise of some sums and
    divisions): the decimal itself."""
    exact = Decimal(digits).scaleb(exponent)
    value = float(exact)
    for ulps in (-64, -7, -1, 0, 1, 7, 64):
        nudged = value + ulps * float(np.spacing(value))
        assert shown_str(nudged, AMOUNT_PLACES) == dec_str(exact.quantize(Decimal("1e-12"))), (nudged, ulps)

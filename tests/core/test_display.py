"""Numbers as operators read them (rebal.core.display): worked examples from the issue's screenshots."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.display import amount_text, money_text, percent_text, price_places, price_text, quote_places


def test_money_to_the_quote_precision() -> None:
    assert money_text("12576.954285892", "USDT") == "12576.95"
    assert money_text("29994.000419999997", "USDT") == "29994.00"
    assert money_text("30145.029536912789", "usd") == "30145.03"
    assert money_text("0E-8", "USDT") == "0.00"
    assert money_text("-0.001", "USDT") == "0.00"  # never "-0.00"
    assert money_text("0.00000833333333333333333", "BTC") == "0.00000833"
    assert money_text("1234.5", "JPY") == "1234"  # half-even
    assert quote_places(None) == 8


def test_prices_keep_four_significant_digits() -> None:
    assert price_text("58958.1581", "USDT") == "58958.16"
    assert price_text("149.5355173", "USDT") == "149.54"
    assert price_text("2.941148", "USDT") == "2.941"
    assert price_text("0.0000123456789", "USDT") == "0.00001235"
    assert price_places("0", "USDT") == 2


def test_amounts_are_cut_to_the_market_step() -> None:
    assert amount_text("0.202238178706", "0.00001") == "0.20223"
    assert amount_text("6.399600830646", "0.0001") == "6.3996"
    assert amount_text("256.182465407931", "0.01") == "256.18"
    assert amount_text("7", "1") == "7"
    assert amount_text("0.21332", None) == "0.21332"
    assert amount_text("8.3E-7", None) == "0.00000083"


def test_weights_are_two_decimals_of_a_percent() -> None:
    assert percent_text("0.123456") == "12.35%"
    assert percent_text(1) == "100.00%"
    assert percent_text(None) == "-"


@given(st.decimals(min_value=0, max_value=10**9, places=12), st.sampled_from(["0.01", "0.00001", "1", "0.5"]))
def test_an_amount_shown_is_never_more_than_held(amount: Decimal, step: str) -> None:
    shown = Decimal(amount_text(amount, step))
    assert shown <= amount and amount - shown < Decimal(step)
    assert shown % Decimal(step) == 0


@pytest.mark.parametrize("value", ["1e-30", "123456789.123456789", "-5.555"])
def test_money_text_has_exactly_the_places(value: str) -> None:
    assert len(money_text(value, "USDT").split(".")[1]) == 2

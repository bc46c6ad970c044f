"""Numbers in bulk (`rebal.core.bulk`) give exactly what the scalar code gives, byte for byte."""

from __future__ import annotations

from decimal import Context, Decimal

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rebal.core.bulk import Decimals, decimal_texts, float_texts, multiply, plain_texts, rows, times
from rebal.core.numbers import AMOUNT_PLACES, MONEY_PLACES, dec_str, float_str

SETTINGS = settings(max_examples=300, deadline=None)
floats = st.floats(allow_nan=False, allow_infinity=False)
# Halves of the last printed place are ties only when they are exact binary fractions: 1/2**k.
ties = st.builds(lambda k, n: n / 2**k, st.integers(1, 40), st.integers(-(2**40), 2**40))
coefficients = st.integers(-(10**25), 10**25)
decimals = st.builds(lambda c, e: Decimal(c).scaleb(e), coefficients, st.integers(-50, 50))


@SETTINGS
@given(st.lists(floats | ties, min_size=1, max_size=50), st.sampled_from([0, 2, 8, 12, 15]))
@example([0.001953125, 2.5e-9, -0.0, 123456789.123456785, 2.0**62, 2.0**63, -1e300], MONEY_PLACES)
@example([2257866132279217.5, 0.5, 1.5, 2.5], 0)
def test_float_texts_are_float_str(values: list[float], places: int) -> None:
    assert rows(float_texts(np.array(values), places)) == [float_str(v, places) for v in values]


def test_float_texts_refuse_what_float_str_refuses() -> None:
    for bad in (float("nan"), float("inf")):
        try:
            float_texts(np.array([1.0, bad]), AMOUNT_PLACES)
        except ValueError as exc:
            assert "not a finite number" in str(exc)
        else:
            raise AssertionError("accepted a non-finite number")


@SETTINGS
@given(st.lists(decimals, min_size=1, max_size=50))
@example([Decimal("0E-5"), Decimal("-0"), Decimal("1E+40"), Decimal("1E-41"), Decimal("15304E-5")])
def test_decimal_texts_are_dec_str(values: list[Decimal]) -> None:
    assert rows(decimal_texts(Decimals.of(values))) == [dec_str(v) for v in values]


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.builds(lambda c, e: Decimal(c).scaleb(e), st.integers(0, 10**19), st.integers(-20, 5)),
            st.builds(lambda c, e: Decimal(c).scaleb(e), st.integers(0, 10**18), st.integers(-20, 5)),
        ),
        min_size=1,
        max_size=50,
    )
)
@example([(Decimal("0.15304"), Decimal("60012.0024004800960")), (Decimal("9" * 18), Decimal("9" * 18))])
def test_multiply_is_decimal_at_18_digits(pairs: list[tuple[Decimal, Decimal]]) -> None:
    a, b = Decimals.of([x for x, _ in pairs]), Decimals.of([y for _, y in pairs])
    product = multiply(a, b)
    context = Context(prec=18)
    expected = [context.multiply(x, y) for x, y in pairs]
    got = product.values()
    # Same value and same coefficient and exponent: the texts printed from them are the same.
    assert [str(v) for v in got] == [str(v) for v in expected]


@SETTINGS
@given(st.lists(st.tuples(decimals.map(abs), st.integers(0, 2**62)), min_size=1, max_size=50))
def test_times_is_decimal_times_int(pairs: list[tuple[Decimal, int]]) -> None:
    column = times(Decimals.of([x for x, _ in pairs]), np.array([n for _, n in pairs], dtype=np.int64))
    assert [str(v) for v in column.values()] == [str(x * n) for x, n in pairs]


@SETTINGS
@given(
    st.lists(
        st.decimals(allow_nan=False, allow_infinity=False).map(str)
        | st.from_regex(r"\A[0-9]{0,4}(\.[0-9]{0,4})?\Z").filter(lambda t: t not in ("", "."))
        | st.sampled_from(["0", "00", "0.0", "1.500", "1e3", " 7", "1_000", "+4", "１２"]),
        min_size=1,
        max_size=50,
    )
)
def test_plain_texts_are_dec_str_of_the_decimal(texts: list[str]) -> None:
    assert rows(plain_texts(texts)) == [dec_str(Decimal(t)) for t in texts]

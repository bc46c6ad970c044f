"""Exact decimals at the edges, floats in the hot path, and the tolerances between them.

Quantities, prices and money cross every boundary as decimal strings. Inside the planner the arrays are
float64 (a million wallets); anything sent to a venue is an integer number of amount steps, turned back
into an exact decimal here. Tolerances are named, never inline.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# Sibling weights must sum to one within this (the file format's contract, docs/formats.md).
WEIGHT_SUM_TOLERANCE = 1e-6
# Float noise allowed when counting whole steps: 4.9999999999 steps of an exact 5 is 5, and
# 430045999.99999994 steps of an exact 430046000 is 430046000 (relative noise grows with the count).
STEP_EPSILON = 1e-9
STEP_RELATIVE = 1e-12
# A float step count this close to a whole number is checked in exact decimals (float noise is ~1e-16).
NEAR_WHOLE = 1e-6
# An order exactly at a market minimum is not below it, whatever the float noise (10 x 1e-6 < 1e-5).
MIN_TOLERANCE = 1e-9
# Relative margin kept below a budget so float sums can never exceed the exact decimal budget.
BUDGET_SAFETY = 1e-9
# Differences smaller than this fraction of the portfolio total are float noise, not trades.
VALUE_EPSILON = 1e-12
# Without market data an amount is cut to this step (one satoshi).
DEFAULT_AMOUNT_STEP = Decimal("0.00000001")
_DEFAULT_STEP_PLACES = 8  # DEFAULT_AMOUNT_STEP is 1e-8
# Decimal places used when printing computed (float) money, amounts and weights.
MONEY_PLACES = 8
AMOUNT_PLACES = 12
WEIGHT_PLACES = 12
# A computed number (a float: a desired amount, a value, a saving) is shown as the decimal it stands for
# (docs/formats.md, "Numbers"): with no more significant digits than a float64 holds (`FLOAT_DIGITS`: any
# decimal of 15 digits survives the float exactly, a 16th and 17th are the binary fraction's), and
# without the arithmetic's rounding: digits (at least `NOISE_DIGITS` of them, a difference's counted as
# the larger number's) that end in a run of `NOISE_RUN` zeros or nines and at most `NOISE_TAIL` more
# digits are rounded before the run. A desired amount some divisions and sums away from its inputs is
# off by up to some 1e-13 of itself: 1500.000000000003 is 1500, 5402.86647999965 is 5402.86648 and
# 23132.3214289993 is 23132.321429, where 0.166666666667 and 333608.18244824 stay.
FLOAT_DIGITS = 15
NOISE_DIGITS = 12
NOISE_RUN = 3
NOISE_TAIL = 3
PRICE_QUANTUM = Decimal("1e-12")
MONEY_QUANTUM = Decimal("1e-8")
# Every quantity, price and money value read from a file or an option is zero or has a magnitude within
# this range (docs/formats.md, "Numbers"): from one wei (1e-18) to a billion billion. Inside it float64
# holds each value, and the product or quotient of any two, without overflow or underflow, so a value
# outside it is refused before any arithmetic.
SMALLEST = Decimal("1e-18")
LARGEST = Decimal("1e18")
RANGE = "0, or 1e-18 to 1e18"
# An order is sized in whole steps counted in float64, which holds every integer only up to 2**53.
MAX_STEPS = 2**53


def parse_decimal(raw: object) -> Decimal | None:
    """A finite decimal from a JSON/YAML scalar (``"1.5"``, ``1.5``, ``2``); None if it is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        text = raw.strip()
    elif isinstance(raw, int | float):
        text = repr(raw) if isinstance(raw, float) else str(raw)
    else:
        return None
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def in_range(value: Decimal) -> bool:
    """Zero, or a magnitude within `SMALLEST`..`LARGEST` (see `RANGE`)."""
    return value == 0 or SMALLEST <= abs(value) <= LARGEST


def parse_fraction(raw: object) -> Decimal | None:
    """A weight: a fraction (``0.6``, ``"0.6"``) or a percentage string (``"60%"``); None if neither."""
    if isinstance(raw, str) and raw.strip().endswith("%"):
        value = parse_decimal(raw.strip()[:-1])
        return None if value is None else value / 100
    return parse_decimal(raw)


def dec_str(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: ``Decimal('1.500')`` → ``'1.5'``."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def money_dec(value: Decimal, places: int = MONEY_PLACES) -> Decimal:
    """Exact money rounded to `places` decimals, half to even as everything shown (`rebal.core.display`)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def float_str(value: float, places: int) -> str:
    """A float printed with at most `places` decimals, trailing zeros dropped, never ``-0``."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    text = f"{value:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def decimal_exponent(size: float) -> int:
    """The largest e with ``10.0**e <= size`` (a positive finite float): its leading digit's place."""
    exponent = math.floor(math.log10(size))
    if 10.0**exponent > size:
        exponent -= 1
    elif 10.0 ** (exponent + 1) <= size:
        exponent += 1
    return exponent


def shown_places(value: float, size: float, places: int) -> int:
    """The decimals a computed number (`value`, of `size`: its own or a larger magnitude's) is shown
    with: `places`, but no more than `FLOAT_DIGITS` significant digits of `size`; fewer when its digits
    so end in noise (the run of zeros or nines and what follows dropped)."""
    if not size > 0:
        return places
    shown = min(max(FLOAT_DIGITS - 1 - decimal_exponent(size), 0), places)
    scale = 10.0**shown
    digits = round(abs(value) * scale)  # `size`'s digits as many, the value's padded with zeros
    if round(size * scale) >= 10**NOISE_DIGITS / 10 and digits < 10**FLOAT_DIGITS:
        for tail in range(NOISE_TAIL + 1):
            if digits // 10**tail % 10**NOISE_RUN in (0, 10**NOISE_RUN - 1):
                return max(shown - NOISE_RUN - tail, 0)
    return shown


def shown_str(value: float, places: int, magnitude: float = 0.0) -> str:
    """A computed number as shown: `float_str` to `shown_places`, its digits counted from `magnitude` when
    that is larger (a difference's, from the numbers it is the difference of: their float noise is its
    own, 1500.000000000003 less 1500 is 0). ``rebal.core.bulk.shown_texts`` is this, in bulk."""
    return float_str(value, shown_places(value, max(abs(value), abs(magnitude)), places))


def money_str(value: float) -> str:
    return float_str(value, MONEY_PLACES)


def amount_str(value: float) -> str:
    return float_str(value, AMOUNT_PLACES)


def weight_str(value: float) -> str:
    return float_str(value, WEIGHT_PLACES)


def steps_to_decimal(steps: int, step: Decimal) -> Decimal:
    """The exact amount of `steps` whole steps."""
    return step * steps


def default_steps_of(value: float) -> Decimal:
    """``DEFAULT_AMOUNT_STEP * floor_steps(Decimal(amount_str(value)), DEFAULT_AMOUNT_STEP)`` without the
    decimal division: `value` printed to `AMOUNT_PLACES` decimals and cut to the step's (whole satoshis)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    if value <= 0:
        return DEFAULT_AMOUNT_STEP * 0
    text = f"{value:.{AMOUNT_PLACES}f}"
    return Decimal(text[: len(text) - AMOUNT_PLACES + _DEFAULT_STEP_PLACES])


def floor_steps(amount: Decimal, step: Decimal) -> int:
    """Whole steps in an exact amount, truncated (never rounds up past a balance)."""
    if amount <= 0:
        return 0
    return int(amount // step)

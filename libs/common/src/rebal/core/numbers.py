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

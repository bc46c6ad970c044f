"""What a value must be to enter Rebal, so that it can be stored and computed with.

One rule per kind of value, used wherever values enter: the event models (`rebal.events`: every bus
message, and the API's commands), the returns files (`rebal backfill`, `rebal optimize --returns`) and
the statistics over returns already stored (a row stored before these rules is skipped, not fatal).
Each check returns what is wrong as a phrase to put after the value (``'-5' is below -1 ...``), or
None when the value is fine: the caller names the field, the file or the line.

- **Text** holds no NUL (U+0000) and no lone surrogate (U+D800-U+DFFF): Postgres ``text`` and ``jsonb``
  cannot store them, so a message carrying one would fail at every attempt to journal it.
- **Times** lie in [1970-01-01, 2100-01-01) UTC (`TIME_FROM`, `TIME_UNTIL`, in seconds since the
  epoch): a return stamped in year 1 or 2200 is a bug in its sender, and would stretch every statistic's
  period.
- **Decimals** are finite, smaller than 1e30 in size (`DECIMAL_LIMIT`; far beyond any amount, price or
  equity, and within what a float64 and Postgres ``numeric`` hold) and have at most 100 decimal places
  (`DECIMAL_PLACES`: Postgres refuses ``1e-20000``, and no quantity needs more).
- **A period return** is such a decimal and at least -1 (`MIN_RETURN`: more than everything lost).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

TIME_FROM = 0.0  # 1970-01-01T00:00:00Z
TIME_UNTIL = 4_102_444_800.0  # 2100-01-01T00:00:00Z, excluded
DECIMAL_LIMIT = Decimal("1e30")
DECIMAL_PLACES = 100
MIN_RETURN = Decimal(-1)

# The same rule for text as a pattern every character must match (the event models hand it to pydantic,
# which refuses lone surrogates itself).
TEXT_PATTERN = r"^[^\x00]*$"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """`value` when Postgres text can hold it; else ValueError saying why (a validator for entered text)."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def text_problem(value: str) -> str | None:
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group()
    name = "a NUL character (U+0000)" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return f"contains {name}, which cannot be stored"


def time_problem(seconds: float) -> str | None:
    """`seconds` since the epoch (UTC)."""
    if not math.isfinite(seconds) or not TIME_FROM <= seconds < TIME_UNTIL:
        return "is outside 1970-01-01..2100-01-01 (UTC), the times Rebal accepts"
    return None


def decimal_problem(value: Decimal) -> str | None:
    if not value.is_finite():
        return "is not a finite number"
    if value.is_zero():
        return None
    if value.copy_abs() >= DECIMAL_LIMIT:  # exact: abs() would round to the context's 28 digits
        return "is too large (Rebal accepts numbers below 1e30 in size)"
    _, digits, exponent = value.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if isinstance(exponent, int) and -exponent - trailing_zeros > DECIMAL_PLACES:
        return f"has more than {DECIMAL_PLACES} decimal places"
    return None


def return_problem(value: Decimal) -> str | None:
    """A period return (0.01 is +1%)."""
    problem = decimal_problem(value)
    if problem is None and value < MIN_RETURN:
        return "is below -1 (more than everything lost)"
    return problem

"""Exact decimals and numbers as text, a million at a time: byte for byte what the scalar code gives.

A plan of a million wallets holds a million orders of exact decimals and prints some ten million
numbers; doing either one Python call at a time took most of `rebal plan --json`. Here:

- `Decimals`: a column of exact decimals as int64 coefficient x 10**exponent (the rare value whose
  coefficient does not fit stays a `Decimal`), with the coefficient and exponent `decimal` would give;
  `times` (a decimal times whole steps, as ``step * steps``) and `multiply` (rounded to 18 significant
  digits, half to even, as ``Context(prec=18).multiply``; 128-bit products in base-10**9 limbs).
- Text as a `TextMatrix`: one row per number, ASCII bytes, NUL bytes as padding anywhere in the row (a
  writer drops them: NUL never occurs in JSON text). `float_texts` is `numbers.float_str` (correctly
  rounded like ``f"{x:.8f}"``: half to even on the exact binary value, whose rounding error in
  ``x * 10**places`` Dekker's product recovers), `decimal_texts` is `numbers.dec_str`, `plain_texts` is
  ``dec_str(Decimal(text))``. Digits come four at a time from a table of 10,000.

Work in slices of some 32k rows: the arrays then stay in the CPU's caches (three to four times faster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

import numpy as np
import numpy.typing as npt

from rebal.core.numbers import FLOAT_DIGITS, NOISE_DIGITS, NOISE_RUN, NOISE_TAIL, dec_str, float_str

TextMatrix = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

ZERO, DOT, MINUS = ord("0"), ord("."), ord("-")
LIMB = 10**9
# Coefficients below this have at most 18 digits: products of two fit in two 18-digit limbs.
BELOW_19_DIGITS = 10**18
# Significant digits `dec_str` keeps (the default decimal context's precision).
DEC_STR_DIGITS = 28
# Exponents printed in bulk (beyond them, the rare value is printed by `dec_str`).
MAX_ZEROS = 40
# Floats whose integer part fits in int64 with room for a carry are printed in bulk.
BULK_FLOAT_LIMIT = 2.0**62
SPLITTER = 134217729.0  # 2**27 + 1: Dekker's split of a double into two 26-bit halves


def rows(matrix: TextMatrix) -> list[str]:
    """Each row's text (the NUL padding dropped): for tests and small outputs."""
    return [bytes(row).replace(b"\0", b"").decode() for row in matrix]


def _divmod(values: IntArray, divisor: int) -> tuple[IntArray, IntArray]:
    """`np.divmod` for non-negative values, several times faster (numpy's divmod is not vectorised)."""
    quotient = values // divisor
    return quotient, values - quotient * divisor


def _group_table() -> npt.NDArray[np.uint32]:
    """The four-digit groups 0000..9999 as ASCII in uint32 (little-endian), in the three variants."""
    number = np.arange(GROUP)
    digits = np.stack([number // 1000, number // 100 % 10, number // 10 % 10, number % 10], axis=1)
    full = (digits + ZERO).astype(np.uint8)
    leading = np.logical_or.accumulate(digits != 0, axis=1)
    leading[:, -1] = True  # 0 keeps one zero
    trailing = np.logical_or.accumulate((digits != 0)[:, ::-1], axis=1)[:, ::-1]
    variants = [full, np.where(leading, full, 0), np.where(trailing, full, 0), np.zeros((1, 4))]
    return np.concatenate(variants).astype(np.uint8).view(GROUP_BYTES).ravel()


# Four digits at a time: each group of four digits is one uint32 looked up in a table of 10,000 texts.
# Tables side by side: as it is, leading zeros blanked (the top group; 0 keeps one zero), trailing zeros
# blanked (the last group of a fraction), and all blank.
GROUP = 10_000
GROUP_BYTES = np.dtype("<u4")
FULL, LEAD, TRAIL, BLANK = 0, GROUP, 2 * GROUP, 3 * GROUP
_TABLE = _group_table()


def _as_text(groups: npt.NDArray[np.uint32]) -> TextMatrix:
    return groups.view(np.uint8).reshape(groups.shape[0], groups.shape[1] * 4)


def _split(rest: npt.NDArray[np.integer], groups_left: int) -> tuple[npt.NDArray[np.integer], IntArray]:
    """(rest // 10**4, rest % 10**4 as an index); in uint32 once what is left fits (much faster)."""
    if groups_left <= 2 and rest.dtype != np.uint32:
        rest = rest.astype(np.uint32)
    higher = rest // GROUP
    return higher, (rest - higher * GROUP).astype(np.intp)


def _integers(values: IntArray, keep_zero: bool) -> TextMatrix:
    """Non-negative integers (< 2**63) as digits, right-aligned, leading zeros blanked; a zero value is
    ``0`` when `keep_zero`, else nothing."""
    width = max(1, -(-len(str(int(values.max()))) // 4)) if values.size else 1
    out = np.empty((values.size, width), dtype=GROUP_BYTES)
    rest: npt.NDArray[np.integer] = values
    for column in range(width - 1, -1, -1):
        higher, index = _split(rest, column + 1)
        index += (higher == 0) * LEAD  # the top group
        if column < width - 1 or not keep_zero:
            index[rest == 0] = BLANK  # above the top group
        out[:, column] = _TABLE[index]
        rest = higher
    return _as_text(out)


def _fraction(values: IntArray, places: int) -> TextMatrix:
    """`places` decimal digits of integers below 10**places, leading zeros kept, trailing ones blanked."""
    pad = -places % 4
    width = (places + pad) // 4
    out = np.empty((values.size, width), dtype=GROUP_BYTES)
    rest: npt.NDArray[np.integer] = values * 10**pad
    zeros_after = np.ones(values.size, dtype=np.bool_)  # every group to the right is zero
    for column in range(width - 1, -1, -1):
        higher, index = _split(rest, column + 1)
        zero = index == 0
        index += zeros_after * TRAIL
        out[:, column] = _TABLE[index]
        zeros_after &= zero
        rest = higher
    return _as_text(out)


def _zeros(counts: IntArray) -> TextMatrix:
    """`counts[i]` zeros on row i, padded to the largest count."""
    width = int(counts.max()) if counts.size else 0
    return np.where(np.arange(width) < counts[:, None], ZERO, 0).astype(np.uint8)


def _flag(where: npt.NDArray[np.bool_], char: int) -> TextMatrix:
    return (where.astype(np.uint8) * np.uint8(char))[:, None]


def replace_rows(matrix: TextMatrix, at: Sequence[int], texts: Sequence[str]) -> TextMatrix:
    """Rows `at` replaced by `texts` (widening the matrix when one is longer)."""
    if not at:
        return matrix
    encoded = [text.encode() for text in texts]
    wide = max(len(text) for text in encoded)
    if wide > matrix.shape[1]:
        matrix = np.concatenate((matrix, np.zeros((matrix.shape[0], wide - matrix.shape[1]), np.uint8)), 1)
    for row, text in zip(at, encoded, strict=True):
        matrix[row] = 0
        matrix[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return matrix


def _product_error(a: FloatArray, b: float | FloatArray, product: FloatArray) -> FloatArray:
    """The exact rounding error of ``a * b`` (Dekker's TwoProduct: ``a * b == product + error``)."""
    split = SPLITTER * a
    a_high = split - (split - a)
    a_low = a - a_high
    split_b = SPLITTER * b
    b_high = split_b - (split_b - b)
    b_low = b - b_high
    return ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low


def float_texts(values: FloatArray, places: int) -> TextMatrix:
    """``float_str(value, places)`` of every value (0 <= places <= 15)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"not a finite number: {v[~np.isfinite(v)][0]}")
    magnitude = np.abs(v)
    slow = np.flatnonzero(magnitude >= BULK_FLOAT_LIMIT)
    magnitude[slow] = 0.0
    whole = np.floor(magnitude)
    fraction = magnitude - whole  # exact
    scale = float(10**places)
    scaled = fraction * scale
    nearest = np.rint(scaled)  # half to even on the rounded product ...
    ties = np.flatnonzero(np.abs(scaled - nearest) == 0.5)
    if ties.size:  # ... which decides unless it is a tie: then the exact product's rounding error does
        error = _product_error(fraction[ties], scale, scaled[ties])
        below = np.floor(scaled[ties])
        even = below + (below % 2 if places else whole[ties] % 2)
        nearest[ties] = np.where(error > 0, below + 1, np.where(error < 0, below, even))
    units = whole.astype(np.int64)
    decimals = nearest.astype(np.int64)
    carry = decimals >= 10**places
    units += carry
    decimals[carry] = 0
    parts = [_flag((v < 0) & ((units > 0) | (decimals > 0)), MINUS), _integers(units, keep_zero=True)]
    if places:
        parts += [_flag(decimals > 0, DOT), _fraction(decimals, places)]
    matrix = np.concatenate(parts, axis=1)
    return replace_rows(matrix, slow.tolist(), [float_str(float(x), places) for x in v[slow].tolist()])


def shown_texts(values: FloatArray, places: int, magnitude: FloatArray | None = None) -> TextMatrix:
    """``shown_str(value, places, magnitude)`` of every value (docs/formats.md, "Numbers"): to `places`
    decimals (<= 15) but no more than `FLOAT_DIGITS` significant digits, counted from `magnitude` when
    it is larger (a difference's, from the numbers it is the difference of), and without a noise tail
    (`numbers.shown_places`)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"not a finite number: {v[~np.isfinite(v)][0]}")
    size = np.abs(v) if magnitude is None else np.maximum(np.abs(v), np.abs(magnitude))
    positive = size > 0
    exponent = np.floor(np.log10(np.where(positive, size, 1.0)))  # `decimal_exponent`, in bulk
    exponent -= np.power(10.0, exponent) > size
    exponent += np.power(10.0, exponent + 1) <= size
    shown = np.where(positive, np.clip(FLOAT_DIGITS - 1 - exponent, 0, places), places).astype(np.int64)
    scale = np.power(10.0, shown)
    digits = np.rint(np.abs(v) * scale)
    counted = (np.rint(size * scale) >= 10**NOISE_DIGITS / 10) & (digits < 10**FLOAT_DIGITS)
    whole = np.where(counted, digits, 0).astype(np.int64)
    cut = np.zeros(len(v), dtype=np.int64)
    for tail in range(NOISE_TAIL, -1, -1):  # the shortest tail wins: it is tried last
        run = whole // 10**tail % 10**NOISE_RUN
        cut = np.where(counted & ((run == 0) | (run == 10**NOISE_RUN - 1)), NOISE_RUN + tail, cut)
    return _texts_at(v, np.maximum(shown - cut, 0), places)


def _texts_at(v: FloatArray, row_places: IntArray, places: int) -> TextMatrix:
    """`float_texts` with places of each row's own (``row_places`` <= `places`)."""
    magnitude = np.abs(v)
    slow = np.flatnonzero(magnitude >= BULK_FLOAT_LIMIT)
    magnitude[slow] = 0.0
    whole = np.floor(magnitude)
    fraction = magnitude - whole  # exact
    scale: FloatArray = np.power(10.0, row_places.astype(np.float64))
    scaled = fraction * scale
    nearest = np.rint(scaled)  # half to even on the rounded product ...
    ties = np.flatnonzero(np.abs(scaled - nearest) == 0.5)
    if ties.size:  # ... which decides unless it is a tie: then the exact product's rounding error does
        error = _product_error(fraction[ties], scale[ties], scaled[ties])
        below = np.floor(scaled[ties])
        even = below + np.where(row_places[ties] > 0, below % 2, whole[ties] % 2)
        nearest[ties] = np.where(error > 0, below + 1, np.where(error < 0, below, even))
    units = whole.astype(np.int64)
    decimals = nearest.astype(np.int64)
    carry = decimals >= 10**row_places
    units += carry
    decimals[carry] = 0
    decimals *= 10 ** (places - row_places)
    parts = [_flag((v < 0) & ((units > 0) | (decimals > 0)), MINUS), _integers(units, keep_zero=True)]
    if places:
        parts += [_flag(decimals > 0, DOT), _fraction(decimals, places)]
    matrix = np.concatenate(parts, axis=1)
    slow_texts = [
        float_str(x, int(p)) for x, p in zip(v[slow].tolist(), row_places[slow].tolist(), strict=True)
    ]
    return replace_rows(matrix, slow.tolist(), slow_texts)


@dataclass(frozen=True, eq=False)
class Decimals:
    """A column of exact decimals: row i is ``coefficient[i] * 10**exponent[i]``, or `exact[i]` where the
    coefficient has 19 digits or more (then its entries in the arrays mean nothing)."""

    coefficient: IntArray
    exponent: IntArray
    exact: dict[int, Decimal]

    def __len__(self) -> int:
        return len(self.coefficient)

    @classmethod
    def of(cls, values: Sequence[Decimal]) -> Decimals:
        """From finite `Decimal`s, keeping each one's coefficient and exponent."""
        made = cls(np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=np.int64), {})
        for row, value in enumerate(values):
            made.put(row, value)
        return made

    def put(self, row: int, value: Decimal) -> None:
        """Row `row` becomes the finite `value` (in the arrays when its coefficient fits)."""
        sign, digits, power = value.as_tuple()
        assert isinstance(power, int), "finite decimals only"
        number = int("".join(map(str, digits)))
        self.exact.pop(row, None)
        if number >= BELOW_19_DIGITS:
            self.exact[row] = value
            return
        self.coefficient[row] = -number if sign else number
        self.exponent[row] = power

    def value(self, row: int) -> Decimal:
        if row in self.exact:
            return self.exact[row]
        return Decimal(int(self.coefficient[row])).scaleb(int(self.exponent[row]))

    def values(self) -> list[Decimal]:
        """Every row as a `Decimal` (with its coefficient and exponent)."""
        made = list(
            map(
                Decimal,
                map("{}E{}".format, self.coefficient.tolist(), self.exponent.tolist()),
            )
        )
        for row, value in self.exact.items():
            made[row] = value
        return made

    def slice(self, part: slice) -> Decimals:
        """Rows `part` (a slice without step)."""
        start = part.start or 0
        stop = len(self) if part.stop is None else min(part.stop, len(self))
        where = {row - start: value for row, value in self.exact.items() if start <= row < stop}
        return Decimals(self.coefficient[start:stop], self.exponent[start:stop], where)

    def take(self, index: IntArray) -> Decimals:
        """Rows `index`, in that order."""
        where: dict[int, Decimal] = {}
        if self.exact:
            where = {new: self.exact[old] for new, old in enumerate(index.tolist()) if old in self.exact}
        return Decimals(self.coefficient[index], self.exponent[index], where)

    def bulk(self) -> npt.NDArray[np.bool_]:
        mask = np.ones(len(self), dtype=np.bool_)
        mask[list(self.exact)] = False
        return mask


def concatenate(columns: Sequence[Decimals]) -> Decimals:
    exact: dict[int, Decimal] = {}
    offset = 0
    for column in columns:
        exact.update({offset + row: value for row, value in column.exact.items()})
        offset += len(column)
    return Decimals(
        np.concatenate([c.coefficient for c in columns]) if columns else np.zeros(0, np.int64),
        np.concatenate([c.exponent for c in columns]) if columns else np.zeros(0, np.int64),
        exact,
    )


def times(column: Decimals, counts: IntArray) -> Decimals:
    """Row by row ``value * count`` for non-negative whole counts (exact, as `Decimal` gives it)."""
    bulk = column.bulk() & (column.coefficient >= 0)
    limit = np.where(
        bulk & (column.coefficient > 0), (BELOW_19_DIGITS - 1) // np.maximum(column.coefficient, 1), 0
    )
    fast = bulk & ((counts <= limit) | (column.coefficient == 0))
    coefficient = np.where(fast, column.coefficient * np.where(fast, counts, 0), 0)
    made = Decimals(coefficient, column.exponent.copy(), {})
    for row in np.flatnonzero(~fast).tolist():
        made.put(row, column.value(row) * int(counts[row]))
    return made


def plain_texts(texts: Sequence[str]) -> TextMatrix:
    """``dec_str(Decimal(text))`` of decimal texts: a text already plain (digits with at most one point,
    no leading zero but the units' one, no trailing zero after the point, at most 28 digits) is copied,
    another goes through `Decimal`."""
    if not texts:
        return np.zeros((0, 1), dtype=np.uint8)
    try:
        matrix = np.array(texts, dtype=np.bytes_).view(np.uint8).reshape(len(texts), -1).copy()
    except UnicodeEncodeError:  # not ASCII: not plain
        matrix = np.zeros((len(texts), 1), dtype=np.uint8)
        return replace_rows(matrix, list(range(len(texts))), [dec_str(Decimal(text)) for text in texts])
    count = len(texts)
    if matrix.shape[1] < 2:
        matrix = np.concatenate((matrix, np.zeros((count, 2 - matrix.shape[1]), np.uint8)), 1)
    point = matrix == DOT
    length = np.count_nonzero(matrix, axis=1)  # amounts never hold NUL (no number does)
    first, second = matrix[:, 0], matrix[:, 1]
    last = matrix[np.arange(count), np.maximum(length - 1, 0)]
    has_point = point.any(axis=1)
    plain = (
        (((matrix >= ZERO) & (matrix <= ZERO + 9)) | point | (matrix == 0)).all(axis=1)
        & (np.count_nonzero(point, axis=1) <= 1)
        & (length > 0)
        & (first != DOT)
        & (last != DOT)
        & ((first != ZERO) | (length == 1) | (second == DOT))
        & ~(has_point & (last == ZERO))
        & (length - has_point <= DEC_STR_DIGITS)  # `dec_str` rounds longer ones to the context's digits
    )
    at = np.flatnonzero(~plain).tolist()
    return replace_rows(matrix, at, [dec_str(Decimal(texts[row])) for row in at])


def decimal_texts(column: Decimals) -> TextMatrix:
    """``dec_str`` of every decimal: plain, no exponent, no trailing zeros, ``0`` for zero."""
    bulk = column.bulk()
    coefficient = np.where(bulk, np.abs(column.coefficient), 0)
    exponent = column.exponent.copy()
    while True:  # normalise: trailing zeros of the coefficient go into the exponent
        tens = (coefficient != 0) & (_divmod(coefficient, 10)[1] == 0)
        if not tens.any():
            break
        coefficient[tens] //= 10
        exponent[tens] += 1
    exponent[coefficient == 0] = 0
    slow = ~bulk | (exponent > MAX_ZEROS) | (exponent < -MAX_ZEROS)
    coefficient[slow] = 0
    exponent[slow] = 0
    places = np.maximum(-exponent, 0)
    # Above the point: the coefficient and its zeros, or its digits above the point; below: the rest.
    split = POWERS[np.minimum(places, 18)]
    above = np.where(places > 18, 0, coefficient // split)
    below = np.where(places > 18, coefficient, coefficient - above * split)
    significant = np.where(below > 0, _digit_count(below), 0)
    parts = [
        _flag(column.coefficient < 0, MINUS),
        _integers(above, keep_zero=True),
        _zeros(np.maximum(exponent, 0)),
        _flag(places > 0, DOT),
        _zeros(places - significant),
        _integers(below, keep_zero=False),
    ]
    matrix = np.concatenate(parts, axis=1)
    at = np.flatnonzero(slow).tolist()
    return replace_rows(matrix, at, [dec_str(column.value(row)) for row in at])


POWERS = np.array([10**k for k in range(19)], dtype=np.int64)


def _digit_count(values: IntArray) -> IntArray:
    """Digits of each positive value (< 10**18)."""
    return np.searchsorted(POWERS, values, side="right").astype(np.int64)


def multiply(a: Decimals, b: Decimals, digits: int = 18) -> Decimals:
    """Row by row ``Context(prec=18).multiply(a, b)``: exact products rounded half to even to 18
    significant digits, with the exponent `decimal` gives them. Rows it cannot do in int64 (a coefficient
    of 19 digits or more) are multiplied as `Decimal`s."""
    assert digits == 18, "the limbs below are laid out for 18 digits"
    fast = (
        a.bulk()
        & b.bulk()
        & (np.abs(a.coefficient) < BELOW_19_DIGITS)
        & (np.abs(b.coefficient) < BELOW_19_DIGITS)
    )
    x = np.where(fast, np.abs(a.coefficient), 0)
    y = np.where(fast, np.abs(b.coefficient), 0)
    x1, x0 = _divmod(x, LIMB)
    y1, y0 = _divmod(y, LIMB)
    middle = x1 * y0 + x0 * y1  # < 2 * 10**18
    middle1, middle0 = _divmod(middle, LIMB)
    low = middle0 * LIMB + x0 * y0  # < 2 * 10**18
    carry, low = _divmod(low, BELOW_19_DIGITS)
    high = x1 * y1 + middle1 + carry  # the product is high * 10**18 + low, high < 10**18
    length = np.where(high > 0, 18 + _digit_count(high), np.where(low > 0, _digit_count(low), 0))
    cut = np.maximum(length - digits, 0)
    kept = np.where(
        cut > 0, high * POWERS[18 - cut] + low // POWERS[cut], low
    )  # high < 10**cut, so this is < 10**18
    rest = np.where(cut > 0, low % POWERS[cut], 0)
    half = np.where(cut > 0, 5 * POWERS[np.maximum(cut - 1, 0)], 1)
    up = (cut > 0) & ((rest > half) | ((rest == half) & (kept % 2 == 1)))
    kept = kept + up
    over = kept == BELOW_19_DIGITS
    kept = np.where(over, BELOW_19_DIGITS // 10, kept)
    cut = cut + over
    negative = (a.coefficient < 0) != (b.coefficient < 0)
    coefficient = np.where(negative, -kept, kept)
    exponent = a.exponent + b.exponent + cut
    made = Decimals(coefficient, exponent, {})
    context = Context(prec=digits)
    for row in np.flatnonzero(~fast).tolist():
        made.put(row, context.multiply(a.value(row), b.value(row)))
    return made

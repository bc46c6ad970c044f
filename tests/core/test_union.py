"""The union tree's names and kinds: the real tree's list followed by the desired-only nodes', uncopied."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rebal.core.plan import _decimals
from rebal.core.union import Appended


def test_appended_reads_as_the_concatenated_list() -> None:
    head, tail = ["a", "b", "c"], ["d", "e"]
    joined = Appended(head, tail)
    whole = head + tail
    assert len(joined) == len(whole)
    assert [joined[i] for i in range(-len(whole), len(whole))] == whole + whole
    assert list(joined) == whole
    assert joined == whole
    assert joined[1:4] == whole[1:4]
    assert joined[::-2] == whole[::-2]
    for index in (len(whole), -len(whole) - 1):
        with pytest.raises(IndexError):
            joined[index]


def test_distinct_decimals_keep_how_each_is_written() -> None:
    values = [Decimal("0.10"), Decimal("0.1"), Decimal("0.10"), Decimal("1E+2"), Decimal("100")]
    made = _decimals(values)
    assert made.values() == values
    assert [str(value) for value in made.values()] == ["0.10", "0.1", "0.10", "1E+2", "100"]

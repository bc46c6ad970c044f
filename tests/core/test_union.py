"""The union tree's names and kinds: the real tree's list followed by the desired-only nodes', uncopied."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from rebal.core.plan import _decimals
from rebal.core.tree import parse_tree, with_wallets
from rebal.core.union import Appended, UnionTree, union, union_again
from tests.support import account, folder, wallet


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


def _fields(tree: UnionTree) -> dict[str, object]:
    """Every field of a union tree as plain values (arrays as lists with their dtype)."""
    out: dict[str, object] = {}
    for name in (
        "names",
        "kinds",
        "parent",
        "depth",
        "wallet",
        "amount",
        "locked",
        "real_index",
        "target_index",
        "account_of",
        "accounts",
    ):
        value = getattr(tree, name)
        out[name] = (
            (value.dtype.str, value.tolist())
            if isinstance(value, np.ndarray)
            else list(value)
            if (isinstance(value, Appended))
            else value
        )
    for name in ("name_codes", "kind_codes", "asset_codes"):
        codes = getattr(tree, name)
        out[name] = (codes.ids.dtype.str, codes.ids.tolist(), list(codes.vocabulary))
    out["paths"] = [tree.path(node) for node in range(len(tree))]
    return out


@pytest.mark.parametrize("desired_only", [False, True])
def test_a_union_again_with_wallets_added_is_the_union_made_anew(desired_only: bool) -> None:
    # A pool's new wallets (`rebal.core.where`): appended to the union where no node is desired-only,
    # else the union made again; either way the same tree as `union` makes.
    real_doc = folder(
        "fund",
        folder("alice", account("a", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "5"), exchange="x")),
        folder(
            "bob",
            account("b", wallet("eth", "ETH", "2"), folder("pool", wallet("x", "ETH", "1")), exchange="y"),
        ),
    )
    children = [
        folder(
            "alice",
            account("a", wallet("btc", "BTC", weight="100%"), exchange="x", weight="100%"),
            weight="50%",
        ),
        folder(
            "bob",
            account("b", wallet("eth", "ETH", weight="100%"), exchange="y", weight="100%"),
            weight="50%",
        ),
    ]
    if desired_only:
        children[1]["weight"] = "30%"
        children.append(
            folder(
                "carol",
                account("c", wallet("sol", "SOL", weight="100%"), exchange="x", weight="100%"),
                weight="20%",
            )
        )
    target_doc = folder("fund", *children)
    real, target = parse_tree(real_doc, "real"), parse_tree(target_doc, "target")
    before = union(real, target, "USDT")
    additions = [(2, "eth", "ETH"), (6, "usdt", "USDT"), (8, "btc", "BTC")]
    assert [real.names[parent] for parent, _, _ in additions] == ["a", "b", "pool"]
    added = with_wallets(real, additions)
    before.path(4)  # a path already known is kept
    again = union_again(before, added, "USDT")
    assert _fields(again) == _fields(union(added, target, "USDT"))
    assert (again.real is added) and (again.target is target)

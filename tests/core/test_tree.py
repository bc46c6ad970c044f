"""Parsing and validating tree documents: every bad input names the node path."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.errors import InputError
from rebal.core.tree import MAX_DEPTH, contains, parse_tree
from tests.support import account, folder, wallet


def real_tree() -> dict:
    return folder(
        "alice",
        folder(
            "binance",
            account(
                "spot",
                folder("crypto", wallet("btc", "BTC", "0.5", locks=[{"owner": "arb", "share": "0.2"}])),
                wallet("usdt", "USDT", "100"),
            ),
            kind="exchange",
        ),
    )


def test_tree_is_laid_out_in_pre_order_with_paths() -> None:
    tree = parse_tree(real_tree(), "real")
    assert tree.names == ["alice", "binance", "spot", "crypto", "btc", "usdt"]
    assert tree.parent.tolist() == [-1, 0, 1, 2, 3, 2]
    assert tree.path(4) == "alice/binance/spot/crypto/btc"
    assert tree.wallet.tolist() == [False, False, False, False, True, True]
    assert tree.amount[4] == 0.5
    assert tree.exact_locked(4) == Decimal("0.1")
    assert tree.locked[4] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("doc", "where", "message"),
    [
        (folder("r", account("a", wallet("x", "BTC", "-1"))), "r/a/x", "negative amount"),
        (folder("r", account("a", wallet("x", "BTC", "abc"))), "r/a/x", "not a decimal"),
        (folder("r", account("a", wallet("x", "BTC"))), "r/a/x", "needs an 'amount'"),
        (
            folder("r", account("a", wallet("x", "BTC", "1"), wallet("x", "ETH", "1"))),
            "r/a/x",
            "duplicate sibling",
        ),
        (
            folder("r", account("a", {"name": "x", "asset": "BTC", "amount": "1", "wieght": 1})),
            "r/a/x",
            "unknown key",
        ),
        (folder("r", account("a", {"asset": "BTC", "amount": "1"})), "r/a[0]", "non-empty string 'name'"),
        (
            folder("r", account("a", {"name": "a/b", "asset": "BTC", "amount": "1"})),
            "r/a[0]",
            "must not contain",
        ),
        (
            folder("r", account("a", {"name": "x", "asset": "BTC", "amount": "1", "children": []})),
            "r/a/x",
            "either",
        ),
        (folder("r", account("a", "not-a-node")), "r/a[0]", "must be a mapping"),  # type: ignore[arg-type]
        (
            folder(
                "r",
                account(
                    "a",
                    wallet(
                        "x",
                        "BTC",
                        "1",
                        locks=[{"owner": "b", "share": "0.7"}, {"owner": "c", "amount": "0.5"}],
                    ),
                ),
            ),
            "r/a/x",
            "over 100%",
        ),
        (
            folder("r", account("a", wallet("x", "BTC", "1", locks=[{"owner": "b", "share": "1.5"}]))),
            "r/a/x",
            "within 0..1",
        ),
        (folder("r", account("a", wallet("x", "BTC", "1", locks=[{"share": "0.5"}]))), "r/a/x", "owner"),
        (
            folder(
                "r",
                account("a", wallet("x", "BTC", "1", locks=[{"owner": "b", "share": "0.1", "amount": "1"}])),
            ),
            "r/a/x",
            "exactly one",
        ),
    ],
)
def test_bad_real_trees_name_the_node(doc: dict, where: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_tree(doc, "real")
    assert caught.value.where == where
    assert message in caught.value.message


def test_root_must_be_a_mapping() -> None:
    with pytest.raises(InputError, match="mapping"):
        parse_tree([1, 2], "real")


@pytest.mark.parametrize(
    ("weights", "ok"),
    [
        (["60%", "40%"], True),
        ([0.6, 0.4], True),
        (["0.6", "0.4000001"], True),
        (["60%", "39%"], False),
        ([0.5, 0.6], False),
    ],
)
def test_sibling_weights_must_sum_to_one(weights: list, ok: bool) -> None:
    doc = folder("r", wallet("a", "A", weight=weights[0]), wallet("b", "B", weight=weights[1]))
    if ok:
        tree = parse_tree(doc, "target")
        assert np.isclose(tree.weight[1:].sum(), 1.0, atol=1e-6)
    else:
        with pytest.raises(InputError) as caught:
            parse_tree(doc, "target")
        assert caught.value.where == "r"
        assert "sum to" in caught.value.message


@pytest.mark.parametrize(
    ("weight", "message"),
    [("abc", "not a fraction"), ("-10%", "outside"), (1.5, "outside"), (True, "not a fraction")],
)
def test_bad_weights(weight: object, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_tree(folder("r", wallet("a", "A", weight=weight)), "target")
    assert caught.value.where == "r/a"
    assert message in caught.value.message


def test_desired_nodes_need_weights() -> None:
    with pytest.raises(InputError) as caught:
        parse_tree(folder("r", folder("s", weight=1, children=[wallet("a", "A")])), "target")
    assert caught.value.where == "r/s/a"


def test_trees_parse_down_to_the_depth_limit_and_no_deeper() -> None:
    node: dict = wallet("leaf", "BTC", "1")
    for depth in range(MAX_DEPTH):
        node = folder(f"n{depth}", node)
    tree = parse_tree(node, "real")
    assert len(tree) == MAX_DEPTH + 1
    assert tree.depth.max() == MAX_DEPTH
    with pytest.raises(InputError, match=f"deeper than {MAX_DEPTH} levels") as caught:
        parse_tree(folder("top", node), "real")
    assert caught.value.where.startswith("top/n99/n98/") and caught.value.where.endswith("/n0")


# Keys as the planner makes them: small ids, and wide composite ones (far apart, negative for "none").
KEYS = st.lists(st.one_of(st.integers(-3, 20), st.integers(-(2**40), 2**40)), max_size=40)


@given(KEYS, KEYS)
def test_contains_is_numpys_isin(keys: list[int], query: list[int]) -> None:
    found = contains(np.array(keys, dtype=np.int64), np.array(query, dtype=np.int64))
    assert found.dtype == np.bool_
    assert found.tolist() == np.isin(query, keys).tolist()

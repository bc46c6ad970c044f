"""The nodes operators are shown and the weights a plan brings them to (`rebal.core.shown`)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.shown import Projected, _at_or_below, ancestors, projected_weights
from rebal.core.tree import parse_tree

REAL = {
    "name": "p",
    "children": [
        {
            "name": "ex",
            "kind": "account",
            "exchange": "ex",
            "quote": "USDT",
            "children": [
                {
                    "name": "crypto",
                    "kind": "sector",
                    "children": [
                        {"name": "btc", "asset": "BTC", "amount": "1"},
                        {"name": "eth", "asset": "ETH", "amount": "2"},
                    ],
                },
                {
                    "name": "stable",
                    "kind": "sector",
                    "children": [{"name": "usdt", "asset": "USDT", "amount": "200"}],
                },
            ],
        }
    ],
}
TARGET = {
    "name": "p",
    "children": [
        {
            "name": "ex",
            "weight": "100%",
            "children": [
                {
                    "name": "crypto",
                    "weight": "60%",
                    "children": [
                        {"name": "btc", "asset": "BTC", "weight": "50%"},
                        {"name": "eth", "asset": "ETH", "weight": "50%"},
                    ],
                },
                {
                    "name": "stable",
                    "weight": "40%",
                    "children": [{"name": "usdt", "asset": "USDT", "weight": "100%"}],
                },
            ],
        }
    ],
}
PRICES = {"quote": "USDT", "prices": {"BTC": "600", "ETH": "100", "USDT": "1"}}


def test_the_top_level_and_the_sectors_are_shown_with_their_weights_now_and_after() -> None:
    diff = diff_trees(parse_tree(REAL, "real"), parse_tree(TARGET, "target"), Prices.parse(PRICES))
    # 600 BTC + 200 ETH = 800 of 1000 in crypto (0.8 -> 0.6); 200 USDT in stable (0.2 -> 0.4).
    rows = projected_weights(diff, ["p/ex/crypto/eth"])
    assert rows == [
        Projected("p/ex", Decimal(1), Decimal(1), True),
        Projected("p/ex/crypto", Decimal("0.8"), Decimal("0.6"), True),
        Projected("p/ex/stable", Decimal("0.2"), Decimal("0.4"), False),
    ]


def test_a_skip_marks_its_node_and_every_ancestor_only() -> None:
    assert ancestors(["a/b/c", "a/x"]) == {"a", "a/b", "a/b/c", "a/x"}
    assert "a/b" not in ancestors(["a/bc/d"])  # a sibling whose name starts the same is not an ancestor


PATHS = st.lists(
    st.lists(st.sampled_from(["a", "b", "ab", "b c", "a-"]), min_size=1, max_size=4), max_size=12
)


@given(PATHS, st.lists(st.sampled_from(["a", "b", "ab", "b c", "a-"]), min_size=1, max_size=4))
def test_a_node_is_affected_when_a_skipped_path_is_at_or_below_it(
    paths: list[list[str]], node: list[str]
) -> None:
    skipped = ["/".join(parts) for parts in paths]
    path = "/".join(node)
    assert _at_or_below(sorted(skipped), path) == (path in ancestors(skipped))

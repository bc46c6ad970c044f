"""The pure parts behind the optimizer service: strategy weights into the base tree, and the reconciler's
target positions, with worked numbers."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.reconcile_positions import target_positions
from rebal.core.strategy_targets import (
    TreeShapeError,
    find_strategy_nodes,
    positions_tree,
    set_strategy_weights,
)
from rebal.core.tree import parse_tree

BASE: dict[str, Any] = {
    "name": "fund",
    "children": [
        {
            "name": "paper",
            "weight": "100%",
            "children": [
                {
                    "name": "spot",
                    "weight": "100%",
                    "children": [
                        {
                            "name": "trend",
                            "weight": "40%",
                            "children": [{"name": "btc", "asset": "BTC", "weight": "1"}],
                        },
                        {
                            "name": "arb",
                            "weight": "30%",
                            "children": [{"name": "eth", "asset": "ETH", "weight": "1"}],
                        },
                        {
                            "name": "cash",
                            "weight": "30%",
                            "children": [{"name": "usdt", "asset": "USDT", "weight": "1"}],
                        },
                    ],
                }
            ],
        }
    ],
}


def children(tree: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["weight"] for c in tree["children"][0]["children"][0]["children"]}


def test_strategy_nodes_share_their_base_weight_in_the_optimizers_proportions() -> None:
    nodes, missing = find_strategy_nodes(BASE, ["arb", "trend", "meanrev"])
    assert nodes == {"arb": "fund/paper/spot/arb", "trend": "fund/paper/spot/trend"}
    assert missing == ["meanrev"]
    tree = set_strategy_weights(BASE, nodes, {"trend": 0.25, "arb": 0.75})
    assert children(tree) == {"trend": "0.175", "arb": "0.525", "cash": "30%"}
    parse_tree(tree, "target")  # still a valid desired tree: siblings sum to 1
    assert children(BASE)["trend"] == "40%"  # the base is not changed


def test_thirds_are_rounded_so_that_siblings_still_sum_to_one() -> None:
    nodes, _ = find_strategy_nodes(BASE, ["arb", "trend"])
    tree = set_strategy_weights(BASE, nodes, {"trend": 1 / 3, "arb": 2 / 3})
    weights = children(tree)
    assert D(weights["trend"]) + D(weights["arb"]) == D("0.7")
    assert weights["trend"] == "0.233333333333"


def test_strategies_under_two_parents_are_refused() -> None:
    nodes = {"trend": "fund/paper/spot/trend", "btc": "fund/paper/spot/trend/btc"}
    with pytest.raises(TreeShapeError, match="siblings"):
        set_strategy_weights(BASE, nodes, {"trend": 0.5, "btc": 0.5})


def test_target_positions_by_hand() -> None:
    # 100,000 x 0.5 leverage; trend (w 0.6) long BTC 1, short ETH 0.5; arb (w 0.4) long ETH 1, BTC 0.5.
    result = target_positions(
        D(100_000),
        D("0.5"),
        {"trend": D("0.6"), "arb": D("0.4")},
        {"trend": {"BTC": D(1), "ETH": D("-0.5")}, "arb": {"ETH": D(1), "BTC": D("0.5")}},
    )
    # BTC: 50,000 x (0.6 + 0.2) = 40,000; ETH: 50,000 x (-0.3 + 0.4) = 5,000.
    assert result.targets == {"BTC": D(40_000), "ETH": D(5_000)}
    assert result.notes == ()


def test_spot_holds_a_net_short_at_zero_and_scales_down_what_exceeds_the_account() -> None:
    short = target_positions(D(1000), D(1), {"s": D(1)}, {"s": {"ETH": D("-0.5"), "BTC": D("0.25")}})
    assert short.targets == {"BTC": D(250), "ETH": D(0)}
    assert short.notes == ("ETH: the strategies are net short 500.00000000: spot cannot be short, held at 0",)
    levered = target_positions(
        D(1000), D(2), {"a": D("0.5"), "b": D("0.5")}, {"a": {"BTC": D(1)}, "b": {"ETH": D("1.5")}}
    )
    # 2000 x 0.5 = 1000 each (ETH clipped to 1): 2000 > 1000, scaled by 0.5.
    assert levered.targets == {"BTC": D(500), "ETH": D(500)}
    assert levered.notes == (
        "b: position 1.5 in ETH is outside -1..1: taken as 1",
        "the targets add up to 2000.00000000, more than the account's 1000: scaled by 0.500000",
    )


def test_positions_become_wallet_weights_with_the_rest_in_the_quote_wallet() -> None:
    tree, notes = positions_tree(
        BASE, {"BTC": D(40_000), "SOL": D(5)}, D(100_000), "fund/paper/spot/cash/usdt"
    )
    assert notes == ("SOL: no wallet for it in the base tree: not traded",)
    assert children(tree) == {"trend": "0.4", "arb": "0", "cash": "0.6"}
    parse_tree(tree, "target")


@given(
    account=st.decimals(min_value=0, max_value=10**9, places=2),
    leverage=st.decimals(min_value=0, max_value=5, places=3),
    book=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.tuples(
            st.decimals(min_value=0, max_value=1, places=4),
            st.dictionaries(
                st.sampled_from(["BTC", "ETH", "SOL"]), st.decimals(min_value=-2, max_value=2, places=3)
            ),
        ),
    ),
)
def test_spot_targets_are_never_short_and_never_exceed_the_account(
    account: D, leverage: D, book: dict[str, tuple[D, dict[str, D]]]
) -> None:
    weights = {name: weight for name, (weight, _) in book.items()}
    positions = {name: held for name, (_, held) in book.items()}
    result = target_positions(account, leverage, weights, positions)
    assert all(value >= 0 for value in result.targets.values())
    assert sum(result.targets.values(), D(0)) <= account
    assert set(result.targets) == {i for held in positions.values() for i in held}


@given(st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=2, max_size=2))
def test_strategy_nodes_keep_their_share_of_the_parent(raw: list[float]) -> None:
    nodes, _ = find_strategy_nodes(BASE, ["arb", "trend"])
    tree = set_strategy_weights(BASE, nodes, {"trend": raw[0], "arb": raw[1]})
    weights = children(tree)
    assert D(weights["trend"]) + D(weights["arb"]) == D("0.7")
    parse_tree(tree, "target")

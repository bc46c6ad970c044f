"""Partial rebalances with worked numbers: buy-only cash flows and the breaching scope."""

from __future__ import annotations

import numpy as np
import pytest

from rebal.core.diff import diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.partial import breaching_only, buy_only, cash_above_target
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.render import plan_json
from tests.autopilot import TARGET, diff_of, orders, real
from tests.support import account, folder, prices, wallet


def values(diff_values: np.ndarray, diff_paths: list[str]) -> dict[str, float]:
    return {
        path.rpartition("/")[2]: round(float(v), 6) for path, v in zip(diff_paths, diff_values, strict=True)
    }


def test_deficits_that_fit_in_the_cash_are_bought_in_full() -> None:
    # 9,000 held (BTC 4,000, ETH 2,700, SOL 1,800, USDT 500) and 2,000 USDT arrive: 11,000. The target
    # is BTC 4,400, ETH 3,300, SOL 2,200, USDT 1,100: 1,400 of cash above it, deficits 400 + 600 + 400.
    diff = diff_of(real("0.08", "0.9", "9", "2500"))
    assert cash_above_target(diff) == pytest.approx(1400)
    bought = buy_only(diff)
    assert values(bought.desired_value, diff.tree.paths()) == {
        "alice": 11000,
        "spot": 11000,
        "btc": 4400,
        "eth": 3300,
        "sol": 2200,
        "usdt": 1100,
    }
    assert orders(bought) == [
        ("BTC/USDT", "buy", "0.008"),
        ("ETH/USDT", "buy", "0.2"),
        ("SOL/USDT", "buy", "2"),
    ]


def test_deficits_larger_than_the_cash_share_it_in_proportion() -> None:
    # 10,000 held with BTC at 5,000 (0.5 for 0.4) and 1,000 USDT arrive: 11,000. Targets BTC 4,400,
    # ETH 3,300, SOL 2,200, USDT 1,100; cash above target 900; deficits ETH 900 and SOL 600 (1,500).
    # ETH gets 900 x 900/1,500 = 540, SOL 900 x 600/1,500 = 360; BTC is not sold.
    diff = diff_of(real("0.1", "0.8", "8", "2000"))
    bought = buy_only(diff)
    assert values(bought.desired_value, diff.tree.paths()) == {
        "alice": 11000,
        "spot": 11000,
        "btc": 5000,
        "eth": 2940,
        "sol": 1960,
        "usdt": 1100,
    }
    assert orders(bought) == [("ETH/USDT", "buy", "0.18"), ("SOL/USDT", "buy", "1.8")]


def test_no_cash_above_the_target_buys_nothing() -> None:
    # 10,000 with the cash at its 1,000 but BTC over and ETH under: a buy-only run has nothing to spend.
    diff = diff_of(real("0.1", "0.6", "11", "1000"))
    assert cash_above_target(diff) == pytest.approx(0)
    assert orders(buy_only(diff)) == []
    assert orders(diff) == [
        ("BTC/USDT", "sell", "0.02"),
        ("SOL/USDT", "sell", "1"),
        ("ETH/USDT", "buy", "0.4"),
    ]


@pytest.mark.parametrize(
    ("min_cost", "bought", "skipped"),
    [
        # 900 above the target cash: ETH's 0.1 (300) is bought, then SOL's 1.8 (360) is raised to its
        # 400 minimum (2 SOL), since 600 are left: the small-buy rule of docs/execution.md.
        ("400", [("ETH/USDT", "buy", "0.1"), ("SOL/USDT", "buy", "2")], []),
        # A minimum beyond what is left (600 after ETH) is skipped, with its reason.
        ("1500", [("ETH/USDT", "buy", "0.1")], [("SOL/USDT", "buy", "1.8", "below_min_cost")]),
    ],
)
def test_minimums_and_steps_still_apply(min_cost: str, bought: list, skipped: list) -> None:
    diff = diff_of(real("0.1", "0.8", "8", "2000"))
    assert cash_above_target(diff) == pytest.approx(900)
    markets = {
        "binance": {
            "BTC/USDT": {},
            "ETH/USDT": {"amount_step": "0.1"},
            "SOL/USDT": {"amount_step": "0.01", "min_cost": min_cost},
        }
    }
    planned = plan_json(plan_rebalance(buy_only(diff), Markets.parse(markets)))
    assert [(o["symbol"], o["side"], o["amount"]) for o in planned["orders"]] == bought
    assert [(s["symbol"], s["side"], s["amount"], s["reason"]) for s in planned["skipped"]] == skipped


def _prices() -> dict[str, object]:
    return prices(BTC="50000", ETH="3000", SOL="200")


def test_new_money_counts_as_cash_above_target() -> None:
    # Invest 1,000 into a portfolio at target: 11,000 in all, so the cash's target grows by 100 and the
    # other 900 buy BTC 400, ETH 300 and SOL 200.
    real_tree = parse_tree(real("0.08", "1", "10", "1000"), "real")
    diff = diff_trees(real_tree, parse_tree(TARGET, "target"), Prices.parse(_prices()), invest=1000)
    assert cash_above_target(diff) == pytest.approx(900)
    bought = buy_only(diff)
    assert values(bought.desired_value, diff.tree.paths())["usdt"] == 1100
    assert orders(bought) == [
        ("BTC/USDT", "buy", "0.008"),
        ("ETH/USDT", "buy", "0.1"),
        ("SOL/USDT", "buy", "1"),
    ]


def test_cash_in_one_account_buys_in_another_through_a_transfer_without_selling() -> None:
    real_doc = folder(
        "root",
        account("a", wallet("btc", "BTC", "0.1"), wallet("usdt", "USDT", "3000"), exchange="x"),
        account("b", wallet("eth", "ETH", "1"), wallet("usdt", "USDT", "1000"), exchange="y"),
    )
    target = folder(
        "root",
        folder("a", wallet("btc", "BTC", weight="100%"), wallet("usdt", "USDT", weight=0), weight="50%"),
        folder("b", wallet("eth", "ETH", weight="100%"), wallet("usdt", "USDT", weight=0), weight="50%"),
    )
    # 12,000 in all: a holds 8,000 (BTC 5,000) and b 4,000 (ETH 3,000); each should hold 6,000 of its coin.
    # The 4,000 of cash buys BTC 1,000 in a and ETH 3,000 in b, 2,000 of it sent from a to b.
    diff = diff_trees(parse_tree(real_doc, "real"), parse_tree(target, "target"), Prices.parse(_prices()))
    planned = plan_json(plan_rebalance(buy_only(diff), Markets()))
    assert [(o["account"], o["symbol"], o["side"], o["amount"]) for o in planned["orders"]] == [
        ("root/a", "BTC/USDT", "buy", "0.02"),
        ("root/b", "ETH/USDT", "buy", "1"),
    ]
    assert [(t["from"], t["to"], t["amount"]) for t in planned["transfers"]] == [("root/a", "root/b", "2000")]


def test_breaching_only_brings_back_the_nodes_and_lets_the_siblings_fund_them() -> None:
    # BTC 5,000 of 10,000 (0.5 for 0.4) goes back to 4,000; ETH 2,700, SOL 1,600 and USDT 700 share the
    # 1,000 in proportion (540, 320, 140); a full rebalance would have given 300, 400 and 300.
    diff = diff_of(real("0.1", "0.9", "8", "700"))
    paths = diff.tree.paths()
    partial = breaching_only(diff, [paths.index("alice/spot/btc")])
    assert values(partial.desired_value, paths) == {
        "alice": 10000,
        "spot": 10000,
        "btc": 4000,
        "eth": 3240,
        "sol": 1920,
        "usdt": 840,
    }
    assert orders(partial) == [
        ("BTC/USDT", "sell", "0.02"),
        ("ETH/USDT", "buy", "0.18"),
        ("SOL/USDT", "buy", "1.6"),
    ]


def test_breaching_only_an_account_scales_its_wallets_and_leaves_the_rest() -> None:
    real_doc = folder(
        "root",
        account("a", wallet("btc", "BTC", "0.08"), wallet("usdt", "USDT", "2000")),  # 6,000 (0.6)
        account("b", wallet("eth", "ETH", "1"), wallet("usdt", "USDT", "1000")),  # 4,000 (0.4)
        account("c", wallet("sol", "SOL", "5")),  # 1,000 of 11,000
    )
    target = folder(
        "root",
        folder("a", weight="50%"),
        folder("b", weight="40%"),
        folder("c", weight="10%"),
    )
    diff = diff_trees(parse_tree(real_doc, "real"), parse_tree(target, "target"), Prices.parse(_prices()))
    paths = diff.tree.paths()
    partial = breaching_only(diff, [paths.index("root/a")])
    got = dict(zip(paths, np.round(partial.desired_value, 6).tolist(), strict=True))
    # a: 6,000 -> 50% of 11,000 = 5,500, its BTC and USDT scaled alike (4,000 : 2,000); b and c take the
    # 500 in proportion to their 4,000 and 1,000.
    assert got == {
        "root": 11000,
        "root/a": 5500,
        "root/a/btc": pytest.approx(3666.666667),
        "root/a/usdt": pytest.approx(1833.333333),
        "root/b": 4400,
        "root/b/eth": 3300,
        "root/b/usdt": 1100,
        "root/c": 1100,
        "root/c/sol": 1100,
    }

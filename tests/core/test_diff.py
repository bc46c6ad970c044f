"""The diff tree with worked numbers: values, weights, locks, unlisted nodes, invest/withdraw, band."""

from __future__ import annotations

import pytest

from rebal.core.errors import InputError
from tests.support import D, account, folder, nodes_by_path, prices, run, wallet

PRICES = prices(BTC="60000", ETH="3000", SOL="100")


def test_sixty_forty_split_of_one_account() -> None:
    real = folder("root", account("acc", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "40000")))
    target = folder(
        "root",
        folder("acc", wallet("btc", "BTC", weight="50%"), wallet("usdt", "USDT", weight=0.5), weight=1),
    )
    _, _, out = run(real, target, PRICES)
    nodes = nodes_by_path(out["diff"])
    btc = nodes["root/acc/btc"]
    assert (btc["current_value"], btc["desired_value"], btc["diff_value"]) == ("60000", "50000", "-10000")
    assert (btc["current_weight"], btc["desired_weight"], btc["operation"]) == ("0.6", "0.5", "sell")
    assert D(btc["desired_amount"]) == pytest.approx(D("0.833333333333"))
    assert btc["current_amount"] == "1"
    assert btc["locked_amount"] == "0"
    usdt = nodes["root/acc/usdt"]
    assert (usdt["desired_value"], usdt["operation"]) == ("50000", "buy")
    root = nodes["root"]
    assert (root["current_value"], root["desired_value"], root["operation"]) == ("100000", "100000", "hold")


def test_locked_parts_are_carved_out_of_values_and_weights() -> None:
    real = folder(
        "root",
        account(
            "acc",
            wallet("btc", "BTC", "1", locks=[{"owner": "bot", "share": "0.5"}]),
            wallet("usdt", "USDT", "30000"),
        ),
    )
    target = folder(
        "root",
        folder("acc", wallet("btc", "BTC", weight="0%"), wallet("usdt", "USDT", weight="100%"), weight=1),
    )
    _, _, out = run(real, target, PRICES)
    btc = nodes_by_path(out["diff"])["root/acc/btc"]
    assert btc["current_value"] == "30000"  # the free half only
    assert btc["current_weight"] == "0.5"
    assert btc["locked_amount"] == "0.5"
    assert btc["desired_amount"] == "0.5"  # the lock stays
    assert btc["diff_amount"] == "-0.5"
    [order] = out["orders"]
    assert (order["symbol"], order["side"], order["amount"]) == ("BTC/USDT", "sell", "0.5")


def test_unlisted_children_are_sold_kept_or_scaled() -> None:
    real = folder(
        "root",
        account(
            "acc",
            folder("keep", wallet("x", "SOL", "1"), wallet("y", "SOL", "3")),
            folder("drop", wallet("z", "SOL", "2"), wallet("w", "SOL", "1")),
            folder("scale", wallet("u", "SOL", "2"), wallet("v", "SOL", "1")),
        ),
    )
    target = folder(
        "root",
        folder(
            "acc",
            folder("keep", wallet("x", "SOL", weight=1), weight="40%", keep_unlisted=True),
            folder("drop", wallet("z", "SOL", weight=1), weight="30%"),
            folder("scale", weight="30%"),
            weight=1,
        ),
    )
    # Total 1000 (10 SOL at 100): keep 400 (y keeps 300, x gets the other 100), drop 300 (z all of it, w 0),
    # scale 300 (u and v keep their 2:1 proportion: 200 and 100).
    _, _, out = run(real, target, PRICES)
    values = {p: (n["current_value"], n["desired_value"]) for p, n in nodes_by_path(out["diff"]).items()}
    assert values["root/acc/keep/x"] == ("100", "100")
    assert values["root/acc/keep/y"] == ("300", "300")
    assert values["root/acc/drop/z"] == ("200", "300")
    assert values["root/acc/drop/w"] == ("100", "0")
    assert values["root/acc/scale/u"] == ("200", "200")
    assert values["root/acc/scale/v"] == ("100", "100")


def test_a_desired_wallet_absent_from_the_real_tree_is_a_new_position() -> None:
    real = folder("root", account("acc", wallet("usdt", "USDT", "1000")))
    target = folder(
        "root", folder("acc", wallet("usdt", "USDT", weight=0.5), wallet("sol", "SOL", weight=0.5), weight=1)
    )
    _, _, out = run(real, target, PRICES)
    sol = nodes_by_path(out["diff"])["root/acc/sol"]
    assert (sol["current_amount"], sol["desired_amount"], sol["operation"]) == ("0", "5", "buy")
    assert [(o["symbol"], o["side"], o["amount"]) for o in out["orders"]] == [("SOL/USDT", "buy", "5")]


def test_a_new_account_in_the_desired_tree_takes_quote_and_exchange_from_it() -> None:
    real = folder("root", account("a", wallet("usdt", "USDT", "1000")))
    target = folder(
        "root",
        folder("a", wallet("usdt", "USDT", weight=1), weight=0.5),
        account("b", wallet("sol", "SOL", weight=1), exchange="other", weight=0.5),
    )
    _, _, out = run(real, target, PRICES)
    assert out["transfers"] == [
        {"asset": "USDT", "from": "root/a", "to": "root/b", "amount": "500", "est_value": "500"}
    ]
    assert [(o["account"], o["exchange"], o["symbol"], o["amount"]) for o in out["orders"]] == [
        ("root/b", "other", "SOL/USDT", "5")
    ]


@pytest.mark.parametrize(
    ("invest", "withdraw", "root"), [(500.0, 0.0, "1500"), (0.0, 250.0, "750"), (0.0, 0.0, "1000")]
)
def test_invest_and_withdraw_move_the_root(invest: float, withdraw: float, root: str) -> None:
    real = folder("root", account("acc", wallet("sol", "SOL", "5"), wallet("usdt", "USDT", "500")))
    target = folder(
        "root", folder("acc", wallet("sol", "SOL", weight=1), wallet("usdt", "USDT", weight=0), weight=1)
    )
    _, _, out = run(real, target, PRICES, invest=invest, withdraw=withdraw)
    assert out["diff"]["desired_value"] == root
    sol = nodes_by_path(out["diff"])["root/acc/sol"]
    assert sol["desired_value"] == root


def test_withdrawing_more_than_the_free_total_is_bad_input() -> None:
    real = folder("root", account("acc", wallet("usdt", "USDT", "500")))
    target = folder("root", folder("acc", wallet("usdt", "USDT", weight=1), weight=1))
    with pytest.raises(InputError, match="exceeds"):
        run(real, target, PRICES, withdraw=501.0)


def test_band_turns_small_differences_into_hold() -> None:
    real = folder("root", account("acc", wallet("sol", "SOL", "5.2"), wallet("usdt", "USDT", "480")))
    target = folder(
        "root", folder("acc", wallet("sol", "SOL", weight=0.5), wallet("usdt", "USDT", weight=0.5), weight=1)
    )
    _, _, tight = run(real, target, PRICES)
    assert [o["amount"] for o in tight["orders"]] == ["0.2"]
    _, _, loose = run(real, target, PRICES, band=0.05)  # |520 - 500| = 20 <= 5% of 500
    assert loose["orders"] == []
    assert nodes_by_path(loose["diff"])["root/acc/sol"]["operation"] == "hold"


@pytest.mark.parametrize(
    ("real", "target", "source", "where", "message"),
    [
        (
            folder("root", account("acc", wallet("x", "DOGE", "1"))),
            folder("root", folder("acc", wallet("x", "DOGE", weight=1), weight=1)),
            "prices",
            "prices.DOGE",
            "no price for asset DOGE (used at root/acc/x)",
        ),
        (
            folder("root", account("acc", wallet("x", "SOL", "1"))),
            folder("root", folder("acc", wallet("x", "ETH", weight=1), weight=1)),
            "target",
            "root/acc/x",
            "asset SOL in the real tree, ETH desired",
        ),
        (
            folder("root", folder("acc", wallet("x", "SOL", "1"))),
            folder("root", folder("acc", wallet("x", "SOL", weight=1), weight=1)),
            "real",
            "root/acc/x",
            "not under a node with kind 'account'",
        ),
        (
            folder("root", account("acc", account("inner", wallet("x", "SOL", "1")))),
            folder("root", folder("acc", weight=1)),
            "real",
            "root/acc/inner",
            "account inside account root/acc",
        ),
        (
            folder("root", {"name": "acc", "kind": "account", "children": [wallet("x", "SOL", "1")]}),
            folder("root", folder("acc", weight=1)),
            "real",
            "root/acc",
            "account has no exchange",
        ),
        (
            folder("root", account("acc", wallet("x", "SOL", "1"))),
            folder("root", folder("acc", folder("new", weight=1), weight=1)),
            "target",
            "root/acc/new",
            "nothing held to scale",
        ),
    ],
)
def test_inconsistent_inputs_name_the_file_and_node(
    real: dict, target: dict, source: str, where: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        run(real, target, PRICES)
    assert (caught.value.source, caught.value.where) == (source, where)
    assert message in caught.value.message


def test_the_exchange_comes_from_the_nearest_exchange_ancestor() -> None:
    real = folder(
        "root",
        folder(
            "kraken",
            folder(
                "sub",
                {"name": "acc", "kind": "account", "quote": "USDT", "children": [wallet("x", "SOL", "1")]},
            ),
            kind="exchange",
        ),
    )
    target = folder("root", folder("kraken", weight=1))
    _, _, out = run(real, target, prices(SOL="100"), invest=100.0)
    assert [(o["exchange"], o["amount"]) for o in out["orders"]] == [("kraken", "1")]


def test_a_prepared_shape_diffs_exactly_as_diff_trees_at_other_amounts_and_prices() -> None:
    """`DiffShape` (the match made once, as a replay does) is `diff_trees` for the same nodes: other
    amounts (one of them zero), the same locks, other prices."""
    import numpy as np

    from rebal.core.diff import DiffShape, diff_trees
    from rebal.core.market import Prices
    from rebal.core.tree import parse_tree

    def real(btc: str, eth: str, usdt: str) -> dict:
        lock = [{"owner": "bot", "amount": "0.1"}]
        return folder(
            "root",
            account("acc", wallet("btc", "BTC", btc, locks=lock), wallet("eth", "ETH", eth)),
            account("cash", wallet("usdt", "USDT", usdt)),
        )

    target = parse_tree(
        folder(
            "root",
            folder("acc", wallet("btc", "BTC", weight=0.5), wallet("sol", "SOL", weight=0.5), weight=0.7),
            folder("cash", wallet("usdt", "USDT", weight=1), weight=0.3),
        ),
        "target",
    )
    first = Prices.parse(PRICES)
    shape = DiffShape.of(parse_tree(real("1", "2", "100"), "real"), target, first)
    later = Prices.parse(prices(BTC="61000.5", ETH="2900", SOL="120"))
    held = parse_tree(real("0.5", "0", "5000"), "real")
    table = np.array([float(later.get(name) or 0) for name in shape.asset_names])
    prepared, plain = shape.diff(held, later, table), diff_trees(held, target, later)
    for name in ("current_value", "desired_value", "desired_weight", "operation", "desired_free_amount"):
        assert np.array_equal(getattr(prepared, name), getattr(plain, name)), name
    assert prepared.tree.paths() == plain.tree.paths()
    assert prepared.asset_names == plain.asset_names

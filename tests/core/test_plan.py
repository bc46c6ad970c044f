"""The order plan with worked numbers: steps, minimums, fees, phases, routing, netting, transfers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.render import plan_json
from tests.support import D, account, folder, prices, run, wallet


def market(step: str = "0.01", min_amount: str = "0", min_cost: str = "0", fee: str = "0") -> dict:
    return {"amount_step": step, "min_amount": min_amount, "min_cost": min_cost, "fee_rate": fee}


def two_assets(btc: str, eth: str, usdt: str) -> dict:
    return folder(
        "root",
        account("acc", wallet("btc", "BTC", btc), wallet("eth", "ETH", eth), wallet("usdt", "USDT", usdt)),
    )


def weights(btc: float, eth: float, usdt: float) -> dict:
    return folder(
        "root",
        folder(
            "acc",
            wallet("btc", "BTC", weight=btc),
            wallet("eth", "ETH", weight=eth),
            wallet("usdt", "USDT", weight=usdt),
            weight=1,
        ),
    )


PRICES = prices(BTC="100", ETH="10", XYZ="2")


def brief(out: dict) -> list[tuple]:
    return [(o["phase"], o["symbol"], o["side"], o["amount"]) for o in out["orders"]]


def test_sells_come_first_and_fees_are_reserved_so_buys_fit_the_proceeds() -> None:
    # Sell 0.5 BTC at 100 with 1% fee: 49.5 USDT arrive. ETH wants 5 (cost 50 + 0.5 fee = 50.5): too much,
    # so the buy is scaled to 4.9 ETH (49 + 0.49 fee = 49.49 <= 49.5).
    markets = {"ex": {"BTC/USDT": market(fee="0.01"), "ETH/USDT": market(fee="0.01")}}
    _, _, out = run(two_assets("1", "0", "0"), weights(0.5, 0.5, 0), PRICES, markets)
    assert brief(out) == [(1, "BTC/USDT", "sell", "0.5"), (2, "ETH/USDT", "buy", "4.9")]
    sell, buy = out["orders"]
    assert (sell["est_price"], sell["est_cost"], sell["est_fee"]) == ("100", "50", "0.5")
    assert (buy["est_cost"], buy["est_fee"]) == ("49", "0.49")
    proceeds = D(sell["est_cost"]) - D(sell["est_fee"])
    assert D(buy["est_cost"]) + D(buy["est_fee"]) <= proceeds


def test_amounts_are_truncated_to_the_step_never_rounded_up() -> None:
    markets = {"ex": {"BTC/USDT": market(step="0.001")}}
    _, _, out = run(two_assets("0.123456", "0", "0"), weights(0, 0, 1), PRICES, markets)
    assert brief(out) == [(1, "BTC/USDT", "sell", "0.123")]


def test_selling_everything_sells_exactly_the_free_amount() -> None:
    # 0.3 / 0.1 is 2.9999999999999996 in floats: the plan still sells exactly three steps.
    markets = {"ex": {"BTC/USDT": market(step="0.1")}}
    _, _, out = run(two_assets("0.3", "0", "0"), weights(0, 0, 1), PRICES, markets)
    assert brief(out) == [(1, "BTC/USDT", "sell", "0.3")]
    _, _, under = run(two_assets("0.29999", "0", "0"), weights(0, 0, 1), PRICES, markets)
    assert brief(under) == [(1, "BTC/USDT", "sell", "0.2")]


def test_locked_amounts_are_never_sold() -> None:
    real = folder(
        "root",
        account(
            "acc",
            wallet("btc", "BTC", "1", locks=[{"owner": "bot", "amount": "0.7"}]),
            wallet("usdt", "USDT", "0"),
        ),
    )
    target = folder(
        "root", folder("acc", wallet("btc", "BTC", weight=0), wallet("usdt", "USDT", weight=1), weight=1)
    )
    _, _, out = run(real, target, PRICES, {"ex": {"BTC/USDT": market(step="0.0001")}})
    assert brief(out) == [(1, "BTC/USDT", "sell", "0.3")]


def test_orders_under_the_minimums_are_skipped_with_a_reason() -> None:
    markets = {
        "ex": {
            "BTC/USDT": market(step="0.01", min_cost="5"),  # 0.04 BTC = 4 USDT < 5
            "ETH/USDT": market(step="0.01", min_amount="1"),  # 0.4 ETH < 1
        }
    }
    # 250 in all: BTC 104 -> 100 (sell 0.04), ETH 104 -> 100 (sell 0.4), USDT 42 -> 50.
    _, _, out = run(
        two_assets("1.04", "10.4", "42"), weights(0.4, 0.4, 0.2), prices(BTC="100", ETH="10"), markets
    )
    assert out["orders"] == []
    assert out["skipped"] == [
        {
            "path": "root/acc/btc",
            "symbol": "BTC/USDT",
            "side": "sell",
            "amount": "0.04",
            "reason": "below_min_cost",
        },
        {
            "path": "root/acc/eth",
            "symbol": "ETH/USDT",
            "side": "sell",
            "amount": "0.4",
            "reason": "below_min_amount",
        },
    ]


def test_less_than_one_step_is_skipped() -> None:
    _, _, out = run(
        two_assets("1", "0", "0"), weights(0.995, 0, 0.005), PRICES, {"ex": {"BTC/USDT": market(step="0.01")}}
    )
    assert out["orders"] == []
    assert [(s["path"], s["reason"], s["amount"]) for s in out["skipped"]] == [
        ("root/acc/btc", "below_step", "0.005")
    ]


def test_a_budget_that_exactly_pays_for_whole_steps_buys_every_one_of_them() -> None:
    # 1000 USDT and 10 XYZ no market sells, target all ETH at 0.1: the buy is squeezed from 10,200 to
    # exactly 10,000 steps of 0.1 (1000 USDT), not one step short (9,999) for the float margin.
    real = folder(
        "root",
        account("acc", wallet("xyz", "XYZ", "10"), wallet("eth", "ETH", "0"), wallet("usdt", "USDT", "1000")),
    )
    target = folder("root", folder("acc", wallet("eth", "ETH", weight=1), weight=1))
    markets = {"ex": {"ETH/USDT": market(step="1")}}
    _, _, out = run(real, target, prices(ETH="0.1", XYZ="2"), markets)
    assert brief(out) == [(2, "ETH/USDT", "buy", "10000")]
    assert out["orders"][0]["est_cost"] == "1000"
    # 999 USDT at 50,000 with a step of 0.00001: 0.01998 (exactly 999), as 885 at 300 is 2.95.
    real["children"][0]["children"][2]["amount"] = "999"
    _, _, out = run(real, target, prices(ETH="50000", XYZ="2"), {"ex": {"ETH/USDT": market(step="0.00001")}})
    assert brief(out) == [(2, "ETH/USDT", "buy", "0.01998")]
    real["children"][0]["children"][2]["amount"] = "885"
    _, _, out = run(real, target, prices(ETH="300", XYZ="2"), {"ex": {"ETH/USDT": market(step="0.00000001")}})
    assert brief(out) == [(2, "ETH/USDT", "buy", "2.95")]
    # With a fee the same budget buys what it pays for, fee included, and never more.
    _, _, out = run(real, target, prices(ETH="300", XYZ="2"), {"ex": {"ETH/USDT": market(fee="0.001")}})
    buy = out["orders"][0]
    assert buy["amount"] == "2.94" and D(buy["est_cost"]) + D(buy["est_fee"]) <= D("885")


def test_a_buy_squeezed_under_the_minimum_is_skipped_for_insufficient_quote() -> None:
    markets = {"ex": {"BTC/USDT": market(fee="0.01"), "ETH/USDT": market(fee="0.01", min_cost="49.5")}}
    _, _, out = run(two_assets("1", "0", "0"), weights(0.5, 0.5, 0), PRICES, markets)
    assert brief(out) == [(1, "BTC/USDT", "sell", "0.5")]
    assert [(s["symbol"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("ETH/USDT", "buy", "insufficient_quote")
    ]


def btc_in_two_sectors(a: str, b: str, weights: tuple[float, float, float]) -> tuple[dict, dict]:
    """One account holding BTC in sectors a and b (and USDT), and a desired split between them."""
    real = folder(
        "root",
        account(
            "acc",
            folder("a", wallet("btc", "BTC", a)),
            folder("b", wallet("btc", "BTC", b)),
            wallet("usdt", "USDT", "0"),
        ),
    )
    target = folder(
        "root",
        folder(
            "acc",
            folder("a", wallet("btc", "BTC", weight=1), weight=weights[0]),
            folder("b", wallet("btc", "BTC", weight=1), weight=weights[1]),
            wallet("usdt", "USDT", weight=weights[2]),
            weight=1,
        ),
    )
    return real, target


def test_moves_inside_one_account_are_netted() -> None:
    real, target = btc_in_two_sectors("1", "0", (0.4, 0.6, 0))
    _, plan, out = run(real, target, PRICES)
    assert out["orders"] == []
    assert len(plan) == 0


def test_netted_skip_names_the_account() -> None:
    real, target = btc_in_two_sectors("1", "1", (0.499, 0.499, 0.002))
    _, _, out = run(real, target, PRICES, {"ex": {"BTC/USDT": market(step="0.001", min_cost="5")}})
    assert [(s["path"], s["reason"], s["amount"]) for s in out["skipped"]] == [
        ("root/acc", "below_min_cost", "0.004")
    ]


def test_an_asset_without_a_direct_market_is_routed_through_one_intermediate() -> None:
    markets = {
        "ex": {
            "XYZ/BTC": market(step="1", fee="0.001"),
            "BTC/USDT": market(step="0.0001", fee="0.001"),
            "ETH/USDT": market(step="0.01"),
        }
    }
    real = folder("root", account("acc", wallet("xyz", "XYZ", "1000"), wallet("usdt", "USDT", "0")))
    target = folder(
        "root", folder("acc", wallet("xyz", "XYZ", weight=0), wallet("usdt", "USDT", weight=1), weight=1)
    )
    _, _, sold = run(real, target, PRICES, markets)
    # 1000 XYZ at 0.02 BTC = 20 BTC, less 0.1% = 19.98 BTC, sold for 1998 USDT (less 0.1%).
    assert brief(sold) == [(1, "XYZ/BTC", "sell", "1000"), (1, "BTC/USDT", "sell", "19.98")]

    real = folder("root", account("acc", wallet("xyz", "XYZ", "0"), wallet("usdt", "USDT", "2000")))
    target = folder(
        "root", folder("acc", wallet("xyz", "XYZ", weight=0.5), wallet("usdt", "USDT", weight=0.5), weight=1)
    )
    _, _, bought = run(real, target, PRICES, markets)
    # 500 XYZ cost 10 BTC + 0.1% = 10.01 BTC, bought first with USDT (phase 2, then the XYZ leg).
    assert brief(bought) == [(2, "BTC/USDT", "buy", "10.01"), (2, "XYZ/BTC", "buy", "500")]
    spent = sum(D(o["est_cost"]) + D(o["est_fee"]) for o in bought["orders"] if o["symbol"] == "BTC/USDT")
    assert spent <= Decimal("2000")


def test_no_route_is_skipped_with_no_market() -> None:
    markets = {"ex": {"BTC/USDT": market()}}
    real = folder("root", account("acc", wallet("eth", "ETH", "1"), wallet("usdt", "USDT", "0")))
    target = folder(
        "root", folder("acc", wallet("eth", "ETH", weight=0), wallet("usdt", "USDT", weight=1), weight=1)
    )
    _, _, out = run(real, target, PRICES, markets)
    assert out["orders"] == []
    assert out["skipped"] == [
        {"path": "root/acc/eth", "symbol": "ETH/USDT", "side": "sell", "amount": "1", "reason": "no_market"}
    ]


def test_a_new_position_no_market_reaches_is_refused_naming_the_asset_and_the_account() -> None:
    # The target asks for SOL, which acc's exchange cannot trade: without the refusal the plan sold the
    # BTC to fund a buy that can never happen.
    markets = {"ex": {"BTC/USDT": market()}}
    real = folder("root", account("acc", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "0")))
    target = folder(
        "root", folder("acc", wallet("btc", "BTC", weight=0.5), wallet("sol", "SOL", weight=0.5), weight=1)
    )
    with pytest.raises(InputError) as raised:
        run(real, target, prices(BTC="100", SOL="10"), markets)
    assert (raised.value.where, raised.value.source) == ("root/acc/sol", "target")
    assert raised.value.message == (
        "no market path for SOL from USDT on ex: account root/acc can never buy it (list a market for it, "
        "or leave it out of the target)"
    )


def test_a_deposit_smaller_than_every_minimum_buys_by_descending_weight_while_it_lasts() -> None:
    # Five assets at 20% each, 45 USDT to invest, a minimum cost of 10: each wants 9, under the minimum.
    # The policy: largest target first (ties by asset), each max(deficit, minimum) while the 45 lasts:
    # four buys of 10; the fifth no longer fits: its 5 stays cash, reported.
    assets = ("AAA", "BBB", "CCC", "DDD", "EEE")
    markets = {"ex": {f"{a}/USDT": market(min_cost="10") for a in assets}}
    real = folder("root", account("acc", wallet("usdt", "USDT", "45")))
    target = folder(
        "root",
        folder(
            "acc",
            *(wallet(a.lower(), a, weight=0.2) for a in assets),
            wallet("usdt", "USDT", weight=0),
            weight=1,
        ),
    )
    _, _, out = run(real, target, prices(**dict.fromkeys(assets, "1")), markets)
    assert brief(out) == [(2, f"{a}/USDT", "buy", "10") for a in assets[:4]]
    assert [(s["symbol"], s["amount"], s["reason"]) for s in out["skipped"]] == [
        ("EEE/USDT", "9", "below_min_cost")
    ]


def test_the_small_buy_policy_goes_by_target_weight_and_never_spends_the_cash_kept() -> None:
    # 30 USDT to invest (the target keeps 70 as cash): BTC wanted 18, ETH 12, with minimums of 20 and 15.
    # BTC (the larger weight) is raised to 20; ETH's 15 no longer fits in the 10 left: it stays cash, and
    # the 70 the target keeps is never spent.
    markets = {"ex": {"BTC/USDT": market(min_cost="20"), "ETH/USDT": market(min_cost="15")}}
    real = folder("root", account("acc", wallet("usdt", "USDT", "100")))
    target = folder(
        "root",
        folder(
            "acc",
            wallet("btc", "BTC", weight=0.18),
            wallet("eth", "ETH", weight=0.12),
            wallet("usdt", "USDT", weight=0.7),
            weight=1,
        ),
    )
    _, _, out = run(real, target, PRICES, markets)
    assert brief(out) == [(2, "BTC/USDT", "buy", "0.2")]
    assert [(s["symbol"], s["amount"], s["reason"]) for s in out["skipped"]] == [
        ("ETH/USDT", "1.2", "below_min_cost")
    ]

    real = folder(
        "root",
        account("a", wallet("btc", "BTC", "2"), wallet("usdt", "USDT", "0"), exchange="x1"),
        account("b", wallet("eth", "ETH", "0"), wallet("usdt", "USDT", "0"), exchange="x2"),
    )
    target = folder(
        "root",
        folder("a", wallet("btc", "BTC", weight=1), wallet("usdt", "USDT", weight=0), weight=0.25),
        folder("b", wallet("eth", "ETH", weight=1), wallet("usdt", "USDT", weight=0), weight=0.75),
    )
    _, _, out = run(real, target, PRICES)
    assert out["transfers"] == [
        {"asset": "USDT", "from": "root/a", "to": "root/b", "amount": "150", "est_value": "150"}
    ]
    assert [
        (o["account"], o["exchange"], o["symbol"], o["side"], o["amount"], o["phase"]) for o in out["orders"]
    ] == [
        ("root/a", "x1", "BTC/USDT", "sell", "1.5", 1),
        ("root/b", "x2", "ETH/USDT", "buy", "15", 2),
    ]


def test_invested_money_funds_the_buys() -> None:
    real = folder("root", account("acc", wallet("eth", "ETH", "10"), wallet("usdt", "USDT", "0")))
    target = folder(
        "root", folder("acc", wallet("eth", "ETH", weight=1), wallet("usdt", "USDT", weight=0), weight=1)
    )
    _, _, out = run(real, target, PRICES, invest=50.0)
    assert brief(out) == [(2, "ETH/USDT", "buy", "5")]
    assert out["transfers"] == []


def test_real_equal_to_desired_gives_no_orders() -> None:
    _, _, out = run(two_assets("1", "10", "100"), weights(1 / 3, 1 / 3, 1 / 3), PRICES)
    assert out["orders"] == [] and out["skipped"] == [] and out["transfers"] == []


def test_selling_a_whole_wallet_of_four_hundred_million_steps_sells_all_of_it() -> None:
    # 4300.46 / 0.00001 is 430045999.99999994 in floats: an absolute epsilon alone lost one step.
    real = folder("me", account("acct", wallet("sio", "SIO", "4300.46"), wallet("cash", "USDT", "0")))
    target = folder("me", folder("acct", wallet("cash", "USDT", weight="1"), weight="1"))
    price = {"quote": "USDT", "prices": {"SIO": "18.1109"}}
    _, _, out = run(real, target, price, {"ex": {"SIO/USDT": market(step="0.00001")}})
    assert brief(out) == [(1, "SIO/USDT", "sell", "4300.46")]


def test_an_order_of_exactly_the_minimum_amount_is_sent() -> None:
    # 10 steps of 0.000001 is 9.999999999999999e-06 in floats, which compared below 0.00001.
    real = folder("me", account("acct", wallet("cash", "USDT", "1000")))
    target = folder(
        "me",
        folder(
            "acct", wallet("cash", "USDT", weight="0.99895"), wallet("btc", "BTC", weight="0.00105"), weight=1
        ),
    )
    price = {"quote": "USDT", "prices": {"BTC": "100000"}}
    _, _, out = run(real, target, price, {"ex": {"BTC/USDT": market(step="0.000001", min_amount="0.00001")}})
    assert brief(out) == [(2, "BTC/USDT", "buy", "0.00001")]
    assert out["skipped"] == []


def test_an_empty_children_list_scales_like_an_absent_one() -> None:
    real = folder(
        "root",
        account(
            "acc",
            folder("s", wallet("a", "BTC", "1"), wallet("b", "ETH", "10")),
            wallet("usdt", "USDT", "200"),
        ),
    )
    target = folder(
        "root",
        folder("acc", folder("s", weight=0.5, children=[]), wallet("usdt", "USDT", weight=0.5), weight=1),
    )
    _, _, out = run(real, target, PRICES)
    # s holds 200 of 400 already: it scales to 200 with its 1:1 proportions kept, so nothing trades.
    assert out["orders"] == []


def planned(real: dict, target: dict, price_doc: dict, markets: dict, min_trade_value: float) -> dict:
    diff = diff_trees(parse_tree(real, "real"), parse_tree(target, "target"), Prices.parse(price_doc))
    return plan_json(plan_rebalance(diff, Markets.parse(markets), min_trade_value=min_trade_value))


def test_orders_worth_less_than_min_trade_value_are_skipped_with_the_reason() -> None:
    # 1 BTC (100) and 10 ETH (100) to 45% / 55%: sell 0.1 BTC (worth 10), buy 1 ETH (worth 10). With a
    # floor of 10 both go; with 10.01 neither does, each skipped with the reason.
    markets = {"ex": {"BTC/USDT": market(), "ETH/USDT": market()}}
    real, target = two_assets("1", "10", "0"), weights(0.45, 0.55, 0)
    assert brief(planned(real, target, PRICES, markets, 10.0)) == [
        (1, "BTC/USDT", "sell", "0.1"),
        (2, "ETH/USDT", "buy", "1"),
    ]
    out = planned(real, target, PRICES, markets, 10.01)
    assert out["orders"] == []
    assert [(s["symbol"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("BTC/USDT", "sell", "below_min_trade_value"),
        ("ETH/USDT", "buy", "below_min_trade_value"),
    ]


def test_a_small_buy_is_not_raised_to_a_minimum_worth_less_than_min_trade_value() -> None:
    # 45 USDT over five assets at 20% with a minimum cost of 10 buys four of them for 10 each (the small
    # buy policy); with a floor of 12 none is raised: a raised buy would be worth only 10.
    assets = ("AAA", "BBB", "CCC", "DDD", "EEE")
    markets = {"ex": {f"{a}/USDT": market(min_cost="10") for a in assets}}
    real = folder("root", account("acc", wallet("usdt", "USDT", "45")))
    target = folder(
        "root",
        folder(
            "acc",
            *(wallet(a.lower(), a, weight=0.2) for a in assets),
            wallet("usdt", "USDT", weight=0),
            weight=1,
        ),
    )
    price_doc = prices(**dict.fromkeys(assets, "1"))
    assert len(planned(real, target, price_doc, markets, 10.0)["orders"]) == 4
    out = planned(real, target, price_doc, markets, 12.0)
    assert out["orders"] == []
    assert {s["reason"] for s in out["skipped"]} == {"below_min_cost"}


def test_a_routed_order_worth_less_than_min_trade_value_is_not_routed() -> None:
    markets = {"ex": {"XYZ/BTC": market(step="1"), "BTC/USDT": market(step="0.0001")}}
    real = folder("root", account("acc", wallet("xyz", "XYZ", "10"), wallet("usdt", "USDT", "0")))
    target = folder(
        "root", folder("acc", wallet("xyz", "XYZ", weight=0), wallet("usdt", "USDT", weight=1), weight=1)
    )
    assert len(planned(real, target, PRICES, markets, 20.0)["orders"]) == 2  # 10 XYZ worth 20
    out = planned(real, target, PRICES, markets, 20.01)
    assert out["orders"] == []
    assert out["skipped"] == [
        {
            "path": "root/acc/xyz",
            "symbol": "XYZ/BTC",
            "side": "sell",
            "amount": "10",
            "reason": "below_min_trade_value",
        }
    ]


def test_one_markets_object_plans_each_portfolio_with_its_own_assets_markets() -> None:
    """The planner remembers route tables per `Markets` (a replay plans hundreds of times with one); two
    portfolios whose (exchange, quote, asset) keys coincide as numbers (BTC and ETH are both asset 0 of
    their own diff) still get their own markets."""
    markets = Markets.parse({"ex": {"BTC/USDT": market(step="7"), "ETH/USDT": market(step="3")}})
    plans = []
    for asset in ("BTC", "ETH", "BTC"):
        real = folder("root", account("acc", wallet("coin", asset, "0"), wallet("usdt", "USDT", "10000")))
        target = folder(
            "root",
            folder("acc", wallet("coin", asset, weight=0.5), wallet("usdt", "USDT", weight=0.5), weight=1),
        )
        diff = diff_trees(parse_tree(real, "real"), parse_tree(target, "target"), Prices.parse(PRICES))
        plans.append([(o.symbol, o.amount) for o in plan_rebalance(diff, markets).orders()])
    # 5000 USDT at 100 / 10 (no fee), truncated to the step: 49 BTC (7 steps of 7), 498 ETH (166 of 3).
    assert plans == [
        [("BTC/USDT", Decimal("49"))],
        [("ETH/USDT", Decimal("498"))],
        [("BTC/USDT", Decimal("49"))],
    ]

"""Where to trade, with worked numbers: per-venue prices, pools, moves instead of round trips, networks
(fees, minimums, disabled), the cheapest route of up to three markets, reasons, savings and costs."""

from __future__ import annotations

import gc
import sys
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from rebal import render
from rebal.core.errors import InputError
from rebal.core.market import Markets
from rebal.core.networks import Networks
from rebal.core.plan import plan_rebalance
from rebal.core.where import _free_names, _plan_where, plain_plan
from rebal.render import plan_json
from tests.support import D, account, folder, prices, run, wallet

Doc = dict[str, Any]


def market(step: str = "0.001", fee: str = "0.001", min_amount: str = "0", min_cost: str = "0") -> Doc:
    return {"amount_step": step, "min_amount": min_amount, "min_cost": min_cost, "fee_rate": fee}


def two_venues(binance: list[Doc], coinbase: list[Doc]) -> Doc:
    return folder(
        "alice",
        folder("binance", account("spot", *binance, exchange="binance"), kind="exchange"),
        folder("coinbase", account("spot", *coinbase, exchange="coinbase"), kind="exchange"),
    )


def pool(**weights: str) -> Doc:
    return {"name": "alice", "pool": weights}


def quotes(**venues: tuple[str, str]) -> Doc:
    """Venue prices of BTC: {exchange: (bid, ask)}."""
    return {name: {"BTC": {"bid": bid, "ask": ask}} for name, (bid, ask) in venues.items()}


def network(
    btc_fee: str = "0.001", usdt_fee: str = "1", btc_min: str = "0", enabled: bool = True, **extra: Any
) -> Doc:
    side = {
        "BTC": {"fee": btc_fee, "min_amount": btc_min, "enabled": enabled},
        "USDT": {"fee": usdt_fee},
    }
    deposits = {"BTC": {"enabled": True}, "USDT": {"enabled": True}}
    return {
        "withdrawals": {"binance": side, "coinbase": side, **extra.get("withdrawals", {})},
        "deposits": {"binance": deposits, "coinbase": deposits, **extra.get("deposits", {})},
    }


def brief(out: Doc) -> list[tuple[Any, ...]]:
    return [(o["account"].split("/")[1], o["side"], o["amount"], o["reason"]) for o in out["orders"]]


def moved(out: Doc) -> list[tuple[Any, ...]]:
    return [
        (t["asset"], t["from"].split("/")[1], t["to"].split("/")[1], t["amount"], t["fee"])
        for t in out["transfers"]
    ]


MARKETS = {"binance": {"BTC/USDT": market()}, "coinbase": {"BTC/USDT": market()}}


def test_a_sell_is_estimated_at_the_venue_bid_and_a_buy_at_its_ask_with_costs_against_the_reference() -> None:
    real = folder("r", account("acc", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "0")))
    target = folder(
        "r", folder("acc", wallet("btc", "BTC", weight="50%"), wallet("usdt", "USDT", weight="50%"), weight=1)
    )
    price_doc = {**prices(BTC="100"), "venues": {"ex": {"BTC": {"bid": "99", "ask": "101"}}}}
    _, _, out = run(real, target, price_doc, {"ex": {"BTC/USDT": market(step="0.01")}})
    (sell,) = out["orders"]
    # 0.5 BTC at the bid: 49.5 USDT, fee 0.0495; the spread against the reference 0.5 x (100 - 99).
    assert (sell["est_price"], sell["est_cost"], sell["est_fee"]) == ("99", "49.5", "0.0495")
    assert (sell["reason"], sell["est_saving"], sell["after_transfer"]) == ("in_place", "0", None)
    assert out["costs"] == {"fees": "0.0495", "spread": "0.5", "withdrawal_fees": "0", "total": "0.5495"}

    real = folder("r", account("acc", wallet("btc", "BTC", "0"), wallet("usdt", "USDT", "100")))
    _, _, out = run(real, target, price_doc, {"ex": {"BTC/USDT": market(step="0.01")}})
    (buy,) = out["orders"]
    # The 0.5 BTC the target asks for, at the ask of 101: 50.5 USDT (and 0.0505 fee) of the 100 held.
    assert (buy["side"], buy["amount"], buy["est_price"], buy["est_cost"]) == ("buy", "0.5", "101", "50.5")


def test_a_pool_sells_where_the_bid_net_of_fees_is_highest_not_where_the_bid_is() -> None:
    real = two_venues(
        [wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "0")],
        [wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "0")],
    )
    price_doc = {**prices(BTC="100"), "venues": quotes(binance=("100", "100"), coinbase=("100.5", "100.5"))}
    markets = {"binance": {"BTC/USDT": market(fee="0.001")}, "coinbase": {"BTC/USDT": market(fee="0.01")}}
    _, _, out = run(real, pool(BTC="50%", USDT="50%"), price_doc, markets)
    # Net bids: binance 100 x 0.999 = 99.9, coinbase 100.5 x 0.99 = 99.495: 1 BTC is sold on binance.
    assert brief(out) == [("binance", "sell", "1", "best_bid")]
    # The plain choice sells 0.5 on each (their holdings): 0.5 x (99.9 - 99.495) = 0.2025 saved.
    assert out["orders"][0]["est_saving"] == "0.2025"
    assert out["transfers"] == []
    assert out["costs"] == {"fees": "0.1", "spread": "0", "withdrawal_fees": "0", "total": "0.1"}


def relocation_case(btc_fee: str) -> Doc:
    real = two_venues(
        [wallet("btc", "BTC", "1.5")], [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "0")]
    )
    price_doc = {**prices(BTC="100"), "venues": quotes(binance=("100", "100"), coinbase=("102", "102"))}
    return run(real, pool(BTC="50%", USDT="50%"), price_doc, MARKETS, network=network(btc_fee=btc_fee))[2]


def test_a_pool_moves_what_it_sells_to_the_better_bid_when_it_fetches_more_there_after_the_fee() -> None:
    # 2 BTC, half to be sold. Coinbase (bid 102) sells its own 0.5; binance's 0.5 moves there when
    # (0.5 - fee) x 102 > 0.5 x 100 (both at 0.1% fee), i.e. a fee under 0.0098 BTC.
    out = relocation_case("0.001")
    assert moved(out) == [("BTC", "binance", "coinbase", "0.5", "0.001")]
    transfer = out["transfers"][0]
    assert (transfer["reason"], transfer["est_saving"], transfer["network"]) == (
        "to_best_bid",
        "-0.1",
        "default",
    )
    # Coinbase sells its 0.5 and the 0.499 that arrives, once it has arrived.
    assert brief(out) == [("coinbase", "sell", "0.999", "best_bid")]
    assert out["orders"][0]["after_transfer"] == 0
    # Against the plain choice (0.75 on binance, 0.25 on coinbase: a net bid of (1.5 x 0.999 + 0.5 x
    # 1.01898) / 2 = 1.003995 of the reference): 0.999 x 100 x (1.01898 - 1.003995).
    assert D(out["orders"][0]["est_saving"]) == Decimal("1.4970015")
    assert out["costs"]["withdrawal_fees"] == "0.1"


def test_a_pool_sells_in_place_when_the_network_fee_eats_the_better_bid() -> None:
    out = relocation_case("0.02")  # 0.48 x 102 = 48.96 < 0.5 x 100
    assert out["transfers"] == []
    assert brief(out) == [("binance", "sell", "0.5", "in_place"), ("coinbase", "sell", "0.5", "best_bid")]


def buy_case(net: Doc | None) -> Doc:
    real = two_venues([wallet("usdt", "USDT", "150")], [wallet("usdt", "USDT", "50")])
    price_doc = {**prices(BTC="100"), "venues": quotes(binance=("101", "101"), coinbase=("100.5", "100.5"))}
    return run(real, pool(BTC="50%", USDT="50%"), price_doc, MARKETS, network=net)[2]


def test_a_pool_buys_where_the_ask_plus_fees_is_lowest_and_the_money_follows() -> None:
    out = buy_case(None)
    # 1 BTC to buy: coinbase asks 100.5 (binance 101). Coinbase holds 50 USDT: 50 come from binance.
    assert moved(out) == [("USDT", "binance", "coinbase", "50", "0")]
    assert out["transfers"][0]["reason"] == "to_best_ask"
    # 100 USDT buy 100 / (100.5 x 1.001) = 0.994 BTC (step 0.001), once the money has arrived.
    assert brief(out) == [("coinbase", "buy", "0.994", "best_ask")]
    assert out["orders"][0]["after_transfer"] == 0
    # Plain: 0.75 bought on binance and 0.25 on coinbase (their money): per BTC 0.75 x 0.5 x 1.001 cheaper.
    assert D(out["orders"][0]["est_saving"]) == Decimal("0.994") * 100 * Decimal("0.75") * (
        Decimal("1.01101") - Decimal("1.006005")
    )
    # The pool's new BTC wallet on coinbase, where it had none.
    assert any(n["path"] == "alice/coinbase/spot/btc" for n in render_nodes(out["diff"]))


def test_a_pool_buys_where_its_money_sits_when_moving_the_money_costs_more_than_it_saves() -> None:
    # Moving 50 USDT costs 1 USDT; buying on coinbase instead of binance saves 0.75 x 0.505 = 0.38. Each
    # account buys with its own money, the lowest ask first: coinbase 50 / (100.5 x 1.001) = 0.497, binance
    # the rest, 0.50298 (0.502 at step 0.001). In proportion to the money (binance 0.75, coinbase 0.25, as
    # before) cost 0.975875, more than with no network to move the money at all.
    out = buy_case(network(usdt_fee="1"))
    assert out["transfers"] == []
    assert brief(out) == [("binance", "buy", "0.502", "in_place"), ("coinbase", "buy", "0.497", "best_ask")]
    # Fees 0.502 x 101 x 0.001 + 0.497 x 100.5 x 0.001; spreads 0.502 x 1 + 0.497 x 0.5.
    assert out["costs"] == {
        "fees": "0.1006505",
        "spread": "0.7505",
        "withdrawal_fees": "0",
        "total": "0.8511505",
    }


def round_trip_case(net: Doc | None = None) -> Doc:
    """The issue's case: BTC on both venues, the target shifts 0.1 BTC of value from coinbase to binance."""
    real = two_venues(
        [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "10000")],
        [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "10000")],
    )
    target = folder(
        "alice",
        folder(
            "binance",
            folder(
                "spot", wallet("btc", "BTC", weight="72%"), wallet("usdt", "USDT", weight="28%"), weight=1
            ),
            weight="62.5%",
        ),
        folder(
            "coinbase",
            folder(
                "spot", wallet("btc", "BTC", weight="80%"), wallet("usdt", "USDT", weight="20%"), weight=1
            ),
            weight="37.5%",
        ),
    )
    price_doc = {
        **prices(BTC="60000"),
        "venues": quotes(binance=("59970", "60030"), coinbase=("59970", "60030")),
    }
    markets = {name: {"BTC/USDT": market(step="0.0001")} for name in ("binance", "coinbase")}
    return run(real, target, price_doc, markets, network=net)[2]


def test_the_plain_plan_sells_in_one_account_and_buys_back_in_the_other() -> None:
    out = round_trip_case()
    assert brief(out) == [("coinbase", "sell", "0.1", "in_place"), ("binance", "buy", "0.1", "in_place")]
    assert moved(out) == [("USDT", "coinbase", "binance", "10000", "0")]
    # Two fees (5.997 + 6.003) and two spreads (3 + 3): 18.
    assert out["costs"] == {"fees": "12", "spread": "6", "withdrawal_fees": "0", "total": "18"}


def test_an_asset_is_moved_instead_of_a_round_trip_when_the_fee_is_below_its_fees_and_spreads() -> None:
    out = round_trip_case(network(btc_fee="0.0002", usdt_fee="1"))  # 12 USD < 18
    assert out["orders"] == []
    assert moved(out) == [
        ("BTC", "coinbase", "binance", "0.1", "0.0002"),
        ("USDT", "coinbase", "binance", "4000", "1"),
    ]
    assert [(t["reason"], t["est_saving"], t["network"]) for t in out["transfers"]] == [
        ("cheaper_than_round_trip", "6", "default"),
        ("funding", "-1", "default"),
    ]
    assert out["costs"] == {"fees": "0", "spread": "0", "withdrawal_fees": "13", "total": "13"}


def test_a_round_trip_stays_when_the_withdrawal_fee_is_above_its_fees_and_spreads() -> None:
    out = round_trip_case(network(btc_fee="0.0004", usdt_fee="1"))  # 24 USD > 18
    assert brief(out) == [("coinbase", "sell", "0.1", "in_place"), ("binance", "buy", "0.1", "in_place")]
    assert moved(out)[0][:3] == ("USDT", "coinbase", "binance")


def test_nothing_is_moved_below_a_network_minimum_or_over_a_disabled_network() -> None:
    below = round_trip_case(network(btc_fee="0.0002", btc_min="0.2"))
    disabled = round_trip_case(network(btc_fee="0.0002", enabled=False))
    for out in (below, disabled):
        assert brief(out) == [("coinbase", "sell", "0.1", "in_place"), ("binance", "buy", "0.1", "in_place")]
        assert [t["asset"] for t in out["transfers"]] == ["USDT"]


def test_money_that_no_network_can_move_stays_and_the_transfer_is_reported_skipped() -> None:
    net = network(btc_fee="0.0004")
    net["withdrawals"]["coinbase"] = {
        **net["withdrawals"]["coinbase"],
        "USDT": {"fee": "1", "enabled": False},
    }
    out = round_trip_case(net)
    assert out["transfers"] == []
    skip = next(s for s in out["skipped"] if s["side"] == "transfer")
    assert (skip["path"], skip["symbol"], skip["amount"], skip["reason"]) == (
        "alice/coinbase/spot",
        "USDT",
        "10000",
        "network_disabled",
    )
    # Binance's buy waits for nothing and is paid from its own USDT.
    buy = next(o for o in out["orders"] if o["side"] == "buy")
    assert buy["after_transfer"] is None


def test_the_cheapest_network_open_at_both_ends_is_taken() -> None:
    net = network(btc_fee="0.0004")
    usdt = {"networks": {"TRC20": {"fee": "1"}, "ERC20": {"fee": "5"}}}
    net["withdrawals"]["coinbase"] = {**net["withdrawals"]["coinbase"], "USDT": usdt}
    # Binance takes USDT deposits on ERC20 only: TRC20, cheaper, is closed at the destination.
    net["deposits"]["binance"] = {
        **net["deposits"]["binance"],
        "USDT": {"networks": {"TRC20": {"enabled": False}, "ERC20": {"enabled": True}}},
    }
    out = round_trip_case(net)
    (transfer,) = out["transfers"]
    assert (transfer["asset"], transfer["network"], transfer["fee"]) == ("USDT", "ERC20", "5")


ROUTE_PRICES = prices(ABC="1", ETH="10", BTC="100", XYZ="2")


def routes_case(markets: Doc, net: Doc | None) -> Doc:
    real = folder("r", account("acc", wallet("abc", "ABC", "100"), wallet("usdt", "USDT", "0")))
    target = folder(
        "r", folder("acc", wallet("abc", "ABC", weight=0), wallet("usdt", "USDT", weight=1), weight=1)
    )
    return run(real, target, ROUTE_PRICES, {"ex": markets}, network=net)[2]


def test_a_route_takes_the_cheapest_of_up_to_three_markets() -> None:
    markets = {
        "ABC/ETH": market(step="0.0001"),
        "ETH/BTC": market(step="0.0001"),
        "BTC/USDT": market(step="0.0001"),
        "ABC/XYZ": market(step="0.0001"),
        "XYZ/USDT": market(step="0.0001", fee="0.05"),
    }
    plain = routes_case(markets, None)
    # Without where-mode inputs: one intermediate, the alphabetically first (XYZ), whatever it costs.
    assert [o["symbol"] for o in plain["orders"]] == ["ABC/XYZ", "XYZ/USDT"]
    out = routes_case(markets, {})
    # ABC -> ETH -> BTC -> USDT at 0.1% a leg (0.997) beats ABC -> XYZ -> USDT at 0.1% and 5% (0.949).
    assert [(o["symbol"], o["side"], o["amount"], o["reason"]) for o in out["orders"]] == [
        ("ABC/ETH", "sell", "100", "cheapest_route"),
        ("ETH/BTC", "sell", "9.99", "cheapest_route"),
        ("BTC/USDT", "sell", "0.998", "cheapest_route"),
    ]
    # The saving against the plain route, on the asset's own leg: 100 x 1 x (0.997003 - 0.94905).
    assert abs(D(out["orders"][0]["est_saving"]) - Decimal("4.7953")) < Decimal("0.000001")


def test_routes_of_the_same_rate_are_taken_by_the_intermediates_names() -> None:
    markets = {
        "ABC/XYZ": market(step="0.0001"),
        "XYZ/USDT": market(step="0.0001"),
        "ABC/ETH": market(step="0.0001"),
        "ETH/USDT": market(step="0.0001"),
    }
    out = routes_case(markets, {})
    assert [o["symbol"] for o in out["orders"]] == ["ABC/ETH", "ETH/USDT"]


def test_the_same_where_input_gives_byte_identical_output() -> None:
    def text() -> bytes:
        real = two_venues(
            [wallet("btc", "BTC", "1.5")], [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "0")]
        )
        price_doc = {**prices(BTC="100"), "venues": quotes(binance=("100", "100"), coinbase=("102", "102"))}
        _, plan, _ = run(real, pool(BTC="50%", USDT="50%"), price_doc, MARKETS, network=network())
        return b"".join(render.plan_chunks(plan))

    first = text()
    assert first == text()
    assert b'"costs":' in first


def test_a_plan_without_venues_networks_or_pools_has_none_of_their_fields() -> None:
    real = folder("r", account("acc", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "0")))
    target = folder(
        "r", folder("acc", wallet("btc", "BTC", weight="50%"), wallet("usdt", "USDT", weight="50%"), weight=1)
    )
    _, _, plain = run(real, target, prices(BTC="100"), {"ex": {"BTC/USDT": market()}})
    _, _, empty = run(real, target, {**prices(BTC="100"), "venues": {}}, {"ex": {"BTC/USDT": market()}})
    assert plain == empty
    assert set(plain) == {"diff", "orders", "transfers", "skipped"}
    assert set(plain["orders"][0]) == {
        "account",
        "exchange",
        "symbol",
        "side",
        "amount",
        "est_price",
        "est_cost",
        "est_fee",
        "phase",
    }


def test_a_bank_account_never_trades_and_its_money_moves_by_transfer() -> None:
    real = folder(
        "alice",
        {
            "name": "bank",
            "kind": "bank",
            "exchange": "bank",
            "quote": "USD",
            "children": [wallet("usd", "USD", "1000")],
        },
        account(
            "broker", wallet("spy", "SPY", "0"), wallet("usd", "USD", "0"), exchange="broker", quote="USD"
        ),
    )
    target = folder(
        "alice",
        folder("bank", wallet("usd", "USD", weight=1), weight="0%"),
        folder("broker", wallet("spy", "SPY", weight=1), wallet("usd", "USD", weight=0), weight="100%"),
    )
    net = {"withdrawals": {"bank": {"USD": {"fee": "0"}}}, "deposits": {"broker": {"USD": {}}}}
    _, _, out = run(
        real,
        target,
        {"quote": "USD", "prices": {"SPY": "500"}},
        {"broker": {"SPY/USD": market(step="1", fee="0")}},
        network=net,
    )
    assert [(t["asset"], t["from"], t["to"], t["amount"]) for t in out["transfers"]] == [
        ("USD", "alice/bank", "alice/broker", "1000")
    ]
    assert [(o["account"], o["symbol"], o["amount"], o["after_transfer"]) for o in out["orders"]] == [
        ("alice/broker", "SPY/USD", "2", 0)
    ]


@pytest.mark.parametrize(
    ("target", "where", "message"),
    [
        (
            {"name": "a", "pool": {"BTC": "60%", "USDT": "50%"}},
            "a",
            "pool weights sum to 110%, expected 100%",
        ),
        (
            {"name": "a", "pool": {"BTC": "1"}, "children": [{"name": "x", "asset": "BTC", "weight": 1}]},
            "a",
            "a pool lists no children: its assets are held anywhere in the accounts below it",
        ),
        ({"name": "a", "pool": {"BTC": "120%"}}, "a", "pool weight of BTC '120%' is not within 0..100%"),
    ],
)
def test_a_malformed_pool_is_refused_naming_the_node(target: Doc, where: str, message: str) -> None:
    real = folder("a", account("acc", wallet("btc", "BTC", "1")))
    with pytest.raises(InputError) as raised:
        run(real, target, prices(BTC="100"))
    assert (raised.value.where, raised.value.message) == (where, message)


def test_a_pool_over_accounts_of_different_quotes_is_refused() -> None:
    real = folder(
        "a",
        account("x", wallet("btc", "BTC", "1"), exchange="binance"),
        account("y", wallet("btc", "BTC", "1"), exchange="kraken", quote="USD"),
    )
    with pytest.raises(InputError, match="the accounts of a pool share one quote"):
        run(real, {"name": "a", "pool": {"BTC": "1"}}, prices(BTC="100"))


def test_a_pool_on_a_node_the_real_tree_lacks_is_refused_naming_it() -> None:
    real = folder("f", folder("alice", account("acc", wallet("btc", "BTC", "1"))))
    target = {
        "name": "f",
        "children": [
            {"name": "alice", "weight": "50%", "pool": {"BTC": "100%"}},
            {"name": "carol", "weight": "50%", "pool": {"BTC": "100%"}},
        ],
    }
    with pytest.raises(InputError) as raised:
        run(real, target, prices(BTC="100"))
    assert (raised.value.where, raised.value.message) == (
        "f/carol",
        "a pool needs the accounts it holds below it in the real tree",
    )


def test_a_pool_naming_an_asset_without_a_price_is_refused_naming_the_pool() -> None:
    real = folder(
        "f",
        folder("alice", account("acc", wallet("btc", "BTC", "1"))),
        folder("bob", account("acc", wallet("btc", "BTC", "1"))),
    )
    target = {
        "name": "f",
        "children": [
            {"name": "alice", "weight": "50%", "pool": {"BTC": "50%", "USDT": "50%"}},
            {"name": "bob", "weight": "50%", "pool": {"BTC": "50%", "ETH": "25%", "USDT": "25%"}},
        ],
    }
    with pytest.raises(InputError) as raised:
        run(real, target, prices(BTC="100"))
    assert (raised.value.where, raised.value.message) == (
        "prices.ETH",
        "no price for asset ETH (used at the pool at f/bob)",
    )


def render_nodes(node: Doc) -> list[Doc]:
    found = [node]
    for child in node["children"]:
        found.extend(render_nodes(child))
    return found


def test_a_wallet_a_pool_adds_takes_a_free_name_beside_a_child_of_the_same_name() -> None:
    # Binance's cash wallet is named "btc"; the pool buys BTC there (where the money is, at the lower
    # ask): the wallet it adds for it is "btc-2".
    real = two_venues(
        [wallet("btc", "USDT", "150")], [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "0")]
    )
    price_doc = {**prices(BTC="100"), "venues": quotes(binance=("99", "100"), coinbase=("101", "102"))}
    _, plan, out = run(real, pool(BTC="50%", USDT="50%"), price_doc, MARKETS)
    assert brief(out) == [("binance", "buy", "0.5", "in_place")]
    tree = plan.diff.tree
    added = [
        tree.path(node)
        for node in range(len(tree))
        if tree.real_index[node] >= 0 and tree.names[node] == "btc-2"
    ]
    assert added == ["alice/binance/spot/btc-2"]


def test_wallets_added_under_one_parent_with_one_name_take_free_names_in_turn() -> None:
    # The check that most names are free looks at the pairs added too: two "eth" under one account
    # (and one under another) become "eth", "eth-2" there, and "eth" beside it.
    real = two_venues([wallet("btc", "USDT", "150")], [wallet("usdt", "USDT", "1")])
    _, plan, _ = run(real, pool(BTC="50%", USDT="50%"), prices(BTC="100"), MARKETS)
    tree = plan.diff.tree
    binance, coinbase = sorted(tree.accounts)
    parent = np.array([binance, coinbase, binance], dtype=np.int64)
    assert _free_names(tree, parent, ["eth", "eth", "eth"]) == ["eth", "eth", "eth-2"]
    assert _free_names(tree, parent[:2], ["eth", "eth"]) == ["eth", "eth"]


@pytest.mark.parametrize("enabled", [True, False])
def test_where_planning_runs_with_the_collector_paused_and_leaves_it_as_it_found_it(enabled: bool) -> None:
    # A where plan makes thousands of moves and transfers, none in a cycle: with the collector on and
    # a threshold of one new object, the planning itself would otherwise collect again and again.
    real = two_venues(
        [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "100")],
        [wallet("btc", "BTC", "0.5"), wallet("usdt", "USDT", "0")],
    )
    price_doc = {**prices(BTC="100"), "venues": quotes(binance=("99", "100"), coinbase=("101", "102"))}
    diff, _, out = run(real, pool(BTC="30%", USDT="70%"), price_doc, MARKETS)
    assert out["orders"]
    markets = Markets.parse(MARKETS)
    inside: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        frame = sys._getframe(1)
        while phase == "start" and frame is not None:
            if frame.f_code is _plan_where.__code__:
                inside.append(phase)
            frame = frame.f_back

    threshold = gc.get_threshold()
    was = gc.isenabled()
    gc.callbacks.append(count)
    (gc.enable if enabled else gc.disable)()
    gc.set_threshold(1)
    try:
        again = plan_rebalance(diff, markets)
        left = gc.isenabled()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(count)
        (gc.enable if was else gc.disable)()
    assert inside == []
    assert left is enabled
    assert plan_json(again) == out


def test_a_move_whose_money_costs_a_withdrawal_fee_is_not_kept_when_the_plain_plan_is_cheaper() -> None:
    # Found by the property that pools never cost more than the plain plan: no pool is better off
    # optimised, but the round trip of BBB (sold at ex0 for the pool, bought at ex2 by "solo") becomes a
    # free move, and the money ex2 then lacks comes from ex1 for a withdrawal fee of 1 USDT, more than
    # the round trip's spread it saves. The plain plan (sell and buy in place) is kept.
    real = folder(
        "root",
        folder(
            "p",
            account("acc0", wallet("bbb", "BBB", "0.4169"), wallet("cash", "USDT", "0"), exchange="ex0"),
            account("acc1", wallet("ddd", "DDD", "2.6276"), wallet("cash", "USDT", "0"), exchange="ex1"),
        ),
        account(
            "solo",
            wallet("bbb", "BBB", "0"),
            wallet("ddd", "DDD", "0"),
            wallet("cash", "USDT", "4706.42"),
            exchange="ex2",
        ),
    )
    target = folder(
        "root",
        {"name": "p", "weight": "33.89%", "pool": {"AAA": "100%"}},
        folder(
            "solo",
            wallet("bbb", "BBB", weight="0.03%"),
            wallet("ddd", "DDD", weight="1.2%"),
            wallet("cash", "USDT", weight="98.77%"),
            weight="66.11%",
        ),
    )
    price_doc = {
        **prices(AAA="0.50", BBB="655.30", DDD="816.32"),
        "venues": {"ex0": {"BBB": {"bid": "655.234470", "ask": "655.234470"}}},
    }
    free = market(step="0.0001", fee="0")
    markets = {ex: {f"{a}/USDT": free for a in ("AAA", "BBB", "DDD")} for ex in ("ex0", "ex1", "ex2")}
    net = {
        "withdrawals": {"ex0": {"BBB": {"fee": "0"}}, "ex1": {"USDT": {"fee": "1"}}},
        "deposits": {"ex2": {"BBB": {"enabled": True}}, "ex0": {"USDT": {"enabled": True}}},
    }
    diff, plan, out = run(real, target, price_doc, markets, network=net)
    plain = plain_plan(diff, Markets.parse(markets), Networks.parse(net))
    assert plan.notes is not None and plain.notes is not None
    assert plan.notes.total <= plain.notes.total
    assert out["costs"]["withdrawal_fees"] == "0"

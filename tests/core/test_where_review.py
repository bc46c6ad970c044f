"""Where to trade, defects an independent check found (issue 14's review), with worked numbers: a
buy-only rebalance sells nothing in a pool either."""

from __future__ import annotations

from typing import Any

from rebal.core.market import Markets
from rebal.core.networks import Networks
from rebal.core.partial import buy_only
from rebal.core.plan import plan_rebalance
from rebal.render import plan_json
from tests.core.test_where import brief, market, moved, network, pool, two_venues
from tests.core.test_where_conversion import bank_to_binance
from tests.support import account, folder, prices, run, wallet

Doc = dict[str, Any]


def buy_only_case(net: Doc | None) -> tuple[Doc, Doc]:
    """Binance holds 1 BTC, coinbase 60 USDT; the pool wants BTC 50%, ETH 25%, USDT 25% of 160: the full
    plan and the buy-only one."""
    real = two_venues([wallet("btc", "BTC", "1")], [wallet("usdt", "USDT", "60")])
    price_doc = {
        **prices(BTC="100", ETH="10"),
        "venues": {
            "binance": {"ETH": {"bid": "10", "ask": "10"}},
            "coinbase": {"ETH": {"bid": "10.1", "ask": "10.1"}},
        },
    }
    markets = {venue: {"BTC/USDT": market(), "ETH/USDT": market()} for venue in ("binance", "coinbase")}
    diff, _, full = run(real, pool(BTC="50%", ETH="25%", USDT="25%"), price_doc, markets, network=net)
    networks = Networks.parse(net) if net is not None else None
    return full, plan_json(plan_rebalance(buy_only(diff), Markets.parse(markets), networks=networks))


def test_a_buy_only_rebalance_sells_nothing_in_a_pool_and_buys_with_the_free_cash_only() -> None:
    full, out = buy_only_case(None)
    # The full plan sells the 20 of BTC above its 80 and buys 40 of ETH (at binance's lower ask).
    assert brief(full) == [("binance", "sell", "0.2", "best_bid"), ("binance", "buy", "3.994", "best_ask")]
    # Buy-only: no sell. The money's target is 40 of the 60 held: 20 buy ETH, at binance's lower ask,
    # sent there from coinbase's free cash (20 / (10 x 1.001) = 1.998 at step 0.001).
    assert brief(out) == [("binance", "buy", "1.998", "best_ask")]
    assert moved(out) == [("USDT", "coinbase", "binance", "20", "0")]
    assert all(order["side"] == "buy" for order in out["orders"])


def test_a_buy_only_rebalance_with_a_network_sells_nothing_in_a_pool() -> None:
    full, out = buy_only_case(network(usdt_fee="1"))
    assert any(order["side"] == "sell" for order in full["orders"])
    # Moving the 20 USDT would cost 1: coinbase buys the 20 of ETH (2 at the reference) where its money
    # sits, as a plain buy-only plan sizes a buy.
    assert brief(out) == [("coinbase", "buy", "2", "in_place")]
    assert out["transfers"] == []


def test_a_buy_only_rebalance_without_cash_above_target_plans_nothing_in_a_pool() -> None:
    real = two_venues([wallet("btc", "BTC", "1.5")], [wallet("btc", "BTC", "0.5")])
    price_doc = {**prices(BTC="100"), "venues": {"coinbase": {"BTC": {"bid": "102", "ask": "102"}}}}
    markets = {venue: {"BTC/USDT": market()} for venue in ("binance", "coinbase")}
    diff, _, full = run(real, pool(BTC="50%", USDT="50%"), price_doc, markets, network=network())
    assert full["orders"] and full["transfers"]  # 1 BTC sold, binance's share moved to the better bid
    out = plan_json(
        plan_rebalance(buy_only(diff), Markets.parse(markets), networks=Networks.parse(network()))
    )
    assert (out["orders"], out["transfers"]) == ([], [])


def test_a_buy_only_rebalance_sells_nothing_beside_a_pool_that_adds_a_wallet() -> None:
    # Kraken's 300 of ETH is above its half of 560 (100 invested): the full plan sells 20 of it. Buy-only,
    # the 55 of cash above target buy into the pool, which adds an ETH wallet on coinbase (the diff is made
    # again with it): kraken keeps its ETH.
    real = folder(
        "alice",
        folder(
            "crypto",
            account("binance", wallet("btc", "BTC", "1"), exchange="binance"),
            account("coinbase", wallet("usdt", "USDT", "60"), exchange="coinbase"),
        ),
        account("kraken", wallet("eth", "ETH", "30"), exchange="kraken"),
    )
    target = folder(
        "alice",
        {"name": "crypto", "weight": "50%", "pool": {"BTC": "50%", "ETH": "25%", "USDT": "25%"}},
        folder("kraken", wallet("eth", "ETH", weight="100%"), weight="50%"),
    )
    markets = {
        venue: {"BTC/USDT": market(), "ETH/USDT": market()} for venue in ("binance", "coinbase", "kraken")
    }
    diff, _, full = run(real, target, prices(BTC="100", ETH="10"), markets, invest=100)
    assert ("alice/kraken", "sell", "2") in [(o["account"], o["side"], o["amount"]) for o in full["orders"]]
    out = plan_json(plan_rebalance(buy_only(diff), Markets.parse(markets)))
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [
        ("alice/crypto/coinbase", "buy", "0.3"),
        ("alice/crypto/coinbase", "buy", "6.5"),
    ]
    assert out["transfers"] == []


# Bob's bank (20000 USDT), binance (0.3 BTC, 5 ETH, 1000 USDT) and kraken (0.2 BTC, 3000 USDT), all in one
# pool of BTC 40%, ETH 30%, USDT 30% of 69000: 0.04 BTC to sell, 1.9 ETH to buy.
BOB = folder(
    "bob",
    {"name": "bank", "kind": "bank", "quote": "USDT", "children": [wallet("cash", "USDT", "20000")]},
    account(
        "binance",
        wallet("btc", "BTC", "0.3"),
        wallet("eth", "ETH", "5"),
        wallet("usdt", "USDT", "1000"),
        exchange="binance",
    ),
    account("kraken", wallet("btc", "BTC", "0.2"), wallet("usdt", "USDT", "3000"), exchange="kraken"),
)
BOB_PRICES = {
    **prices(BTC="60000", ETH="3000"),
    "venues": {
        "binance": {"BTC": {"bid": "59990", "ask": "60010"}, "ETH": {"bid": "2999", "ask": "3001"}},
        "kraken": {"BTC": {"bid": "60050", "ask": "60080"}, "ETH": {"bid": "2995", "ask": "3004"}},
    },
}
BOB_MARKETS = {
    "binance": {"BTC/USDT": market("0.00001", "0.001"), "ETH/USDT": market("0.0001", "0.001")},
    "kraken": {"BTC/USDT": market("0.00001", "0.0026"), "ETH/USDT": market("0.0001", "0.0026")},
}


def bob(net: Doc | None) -> Doc:
    return run(
        BOB,
        {"name": "bob", "pool": {"BTC": "40%", "ETH": "30%", "USDT": "30%"}},
        BOB_PRICES,
        BOB_MARKETS,
        network=net,
    )[2]


def test_a_pool_whose_money_no_network_moves_still_sells_at_the_best_bid_and_buys_at_the_best_ask() -> None:
    # Net bids: binance 59990 x 0.999 = 59930.01, kraken 60050 x 0.9974 = 59893.87: binance sells the 0.04.
    # Asks plus fees: binance 3001 x 1.001 = 3004.00, kraken 3004 x 1.0026 = 3011.81. Without a network
    # file the money follows to binance (no fee); with an empty one nothing can move, so binance buys all
    # its own 1000 + 2397.20 the sell brings pay for (3397.20 / 3004.001 = 1.1308 at step 0.0001) and
    # kraken the rest of the 1.9 with its own money. Before, the plan fell back to the plain one: kraken
    # sold 0.016 BTC and bought 1.1756 ETH.
    free = bob(None)
    assert [(o["account"], o["side"], o["amount"]) for o in free["orders"]] == [
        ("bob/binance", "sell", "0.04"),
        ("bob/binance", "buy", "1.8965"),
    ]
    out = bob({})
    assert brief(out) == [
        ("binance", "sell", "0.04", "best_bid"),
        ("binance", "buy", "1.1308", "best_ask"),
        ("kraken", "buy", "0.7681", "in_place"),
    ]
    assert (out["transfers"], out["skipped"]) == ([], [])
    assert out["costs"]["total"] == "16.39549904"  # the plain plan's 20.16007054


def test_a_pool_whose_money_moves_dear_sells_at_the_best_bid_and_buys_with_its_money_where_it_sits() -> None:
    # Money moves, but at 25 USDT from the bank and 2.5 from kraken: more than buying at binance saves.
    # The sell stays at binance's best bid; the 1.9 ETH are bought where the money sits after it, each
    # account with its own at the lowest ask first: binance 1.1308, kraken 0.7681, as when no network moves
    # money (16.39549904). In proportion (binance 3400, kraken 3000: 1.0093 and 0.8906, as before) the plan
    # cost 17.35615154: a network moving money dear made it dearer than no network.
    net = {
        "withdrawals": {"bank": {"USDT": {"fee": "25"}}, "kraken": {"USDT": {"fee": "2.5"}}},
        "deposits": {"binance": {"USDT": {}}},
    }
    out = bob(net)
    assert brief(out) == [
        ("binance", "sell", "0.04", "best_bid"),
        ("binance", "buy", "1.1308", "best_ask"),
        ("kraken", "buy", "0.7681", "in_place"),
    ]
    assert out["transfers"] == []
    assert out["costs"]["total"] == bob({})["costs"]["total"] == "16.39549904"


def bank_to_usdt(net: Doc | None) -> Doc:
    """1000 USD in a bank, a binance account trading against USDT that is to hold BTC with all of it; no
    market of binance converts USD (with USDT/USD: tests/core/test_where_conversion.py)."""
    return bank_to_binance({}, net=net)


def test_money_arriving_in_another_asset_than_the_destinations_quote_is_not_spent_as_it() -> None:
    # With a network file the bank's USD would arrive on binance as USD, not USDT: before, 1000 USD went
    # and bought BTC/USDT 0.01978 for 989.01 USDT that binance never held. Binance lists no market between
    # USD and USDT, so no conversion can be planned: the transfer is skipped (needs_conversion) and binance
    # has no money for its buy.
    out = bank_to_usdt(
        {"withdrawals": {"bank": {"USD": {"fee": "10"}}}, "deposits": {"binance": {"USD": {}}}}
    )
    assert (out["orders"], out["transfers"]) == ([], [])
    assert [(s["path"], s["symbol"], s["side"], s["amount"], s["reason"]) for s in out["skipped"]] == [
        ("alice/binance/btc", "BTC/USDT", "buy", "0.02", "insufficient_quote"),
        ("alice/bank", "USD", "transfer", "1000", "needs_conversion"),
    ]
    # Without a network file transfers stay as they were: the account's quote, counted at the destination.
    (transfer,) = bank_to_usdt(None)["transfers"]
    assert (transfer["asset"], transfer["amount"]) == ("USD", "1000")

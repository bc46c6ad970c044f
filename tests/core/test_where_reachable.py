"""Where to trade: the venue the rules pick must be one the asset or the money can reach (issue 14's
second review, with worked numbers). A better venue that cannot receive never blocks the next best that
can; a buyer the seller cannot move to never blocks one it can; a relocation never hides a free move to a
sibling pool."""

from __future__ import annotations

from typing import Any

from tests.core.test_where import brief, moved
from tests.support import account, folder, run, wallet

Doc = dict[str, Any]
PRICES = {"BTC": "60000", "USDT": "1"}
VENUES = ("binance", "coinbase", "kraken")


def markets(*venues: str) -> Doc:
    return {venue: {"BTC/USDT": {"amount_step": "0.0001", "fee_rate": "0.001"}} for venue in venues}


def quotes(**venues: tuple[str, str]) -> Doc:
    return {
        "quote": "USD",
        "prices": PRICES,
        "venues": {v: {"BTC": {"bid": b, "ask": a}} for v, (b, a) in venues.items()},
    }


def three(binance: Doc, coinbase: Doc, kraken: Doc) -> Doc:
    return folder(
        "alice",
        account("binance", binance, exchange="binance"),
        account("coinbase", coinbase, exchange="coinbase"),
        account("kraken", kraken, exchange="kraken"),
    )


POOL = {"name": "alice", "pool": {"BTC": "50%", "USDT": "50%"}}


def test_a_sell_moves_to_the_best_bid_that_can_receive_it_when_a_better_one_cannot() -> None:
    # Binance holds 1.5 BTC; the pool wants half of 90000 in BTC: 0.75 BTC is sold. Net bids: binance
    # 59990 x 0.999 = 59930.01, coinbase 60300 x 0.999 = 60239.70 (its BTC deposit is disabled), kraken
    # 60200 x 0.999 = 60139.80. Sent to kraken, 0.75 - 0.0002 = 0.7498 fetch 45092.82 against 44947.51 in
    # place (+145.31). Before, coinbase's closed door kept the sell at binance (costs 52.4925).
    real = three(wallet("btc", "BTC", "1.5"), wallet("btc", "BTC", "0"), wallet("usdt", "USDT", "0"))
    price_doc = quotes(binance=("59990", "60010"), coinbase=("60300", "60320"), kraken=("60200", "60220"))
    net = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.0002"}}},
        "deposits": {"coinbase": {"BTC": {"enabled": False}}, "kraken": {"BTC": {}}},
    }
    _, _, out = run(real, POOL, price_doc, markets(*VENUES), network=net)
    assert brief(out) == [("kraken", "sell", "0.7498", "best_bid")]
    assert moved(out) == [("BTC", "binance", "kraken", "0.75", "0.0002")]
    assert out["orders"][0]["after_transfer"] == 0
    # Fees 0.7498 x 60200 x 0.001 = 45.13796; spread 0.7498 x (60000 - 60200) = -149.96; network 12.
    assert out["costs"] == {
        "fees": "45.13796",
        "spread": "-149.96",
        "withdrawal_fees": "12",
        "total": "-92.82204",
    }


def test_a_buy_happens_at_the_best_ask_the_money_can_reach_when_the_best_cannot_receive_it() -> None:
    # 20000 USDT (binance 15000, coinbase 5000); the pool wants 10000 of BTC. Asks plus fees: coinbase
    # 60050 x 1.001 = 60110.05 (no USDT deposit: it buys with its own 5000 only, 5000 / 60110.05 =
    # 0.0831 at step 0.0001), kraken 60060 x 1.001 = 60120.06 (binance sends it 5006.10 USDT at fee 1:
    # 0.0832), binance 60100 x 1.001 = 60160.10. Before, binance bought 0.0834 at its own dearer ask
    # (costs 22.497495).
    real = three(wallet("usdt", "USDT", "15000"), wallet("usdt", "USDT", "5000"), wallet("usdt", "USDT", "0"))
    price_doc = quotes(binance=("59900", "60100"), coinbase=("59950", "60050"), kraken=("59940", "60060"))
    net = {
        "withdrawals": {"binance": {"USDT": {"fee": "1"}}},
        "deposits": {"coinbase": {"USDT": {"enabled": False}}, "kraken": {"USDT": {}}},
    }
    _, _, out = run(real, POOL, price_doc, markets(*VENUES), network=net)
    assert brief(out) == [("coinbase", "buy", "0.0831", "best_ask"), ("kraken", "buy", "0.0832", "best_ask")]
    assert moved(out) == [("USDT", "binance", "kraken", "5006.09897351", "1")]
    assert out["orders"][1]["after_transfer"] == 0
    # Fees 4.990155 + 4.996992; spreads 0.0831 x 50 + 0.0832 x 60 = 9.147; network 1.
    assert out["costs"]["total"] == "20.134147"


def test_a_seller_moves_to_a_buyer_it_can_reach_when_a_larger_buyer_cannot_receive() -> None:
    # Weights, no pool: binance holds 1 BTC and is to hold 0.5 (25% of 120000); coinbase is to buy 0.5,
    # kraken 1 (with its 60000 USDT). Only coinbase takes BTC deposits. The round trip binance -> coinbase
    # costs 0.5 x 60000 x ((1 - 59900 x 0.999 / 60000) + (60100 x 1.001 / 60000 - 1)) = 160, the move
    # 0.0001 BTC = 6: it moves (saving 154). Before, kraken, the largest buyer, took the seller's 0.5
    # without a move, and coinbase was never matched (a sell, a transfer of USDT and a buy: 320.24).
    real = three(wallet("btc", "BTC", "1"), wallet("btc", "BTC", "0"), wallet("usdt", "USDT", "60000"))
    target = folder(
        "alice",
        *(
            {"name": name, "weight": weight, "children": [{"name": "btc", "asset": "BTC", "weight": "100%"}]}
            for name, weight in (("binance", "25%"), ("coinbase", "25%"), ("kraken", "50%"))
        ),
    )
    price_doc = quotes(**dict.fromkeys(VENUES, ("59900", "60100")))
    net = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.0001"}, "USDT": {"fee": "1"}}},
        "deposits": {"coinbase": {"BTC": {}, "USDT": {}}},
    }
    _, _, out = run(real, target, price_doc, markets(*VENUES), network=net)
    assert moved(out) == [("BTC", "binance", "coinbase", "0.5", "0.0001")]
    assert (out["transfers"][0]["reason"], out["transfers"][0]["est_saving"]) == (
        "cheaper_than_round_trip",
        "154",
    )
    assert brief(out) == [("kraken", "buy", "0.9973", "in_place")]
    assert out["costs"]["total"] == "165.66773"


def test_a_pool_relocating_to_its_best_bid_moves_free_to_a_sibling_pool_that_buys_instead() -> None:
    # Two pools of 50% each on the same two exchanges (100000 in all): p1 holds 1 BTC on b1 and must shed
    # 0.58333 BTC; p2 must buy 0.41667 BTC. p1 sends its excess to c1 (coinbase's net bid 60039.90 beats
    # binance's 59840.10 by more than the 0.0001 BTC fee) and p2 buys at b2 (binance's ask). Binance to
    # binance is internal (free): the 0.41666666 p2 buys come from b1 straight (the round trip of coinbase's
    # bid and binance's ask costs 0.41666666 x (60160.10 - 60039.90) = 50.08); the relocation moves the
    # rest, 0.16666667, to c1, which sells 0.1665. Before, c1 sold 0.5832 and p2 bought 0.4155 with
    # 15000 USDT sent from c1 (costs 50.25187).
    real = folder(
        "alice",
        folder(
            "p1",
            account("b1", wallet("btc", "BTC", "1"), exchange="binance"),
            account("c1", wallet("usdt", "USDT", "20000"), exchange="coinbase"),
        ),
        folder(
            "p2",
            account("b2", wallet("usdt", "USDT", "10000"), exchange="binance"),
            account("c2", wallet("usdt", "USDT", "10000"), exchange="coinbase"),
        ),
    )
    target = {
        "name": "alice",
        "children": [
            {"name": "p1", "weight": "50%", "pool": {"BTC": "50%", "USDT": "50%"}},
            {"name": "p2", "weight": "50%", "pool": {"BTC": "50%", "USDT": "50%"}},
        ],
    }
    price_doc = quotes(binance=("59900", "60100"), coinbase=("60100", "60200"))
    side = {"BTC": {"fee": "0.0001"}, "USDT": {"fee": "1"}}
    net = {
        "withdrawals": {"binance": side, "coinbase": side},
        "deposits": {venue: {"BTC": {}, "USDT": {}} for venue in ("binance", "coinbase")},
    }
    _, _, out = run(real, target, price_doc, markets("binance", "coinbase"), network=net)
    transfers = [
        (t["asset"], t["from"], t["to"], t["amount"], t["network"], t["reason"]) for t in out["transfers"]
    ]
    assert transfers[:2] == [
        ("BTC", "alice/p1/b1", "alice/p1/c1", "0.16666667", "default", "to_best_bid"),
        ("BTC", "alice/p1/b1", "alice/p2/b2", "0.41666666", "internal", "cheaper_than_round_trip"),
    ]
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [
        ("alice/p1/c1", "sell", "0.1665")
    ]
    assert float(out["costs"]["total"]) < 1


def test_a_network_that_moves_money_dear_never_makes_the_buys_dearer_than_no_network() -> None:
    # 20000 USDT (binance 15000, coinbase 5000); 10000 of BTC to buy. Coinbase asks 60050, binance 60100.
    # Moving money to coinbase costs 10 USDT, more than buying the other 5000 there saves (5000 x 50 x
    # 1.001 / 60000 = 4.17): each account buys with its own money, coinbase first (5000 / 60110.05 =
    # 0.0831), binance the rest (0.0834), as with the network disabled: 22.497495. Before, the buys went in
    # proportion to the money (binance 0.125 at the dearer ask, coinbase 0.0416): 24.59058.
    real = folder(
        "alice",
        account("binance", wallet("usdt", "USDT", "15000"), exchange="binance"),
        account("coinbase", wallet("usdt", "USDT", "5000"), exchange="coinbase"),
    )
    price_doc = quotes(binance=("59900", "60100"), coinbase=("59950", "60050"))
    costs = {}
    for fee, enabled in (("10", True), ("100", True), ("1", False)):
        net = {
            "withdrawals": {"binance": {"USDT": {"fee": fee, "enabled": enabled}}},
            "deposits": {"coinbase": {"USDT": {}}},
        }
        _, _, out = run(real, POOL, price_doc, markets("binance", "coinbase"), network=net)
        assert brief(out) == [
            ("binance", "buy", "0.0834", "in_place"),
            ("coinbase", "buy", "0.0831", "best_ask"),
        ]
        assert out["transfers"] == []
        costs[fee] = out["costs"]["total"]
    assert costs == {"10": "22.497495", "100": "22.497495", "1": "22.497495"}

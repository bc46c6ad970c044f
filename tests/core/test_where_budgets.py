"""Where to trade, defects a second independent check found (issue 14's review, session 8), with worked
numbers: a buy is never paid with money the account does not have; held wallets trade nothing; money
moves in as few transfers as one source can fund; a pool's asset nobody can buy is refused as a plain
target's; a move costing exactly the round trip is not made."""

from __future__ import annotations

from typing import Any

import pytest

from rebal.core.errors import InputError
from tests.core.test_where import brief, market, moved
from tests.support import account, folder, prices, run, wallet

Doc = dict[str, Any]
VENUES = ("binance", "coinbase", "kraken")
MARKETS = {venue: {"BTC/USDT": market(step="0.0001")} for venue in VENUES}
SPREAD = {"quote": "USD", "prices": {"BTC": "60000", "USDT": "1"}} | {
    "venues": {venue: {"BTC": {"bid": "59900", "ask": "60100"}} for venue in VENUES}
}


def three_accounts(binance: list[Doc], coinbase: list[Doc], kraken: list[Doc]) -> Doc:
    return folder(
        "alice",
        account("binance", *binance, exchange="binance"),
        account("coinbase", *coinbase, exchange="coinbase"),
        account("kraken", *kraken, exchange="kraken"),
    )


def btc_weights(**weights: str) -> Doc:
    return folder(
        "alice", *(folder(name, wallet("btc", "BTC", weight="100%"), weight=w) for name, w in weights.items())
    )


def holding_account_inputs(kraken_sends_usdt: bool) -> tuple[Doc, Doc, Doc, Doc, Doc]:
    """Binance holds 1 BTC, coinbase nothing, kraken 60000 USDT; the target is 25/25/50, all BTC: binance
    sells 0.5 and coinbase and kraken buy 0.5 and 1. Binance's 0.5 moves to kraken instead (0.0001 BTC,
    6 USD, against the round trip's 154): kraken, at its target in value, then has 29,950 USDT it need
    not spend."""
    withdrawals: Doc = {"binance": {"BTC": {"fee": "0.0001"}, "USDT": {"fee": "1"}}}
    if kraken_sends_usdt:
        withdrawals["kraken"] = {"USDT": {"fee": "1"}}
    net = {
        "withdrawals": withdrawals,
        "deposits": {"coinbase": {"BTC": {}, "USDT": {}}, "kraken": {"BTC": {}}},
    }
    real = three_accounts(
        [wallet("btc", "BTC", "1")], [wallet("btc", "BTC", "0")], [wallet("usdt", "USDT", "60000")]
    )
    target = btc_weights(binance="25%", coinbase="25%", kraken="50%")
    return real, target, SPREAD, MARKETS, net


def moved_into_a_holding_account(kraken_sends_usdt: bool) -> Doc:
    real, target, price_doc, markets, net = holding_account_inputs(kraken_sends_usdt)
    return run(real, target, price_doc, markets, network=net)[2]


def test_money_a_move_frees_in_a_holding_account_is_sent_to_the_buyer_not_conjured() -> None:
    out = moved_into_a_holding_account(kraken_sends_usdt=True)
    assert moved(out) == [
        ("BTC", "binance", "kraken", "0.5", "0.0001"),
        # Kraken's 60000 less its buy of 0.5 at 60100 with the 0.1% fee (30,080.05): 29,919.95 to coinbase.
        ("USDT", "kraken", "coinbase", "29919.95", "1"),
    ]
    # Coinbase spends what arrives, 29,918.95: 0.4973 BTC at 60100 + 0.1% is 29,917.61 (0.4974: 29,977.77).
    assert brief(out) == [("coinbase", "buy", "0.4973", "in_place"), ("kraken", "buy", "0.5", "in_place")]
    assert out["orders"][0]["after_transfer"] == 1
    assert out["skipped"] == []


def test_a_buy_no_money_can_reach_is_skipped_not_paid_with_money_the_account_lacks() -> None:
    out = moved_into_a_holding_account(kraken_sends_usdt=False)
    # Kraken cannot send USDT: coinbase has nothing to pay with (it bought 0.4986 BTC with 0 USDT before).
    assert brief(out) == [("kraken", "buy", "0.5", "in_place")]
    assert [(s["path"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("alice/coinbase/btc", "buy", "insufficient_quote"),
        ("alice/kraken", "transfer", "no_network"),
    ]


def test_an_account_the_band_holds_lends_no_money_to_a_buyer() -> None:
    # 120,000 USDT: a holds 60,000 for 45% (54,000: within the 20% band, held), b 30,000 for 40% in BTC
    # (48,000), c 30,000 for 15% (18,000). Only c's 12,000 surplus moves: b buys with 42,000, not 48,000
    # (before: 0.7992 BTC for 47,999.95, 6,000 of it money a held account keeps).
    real = folder(
        "alice",
        account("a", wallet("usdt", "USDT", "60000"), exchange="binance"),
        account("b", wallet("usdt", "USDT", "30000"), exchange="binance"),
        account("c", wallet("usdt", "USDT", "30000"), exchange="binance"),
    )
    target = folder(
        "alice",
        folder("a", wallet("usdt", "USDT", weight="100%"), weight="45%"),
        folder("b", wallet("btc", "BTC", weight="100%"), weight="40%"),
        folder("c", wallet("usdt", "USDT", weight="100%"), weight="15%"),
    )
    markets = {"binance": {"BTC/USDT": market(step="0.0001")}}
    out = run(real, target, prices(BTC="60000"), markets, band=0.2)[2]
    assert [(t["from"], t["to"], t["amount"]) for t in out["transfers"]] == [("alice/c", "alice/b", "12000")]
    # 42,000 / (60,000 x 1.001) = 0.69930 -> 0.6993 BTC for 41,958 + 41.958 fee.
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [("alice/b", "buy", "0.6993")]


def sector_pool_inputs() -> tuple[Doc, Doc, Doc, Doc, Doc]:
    """A crypto pool (70% of 140,000 = 98,000: BTC 49,000 and USDT 49,000) holding 1 BTC on binance and
    0.5 on coinbase (bid 60100, above binance's 59900) and 20,000 USDT, beside kraken's 30,000 USDT (30%);
    binance sends BTC for 0.0001, binance and coinbase USDT for 1. The pool sells 0.6833 BTC."""
    real = folder(
        "alice",
        folder(
            "crypto",
            account(
                "binance", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "20000"), exchange="binance"
            ),
            account("coinbase", wallet("btc", "BTC", "0.5"), exchange="coinbase"),
        ),
        folder("other", account("kraken", wallet("usdt", "USDT", "30000"), exchange="kraken")),
    )
    target = folder(
        "alice",
        {"name": "crypto", "weight": "70%", "pool": {"BTC": "50%", "USDT": "50%"}},
        folder("other", folder("kraken", wallet("usdt", "USDT", weight="100%"), weight="100%"), weight="30%"),
    )
    price_doc = prices(BTC="60000") | {
        "venues": {
            "binance": {"BTC": {"bid": "59900", "ask": "60100"}},
            "coinbase": {"BTC": {"bid": "60100", "ask": "60200"}},
        }
    }
    net = {
        "withdrawals": {
            "binance": {"BTC": {"fee": "0.0001"}, "USDT": {"fee": "1"}},
            "coinbase": {"USDT": {"fee": "1"}},
        },
        "deposits": {"coinbase": {"BTC": {}}, "kraken": {"USDT": {}}},
    }
    return real, target, price_doc, MARKETS, net


def sector_pool(band: float) -> Doc:
    real, target, price_doc, markets, net = sector_pool_inputs()
    return run(real, target, price_doc, markets, band=band, network=net)[2]


def test_a_wallet_the_band_holds_is_not_moved_and_bought_back() -> None:
    # Binance's 0.18333 of the pool's sale (11,000, within the 50% band of its 49,000) is held: the pool
    # moved it to coinbase's better bid and bought it back on binance (8.09 of costs). Only coinbase sells
    # its 0.5 (30,050 - 30.05 fee), as without the network file (-19.95 of costs).
    out = sector_pool(band=0.5)
    assert brief(out) == [("crypto", "sell", "0.5", "best_bid")]
    assert out["orders"][0]["account"] == "alice/crypto/coinbase"
    assert out["transfers"] == []
    assert out["costs"]["total"] == "-19.95"


def test_money_leaving_a_pool_goes_in_one_transfer_where_one_account_can_send_it() -> None:
    # No band: binance's 0.18333 BTC moves to coinbase's better bid, coinbase sells 0.6832 (41,019 net),
    # and kraken is to get 12,000 (42,000 of 140,000). The pool's money left coinbase 8,067.15 and
    # binance 3,932.85 to send (in proportion to what each has: 41,019 and 20,000), two fees of 1 USDT;
    # now the account with the most (coinbase) sends it all, one fee.
    out = sector_pool(band=0.0)
    assert [(t["asset"], t["from"], t["to"], t["amount"], t["fee"]) for t in out["transfers"]] == [
        ("BTC", "alice/crypto/binance", "alice/crypto/coinbase", "0.18333333", "0.0001"),
        ("USDT", "alice/crypto/coinbase", "alice/other/kraken", "12000", "1"),
    ]
    assert out["costs"]["withdrawal_fees"] == "7"  # 0.0001 BTC (6) and 1 USDT


def test_a_held_wallet_moves_nothing_to_the_better_bid_and_skips_no_buy() -> None:
    # The worked example of docs/formats.md (binance 1.5 BTC, coinbase 0.5 at a better bid, pool 50/50):
    # with a 60% band binance's sale of 0.5 (of its desired 1) is held, so it neither moves 0.5 BTC to
    # coinbase nor buys them back (skipped `insufficient_quote` before): coinbase sells its own 0.5.
    real = folder(
        "alice",
        account("binance", wallet("btc", "BTC", "1.5"), exchange="binance"),
        account("coinbase", wallet("btc", "BTC", "0.5"), exchange="coinbase"),
    )
    price_doc = prices(BTC="60000") | {
        "venues": {
            "binance": {"BTC": {"bid": "59990", "ask": "60010"}},
            "coinbase": {"BTC": {"bid": "60300", "ask": "60320"}},
        }
    }
    net = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.0002", "min_amount": "0.001"}}},
        "deposits": {"coinbase": {"BTC": {}}},
    }
    out = run(
        real,
        {"name": "alice", "pool": {"BTC": "50%", "USDT": "50%"}},
        price_doc,
        MARKETS,
        band=0.6,
        network=net,
    )[2]
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [
        ("alice/coinbase", "sell", "0.5")
    ]
    assert (out["transfers"], out["skipped"]) == ([], [])


def eth_pool(eth_held: str | None) -> tuple[Doc, Doc, Doc, Doc, Doc]:
    """Binance holds 1.5 BTC (and maybe ETH), coinbase 0.5 BTC at a better bid; the pool wants BTC and
    ETH half and half, and neither exchange lists an ETH market."""
    binance = [wallet("btc", "BTC", "1.5")] + ([wallet("eth", "ETH", eth_held)] if eth_held else [])
    real = folder(
        "alice",
        account("binance", *binance, exchange="binance"),
        account("coinbase", wallet("btc", "BTC", "0.5"), exchange="coinbase"),
    )
    price_doc = prices(BTC="60000", ETH="3000") | {
        "venues": {
            "binance": {"BTC": {"bid": "59990", "ask": "60010"}},
            "coinbase": {"BTC": {"bid": "60300", "ask": "60320"}},
        }
    }
    net = {"withdrawals": {"binance": {"BTC": {"fee": "0.0002"}}}, "deposits": {"coinbase": {"BTC": {}}}}
    return real, {"name": "alice", "pool": {"BTC": "50%", "ETH": "50%"}}, price_doc, MARKETS, net


def test_a_pool_asking_for_an_asset_no_account_can_buy_is_refused_as_a_plain_target() -> None:
    # Before: the pool sold 0.9998 BTC into USDT and bought nothing, skipped nothing (exit 0).
    real, target, price_doc, markets, net = eth_pool(None)
    for network_doc in (net, None):
        with pytest.raises(InputError) as refused:
            run(real, target, price_doc, markets, network=network_doc)
        assert (refused.value.where, refused.value.source) == ("alice", "target")
        assert refused.value.message == (
            "no market path for ETH from USDT on binance, coinbase: no account of the pool can ever buy it "
            "(list a market for it, or leave it out of the pool)"
        )


def test_a_pool_short_of_an_asset_it_holds_but_cannot_buy_skips_the_buy_no_market() -> None:
    # Binance holds 1 ETH (3,000 of 123,000): the pool wants 61,500 of it, 19.5 ETH more, which no market
    # sells: the buy is skipped `no_market` where the ETH is, as a plain target's would be (before:
    # nothing said).
    real, target, price_doc, markets, net = eth_pool("1")
    out = run(real, target, price_doc, markets, network=net)[2]
    assert ("alice/binance/eth", "ETH/USDT", "buy", "19.5", "no_market") in [
        (s["path"], s["symbol"], s["side"], s["amount"], s["reason"]) for s in out["skipped"]
    ]


def round_trip_or_move(btc_fee: str) -> Doc:
    """Binance and coinbase hold 1 BTC each, the target 60/40: coinbase sells 0.2 BTC at 59940 and
    binance buys it at 60000 (no trading fee): a round trip costing 0.2 x 60 = 12 USD of spread, or a
    move of 0.2 BTC paying `btc_fee` (0.0002 BTC is 12 USD)."""
    real = folder(
        "alice",
        account("binance", wallet("btc", "BTC", "1"), exchange="binance"),
        account("coinbase", wallet("btc", "BTC", "1"), exchange="coinbase"),
    )
    target = btc_weights(binance="60%", coinbase="40%")
    price_doc = prices(BTC="60000") | {
        "venues": {venue: {"BTC": {"bid": "59940", "ask": "60000"}} for venue in ("binance", "coinbase")}
    }
    markets = {venue: {"BTC/USDT": market(step="0.0001", fee="0")} for venue in ("binance", "coinbase")}
    net = {
        "withdrawals": {"coinbase": {"BTC": {"fee": btc_fee}, "USDT": {"fee": "0"}}},
        "deposits": {"binance": {"BTC": {}, "USDT": {}}},
    }
    return run(real, target, price_doc, markets, network=net)[2]


def test_a_move_is_made_only_when_its_fee_is_strictly_below_the_round_trip() -> None:
    # 0.00019 BTC (11.40) is below the round trip's 12: moved, saving 0.60.
    below = round_trip_or_move("0.00019")
    assert [(t["asset"], t["amount"], t["reason"], t["est_saving"]) for t in below["transfers"]] == [
        ("BTC", "0.2", "cheaper_than_round_trip", "0.6")
    ]
    # 0.0002 BTC is 12, the round trip's cost (12.000000000000011 in floats): no saving, no move (before:
    # moved "cheaper_than_round_trip" with an est_saving of 0). The round trip is made as without a move.
    equal = round_trip_or_move("0.0002")
    assert [t["asset"] for t in equal["transfers"]] == ["USDT"]
    assert brief(equal) == [("coinbase", "sell", "0.2", "in_place"), ("binance", "buy", "0.1998", "in_place")]
    assert equal["costs"]["total"] == "12"

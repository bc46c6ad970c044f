"""Money arriving in another asset than the receiving account's quote, converted there (docs/formats.md,
"Conversions"), with worked numbers: 1000 USD in a bank, a binance account trading against USDT that is to
hold BTC with all of it, the bank's wire costing 10 USD. The transfer is of USD (what binance accepts), a
conversion order on binance's USDT/USD (or USD/USDT) market spends at most the 990 that arrive, waiting
for the transfer, and the BTC buy is paid from its proceeds net of fees. Without such a market the
transfer is skipped `needs_conversion`, as before (tests/core/test_where_review.py)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.core.diff import DiffTree
from rebal.core.plan import Plan
from tests.core.test_where import market
from tests.support import account, folder, run, wallet

Doc = dict[str, Any]
NETWORK = {"withdrawals": {"bank": {"USD": {"fee": "10"}}}, "deposits": {"binance": {"USD": {}}}}


def planned(
    conversion: dict[str, Doc], venues: Doc | None = None, net: Doc | None = NETWORK, usd: str = "1000"
) -> tuple[DiffTree, Plan, Doc]:
    """`bank_to_binance`'s diff, plan and `--json`."""
    real = folder(
        "alice",
        {"name": "bank", "kind": "bank", "quote": "USD", "children": [wallet("usd", "USD", usd)]},
        account("binance", wallet("usdt", "USDT", "0"), wallet("btc", "BTC", "0"), exchange="binance"),
    )
    target = folder(
        "alice",
        folder("bank", wallet("usd", "USD", weight="100%"), weight="0%"),
        folder("binance", wallet("btc", "BTC", weight="100%"), weight="100%"),
    )
    price_doc: Doc = {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1"}}
    if venues is not None:
        price_doc["venues"] = {"binance": venues}
    markets = {"binance": {"BTC/USDT": market("0.00001"), **conversion}}
    return run(real, target, price_doc, markets, network=net)


def bank_to_binance(
    conversion: dict[str, Doc], venues: Doc | None = None, net: Doc | None = NETWORK, usd: str = "1000"
) -> Doc:
    """The plan (`--json`) of the bank (holding `usd`) and binance above, binance listing BTC/USDT and the
    `conversion` markets; `venues`: binance's own quotes; `net`: the network file (None: none)."""
    return planned(conversion, venues, net, usd)[2]


def plan_of(conversion: dict[str, Doc], venues: Doc | None = None) -> Plan:
    """`bank_to_binance`'s plan itself."""
    return planned(conversion, venues)[1]


def orders(out: Doc) -> list[tuple[Any, ...]]:
    keys = (
        "symbol",
        "side",
        "amount",
        "est_price",
        "est_cost",
        "est_fee",
        "phase",
        "after_transfer",
        "reason",
    )
    return [tuple(o[k] for k in keys) for o in out["orders"]]


def test_the_usd_is_sent_then_bought_into_usdt_at_its_ask_and_the_btc_bought_with_what_that_yields() -> None:
    # 990 USD arrive; USDT costs 1 USD plus 0.1%: 990 / 1.001 = 989.0109... -> 989.01 USDT (step 0.01)
    # for 989.01 + 0.98901 = 989.99901 USD. The BTC buy spends those 989.01 USDT: 989.01 / (50000 x
    # 1.001) = 0.019760... -> 0.01976 BTC for 988 + 0.988 = 988.988 USDT (0.01977 would cost 989.4885).
    out = bank_to_binance({"USDT/USD": market("0.01")})
    assert [(t["asset"], t["from"], t["to"], t["amount"], t["fee"]) for t in out["transfers"]] == [
        ("USD", "alice/bank", "alice/binance", "1000", "10")
    ]
    assert orders(out) == [
        ("USDT/USD", "buy", "989.01", "1", "989.01", "0.98901", 2, 0, "conversion"),
        ("BTC/USDT", "buy", "0.01976", "50000", "988", "0.988", 2, 0, "in_place"),
    ]
    assert out["skipped"] == []
    assert out["costs"] == {"fees": "1.97701", "spread": "0", "withdrawal_fees": "10", "total": "11.97701"}


def test_the_conversion_is_priced_at_the_venues_ask_and_its_spread_counted() -> None:
    # Binance asks 1.0005 USD for a USDT: 990 / (1.0005 x 1.001) = 988.5167... -> 988.51 USDT for
    # 989.004255 + 0.989004255 = 989.993259255 USD (988.52 would cost 990.003274...). The BTC buy at
    # BTC's ask over binance's USDT bid, 50000 / 0.9995 = 50025.0125...: 988.51 / (50025.0125 x 1.001)
    # = 0.019740... -> 0.01974 (0.01975 would cost 988.98 USDT).
    # The spread, from the orders as shown: 988.51 USDT bought at 1.0005 against the reference 1,
    # 0.494255, and the BTC's 0.01974 at its shown price 50025.013 (8 digits): 0.01974 x 25.013 =
    # 0.49375662; 0.98801162 (was 0.98800187, at the unrounded 50025.0125...).
    out = bank_to_binance({"USDT/USD": market("0.01")}, venues={"USDT": {"bid": "0.9995", "ask": "1.0005"}})
    assert orders(out)[0] == (
        "USDT/USD",
        "buy",
        "988.51",
        "1.0005",
        "989.004255",
        "0.989004255",
        2,
        0,
        "conversion",
    )
    assert orders(out)[1][:3] == ("BTC/USDT", "buy", "0.01974")
    assert out["costs"]["spread"] == "0.98801162"


def test_a_usd_usdt_market_sells_what_arrived_at_its_bid_after_the_transfer() -> None:
    # USD/USDT listed instead: the 990 USD are sold (phase 1, after the transfer) for 990 x 1 less 0.1%
    # = 989.01 USDT, and the BTC bought with them as above.
    out = bank_to_binance({"USD/USDT": market("0.01")})
    assert orders(out) == [
        ("USD/USDT", "sell", "990", "1", "990", "0.99", 1, 0, "conversion"),
        ("BTC/USDT", "buy", "0.01976", "50000", "988", "0.988", 2, 0, "in_place"),
    ]


def test_both_markets_listed_the_one_yielding_more_converts() -> None:
    # USD/USDT with a fee of 0.5% yields 990 x 0.995 = 985.05 USDT; USDT/USD at 0.1% yields 989.01.
    out = bank_to_binance({"USDT/USD": market("0.01"), "USD/USDT": market("0.01", fee="0.005")})
    assert orders(out)[0][:3] == ("USDT/USD", "buy", "989.01")


def test_a_conversion_under_the_markets_minimum_is_not_planned_and_the_transfer_is_skipped() -> None:
    out = bank_to_binance({"USDT/USD": market("0.01", min_cost="5000")})
    assert (out["orders"], out["transfers"]) == ([], [])
    assert [(s["symbol"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("BTC/USDT", "buy", "insufficient_quote"),
        ("USD", "transfer", "needs_conversion"),
    ]


def test_a_usd_deposit_binance_does_not_take_is_skipped_needs_conversion_as_before() -> None:
    net = {
        "withdrawals": {"bank": {"USD": {"fee": "10"}}},
        "deposits": {"binance": {"USD": {"enabled": False}}},
    }
    out = bank_to_binance({"USDT/USD": market("0.01")}, net=net)
    assert (out["orders"], out["transfers"]) == ([], [])
    assert [(s["symbol"], s["reason"]) for s in out["skipped"]] == [
        ("BTC/USDT", "insufficient_quote"),
        ("USD", "needs_conversion"),
    ]


@pytest.mark.parametrize("listed", [True, False])
@pytest.mark.parametrize(
    ("withdrawal", "reason"),
    [
        ({"USD": {"fee": "10", "min_amount": "2000"}}, "below_network_min"),
        ({"USD": {"fee": "1000"}}, "not_above_network_fee"),
        ({}, "no_network"),
        ({"USD": {"fee": "10", "enabled": False}}, "network_disabled"),
    ],
)
def test_a_transfer_the_network_refuses_is_skipped_for_the_networks_reason(
    withdrawal: Doc, reason: str, listed: bool
) -> None:
    # Review: with a conversion market (or none) the bank's wire was skipped `needs_conversion` although
    # no network carries it: under its minimum, eaten by its fee, no withdrawal, disabled. The network's
    # reason is what the operator can act on; `needs_conversion` is for money it would carry.
    net = {"withdrawals": {"bank": withdrawal}, "deposits": {"binance": {"USD": {}}}}
    out = bank_to_binance({"USDT/USD": market("0.01")} if listed else {}, net=net)
    assert (out["orders"], out["transfers"]) == ([], [])
    assert [(s["symbol"], s["reason"]) for s in out["skipped"]] == [
        ("BTC/USDT", "insufficient_quote"),
        ("USD", reason),
    ]


@settings(max_examples=60, deadline=None)
@given(
    bank=st.integers(1, 10**7).map(lambda cents: f"{cents / 100:.2f}"),
    wire_fee=st.sampled_from(["0", "10", "0.37"]),
    step=st.sampled_from(["0.01", "1", "0.000001"]),
    fee=st.sampled_from(["0", "0.001", "0.0075"]),
    ask=st.sampled_from([None, "1.0005", "0.9991", "1.00037"]),
    selling=st.booleans(),
)
def test_a_conversion_spends_at_most_what_arrives_and_as_much_as_the_step_allows(
    bank: str, wire_fee: str, step: str, fee: str, ask: str | None, selling: bool
) -> None:
    symbol = "USD/USDT" if selling else "USDT/USD"
    venues = None if ask is None else {"USDT": {"bid": ask, "ask": ask}}
    net = {"withdrawals": {"bank": {"USD": {"fee": wire_fee}}}, "deposits": {"binance": {"USD": {}}}}
    out = bank_to_binance({symbol: market(step, fee=fee)}, venues=venues, net=net, usd=bank)
    conversions = [o for o in out["orders"] if o["reason"] == "conversion"]
    if not conversions:  # nothing arrives (the network's reason), or less than one step of it
        why = "not_above_network_fee" if D(bank) <= D(wire_fee) else "needs_conversion"
        assert [s["reason"] for s in out["skipped"] if s["side"] == "transfer"] in ([], [why])
        return
    [conversion] = conversions
    transfer = out["transfers"][conversion["after_transfer"]]
    arrived = D(transfer["amount"]) - D(transfer["fee"])
    assert D(transfer["amount"]) <= D(bank)
    amount, price, unit = D(conversion["amount"]), D(conversion["est_price"]), D(step)
    if selling:
        assert unit <= amount <= arrived < amount + unit
        proceeds = D(conversion["est_cost"]) - D(conversion["est_fee"])
    else:
        assert D(conversion["est_cost"]) + D(conversion["est_fee"]) <= arrived
        assert (amount + unit) * price * (1 + D(fee)) > arrived
        proceeds = amount
    buys = [o for o in out["orders"] if o["symbol"] == "BTC/USDT"]
    assert sum((D(o["est_cost"]) + D(o["est_fee"]) for o in buys), D(0)) <= proceeds


def test_a_bank_wire_into_a_pool_with_a_move_is_sent_whole() -> None:
    """Review: a pool of BTC and USDT over binance and coinbase (both trading against USDT, coinbase's bid
    better: 0.49166666 BTC move there) funded by 1000 USD from a bank. The move, of whole 1e-8 steps,
    leaves 0.0000068 USD of binance's gap: the wire was split into 999.99999319 (to coinbase) and a
    skipped 0.0000068 (to binance), an amount no operator should be asked to wire."""
    real = folder(
        "alice",
        {"name": "bank", "kind": "bank", "quote": "USD", "children": [wallet("usd", "USD", "1000")]},
        folder(
            "crypto",
            account("binance", wallet("btc", "BTC", "1.5"), wallet("usdt", "USDT", "0"), exchange="binance"),
            account("coinbase", wallet("btc", "BTC", "0.5"), exchange="coinbase"),
        ),
    )
    target = {
        "name": "alice",
        "children": [
            {"name": "bank", "weight": "0%", "children": [{"name": "usd", "asset": "USD", "weight": "100%"}]},
            {"name": "crypto", "weight": "100%", "pool": {"BTC": "50%", "USDT": "50%"}},
        ],
    }
    prices: Doc = {
        "quote": "USD",
        "prices": {"BTC": "60000", "USDT": "1"},
        "venues": {
            "binance": {"BTC": {"bid": "59990", "ask": "60010"}},
            "coinbase": {"BTC": {"bid": "60300", "ask": "60320"}},
        },
    }
    markets = {
        exchange: {"BTC/USDT": market("0.0001"), symbol: market("0.01")}
        for exchange, symbol in (("binance", "USD/USDT"), ("coinbase", "USDT/USD"))
    }
    net = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.0002"}}, "bank": {"USD": {"fee": "10"}}},
        "deposits": {"coinbase": {"BTC": {}, "USD": {}}, "binance": {"USD": {}}},
    }
    out = run(real, target, prices, markets, network=net)[2]
    assert [(t["asset"], t["from"], t["to"], t["amount"]) for t in out["transfers"]] == [
        ("BTC", "alice/crypto/binance", "alice/crypto/coinbase", "0.49166666"),
        ("USD", "alice/bank", "alice/crypto/coinbase", "1000"),
    ]
    # Binance's 0.000000006667 BTC left to sell, the move's rounding (under its 1e-8 step), is no skip.
    assert out["skipped"] == []
    assert orders(out)[1][:3] == ("USDT/USD", "buy", "989.01")  # the 990 that arrive, converted


def dear(out_plan: Plan) -> list[tuple[Any, ...]]:
    return [
        (d.symbol, d.side, d.spent, d.spent_asset, d.received, d.lost, round(d.share, 6))
        for d in out_plan.dear_conversions()
    ]


def test_a_conversion_losing_more_than_one_percent_is_named_with_what_it_loses() -> None:
    # A 90% fee: 990 / (1 x 1.9) = 521.0526... -> 521.05 USDT for 521.05 + 468.945 = 989.995 USD: 468.945
    # lost, 0.473684 of it. At the documented 0.1%: 0.98901 of 989.99901, 0.1%: not named.
    assert dear(plan_of({"USDT/USD": market("0.01", fee="0.9")})) == [
        ("USDT/USD", "buy", D("989.995"), "USD", D("521.05"), D("468.945"), D("0.473684"))
    ]
    assert dear(plan_of({"USDT/USD": market("0.01")})) == []
    # A spread alone: binance asks 1.02 USD for a USDT (2% over the reference), no fee: 990 / 1.02 =
    # 970.588... -> 970.58 USDT for 989.9916 USD, worth 970.58: 19.4116 lost, 1.96%.
    assert dear(plan_of({"USDT/USD": market("0.01", fee="0")}, venues={"USDT": {"ask": "1.02"}})) == [
        ("USDT/USD", "buy", D("989.9916"), "USD", D("970.58"), D("19.4116"), D("0.019608"))
    ]
    # Sold on USD/USDT at a 1.5% fee: 990 USD for 990 - 14.85 = 975.15 USDT: 14.85 lost, 1.5%.
    assert dear(plan_of({"USD/USDT": market("0.01", fee="0.015")})) == [
        ("USD/USDT", "sell", D("990"), "USD", D("975.15"), D("14.85"), D("0.015"))
    ]

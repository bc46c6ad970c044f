"""Routes, sizing and input checks, defects an independent review of `rebal plan` found (issue 14's second
review), with worked numbers: a routed buy never spends more than the account holds, a route's next leg
never sells more than the previous one is shown to yield, routes of the same rate are taken by name, and
bad input names its place in JSON's spelling."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.core.bulk import rows
from rebal.core.diff import SELL
from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.networks import Networks
from rebal.core.plan import TRANSFER, Order
from rebal.core.tree import parse_tree
from rebal.render import _skip_amounts
from tests.support import account, folder, prices, run, wallet

Doc = dict[str, Any]
PRICES = {"ABC": "10", "ETH": "3000", "BNB": "600", "BTC": "60000"}


def step_market(fee: str = "0.001", step: str = "0.000001") -> Doc:
    return {"amount_step": step, "fee_rate": fee}


def all_in(asset: str) -> Doc:
    return folder("alice", folder("bn", wallet(asset.lower(), asset, weight="100%"), weight="100%"))


def holding(*wallets: Doc) -> Doc:
    return folder("alice", account("bn", *wallets, exchange="binance"))


def spent(orders: list[Order], held: dict[str, Decimal]) -> dict[str, Decimal]:
    """The account's balances after each order in plan order (a sell adds its cost less fee in the quote,
    a buy takes its cost plus fee): the lowest each reached."""
    balance: dict[str, Decimal] = defaultdict(Decimal, held)
    lowest: dict[str, Decimal] = dict(balance)
    for order in orders:
        base, _, quote = order.symbol.partition("/")
        if order.side == "sell":
            balance[base] -= order.amount
            balance[quote] += order.est_cost - order.est_fee
        else:
            balance[quote] -= order.est_cost + order.est_fee
            balance[base] += order.amount
        for asset in (base, quote):
            lowest[asset] = min(lowest.get(asset, balance[asset]), balance[asset])
    return lowest


ROUTE_VIA_BTC = {"ABC/ETH": step_market(), "ETH/BTC": step_market(), "BTC/USDT": step_market()}


def test_a_routed_buy_at_venue_prices_spends_no_more_than_the_account_holds() -> None:
    """10000 USDT buy ABC through BTC and ETH at binance's asks: BTC/USDT at 60010 and a 0.1% fee can take
    10000 / (60010 x 1.001) = 0.166472 BTC at most (was 0.16648 for 10000.455: the routed buy's cost was
    added to an integer sum and lost its cents, so the budget thought it smaller)."""
    price_doc = {
        **prices(**PRICES),
        "venues": {
            "binance": {
                "ABC": {"bid": "9.9", "ask": "10.1"},
                "ETH": {"bid": "2999", "ask": "3001"},
                "BTC": {"bid": "59990", "ask": "60010"},
            }
        },
    }
    _, plan, out = run(
        holding(wallet("usdt", "USDT", "10000")), all_in("ABC"), price_doc, {"binance": ROUTE_VIA_BTC}
    )
    first = out["orders"][0]
    assert (first["symbol"], first["amount"], first["est_cost"], first["est_fee"]) == (
        "BTC/USDT",
        "0.166472",
        "9989.98472",
        "9.98998472",
    )
    assert Decimal(first["est_cost"]) + Decimal(first["est_fee"]) <= 10000
    assert min(spent(plan.orders(), {"USDT": Decimal(10000)}).values()) >= 0


def test_a_routed_buy_at_reference_prices_spends_no_more_than_the_account_holds() -> None:
    """Without venue prices: BNB/USDT at 600 and 0.1% takes 10000 / 600.6 = 16.650016 BNB at most (was
    16.650033 for 10000.0098)."""
    markets = {"ABC/BNB": step_market(), "BNB/USDT": step_market()}
    _, plan, out = run(
        holding(wallet("usdt", "USDT", "10000")), all_in("ABC"), prices(**PRICES), {"binance": markets}
    )
    first = out["orders"][0]
    assert (first["symbol"], first["amount"], first["est_cost"], first["est_fee"]) == (
        "BNB/USDT",
        "16.650015",
        "9990.009",
        "9.990009",
    )
    assert min(spent(plan.orders(), {"USDT": Decimal(10000)}).values()) >= 0


def test_a_route_s_next_leg_sells_no_more_than_the_previous_leg_is_shown_to_yield() -> None:
    """1000 ABC sold for ETH at 0.0033333333 (10 / 3000 to 8 digits, as shown) yield 3.3333333 less the
    fee 0.0033333333 = 3.3299999667 ETH: ETH/BTC sells 3.329999, not 3.33 (sized from the unrounded price)."""
    real = holding(wallet("abc", "ABC", "1000"), wallet("usdt", "USDT", "0"))
    _, plan, out = run(real, all_in("USDT"), prices(**PRICES), {"binance": ROUTE_VIA_BTC}, network={})
    legs = [(o["symbol"], o["amount"], o["est_cost"], o["est_fee"]) for o in out["orders"]]
    assert legs[:2] == [
        ("ABC/ETH", "1000", "3.3333333", "0.0033333333"),
        ("ETH/BTC", "3.329999", "0.16649995", "0.00016649995"),
    ]
    assert min(spent(plan.orders(), {"ABC": Decimal(1000)}).values()) >= 0


def test_routes_of_the_same_rate_are_taken_by_their_markets_symbols_in_order() -> None:
    """Without fees ABC -> ETH -> USDT and ABC -> BNB -> BTC -> USDT have the same rate: the route named
    ("ABC/BNB", "BNB/BTC", "BTC/USDT") comes before ("ABC/ETH", "ETH/USDT") (was: fewer intermediates)."""
    markets = {
        symbol: {"amount_step": "0.000001"}
        for symbol in ("ABC/ETH", "ETH/USDT", "ABC/BNB", "BNB/BTC", "BTC/USDT")
    }
    real = holding(wallet("abc", "ABC", "1000"), wallet("usdt", "USDT", "0"))
    price_doc = prices(ABC="10", ETH="2000", BNB="500", BTC="50000")
    out = run(real, all_in("USDT"), price_doc, {"binance": markets}, network={})[2]
    assert [(o["symbol"], o["amount"]) for o in out["orders"]] == [
        ("ABC/BNB", "1000"),
        ("BNB/BTC", "20"),
        ("BTC/USDT", "0.2"),
    ]


def test_a_direct_market_keeps_a_tie_with_a_route() -> None:
    """A direct market is no route: at the same rate ABC/USDT is kept over ABC/ETH -> ETH/USDT (whose name
    would sort first)."""
    markets = {symbol: {"amount_step": "0.000001"} for symbol in ("ABC/ETH", "ETH/USDT", "ABC/USDT")}
    real = holding(wallet("abc", "ABC", "1000"), wallet("usdt", "USDT", "0"))
    out = run(real, all_in("USDT"), prices(ABC="10", ETH="2000"), {"binance": markets}, network={})[2]
    assert [(o["symbol"], o["amount"]) for o in out["orders"]] == [("ABC/USDT", "1000")]


@st.composite
def routed_cases(draw: st.DrawFn) -> tuple[Doc, Doc, Doc, Doc, Doc | None, Decimal]:
    """One binance account holding USDT (and maybe ABC) whose target buys or sells ABC through ETH, BNB or
    BTC (or buys ETH directly): random steps, fees, venue bids and asks, with or without a network file."""
    cash = draw(st.decimals(min_value=Decimal(1), max_value=Decimal(10**6), places=2))
    abc = draw(st.sampled_from(["0", "1", "123.456", "1000"]))
    ref = {
        "ABC": draw(st.sampled_from(["10", "0.37", "3.1415"])),
        "ETH": draw(st.sampled_from(["3000", "2999.77"])),
        "BNB": draw(st.sampled_from(["600", "613.3"])),
        "BTC": draw(st.sampled_from(["60000", "60123.45"])),
    }
    steps = st.sampled_from(["0.000001", "0.0001", "0.001", "0.01"])
    fees = st.sampled_from(["0", "0.001", "0.00075", "0.002"])
    pairs = draw(
        st.sampled_from(
            [
                ("ABC/ETH", "ETH/USDT"),
                ("ABC/BNB", "BNB/USDT"),
                ("ABC/ETH", "ETH/BTC", "BTC/USDT"),
                ("ABC/ETH", "ETH/USDT", "ABC/BNB", "BNB/BTC", "BTC/USDT"),
            ]
        )
    )
    markets = {pair: step_market(draw(fees), draw(steps)) for pair in pairs}
    venues: Doc = {}
    if draw(st.booleans()):
        for asset in ("ETH", "BNB", "BTC", "USDT"):
            if draw(st.booleans()):
                base = Decimal(ref.get(asset, "1"))
                spread = draw(st.sampled_from(["0", "0.0003", "0.001", "0.0137"]))
                venues[asset] = {
                    "bid": str((base * (1 - Decimal(spread))).quantize(Decimal("1e-6"))),
                    "ask": str((base * (1 + Decimal(spread))).quantize(Decimal("1e-6"))),
                }
    price_doc = {**prices(**ref), **({"venues": {"binance": venues}} if venues else {})}
    sell_all = draw(st.booleans()) and abc != "0"
    real = holding(wallet("abc", "ABC", abc), wallet("usdt", "USDT", str(cash)))
    # A buy of ETH trades directly where ETH/USDT is listed (its price the venues' ETH ask over USDT bid).
    bought = draw(st.sampled_from(["ABC", "ETH"])) if "ETH/USDT" in pairs else "ABC"
    target = all_in("USDT") if sell_all else all_in(bought)
    network = draw(st.sampled_from([None, {}]))
    return real, target, price_doc, {"binance": markets}, network, cash


@settings(max_examples=150, deadline=None)
@given(routed_cases())
def test_orders_in_plan_order_never_spend_more_of_an_asset_than_the_account_has(
    case: tuple[Doc, Doc, Doc, Doc, Doc | None, Decimal],
) -> None:
    """Executed in plan order at the estimates shown, no balance goes below zero: a buy's cost plus fee
    stays within its budget (the quote held and what the sells yielded), and a route's leg within what
    the previous leg yielded."""
    real, target, price_doc, markets, network, cash = case
    _, plan, _ = run(real, target, price_doc, markets, network=network)
    held = {"USDT": cash, "ABC": Decimal(real["children"][0]["children"][0]["amount"])}
    lowest = spent(plan.orders(), held)
    assert all(value >= 0 for value in lowest.values()), lowest


def test_a_null_or_boolean_is_named_as_json_spells_it() -> None:
    doc = {**prices(BTC="60000"), "venues": {"binance": {"BTC": {"bid": None}}}}
    with pytest.raises(InputError, match=r"^venues\.binance\.BTC\.bid: null is not a positive decimal$"):
        Prices.parse(doc)
    network = {"withdrawals": {"binance": {"BTC": {"fee": True}}}}
    with pytest.raises(InputError, match=r"^withdrawals\.binance\.BTC\.fee: true is not a decimal >= 0$"):
        Networks.parse(network)


def test_a_network_without_a_name_is_refused() -> None:
    network = {"withdrawals": {"binance": {"BTC": {"networks": {"": {"fee": "0.0001"}}}}}}
    with pytest.raises(InputError, match=r"^withdrawals\.binance\.BTC\.networks: a network's name"):
        Networks.parse(network)


def test_a_null_pool_is_refused() -> None:
    with pytest.raises(InputError, match=r"^alice: 'pool' must map assets to weights.*; got null$"):
        parse_tree({"name": "alice", "pool": None}, "target")


def bn_markets(*symbols: str, step: str = "0.0001") -> Doc:
    return {symbol: {"amount_step": step, "fee_rate": "0.001"} for symbol in symbols}


def test_costs_are_the_sums_of_what_the_orders_show() -> None:
    """USDT quoted at 0.999/1.001: BTC sells at 59900 / 1.001 = 59840.16 (shown, 8 digits), ETH buys at
    3010 / 0.999 = 3013.013. Fees 29.92008 + 29.8601640352 = 59.7802440352; spreads 0.5 x 60000 - 29920.08
    = 79.92 and 29860.1640352 - 9.9104 x 3000 = 128.9640352 (were 59.78024408 and 208.88424408, from the
    unrounded prices); each to 8 places, the total their sum."""
    real = holding(wallet("btc", "BTC", "1"), wallet("eth", "ETH", "0"), wallet("usdt", "USDT", "0"))
    target = folder(
        "alice",
        folder("bn", wallet("btc", "BTC", weight="50%"), wallet("eth", "ETH", weight="50%"), weight="100%"),
    )
    price_doc = {
        **prices(BTC="60000", ETH="3000"),
        "venues": {
            "binance": {
                "BTC": {"bid": "59900", "ask": "60100"},
                "ETH": {"bid": "2990", "ask": "3010"},
                "USDT": {"bid": "0.999", "ask": "1.001"},
            }
        },
    }
    out = run(real, target, price_doc, {"binance": bn_markets("BTC/USDT", "ETH/USDT")})[2]
    assert [(o["amount"], o["est_price"], o["est_cost"], o["est_fee"]) for o in out["orders"]] == [
        ("0.5", "59840.16", "29920.08", "29.92008"),
        ("9.9104", "3013.013", "29860.1640352", "29.8601640352"),
    ]
    assert out["costs"] == {
        "fees": "59.78024404",
        "spread": "208.8840352",
        "withdrawal_fees": "0",
        "total": "268.66427924",
    }


def two_accounts_eth_and_usdt() -> Doc:
    return folder(
        "alice",
        account("binance", wallet("eth", "ETH", "10"), exchange="binance"),
        account("coinbase", wallet("usdt", "USDT", "10000"), exchange="coinbase"),
    )


VENUES = {
    "binance": {"BTC": {"bid": "59900", "ask": "60100"}, "ETH": {"bid": "2990", "ask": "3010"}},
    "coinbase": {"BTC": {"bid": "59950", "ask": "60050"}, "ETH": {"bid": "3000", "ask": "3020"}},
}
TWO_MARKETS = {venue: bn_markets("BTC/USDT", "ETH/USDT") for venue in ("binance", "coinbase")}


def test_money_a_sale_nets_exactly_is_sent_exactly() -> None:
    """Binance sells 10 ETH at 2990: 29900 less the fee 29.9 nets 29870.1 exactly, all sent to coinbase
    (was 29870.09999999: the float sum truncated)."""
    price_doc = {**prices(BTC="60000", ETH="3000"), "venues": VENUES}
    out = run(
        two_accounts_eth_and_usdt(), {"name": "alice", "pool": {"BTC": "100%"}}, price_doc, TWO_MARKETS
    )[2]
    assert [(t["asset"], t["amount"]) for t in out["transfers"]] == [("USDT", "29870.1")]


def test_a_move_s_rounding_leaves_no_dust_skip_and_no_dust_transfer() -> None:
    """The pool moves 6.66666666 ETH (whole 1e-8 steps) of the 6.666666666667 binance should part with: the
    0.000000006667 left is no ``below_step`` skip (it was), and no money follows the rounding."""
    price_doc = {**prices(BTC="60000", ETH="3000"), "venues": VENUES}
    network = {
        "withdrawals": {
            "binance": {"ETH": {"fee": "0.001"}, "USDT": {"fee": "1"}},
            "coinbase": {"USDT": {"fee": "1"}},
        },
        "deposits": {"coinbase": {"ETH": {}, "USDT": {}}, "binance": {"USDT": {}}},
    }
    target = {"name": "alice", "pool": {"BTC": "50%", "ETH": "25%", "USDT": "25%"}}
    out = run(two_accounts_eth_and_usdt(), target, price_doc, TWO_MARKETS, network=network)[2]
    assert [(t["asset"], t["amount"]) for t in out["transfers"]] == [("ETH", "6.66666666")]
    assert out["skipped"] == []


def test_a_move_s_rounding_is_no_money_to_send_and_no_skip() -> None:
    """Binance moves 0.31666666 BTC (18999.9996 of the 19000 wanted, whole 1e-8 steps) to coinbase and sends
    kraken 12000: the 0.0004 USDT the move's rounding leaves was skipped ``not_above_network_fee`` and the
    0.000000006667 BTC coinbase still wanted ``below_step``; neither is a skip now."""
    real = folder(
        "alice",
        folder(
            "crypto",
            account(
                "binance", wallet("btc", "BTC", "1"), wallet("usdt", "USDT", "20000"), exchange="binance"
            ),
            account("coinbase", wallet("btc", "BTC", "0.5"), exchange="coinbase"),
            kind="sector",
        ),
        folder("other", account("kraken", wallet("usdt", "USDT", "30000"), exchange="kraken")),
    )
    target = folder(
        "alice",
        folder(
            "crypto",
            {"name": "binance", "weight": "50%", "pool": {"BTC": "50%", "USDT": "50%"}},
            {"name": "coinbase", "weight": "50%", "pool": {"BTC": "100%"}},
            weight="70%",
        ),
        folder("other", folder("kraken", wallet("usdt", "USDT", weight="100%"), weight="100%"), weight="30%"),
    )
    venues = {
        "binance": {"BTC": {"bid": "59900", "ask": "60100"}},
        "coinbase": {"BTC": {"bid": "60100", "ask": "60200"}},
    }
    network = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.0001"}, "USDT": {"fee": "1"}}},
        "deposits": {"coinbase": {"BTC": {}, "USDT": {}}, "kraken": {"USDT": {}}},
    }
    markets = {venue: bn_markets("BTC/USDT") for venue in ("binance", "coinbase", "kraken")}
    out = run(real, target, {**prices(BTC="60000"), "venues": venues}, markets, network=network)[2]
    assert [(t["asset"], t["to"], t["amount"]) for t in out["transfers"]] == [
        ("BTC", "alice/crypto/coinbase", "0.31666666"),
        ("USDT", "alice/other/kraken", "12000"),
    ]
    assert out["skipped"] == []


def test_a_skipped_transfer_s_amount_is_written_in_whole_1e_8_steps_without_float_noise() -> None:
    """A transfer skipped (``needs_conversion``) of 971683555708 satoshis: 9716.83555708, not its float's
    9716.835557079999 to 12 places; a skipped order keeps its 12 places."""
    amounts = np.array([9716.83555708, 0.000000003333])
    assert rows(_skip_amounts(amounts, np.array([TRANSFER, SELL]))) == ["9716.83555708", "0.000000003333"]

"""An asset held in an account whose only market for it is the inverse one (docs/formats.md, "How the plan
is made", 5): 500 USD in a binance account trading against USDT, binance listing `USDT/USD` but no
`USD/USDT`. The same market converts an incoming wire (tests/core/test_where_conversion.py); the held USD
is now sold on it too: a buy of USDT spending the USD (amount in USDT, the market's step and minimums, the
fee in USD as the markets file charges it, in the quote), placed with the buys, first of the account's,
and its proceeds pay them. Before, the USD was skipped `no_market` and the BTC buy `insufficient_quote`."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from rebal.core.errors import InputError
from tests.core.test_where import market
from tests.support import account, folder, run, wallet

Doc = dict[str, Any]
KEYS = ("symbol", "side", "amount", "est_price", "est_cost", "est_fee", "phase")


def holding_usd(
    markets: Doc,
    usd: str = "500",
    weights: tuple[str, str] = ("0%", "100%"),
    venues: Doc | None = None,
) -> tuple[Any, Doc]:
    """The plan (core, `--json`) of binance holding `usd` USD and nothing else, its target USD and BTC
    at `weights`, binance listing BTC/USDT and `markets`; `venues`: binance's own quotes."""
    real = folder(
        "alice",
        account(
            "binance",
            wallet("usdt", "USDT", "0"),
            wallet("usd", "USD", usd),
            wallet("btc", "BTC", "0"),
            exchange="binance",
        ),
    )
    target = folder(
        "alice",
        folder(
            "binance",
            wallet("usd", "USD", weight=weights[0]),
            wallet("btc", "BTC", weight=weights[1]),
            weight="100%",
        ),
    )
    price_doc: Doc = {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1"}}
    if venues is not None:
        price_doc["venues"] = {"binance": venues}
    _, plan, out = run(real, target, price_doc, {"binance": {"BTC/USDT": market("0.00001"), **markets}})
    return plan, out


def orders(out: Doc, *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(o[k] for k in (*KEYS, *keys)) for o in out["orders"]]


def test_held_usd_buys_usdt_on_the_inverse_market_and_the_usdt_pays_for_the_btc() -> None:
    # A USDT costs 1 USD plus 0.1%: 500 / 1.001 = 499.5004... -> 499.50 USDT (step 0.01) for 499.5 +
    # 0.4995 = 499.9995 USD. The BTC buy spends those 499.5 USDT: 499.5 / (50000 x 1.001) = 0.0099800...
    # -> 0.00998 BTC for 499 + 0.499 = 499.499 USDT.
    plan, out = holding_usd({"USDT/USD": market("0.01")})
    assert orders(out) == [
        ("USDT/USD", "buy", "499.5", "1", "499.5", "0.4995", 2),
        ("BTC/USDT", "buy", "0.00998", "50000", "499", "0.499", 2),
    ]
    assert out["skipped"] == []
    # What the executor may spend: the USD the account holds, and its USDT (none).
    assert [(b.account, b.asset, b.amount) for b in plan.budgets()] == [
        ("alice/binance", "USD", D(500)),
        ("alice/binance", "USDT", D(0)),
    ]


def test_part_of_the_usd_is_sold_and_never_more_than_the_target_lets_go() -> None:
    # Half stays USD: 250 is sold, 250 / 1.001 = 249.7502... -> 249.75 USDT for 249.75 + 0.24975 =
    # 249.99975 USD; BTC: 249.75 / 50050 = 0.0049900... -> 0.00499 BTC for 249.5 + 0.2495 USDT.
    _, out = holding_usd({"USDT/USD": market("0.01")}, weights=("50%", "50%"))
    assert orders(out) == [
        ("USDT/USD", "buy", "249.75", "1", "249.75", "0.24975", 2),
        ("BTC/USDT", "buy", "0.00499", "50000", "249.5", "0.2495", 2),
    ]


def test_the_inverse_market_s_step_and_minimums_apply_to_the_quote_bought() -> None:
    # Step 1 USDT: 500 / 1.001 = 499.5 -> 499 USDT. A minimum cost of 600 USD: skipped, named by the
    # market it would have used, and the BTC buy has no money.
    _, out = holding_usd({"USDT/USD": market("1")})
    assert orders(out)[0] == ("USDT/USD", "buy", "499", "1", "499", "0.499", 2)
    _, out = holding_usd({"USDT/USD": market("0.01", min_cost="600")})
    assert out["orders"] == []
    assert [(s["path"], s["symbol"], s["side"], s["amount"], s["reason"]) for s in out["skipped"]] == [
        ("alice/binance/usd", "USDT/USD", "sell", "500", "below_min_cost"),
        ("alice/binance/btc", "BTC/USDT", "buy", "0.01", "insufficient_quote"),
    ]


def test_a_direct_market_is_still_preferred_and_without_any_the_usd_is_skipped() -> None:
    both = holding_usd({"USD/USDT": market("0.01"), "USDT/USD": market("0.01")})[1]
    assert orders(both)[0] == ("USD/USDT", "sell", "500", "1", "500", "0.5", 1)
    _, out = holding_usd({})
    assert [(s["symbol"], s["reason"]) for s in out["skipped"]] == [
        ("USD/USDT", "no_market"),
        ("BTC/USDT", "insufficient_quote"),
    ]


def test_where_mode_prices_it_at_the_venues_ask_and_counts_its_fee_and_spread() -> None:
    # Binance asks 1.0005 USD for a USDT: 500 / (1.0005 x 1.001) = 499.2510... -> 499.25 USDT for
    # 499.499625 + 0.499499625 USD; the BTC: 499.25 / 50050 = 0.0099750... -> 0.00997 BTC. Spread: 499.25
    # x 0.0005 = 0.249625.
    _, out = holding_usd({"USDT/USD": market("0.01")}, venues={"USDT": {"ask": "1.0005"}})
    assert orders(out, "reason") == [
        ("USDT/USD", "buy", "499.25", "1.0005", "499.499625", "0.499499625", 2, "cheapest_route"),
        ("BTC/USDT", "buy", "0.00997", "50000", "498.5", "0.4985", 2, "in_place"),
    ]
    assert out["costs"]["spread"] == "0.249625"


def test_where_mode_keeps_a_route_and_takes_the_inverse_market_only_without_one() -> None:
    # Through BTC: 0.999 x 0.999 = 0.998001 USDT a USD; the inverse at a 0.1% fee would give 1 / 1.001 =
    # 0.999001, but a route is kept: the inverse market is the last resort (its minimum cost of 600 USD
    # would leave the 500 USD unsold, which the route sells).
    route = {"USD/BTC": market("0.00001")}
    venues = {"USDT": {"ask": "1"}}  # where mode, prices as the reference
    for inverse in (market("0.01"), market("0.01", min_cost="600")):
        _, out = holding_usd({**route, "USDT/USD": inverse}, venues=venues)
        assert [(o["symbol"], o["side"], o["reason"]) for o in out["orders"]] == [
            ("USD/BTC", "sell", "cheapest_route"),
            ("BTC/USDT", "sell", "cheapest_route"),
            ("BTC/USDT", "buy", "in_place"),
        ]


def test_a_buy_takes_no_inverse_market() -> None:
    # More USD wanted in the USDT account: selling USDT on USDT/USD would do it, but a buy is not routed
    # that way: held USD wanted more of is skipped, a new USD position refused, as before.
    real = folder("alice", account("b", wallet("usdt", "USDT", "1000"), wallet("usd", "USD", "10")))
    target = folder("alice", folder("b", wallet("usd", "USD", weight="100%"), weight="100%"))
    prices = {"quote": "USD", "prices": {"USDT": "1"}}
    out = run(real, target, prices, {"ex": {"USDT/USD": market("0.01")}})[2]
    assert out["orders"] == []
    assert [(s["symbol"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("USD/USDT", "buy", "no_market")
    ]
    fresh = folder("alice", account("b", wallet("usdt", "USDT", "1000")))
    with pytest.raises(InputError, match="no market path for USD from USDT on ex"):
        run(fresh, target, prices, {"ex": {"USDT/USD": market("0.01")}})


def test_what_an_inverse_sell_yields_is_not_sent_to_another_account_in_the_same_run() -> None:
    # Half of the 500 USD's value is for kraken. The USDT comes from a buy, placed after the transfers: it
    # cannot be sent in this run (binance would withdraw USDT it does not have yet). Binance converts all
    # its USD (it is to hold none) and buys BTC with half of it; kraken's buy has no money this run.
    real = folder(
        "alice",
        account("binance", wallet("usd", "USD", "500"), wallet("btc", "BTC", "0"), exchange="binance"),
        account("kraken", wallet("usdt", "USDT", "0"), wallet("btc", "BTC", "0"), exchange="kraken"),
    )
    target = folder(
        "alice",
        folder("binance", wallet("btc", "BTC", weight="100%"), weight="50%"),
        folder("kraken", wallet("btc", "BTC", weight="100%"), weight="50%"),
    )
    markets = {
        "binance": {"BTC/USDT": market("0.00001"), "USDT/USD": market("0.01")},
        "kraken": {"BTC/USDT": market("0.00001")},
    }
    _, _, out = run(real, target, {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1"}}, markets)
    assert [(o["account"], *t) for o, t in zip(out["orders"], orders(out), strict=True)] == [
        ("alice/binance", "USDT/USD", "buy", "499.5", "1", "499.5", "0.4995", 2),
        ("alice/binance", "BTC/USDT", "buy", "0.005", "50000", "250", "0.25", 2),
    ]
    assert out["transfers"] == []
    assert [(s["path"], s["reason"]) for s in out["skipped"]] == [("alice/kraken/btc", "insufficient_quote")]

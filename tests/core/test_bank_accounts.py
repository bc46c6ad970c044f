"""Bank or broker accounts without an API (`"kind": "bank"`), with worked numbers: they hold cash and never
trade; their money moves by transfer (in plain plans too: the account's quote asset, no network file), and
the plan marks those transfers as operators' tasks (`Plan.manual`)."""

from __future__ import annotations

from typing import Any

import pytest

from rebal.core.errors import InputError
from tests.support import account, folder, run, wallet

Doc = dict[str, Any]
PRICES = {"quote": "USD", "prices": {"SPY": "300", "USD": "1"}}
# The broker trades SPY/USD; a market listed under the bank's name changes nothing (a bank never trades).
MARKETS = {
    "broker": {"SPY/USD": {"amount_step": "1", "min_amount": "0", "min_cost": "0", "fee_rate": "0"}},
    "bank": {"SPY/USD": {"amount_step": "1", "min_amount": "0", "min_cost": "0", "fee_rate": "0"}},
}


def bank(*children: Doc) -> Doc:
    """A bank account: no 'exchange' needed (nothing trades there)."""
    return {"name": "bank", "kind": "bank", "quote": "USD", "children": list(children)}


def broker(usd: str, spy: str) -> Doc:
    return account(
        "broker", wallet("usd", "USD", usd), wallet("spy", "SPY", spy), exchange="broker", quote="USD"
    )


def target(bank_weight: str, broker_weight: str) -> Doc:
    return folder(
        "alice",
        folder("bank", wallet("usd", "USD", weight=1), weight=bank_weight),
        folder("broker", wallet("spy", "SPY", weight=1), weight=broker_weight),
    )


def brief(out: Doc) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    orders = [(o["account"], o["symbol"], o["side"], o["amount"], o["est_cost"]) for o in out["orders"]]
    moves = [(t["asset"], t["from"], t["to"], t["amount"]) for t in out["transfers"]]
    return orders, moves


def test_the_bank_s_dollars_go_to_the_broker_to_buy_stocks() -> None:
    # 1000 USD in the bank, 200 at the broker: 1200 in all. The bank keeps 25% (300): 700 USD move to the
    # broker, which then holds 900 USD and buys 3 SPY at 300.
    real = folder("alice", bank(wallet("usd", "USD", "1000")), broker("200", "0"))
    _, plan, out = run(real, target("25%", "75%"), PRICES, MARKETS)
    assert brief(out) == (
        [("alice/broker", "SPY/USD", "buy", "3", "900")],
        [("USD", "alice/bank", "alice/broker", "700")],
    )
    assert plan.manual() == (True,)


def test_the_broker_s_sale_goes_to_the_bank() -> None:
    # 4 SPY at 300 at the broker (1200), nothing in the bank; half of it to the bank: 2 SPY sold for 600
    # USD, which move to the bank.
    real = folder("alice", bank(wallet("usd", "USD", "0")), broker("0", "4"))
    _, plan, out = run(real, target("50%", "50%"), PRICES, MARKETS)
    assert brief(out) == (
        [("alice/broker", "SPY/USD", "sell", "2", "600")],
        [("USD", "alice/broker", "alice/bank", "600")],
    )
    assert plan.manual() == (True,)


def test_a_transfer_between_two_exchange_accounts_is_not_an_operator_s_task() -> None:
    real = folder("alice", broker("1000", "0"), account("other", wallet("usd", "USD", "0"), quote="USD"))
    wanted = folder(
        "alice",
        folder("broker", wallet("usd", "USD", weight=1), weight="50%"),
        folder("other", wallet("usd", "USD", weight=1), weight="50%"),
    )
    _, plan, out = run(real, wanted, PRICES, MARKETS)
    assert brief(out)[1] == [("USD", "alice/broker", "alice/other", "500")]
    assert plan.manual() == (False,)


def test_what_a_bank_holds_besides_cash_is_never_sold_there() -> None:
    real = folder("alice", bank(wallet("usd", "USD", "0"), wallet("spy", "SPY", "1")), broker("0", "0"))
    _, _, out = run(real, target("0%", "100%"), PRICES, MARKETS)
    assert out["orders"] == [] and out["transfers"] == []
    # The broker's SPY buy has no money to spend: the bank's SPY could only come by an operator's sale.
    assert [(s["path"], s["side"], s["reason"]) for s in out["skipped"]] == [
        ("alice/bank/spy", "sell", "no_market"),
        ("alice/broker/spy", "buy", "insufficient_quote"),
    ]


def test_a_target_asking_a_bank_to_buy_is_refused_naming_the_bank() -> None:
    real = folder("alice", bank(wallet("usd", "USD", "1000")), broker("0", "0"))
    wanted = folder(
        "alice",
        folder("bank", wallet("spy", "SPY", weight=1), weight="50%"),
        folder("broker", wallet("spy", "SPY", weight=1), weight="50%"),
    )
    with pytest.raises(InputError) as raised:
        run(real, wanted, PRICES, MARKETS)
    assert raised.value.where == "alice/bank/spy"
    assert raised.value.message == (
        "account alice/bank is a bank (kind 'bank'): nothing is bought there, so it can never hold new SPY "
        "(leave it out of the account's target; its USD moves by transfer)"
    )

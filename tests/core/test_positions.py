"""Futures accounts in trees, and the orders that bring their positions to the desired ones, by hand."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from rebal.core.contracts import Contracts, perpetual, perpetual_of
from rebal.core.errors import InputError
from rebal.core.position_plan import (
    BELOW_MIN_COST,
    BELOW_STEP,
    MARGIN_MODE_LOCKED,
    NO_CONTRACT,
    PositionOrder,
    PositionSetting,
    plan_positions,
)
from rebal.core.positions import Position, TargetPosition
from rebal.core.tree import parse_tree
from rebal.core.union import union

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
CONTRACTS = Contracts.parse(
    {
        "paper": {
            BTC: {
                "amount_step": "0.001",
                "min_amount": "0.001",
                "min_cost": "5",
                "fee_rate": "0.0005",
                "max_leverage": 125,
                "maintenance_margin_rate": "0.004",
                "mark_price": "60000",
            },
            ETH: {"amount_step": "0.01", "min_amount": "0.01", "min_cost": "50", "mark_price": "3000"},
        }
    }
)


def account(positions: list[dict[str, Any]] | None, *, weight: bool = False, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "futures", "kind": "futures", "quote": "USDT", **extra}
    wallet: dict[str, Any] = {"name": "usdt", "asset": "USDT"}
    if weight:
        node["weight"], wallet["weight"] = "1", "1"
    else:
        wallet["amount"] = "10000"
    node["children"] = [wallet]
    if positions is not None:
        node["positions"] = positions
    exchange: dict[str, Any] = {"name": "paper", "kind": "exchange", "children": [node]}
    if weight:
        exchange["weight"] = "1"
    return {"name": "demo", "children": [exchange]}


def held(symbol: str, side: str, amount: str, mark: str = "60000", **extra: Any) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "side": side,
        "amount": amount,
        "entry_price": mark,
        "mark_price": mark,
        **extra,
    }


def plan(
    real: list[dict[str, Any]], wanted: list[dict[str, Any]] | None, band: str = "0", **extra: Any
) -> Any:
    tree = union(
        parse_tree(account(real), "real"), parse_tree(account(wanted, weight=True, **extra), "target"), "USDT"
    )
    return plan_positions(tree, CONTRACTS, D(band))


def orders(result: Any) -> list[tuple[str, str, D, bool, int]]:
    return [(o.symbol, o.side, o.amount, o.reduce_only, o.phase) for o in result.orders]


def test_a_futures_account_and_its_positions_parse() -> None:
    tree = parse_tree(account([held(BTC, "short", "0.1", "61000", leverage=3)]), "real")
    (position,) = tree.positions[2]
    assert position == Position(BTC, D("-0.1"), D(61000), D(61000), 3, "cross", None, D(0))
    assert position.notional == D(-6100)
    wanted = parse_tree(
        account([{"symbol": BTC, "notional": "-5240.5", "leverage": "3"}], weight=True), "target"
    )
    assert wanted.positions[2] == (TargetPosition(BTC, D("-5240.5"), 3, None),)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"symbol": "BTC/USDT", "side": "long", "amount": "1"}, "is not a linear perpetual"),
        ({"symbol": "BTC/USD:BTC", "side": "long", "amount": "1"}, "is not a linear perpetual"),
        (held(BTC, "up", "1"), "side 'up' is not 'long' or 'short'"),
        (held(BTC, "long", "-1"), "amount -1 must not be negative"),
        (held(BTC, "long", "1", leverage=0), "leverage 0 is not a whole number from 1 to 125"),
        (held(BTC, "long", "1", leverage=2.5), "leverage 2.5 is not a whole number"),
        (held(BTC, "long", "1", margin_mode="portfolio"), "margin_mode 'portfolio' is not"),
        ({"symbol": BTC, "side": "long", "amount": "1"}, "needs 'entry_price'"),
        ({**held(BTC, "long", "1"), "size": 1}, "unknown key(s) size"),
    ],
)
def test_bad_positions_are_named(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=r"^demo/paper/futures: ") as caught:
        parse_tree(account([entry]), "real")
    assert message in caught.value.message


def test_positions_twice_on_a_wallet_or_a_spot_account_are_refused() -> None:
    with pytest.raises(InputError, match="listed twice"):
        parse_tree(account([held(BTC, "long", "1"), held(BTC, "short", "1")]), "real")
    spot = account([held(BTC, "long", "1")])
    spot["children"][0]["children"][0]["kind"] = "account"
    with pytest.raises(InputError, match="'positions' belong to accounts of kind 'futures'"):
        parse_tree(spot, "real")
    wallet = account(None)
    wallet["children"][0]["children"][0]["children"][0]["positions"] = []
    with pytest.raises(InputError, match="demo/paper/futures/usdt: 'positions' belong to accounts"):
        parse_tree(wallet, "real")
    with pytest.raises(InputError, match="needs its 'notional'"):
        parse_tree(account([{"symbol": BTC}], weight=True), "target")


def test_perpetual_names() -> None:
    assert perpetual(BTC) == ("BTC", "USDT")
    assert perpetual("BTC/USDT:USDT-250627") is None
    assert perpetual_of("BTC", "USDT") == BTC and perpetual_of(ETH, "USDT") == ETH


def test_open_increase_reduce_close() -> None:
    # Open: 5240 USDT at 60000 is 0.08733..., truncated to the step 0.001.
    opened = plan([], [{"symbol": BTC, "notional": "5240", "leverage": 3, "margin_mode": "cross"}])
    assert orders(opened) == [(BTC, "buy", D("0.087"), False, 2)]
    assert opened.settings == (PositionSetting("demo/paper/futures", "paper", BTC, 3, "cross"),)
    (order,) = opened.orders
    assert order.est_notional == D(5220) and order.est_fee == D("2.61")
    # Plain text on the wire: no trailing zeros from the arithmetic, no exponent.
    assert (str(order.est_notional), str(order.est_fee)) == ("5220", "2.61")
    # Increase a long: only the difference, same side.
    assert orders(plan([held(BTC, "long", "0.05")], [{"symbol": BTC, "notional": "6000"}])) == [
        (BTC, "buy", D("0.05"), False, 2)
    ]
    # Reduce a short: reduce-only, phase 1, no settings needed.
    reduced = plan([held(BTC, "short", "0.2")], [{"symbol": BTC, "notional": "-6000", "leverage": 3}])
    assert orders(reduced) == [(BTC, "buy", D("0.1"), True, 1)] and reduced.settings == ()
    # Close: to 0, and a held symbol the desired account does not list is closed too.
    closed = plan(
        [held(BTC, "long", "0.2"), held(ETH, "short", "1", "3000")], [{"symbol": BTC, "notional": "0"}]
    )
    assert orders(closed) == [(BTC, "sell", D("0.2"), True, 1), (ETH, "buy", D(1), True, 1)]


def test_a_flip_closes_reduce_only_then_opens_the_other_way() -> None:
    flipped = plan([held(BTC, "long", "0.087")], [{"symbol": BTC, "notional": "-10480", "leverage": 3}])
    assert orders(flipped) == [(BTC, "sell", D("0.087"), True, 1), (BTC, "sell", D("0.174"), False, 2)]
    assert [o.phase for o in flipped.orders] == [1, 2]


def test_the_band_holds_small_differences_and_unlisted_accounts_are_left_alone() -> None:
    assert plan([held(BTC, "long", "0.087")], [{"symbol": BTC, "notional": "5240"}]).orders == ()
    # 0.1 BTC is 6000; 6050 wanted is within 0.5% of the 10000 account.
    assert plan([held(BTC, "long", "0.1")], [{"symbol": BTC, "notional": "6049"}], band="0.005").orders == ()
    assert plan([held(BTC, "long", "0.1")], [{"symbol": BTC, "notional": "6100"}], band="0.005").orders != ()
    # A desired futures account without positions does not manage them.
    assert plan([held(BTC, "long", "0.1")], None).orders == ()
    kept = plan([held(BTC, "long", "0.1"), held(ETH, "long", "1", "3000")], [], keep_unlisted=True)
    assert kept.orders == ()


def test_minimums_and_unknown_contracts_are_skips() -> None:
    small = plan([], [{"symbol": BTC, "notional": "59"}, {"symbol": ETH, "notional": "40"}])
    assert [(s.symbol, s.reason) for s in small.skips] == [(BTC, BELOW_STEP), (ETH, BELOW_MIN_COST)]
    # Reduce-only orders are exempt from the minimum notional: 0.01 ETH (30 USDT, under 50) closes.
    closing = plan([held(ETH, "long", "0.01", "3000")], [])
    assert orders(closing) == [(ETH, "sell", D("0.01"), True, 1)]
    unknown = plan([], [{"symbol": "SOL/USDT:USDT", "notional": "100"}])
    assert [(s.symbol, s.reason) for s in unknown.skips] == [("SOL/USDT:USDT", NO_CONTRACT)]


def test_the_margin_mode_of_a_position_that_stays_open_is_left_as_it_is() -> None:
    result = plan(
        [held(BTC, "long", "0.05", margin_mode="isolated")],
        [{"symbol": BTC, "notional": "6000", "leverage": 2, "margin_mode": "cross"}],
    )
    assert orders(result) == [(BTC, "buy", D("0.05"), False, 2)]
    assert result.settings == (PositionSetting("demo/paper/futures", "paper", BTC, 2, None),)
    assert [s.reason for s in result.skips] == [MARGIN_MODE_LOCKED]
    # A flip goes through flat: the new margin mode is set.
    flip = plan(
        [held(BTC, "long", "0.05", margin_mode="isolated")],
        [{"symbol": BTC, "notional": "-600", "margin_mode": "cross"}],
    )
    assert flip.settings[0].margin_mode == "cross" and flip.skips == ()


def test_a_futures_account_holds_only_its_collateral() -> None:
    real = account([])
    real["children"][0]["children"][0]["children"].append({"name": "btc", "asset": "BTC", "amount": "1"})
    with pytest.raises(
        InputError, match="demo/paper/futures/btc: a futures account's wallets hold its collateral"
    ):
        plan_positions(
            union(parse_tree(real, "real"), parse_tree(account([], weight=True), "target"), "USDT"), CONTRACTS
        )
    with pytest.raises(InputError, match="BTC/BUSD:BUSD does not settle in the account's quote USDT"):
        plan([], [{"symbol": "BTC/BUSD:BUSD", "notional": "100"}])


def test_position_orders_are_typed_tuples() -> None:
    (order,) = plan([], [{"symbol": ETH, "notional": "-3000"}]).orders
    assert order == PositionOrder(
        "demo/paper/futures", "paper", ETH, "sell", D(1), False, D(3000), D(3000), D(0), 2
    )

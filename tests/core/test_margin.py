"""The margin arithmetic of linear perpetuals, with worked numbers, and the pre-trade risk check."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from rebal.core.contracts import Contract
from rebal.core.margin import (
    Held,
    cross_in_liquidation,
    funding_payment,
    isolated_in_liquidation,
    liquidation_distance,
    liquidation_price,
    margin_balance,
    realized_pnl,
)
from rebal.core.position_plan import (
    AccountRisk,
    PositionOrder,
    PositionSetting,
    Side,
    projected,
    risk_refusal,
)
from rebal.core.positions import Position

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
MMR = D("0.004")
CONTRACTS = {
    BTC: Contract(BTC, "BTC", "USDT", D("0.001"), fee_rate=D("0.0005"), maintenance_margin_rate=MMR),
    ETH: Contract(ETH, "ETH", "USDT", D("0.01"), fee_rate=D("0.0005"), maintenance_margin_rate=D("0.005")),
}
MARKS = {BTC: D(60000), ETH: D(3000)}


def btc(amount: str, entry: str = "60000", mark: str = "60000", isolated: str | None = None) -> Held:
    return Held(BTC, D(amount), D(entry), D(mark), 3, MMR, None if isolated is None else D(isolated))


def test_liquidation_price_of_one_cross_position() -> None:
    # Long 1 BTC at 60000 on 10000: LP = (10000 - 60000) / (0.004 - 1) = 50200.80...
    long = btc("1")
    price = liquidation_price(long, D(10000), [long])
    assert price is not None and price.quantize(D("0.01")) == D("50200.80")
    # There the margin balance equals the maintenance margin: the account is liquidated.
    at = btc("1", mark=str(price))
    assert margin_balance(D(10000), [at]).quantize(D("0.0001")) == at.maintenance_margin.quantize(D("0.0001"))
    assert cross_in_liquidation(D(10000), [btc("1", mark="50200.80")]) and not cross_in_liquidation(
        D(10000), [btc("1", mark="50300")]
    )
    # Short 1 BTC: LP = (10000 + 60000) / (0.004 + 1) = 69721.11...
    short = btc("-1")
    assert liquidation_price(short, D(10000), [short]).quantize(D("0.01")) == D("69721.12")  # type: ignore[union-attr]
    # A long covered by its collateral cannot be liquidated.
    assert liquidation_price(btc("0.1"), D(10000), []) is None


def test_other_cross_positions_move_the_liquidation_price() -> None:
    long = btc("1")
    eth = Held(ETH, D(-10), D(3000), D(3300), 3, D("0.005"))  # unrealized -3000, maintenance 165
    price = liquidation_price(long, D(10000), [long, eth])
    # (10000 - 165 - 3000 - 60000) / (0.004 - 1)
    assert price == (D(10000) - D(165) - D(3000) - D(60000)) / (MMR - 1)


def test_an_isolated_position_has_its_own_margin() -> None:
    isolated = btc("1", isolated="20000")
    # (20000 - 60000) / (0.004 - 1): the cross wallet does not count.
    assert liquidation_price(isolated, D(1_000_000), []) == D(-40000) / (MMR - 1)
    assert not isolated_in_liquidation(btc("1", mark="41000", isolated="20000"))
    assert isolated_in_liquidation(btc("1", mark="40100", isolated="20000"))


def test_funding_and_realized_profit() -> None:
    # 0.1 BTC marked at 60000 at 0.01%: the long pays 0.6, the short receives it.
    assert funding_payment(D("0.1"), D(60000), D("0.0001")) == D("0.6")
    assert funding_payment(D("-0.1"), D(60000), D("0.0001")) == D("-0.6")
    assert realized_pnl(D("-0.2"), D(60000), D("0.1"), D(59000)) == D(100)
    assert liquidation_distance(D(60000), D(54000)) == D("0.1")


def risk(positions: list[Position], balance: str = "10000") -> AccountRisk:
    return AccountRisk("demo/paper/futures", D(balance), positions)


def order(symbol: str, side: Side, amount: str, reduce_only: bool = False) -> PositionOrder:
    mark = MARKS[symbol]
    return PositionOrder(
        "demo/paper/futures",
        "paper",
        symbol,
        side,
        D(amount),
        reduce_only,
        mark,
        D(amount) * mark,
        D(0),
        1 if reduce_only else 2,
    )


def refusal(
    orders: list[PositionOrder], positions: list[Position] | None = None, leverage: int = 3, **limits: str
) -> str:
    settings = [
        PositionSetting("demo/paper/futures", "paper", o.symbol, leverage, "cross")
        for o in orders
        if not o.reduce_only
    ]
    return risk_refusal(
        risk(positions or []),
        orders,
        settings,
        CONTRACTS,
        MARKS,
        D(limits.get("max_leverage", "3")),
        D(limits.get("distance", "0.1")),
    )


def test_the_example_passes_the_checks() -> None:
    # 10000 x 2.62 x (0.6 - 0.4): 0.087 BTC long, then flipped to 0.174 short: far from liquidation.
    assert refusal([order(BTC, "buy", "0.087")]) == ""
    held = [Position(BTC, D("0.087"), D(60000), D(60000), 3)]
    assert refusal([order(BTC, "sell", "0.087", True), order(BTC, "sell", "0.174")], held) == ""


def test_too_much_leverage_is_refused() -> None:
    assert "leverage 5 is above the maximum 3" in refusal([order(BTC, "buy", "0.1")], leverage=5)
    # 0.6 BTC is 36000 on 10000: 3.6x.
    why = refusal([order(BTC, "buy", "0.6")], leverage=3)
    assert (
        "positions of 36000.00 on a margin balance of 9982.00 (3.61x) would exceed the maximum leverage 3"
        in why
    )


def test_a_position_too_near_its_liquidation_is_refused() -> None:
    # 0.45 BTC long (27000, 2.7x) on 10000 less the 13.5 fee: LP = (9986.5 - 27000) / (0.45 x 0.004 - 0.45)
    # = 37959.62, 36.73% under the mark: fine at 10%.
    assert refusal([order(BTC, "buy", "0.45")]) == ""
    # With a 40% distance required, it is not.
    why = refusal([order(BTC, "buy", "0.45")], distance="0.4")
    assert why.startswith("demo/paper/futures BTC/USDT:USDT: the position would be 36.73% from liquidation")
    assert "(at 37959.62, marked 60000)" in why
    assert "nearer than the 40% allowed" in why


def test_the_projection_averages_entries_and_charges_fees() -> None:
    held = [Position(BTC, D("0.1"), D(50000), D(60000), 2)]
    balance, after = projected(risk(held), [order(BTC, "buy", "0.1")], [], CONTRACTS, MARKS)
    assert balance == D(10000) - D(3)  # 6000 x 0.0005
    (position,) = after
    assert position.amount == D("0.2") and position.entry_price == D(55000) and position.leverage == 2


@pytest.mark.parametrize("amount", ["0.087", "0.174"])
def test_reduce_only_orders_never_add_risk(amount: str) -> None:
    held = [Position(BTC, D("-0.174"), D(60000), D(60000), 3)]
    assert refusal([order(BTC, "buy", amount, True)], held, max_leverage="1.1") == ""

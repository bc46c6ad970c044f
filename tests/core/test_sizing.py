"""Sizing buys from the quote really held, with worked numbers."""

from __future__ import annotations

from decimal import Decimal

from rebal.core.market import Market
from rebal.core.sizing import BuyRequest, SizedBuy, SkippedBuy, size_buys

D = Decimal
BTC = Market("BTC", "USDT", D("0.00001"), D("0.00001"), D("5"), D("0.001"))
ETH = Market("ETH", "USDT", D("0.0001"), D("0.0001"), D("5"), D("0.001"))
SOL = Market("SOL", "USDT", D("0.01"), D("0.01"), D("5"), D("0.001"))


def buys() -> list[BuyRequest]:
    # 0.01 BTC at 60000 and 0.2 ETH at 3000: 600 + 0.6 fee each, 1201.2 in all.
    return [BuyRequest(3, D("0.01"), D("60000"), BTC), BuyRequest(4, D("0.2"), D("3000"), ETH)]


def test_planned_amounts_stay_when_the_budget_pays_for_them() -> None:
    sizing = size_buys(buys(), D("1201.2"))
    assert sizing.factor == 1
    assert sizing.buys == (SizedBuy(3, D("0.01"), D("0.01")), SizedBuy(4, D("0.2"), D("0.2")))
    assert not sizing.adjusted


def test_every_buy_is_scaled_by_one_factor_and_truncated_to_its_step() -> None:
    sizing = size_buys(buys(), D("1000"))
    # 1000 / 1201.2 = 0.832500832500...: 0.00832500 BTC → 0.00832, 0.16650016 ETH → 0.1665.
    assert sizing.factor == D("0.832500832500")
    assert [(buy.leg, buy.amount) for buy in sizing.buys] == [(3, D("0.00832")), (4, D("0.1665"))]
    spent = D("0.00832") * 60000 * D("1.001") + D("0.1665") * 3000 * D("1.001")
    assert spent == D("999.6987000") <= 1000
    assert sizing.adjusted


def test_the_price_buffer_leaves_room_for_the_market_to_move() -> None:
    # With a 1% buffer the buys would cost 1213.212: 1201.2 of quote is no longer enough.
    sizing = size_buys(buys(), D("1201.2"), price_buffer=D("0.01"))
    assert sizing.factor == D("0.990099009900")
    assert [buy.amount for buy in sizing.buys] == [D("0.0099"), D("0.198")]


def test_buys_that_fall_under_a_minimum_are_skipped_with_the_reason() -> None:
    requests = [*buys(), BuyRequest(5, D("0.05"), D("150"), SOL)]  # 7.5 USDT of SOL
    sizing = size_buys(requests, D("601"))
    # factor 601 / 1208.7075 = 0.49722...: SOL 0.02486 → 0.02, i.e. 3 USDT < 5.
    assert [buy.leg for buy in sizing.buys] == [3, 4]
    [skip] = sizing.skipped
    assert (skip.leg, skip.reason) == (5, "below_min_cost")
    assert skip.amount == D("0.05") * sizing.factor


def test_no_budget_skips_everything_below_one_step() -> None:
    sizing = size_buys(buys(), D("0"))
    assert sizing.factor == 0
    assert sizing.skipped == (
        SkippedBuy(3, D("0.01"), D("0"), "below_step"),
        SkippedBuy(4, D("0.2"), D("0"), "below_step"),
    )


def test_a_market_minimum_amount_applies_after_scaling() -> None:
    big_min = Market("BTC", "USDT", D("0.00001"), D("0.005"), D("5"), D("0.001"))
    sizing = size_buys([BuyRequest(0, D("0.01"), D("60000"), big_min)], D("240.24"))
    # factor 0.4: 0.004 BTC < min 0.005.
    assert sizing.skipped[0].reason == "below_min_amount"

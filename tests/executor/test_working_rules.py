"""The pure rules of worked legs (`rebal.core.execution`), with worked numbers: limit prices at the touch
with an offset, slices under a value, and what a buy may still spend."""

from __future__ import annotations

from decimal import Decimal

from rebal.core.execution import affordable, limit_price, slice_amount
from rebal_executor.settings import ExecutorSettings

ACCOUNT = "demo/binance/spot"

D = Decimal


def test_a_limit_price_is_the_touch_moved_by_the_offset_and_rounded_away_from_the_other_side() -> None:
    # bid 2998.5, ask 3001.5 (3000 ± 5 bps), 2 bps inside: 2998.5·1.0002 = 2999.0997 → 2999.09 (down);
    # 3001.5·0.9998 = 3000.8997 → 3000.90 (up).
    tick = D("0.01")
    assert limit_price("buy", D("2998.5"), D("3001.5"), D(2), tick) == D("2999.09")
    assert limit_price("sell", D("2998.5"), D("3001.5"), D(2), tick) == D("3000.90")
    assert limit_price("buy", D("2998.5"), D("3001.5"), D(0), tick) == D("2998.50")
    assert limit_price("sell", D("2998.5"), D("3001.5"), D(-10), tick) == D("3004.51")  # 3004.5015 up
    assert limit_price("buy", D("2998.5"), D("3001.5"), D(0), D(0)) == D("2998.5")


def test_slices_are_at_most_the_max_value_and_fold_in_a_rest_the_market_would_refuse() -> None:
    step, minimum, min_cost = D("0.0001"), D("0.0001"), D(5)
    assert slice_amount(D("0.9"), D(900), D(3000), step, minimum, min_cost) == D("0.3")
    assert slice_amount(D("0.9"), None, D(3000), step, minimum, min_cost) == D("0.9")
    # 1 ETH under 1000 USDT a slice: 0.3333; the rest 0.0001 (0.30 USDT < 5) goes with the last slice.
    assert slice_amount(D(1), D(1000), D(3000), step, minimum, min_cost) == D("0.3333")
    assert slice_amount(D("0.3334"), D(1000), D(3000), step, minimum, min_cost) == D("0.3334")


def test_a_buy_may_ask_for_no_more_than_is_left_of_what_it_was_sized_to_spend() -> None:
    # 2708.1054 cap, 1830 spent, at 3200 a unit with a 0.1% fee: 878.1054 / 3203.2 = 0.27413 → 0.2741.
    assert affordable(D("0.3"), D("2708.1054"), D(1830), D(3200), D("0.001"), D("0.0001")) == D("0.2741")
    assert affordable(D("0.3"), D(1000), D(1000), D(3200), D("0.001"), D("0.0001")) == D(0)


def test_order_types_are_chosen_by_market_then_account_then_default() -> None:
    settings = ExecutorSettings.model_validate(
        {
            "execution": {
                "order_types": {
                    "accounts": {ACCOUNT: {"type": "limit", "offset_bps": "1"}},
                    "markets": {"BTC/USDT": {"type": "limit", "post_only": True}},
                }
            }
        }
    )
    types = settings.execution.order_types
    assert types.of(ACCOUNT, "BTC/USDT").post_only is True
    assert types.of(ACCOUNT, "ETH/USDT").offset_bps == D(1)
    assert types.of("demo/other/spot", "ETH/USDT").type == "market"

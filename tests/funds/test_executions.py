"""A run's fills summed per asset for the fund cycle: which fees the users' ledgers are charged."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from rebal.core.funds import Execution
from rebal_planner.funds.records import executions


def fill(symbol: str, side: str, amount: str, price: str, fee: str, fee_asset: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "side": side,
        "amount": D(amount),
        "price": D(price),
        "fee": D(fee),
        "fee_asset": fee_asset,
    }


def test_quote_and_base_fees_are_allocated_and_a_third_assets_fee_is_reported() -> None:
    rows = [
        fill("BTC/USDT", "buy", "0.001", "50000.123", "0.05", "USDT"),
        fill("BTC/USDT", "buy", "0.002", "50000", "0.000002", "BTC"),
        fill("ETH/USDT", "sell", "0.1", "2500", "0.0004", "BNB"),
        fill("ETH/USDT", "sell", "0.1", "2500", "0.0001", "ETH"),
        fill("ETH/USDT", "sell", "0.1", "2500", "0", "BNB"),
    ]
    done = executions(rows, "USDT")  # type: ignore[arg-type]
    assert done.by_asset == {
        "BTC": Execution(D("0.003"), D("50.00012300") + D(100), D("0.05"), D("0.000002")),
        "ETH": Execution(D("0.3"), D(750), D(0), D(0)),
    }
    # BNB is not a fund asset, and a sell's fee in ETH is not one the sellers' legs planned for.
    assert done.unallocated_fees == {"BNB": D("0.0004"), "ETH": D("0.0001")}

"""Shared pieces of the venue tests: the fake Binance's book and ccxt settings pointed at it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from rebal_venues.ccxt_settings import CcxtVenueSettings
from tests.fake_exchange import FakeBook, FakeMarket, FakeNetwork

D = Decimal
ACCOUNT = "demo/binance/spot"
KEY, SECRET = "key-of-demo", "secret-of-demo"
# A second account on the fake exchange (the destination of transfers).
OTHER_ACCOUNT, OTHER_KEY = "demo/binance/savings", "key-of-savings"


def fake_book() -> FakeBook:
    """The paper exchange's test markets (tests/paper_support.py), on the fake Binance."""
    return FakeBook(
        markets={
            "BTCUSDT": FakeMarket("BTC", "USDT", D("0.00001"), D("0.00001"), D("5")),
            "ETHUSDT": FakeMarket("ETH", "USDT", D("0.0001"), D("0.0001"), D("5"), "MIN_NOTIONAL"),
            "SOLUSDT": FakeMarket("SOL", "USDT", D("0.01"), D("0.01"), D("5")),
        },
        prices={"BTCUSDT": D("60000"), "ETHUSDT": D("3000"), "SOLUSDT": D("150")},
        accounts={KEY: {}, OTHER_KEY: {}},
        networks={
            "BTC": [FakeNetwork("BTC", D("0.0002"), D("0.001"))],
            "USDT": [FakeNetwork("TRX", D("1"), D("10")), FakeNetwork("ETH", D("3.5"), D("10"))],
            "SOL": [FakeNetwork("SOL", D("0.01"), withdraw_enabled=False)],
        },
    )


def settings(origin: str, **changes: Any) -> CcxtVenueSettings:
    values: dict[str, Any] = {
        "exchange_id": "binance",
        "account": ACCOUNT,
        "api_key": SecretStr(KEY),
        "secret": SecretStr(SECRET),
        "sandbox": False,
        "api_base_url": origin,
        "timeout_ms": 3000,
    }
    return CcxtVenueSettings(**(values | changes))

"""A fake Binance spot exchange over HTTP, for ccxt clients in tests (`FakeBook` state, `serving`), with
its USDⓈ-M futures (`FakeFutures`) when given."""

from tests.fake_exchange.futures import FakeContract, FakeFutures, FuturesFaults
from tests.fake_exchange.server import serving
from tests.fake_exchange.state import (
    FakeBook,
    FakeMarket,
    FakeNetwork,
    Faults,
    OrderLimit,
    RateLimit,
    RequestKind,
)

__all__ = [
    "FakeBook",
    "FakeContract",
    "FakeFutures",
    "FakeMarket",
    "FakeNetwork",
    "Faults",
    "FuturesFaults",
    "OrderLimit",
    "RateLimit",
    "RequestKind",
    "serving",
]

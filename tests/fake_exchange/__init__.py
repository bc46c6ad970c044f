"""A fake Binance spot exchange over HTTP, for ccxt clients in tests (`FakeBook` state, `serving`)."""

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
    "FakeMarket",
    "FakeNetwork",
    "Faults",
    "OrderLimit",
    "RateLimit",
    "RequestKind",
    "serving",
]

"""The venue port: what the tracker and the executor need from an exchange, whichever it is.

The paper exchange (`rebal_venues.paper`) implements it now; ccxt exchanges implement it in the executor
issue. Adapters translate venue payloads and venue errors into these values and exceptions; nothing above
this port sees a venue's own types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

Side = Literal["buy", "sell"]
OrderStatus = Literal["open", "filled", "partially_filled", "cancelled", "rejected"]


@dataclass(frozen=True)
class MarketInfo:
    """One tradable symbol, as the venue states it (the planner's `Market` is built from this)."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal
    min_amount: Decimal
    min_cost: Decimal
    fee_rate: Decimal
    active: bool = True


@dataclass(frozen=True)
class Fill:
    trade_id: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str


@dataclass(frozen=True)
class OrderState:
    """An order as the venue knows it, looked up by our client order id."""

    client_order_id: str
    account: str
    symbol: str
    side: Side
    amount: Decimal
    status: OrderStatus
    filled: Decimal = Decimal(0)
    fills: tuple[Fill, ...] = ()
    reason: str = ""


class VenueError(Exception):
    """A venue problem the caller may retry (network, rate limit)."""


class OrderRejected(Exception):
    """The venue refused the order (invalid, below minimum, insufficient funds); the reason says which."""

    def __init__(self, client_order_id: str, reason: str) -> None:
        super().__init__(f"{client_order_id}: {reason}")
        self.client_order_id = client_order_id
        self.reason = reason


@dataclass(frozen=True)
class Balances:
    """Free and locked (in open orders) amount per asset of one account."""

    free: Mapping[str, Decimal]
    locked: Mapping[str, Decimal] = field(default_factory=dict)


class Venue(Protocol):
    """An exchange, or the paper exchange. Every call is idempotent or a read."""

    @property
    def name(self) -> str: ...

    async def markets(self) -> Mapping[str, MarketInfo]:
        """Every tradable symbol with its steps, minimums and fee."""
        ...

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """The last price of each symbol, in its quote."""
        ...

    async def balances(self, account: str) -> Balances: ...

    async def place_order(
        self, account: str, client_order_id: str, symbol: str, side: Side, amount: Decimal
    ) -> OrderState:
        """Place a market order. Placing the same client order id again returns the existing order."""
        ...

    async def order(self, account: str, client_order_id: str) -> OrderState | None:
        """Look an order up by our client order id (None: the venue never saw it)."""
        ...

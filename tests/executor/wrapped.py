"""A venue that passes every call to the paper venue: a test's venue overrides only what it changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from rebal.venue import Balances, MarketInfo, OrderState, Side
from rebal_venues.paper import PaperVenue


@dataclass
class Wrapped:
    inner: PaperVenue

    @property
    def name(self) -> str:
        return self.inner.name

    async def markets(self) -> Mapping[str, MarketInfo]:
        return await self.inner.markets()

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return await self.inner.prices(symbols)

    async def balances(self, account: str) -> Balances:
        return await self.inner.balances(account)

    async def place_order(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        *,
        price: Decimal | None = None,
        post_only: bool = False,
    ) -> OrderState:
        return await self.inner.place_order(
            account, client_order_id, symbol, side, amount, price=price, post_only=post_only
        )

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        return await self.inner.order(account, client_order_id, symbol)

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        return await self.inner.open_orders(account, symbol)

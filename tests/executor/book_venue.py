"""The fake Binance's book (`tests.fake_exchange.FakeBook`) behind the venue port, in memory and on a
virtual clock, with faults a test arms for the next calls: the stateful property test drives thousands
of runs through it without HTTP. It keeps the book's documented unkindness (a client id taken again once
its order ended, orders not found for a while, fees in the asset received) and adds the faults of the
wire: a submit that times out before or after the venue took it, look-ups that fail, 429s, and the
process dying at a call (`Crash`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from rebal.venue import (
    POST_ONLY_WOULD_TAKE,
    Balances,
    BookTop,
    ClientIdInUse,
    Fill,
    InsufficientFunds,
    MarketInfo,
    OrderRejected,
    OrderState,
    OrderStatus,
    Side,
    VenueError,
    VenueRateLimited,
)
from tests.fake_exchange.state import (
    DUPLICATE,
    NO_FUNDS,
    NOT_FOUND,
    UNKNOWN_ORDER,
    WOULD_TAKE,
    FakeBook,
    Order,
    Rejected,
)

ACCOUNT = "demo/binance/spot"
KEY = "key"
STATUS: Mapping[str, OrderStatus] = {
    "NEW": "open",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "cancelled",
    "EXPIRED": "expired",
}


class Crash(BaseException):
    """The process dying at this point (nothing below it runs; BaseException: no handler catches it)."""


@dataclass
class Armed:
    """Faults for the next calls, each used once."""

    timeout_before: int = 0  # the next submits time out before the venue sees them
    timeout_after: int = 0  # the next submits are taken, then their answer is lost
    rate_limited: int = 0  # the next submits are refused with 429
    lookup_errors: int = 0  # the next look-ups fail
    crash_before: bool = False  # the process dies at the next submit, before the venue sees it
    crash_after: bool = False  # the process dies at the next submit, after the venue took it


@dataclass
class BookVenue:
    book: FakeBook
    armed: Armed = field(default_factory=Armed)
    name: str = "binance"

    def _symbol_id(self, symbol: str) -> str:
        return symbol.replace("/", "")

    async def markets(self) -> Mapping[str, MarketInfo]:
        return {
            f"{m.base}/{m.quote}": MarketInfo(
                f"{m.base}/{m.quote}",
                m.base,
                m.quote,
                m.step,
                m.min_qty,
                m.min_notional,
                self.book.taker_fee,
                price_step=m.tick,
            )
            for m in self.book.markets.values()
        }

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return {symbol: self.book.prices[self._symbol_id(symbol)] for symbol in symbols}

    async def balances(self, account: str) -> Balances:
        held = self.book.balances(KEY)
        locked = self.book.locked(KEY)
        return Balances(
            {a: v - locked.get(a, Decimal(0)) for a, v in held.items() if v},
            {a: v for a, v in locked.items() if v},
        )

    async def book_top(self, symbol: str) -> BookTop:
        return BookTop(*self.book.top(self._symbol_id(symbol)))

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        """Cancel by client id; an order that already ended (-2011) is looked up as it ended."""
        try:
            self.book.cancel(KEY, self._symbol_id(symbol), client_order_id)
        except Rejected as refused:
            if refused is not UNKNOWN_ORDER and refused is not NOT_FOUND:
                raise
        return await self.order(account, client_order_id, symbol)

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
        armed = self.armed
        if armed.crash_before:
            armed.crash_before = False
            raise Crash
        if armed.timeout_before:
            armed.timeout_before -= 1
            raise VenueError("submit timed out (never reached the venue)")
        if armed.rate_limited:
            armed.rate_limited -= 1
            raise VenueRateLimited("429 Too many requests", retry_after=None)
        try:
            order = self.book.create(
                KEY, self._symbol_id(symbol), side.upper(), amount, client_order_id, price, post_only
            )
        except Rejected as refused:
            if refused is WOULD_TAKE:
                raise OrderRejected(client_order_id, POST_ONLY_WOULD_TAKE) from None
            if refused is DUPLICATE:
                raise ClientIdInUse(client_order_id) from None
            if refused is NO_FUNDS:
                raise InsufficientFunds(client_order_id) from None
            raise OrderRejected(client_order_id, f"invalid_order: {refused.msg}") from None
        if armed.crash_after:
            armed.crash_after = False
            raise Crash
        if armed.timeout_after:
            armed.timeout_after -= 1
            raise VenueError("submit timed out (the venue took it)")
        return self._state(order, account, symbol)

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        if self.armed.lookup_errors:
            self.armed.lookup_errors -= 1
            raise VenueError("look-up timed out")
        try:
            found = self.book.lookup(KEY, self._symbol_id(symbol or ""), client_order_id)
        except Rejected as refused:
            if refused is NOT_FOUND:
                return None
            raise
        return self._state(found, account, symbol or "")

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        found = self.book.open_orders(KEY, self._symbol_id(symbol) if symbol else None)
        by_id = {f"{m.base}{m.quote}": f"{m.base}/{m.quote}" for m in self.book.markets.values()}
        return [self._state(o, account, by_id[o.symbol_id]) for o in found]

    def _state(self, order: Order, account: str, symbol: str) -> OrderState:
        trades = order.trades * (2 if self.book.faults.fills_twice else 1)  # a trade reported twice
        return OrderState(
            client_order_id=order.client_order_id,
            account=account,
            symbol=symbol,
            side="buy" if order.side == "BUY" else "sell",
            amount=order.orig_qty,
            status=STATUS[order.status],
            filled=order.executed,
            fills=tuple(
                Fill(str(t.trade_id), t.qty, t.price, t.commission, t.commission_asset) for t in trades
            ),
            reason="expired" if order.status == "EXPIRED" else "",
        )

"""The fake exchange's book: markets, prices, accounts (by API key), orders, trades, and the scripted faults.

It is as unkind as Binance's documentation says Binance is (Binance Spot REST API,
https://developers.binance.com/docs/binance-spot-api-docs/rest-api):

- **A client order id is unique among OPEN orders only** ("newClientOrderId: a unique id among open
  orders", trading endpoints, `POST /api/v3/order`): sending an id again while its order is open is refused
  (-2010 "Duplicate order sent."), but once that order is filled, cancelled or expired the same id is
  ACCEPTED as a new order. Resending blindly after a lost answer therefore trades twice.
- **An order may not be found for a while after it was accepted** (`GET /api/v3/order` reads "Memory =>
  Database"; -2013 "Order does not exist."; an HTTP 5XX or -1007 TIMEOUT means "the execution status is
  UNKNOWN and could have been a success", http-return-codes / errors): `Faults.not_found_seconds` hides a
  new order from every read (the order, open orders, all orders, trades) until it is that old.
- **429s come in bursts** (http-return-codes: "429 when breaking a request rate limit", with
  `Retry-After`): the request-weight bucket (`RateLimit`: 6,000 per minute), the order-count limits
  (`OrderLimit`: ORDERS 50 per 10 s and 160,000 per day, the `rateLimits` of `exchangeInfo`; -1015 "Too many
  new orders") and scripted bursts (`Faults.rate_limited`). Every answer carries `X-MBX-USED-WEIGHT-1M`.
- **The taker fee is taken from the asset received** (`commissionAsset` of each fill in the FULL answer
  and in `myTrades`): the base on a buy, the quote on a sell, as Binance does without BNB.

**Withdrawals** (`POST /sapi/v1/capital/withdraw/apply`, `GET /sapi/v1/capital/withdraw/history`,
https://developers.binance.com/docs/wallet/capital/withdraw-history): the amount leaves the balance when
asked (status 4 Processing) and the withdrawal completes (6 Completed) after `Faults.transfer_delay_seconds`.
The history takes `coin`, `withdrawOrderId`, `status`, `idList`, `offset`, `limit` (default and at most
1000), `startTime` (default: 90 days ago) and `endTime` (default: now); the interval must not exceed 90
days (-1127 "More than 90 days between startTime and endTime.", as the fake words it: the docs give no
code), and with `withdrawOrderId` 7 days (default: the last 7). `applyTime` is "YYYY-MM-DD HH:MM:SS" UTC,
to the second. The docs do not say in which order the records come: the fake returns the newest first,
so nothing may rely on an order. An address outside the fake's accounts (`FakeBook.outside`: a bank, a
wallet elsewhere) takes withdrawals that complete and credit nothing here.

Market orders fill at once at the touch (a buy at the ask, a sell at the bid: the ticker price ± half of
`spread_bps`). A LIMIT order that crosses fills at once as a taker (at the touch, never beyond its price);
one that does not rests, and fills at its own price (a maker) once the ticker price reaches it, or in part
when a test trades against it (`FakeBook.trade`). **LIMIT_MAKER** orders "are LIMIT orders that will be
rejected if they would immediately match and trade as a taker" (`POST /api/v3/order`, order types): -2010
"Order would immediately match and take.". A cancel (`DELETE /api/v3/order`) of an order that already
ended is -2011 "Unknown order sent."; a resting order whose price was reached fills first, so a cancel can
lose the race.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Literal

RequestKind = Literal[
    "markets",
    "tickers",
    "balances",
    "create",
    "order",
    "trades",
    "cancel",
    "open_orders",
    "currencies",
    "deposit_address",
    "withdraw",
    "withdrawals",
    "deposits",
    "all_orders",
]
QUANTUM = Decimal("1e-8")
DAY_MS = 86_400_000


@dataclass
class Faults:
    """Faults tests switch on; each applies to the requests that follow."""

    # The next N requests of a kind are answered 429 with a Retry-After header.
    rate_limited: dict[RequestKind, int] = field(default_factory=dict)
    retry_after_seconds: float = 1.0
    # A market order fills only this share of its amount (truncated to the step); the rest expires.
    partial_fill: Decimal | None = None
    # Every trade is reported twice (in myTrades and in the order's own answer).
    fills_twice: bool = False
    # The order is stored and filled, then the answer to the submit waits this long (past a client timeout).
    submit_delay_seconds: float = 0.0
    # Reads (the order, open orders, all orders, trades) do not show a new order until it is this old: a
    # look-up answers "Order does not exist.".
    not_found_seconds: float = 0.0
    # Every new order is refused with -2010 and this message (e.g. "Filter failure: PERCENT_PRICE").
    reject_message: str | None = None
    # Symbols (exchange ids, "BTCUSDT") whose trading is halted: status BREAK, orders refused.
    halted: set[str] = field(default_factory=set)
    # A new order rests (NEW, nothing filled) until it is this old; the first request that touches it
    # after that (a look-up, a cancel, the trades) fills it first: a cancel arriving then loses the race.
    fill_delay_seconds: float = 0.0
    # A withdrawal is completed (and credited to the destination account) this long after it was asked.
    transfer_delay_seconds: float = 0.0
    # The trips of the next new orders to the venue, in turn: each reaches the venue (and is counted by
    # the ORDERS limits, which count arrivals) that many seconds (`FakeBook.sleep`) after it was sent.
    order_trips: list[float] = field(default_factory=list)


@dataclass
class RateLimit:
    """The venue's own limit: a token bucket of `burst` refilled at `per_second`; a request that finds too
    few tokens is answered 429 with the seconds until there are enough as Retry-After.

    Unweighted, every request costs 1 (requests per second). Weighted, a request costs its Binance weight
    (`WEIGHTS`: ``POST /order`` 1, ``/account`` 20, …, the figures ccxt's binance throttle uses, x5)."""

    per_second: float
    burst: float = 1.0
    weighted: bool = False
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    at: float = field(init=False)
    refused: int = field(default=0, init=False)
    admitted: int = field(default=0, init=False)
    spent: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.tokens, self.at = self.burst, self.clock()

    def admit(self, weight: float = 1.0) -> float | None:
        """None when the request may proceed (its cost is taken), else the seconds to wait."""
        cost = weight if self.weighted else 1.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= cost:
            self.tokens -= cost
            self.admitted += 1
            self.spent += cost
            return None
        self.refused += 1
        return (cost - self.tokens) / self.per_second


@dataclass
class OrderLimit:
    """Binance's ORDERS rate limits per account: at most `per_10s` new orders in any 10 seconds and
    `per_day` in a day; one more is answered 429, -1015 "Too many new orders", with `Retry-After`."""

    per_10s: int = 50
    per_day: int = 160_000
    clock: Callable[[], float] = time.monotonic
    # Per API key, the times of its orders in the last day and in the last 10 s, oldest first: each order
    # drops what left a window and looks at one entry (filtering whole lists made 100k orders quadratic).
    placed: dict[str, tuple[deque[float], deque[float]]] = field(default_factory=dict)
    refused: int = field(default=0, init=False)

    def admit(self, api_key: str) -> float | None:
        """None when a new order may be placed (it is counted), else the seconds until one may."""
        now = self.clock()
        day, recent = self.placed.setdefault(api_key, (deque(), deque()))
        for times, span in ((day, 86_400), (recent, 10)):
            while times and now - times[0] >= span:
                times.popleft()
        if len(recent) >= self.per_10s:
            self.refused += 1
            return 10 - (now - recent[-self.per_10s])
        if len(day) >= self.per_day:
            self.refused += 1
            return 86_400 - (now - day[-self.per_day])
        day.append(now)
        recent.append(now)
        return None


# Binance spot request weights (REST API docs; ccxt's binance costs are these / 5).
WEIGHTS: dict[tuple[str, str], float] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/ticker/24hr"): 2,  # one symbol; every symbol: 80
    ("GET", "/api/v3/ticker/price"): 2,  # one symbol; every symbol: 4
    ("GET", "/api/v3/account"): 20,
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/openOrders"): 6,  # one symbol; every symbol: 80
    ("GET", "/api/v3/myTrades"): 20,
    ("GET", "/api/v3/allOrders"): 20,
    # Binance limits /sapi separately; the fake has one bucket, so these are ccxt's sapi costs x5, the
    # share of the one bucket ccxt's throttle charges them.
    ("GET", "/sapi/v1/capital/config/getall"): 5,
    ("GET", "/sapi/v1/capital/deposit/address"): 5,
    ("POST", "/sapi/v1/capital/withdraw/apply"): 20.001,
    ("GET", "/sapi/v1/capital/withdraw/history"): 10,
    ("GET", "/sapi/v1/capital/deposit/hisrec"): 0.5,
}
ALL_SYMBOLS_WEIGHTS = {"/api/v3/ticker/24hr": 80.0, "/api/v3/ticker/price": 4.0}


def request_weight(method: str, path: str, params: dict[str, str]) -> float:
    """A request's Binance weight (1 for what `WEIGHTS` does not list)."""
    if path in ALL_SYMBOLS_WEIGHTS and "symbols" in params:  # 1-20 symbols: 2, 21-100: 40, more: 80
        count = params["symbols"].count(",") + 1
        return 2.0 if count <= 20 else 40.0 if count <= 100 else 80.0
    if path in ALL_SYMBOLS_WEIGHTS and "symbol" not in params:
        return ALL_SYMBOLS_WEIGHTS[path]
    if path == "/api/v3/openOrders" and "symbol" not in params:
        return 80.0
    return WEIGHTS.get((method, path), 1.0)


@dataclass(frozen=True)
class FakeMarket:
    base: str
    quote: str
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    # Binance's newer filter is NOTIONAL; older markets still carry MIN_NOTIONAL.
    notional_filter: Literal["NOTIONAL", "MIN_NOTIONAL"] = "NOTIONAL"
    # PRICE_FILTER's tickSize: a limit price must be a multiple of it.
    tick: Decimal = Decimal("0.01")

    @property
    def symbol_id(self) -> str:
        return self.base + self.quote


@dataclass(frozen=True)
class Trade:
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    maker: bool = False


@dataclass
class Order:
    order_id: int
    client_order_id: str
    api_key: str
    symbol_id: str
    side: Literal["BUY", "SELL"]
    orig_qty: Decimal
    status: str
    created: float
    time_ms: int
    trades: list[Trade] = field(default_factory=list)
    # The amount still to fill when a resting order's delay has passed (`Faults.fill_delay_seconds`).
    pending_qty: Decimal = Decimal(0)
    # A limit order resting in the book until cancelled (a LIMIT that did not cross, or `FakeBook.rest`).
    resting: bool = False
    limit_price: Decimal | None = None
    # A LIMIT_MAKER order (post-only).
    maker_only: bool = False

    @property
    def executed(self) -> Decimal:
        return sum((t.qty for t in self.trades), Decimal(0))

    @property
    def quote_qty(self) -> Decimal:
        return sum((t.qty * t.price for t in self.trades), Decimal(0))


@dataclass(frozen=True)
class FakeNetwork:
    """A coin's network as Binance lists it (``/sapi/v1/capital/config/getall``)."""

    network: str  # Binance's network id: "BTC", "ETH" (ccxt: ERC20), "TRX" (ccxt: TRC20)
    withdraw_fee: Decimal
    withdraw_min: Decimal = Decimal(0)
    deposit_enabled: bool = True
    withdraw_enabled: bool = True


@dataclass
class Withdrawal:
    withdrawal_id: str
    withdraw_order_id: str
    api_key: str
    to_key: str | None  # None: an address outside the fake (`FakeBook.outside`)
    coin: str
    network: str
    address: str
    amount: Decimal
    fee: Decimal
    tx_id: str
    created: float
    time_ms: int
    # Binance's withdrawal status: 4 processing, 6 completed.
    status: int = 4


class Rejected(Exception):
    """A Binance error answer: HTTP status, code and message."""

    def __init__(self, http_status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.http_status, self.code, self.msg = http_status, code, msg


class TooManyOrders(Rejected):
    """Binance's ORDERS limit: HTTP 429, -1015, with the seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(429, -1015, "Too many new orders; current limit is 50 orders per 10 SECOND.")
        self.retry_after = retry_after


# Orders in these statuses are open: their client id may not be used again until they end.
OPEN = frozenset({"NEW", "PARTIALLY_FILLED"})
DUPLICATE = Rejected(400, -2010, "Duplicate order sent.")
NO_FUNDS = Rejected(400, -2010, "Account has insufficient balance for requested action.")
NOT_FOUND = Rejected(400, -2013, "Order does not exist.")
WOULD_TAKE = Rejected(400, -2010, "Order would immediately match and take.")
UNKNOWN_ORDER = Rejected(400, -2011, "Unknown order sent.")
BAD_KEY = Rejected(401, -2015, "Invalid API-key, IP, or permissions for action.")


@dataclass
class FakeBook:
    markets: dict[str, FakeMarket]
    prices: dict[str, Decimal]
    accounts: dict[str, dict[str, Decimal]]
    taker_fee: Decimal = Decimal("0.001")
    # The fee of a resting order's fills (None: the taker fee).
    maker_fee: Decimal | None = None
    # The book's spread around the ticker price, in basis points: bid = price·(1 − s/20000), ask =
    # price·(1 + s/20000). 0: bid = ask = the ticker price.
    spread_bps: Decimal = Decimal(0)
    faults: Faults = field(default_factory=Faults)
    # Every request (public or signed, pings too) counts against it; None: unlimited.
    rate_limit: RateLimit | None = None
    # Coin → its networks; a coin not listed cannot move.
    networks: dict[str, list[FakeNetwork]] = field(default_factory=dict)
    withdrawals: list[Withdrawal] = field(default_factory=list)
    # Valid withdrawal addresses outside the fake's accounts (a bank, a wallet elsewhere): a withdrawal
    # there completes after the delay and is credited nowhere here.
    outside: set[str] = field(default_factory=set)
    # Every order the venue took, by its order id (a client id used again for a new order is a new entry).
    orders: dict[int, Order] = field(default_factory=dict)
    # Binance's ORDERS limits (`OrderLimit`); None: unlimited.
    order_limit: OrderLimit | None = None
    requests: list[tuple[RequestKind, dict[str, str]]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    # How the fake waits out a scripted trip (`Faults.order_trips`); a test with its own clock advances it.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Open orders lock what they would spend (as Binance does): `/account` reports it as locked, not free,
    # and an order may only spend what is free. Off by default (the older tests' figures assume it off).
    locks_open_orders: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    _weights: dict[int, float] = field(default_factory=dict)
    # The latest order under each (API key, client id): a scan of every order per placement made a
    # 100k-order run quadratic.
    _by_client_id: dict[tuple[str, str], Order] = field(default_factory=dict)

    def used_weight(self, weight: float) -> float:
        """Count a request's weight in the current minute; the minute's total (`X-MBX-USED-WEIGHT-1M`)."""
        minute = int(self.clock() // 60)
        self._weights = {minute: self._weights.get(minute, 0.0) + weight}
        return self._weights[minute]

    def requests_of(self, kind: RequestKind) -> list[dict[str, str]]:
        return [params for seen, params in self.requests if seen == kind]

    def balances(self, api_key: str) -> dict[str, Decimal]:
        if api_key not in self.accounts:
            raise BAD_KEY
        return self.accounts[api_key]

    def market(self, symbol_id: str) -> FakeMarket:
        if symbol_id not in self.markets:
            raise Rejected(400, -1121, "Invalid symbol.")
        return self.markets[symbol_id]

    def top(self, symbol_id: str) -> tuple[Decimal, Decimal]:
        """The best bid and ask now."""
        price, half = self.prices[symbol_id], self.spread_bps / 20000
        return (price * (1 - half)).quantize(QUANTUM), (price * (1 + half)).quantize(QUANTUM)

    def _touch(self, symbol_id: str, side: str) -> Decimal:
        """Where a taker trades now: a buy at the ask, a sell at the bid."""
        bid, ask = self.top(symbol_id)
        return ask if side == "BUY" else bid

    def create(
        self,
        api_key: str,
        symbol_id: str,
        side: str,
        qty: Decimal,
        client_order_id: str,
        limit_price: Decimal | None = None,
        maker_only: bool = False,
    ) -> Order:
        """A market order filled at once (or partly), a LIMIT order filled or resting, a LIMIT_MAKER
        (`maker_only`) resting or refused, or the refusal Binance would give. An id is refused only while
        an order under it is open."""
        market = self.market(symbol_id)
        previous = self.by_client_id(api_key, client_order_id)
        if previous is not None and previous.status in OPEN:
            raise DUPLICATE
        if self.faults.reject_message is not None:
            raise Rejected(400, -2010, self.faults.reject_message)
        if symbol_id in self.faults.halted:
            raise Rejected(400, -1013, "Market is closed.")
        self._check_filters(market, qty)
        if limit_price is not None and (limit_price <= 0 or limit_price % market.tick != 0):
            raise Rejected(400, -1013, "Filter failure: PRICE_FILTER")
        if self.order_limit is not None:
            wait = self.order_limit.admit(api_key)
            if wait is not None:
                raise TooManyOrders(wait)
        touch = self._touch(symbol_id, side)
        crosses = limit_price is None or (touch <= limit_price if side == "BUY" else touch >= limit_price)
        if maker_only and crosses:
            raise WOULD_TAKE
        if not crosses:
            order = self._new_order(api_key, client_order_id, symbol_id, side, qty, "NEW", resting=True)
            order.limit_price, order.maker_only = limit_price, maker_only
            self._changes(order, market, qty)  # refused now when the funds are short
            self._keep(order)
            return order
        fill_qty = qty
        if self.faults.partial_fill is not None:
            fill_qty = (qty * self.faults.partial_fill / market.step).to_integral_value(
                ROUND_DOWN
            ) * market.step
        order = self._new_order(
            api_key, client_order_id, symbol_id, side, qty, "FILLED" if fill_qty == qty else "EXPIRED"
        )
        if self.faults.fill_delay_seconds > 0:
            self._changes(order, market, fill_qty)  # refused now when the funds are short
            order.status, order.pending_qty = "NEW", fill_qty
        else:
            self._fill(order, market, fill_qty)
        self._keep(order)
        return order

    def _keep(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self._by_client_id[order.api_key, order.client_order_id] = order

    def by_client_id(self, api_key: str, client_order_id: str) -> Order | None:
        """The account's most recent order under the client id (an id may name several, one at a time)."""
        return self._by_client_id.get((api_key, client_order_id)) if client_order_id else None

    def visible(self, order: Order) -> bool:
        """Whether reads show the order yet (`Faults.not_found_seconds`)."""
        return self.clock() - order.created >= self.faults.not_found_seconds

    def _new_order(
        self,
        api_key: str,
        client_order_id: str,
        symbol_id: str,
        side: str,
        qty: Decimal,
        status: str,
        resting: bool = False,
    ) -> Order:
        return Order(
            order_id=next(self._ids),
            client_order_id=client_order_id,
            api_key=api_key,
            symbol_id=symbol_id,
            side="BUY" if side == "BUY" else "SELL",
            orig_qty=qty,
            status=status,
            created=self.clock(),
            time_ms=int(time.time() * 1000),
            resting=resting,
        )

    def rest(self, api_key: str, symbol_id: str, side: str, qty: Decimal, client_order_id: str = "") -> Order:
        """A limit order someone placed outside (by hand, another program) that rests unfilled until
        cancelled; without a client id Binance names it ``web_<n>``, this fake leaves it empty."""
        self.market(symbol_id)
        self.balances(api_key)
        order = self._new_order(api_key, client_order_id, symbol_id, side, qty, "NEW", resting=True)
        self._keep(order)
        return order

    def open_orders(self, api_key: str, symbol_id: str | None) -> list[Order]:
        self.balances(api_key)
        for order in self.orders.values():
            self._settle(order)
        return [
            order
            for order in self.orders.values()
            if order.api_key == api_key
            and order.status in OPEN
            and (symbol_id is None or order.symbol_id == symbol_id)
            and self.visible(order)
        ]

    def all_orders(self, api_key: str, symbol_id: str, since_ms: int | None) -> list[Order]:
        """`GET /api/v3/allOrders`: the account's orders on the symbol (open or not), oldest first."""
        self.balances(api_key)
        self.market(symbol_id)
        for order in self.orders.values():
            self._settle(order)
        return [
            order
            for order in self.orders.values()
            if order.api_key == api_key
            and order.symbol_id == symbol_id
            and (since_ms is None or order.time_ms >= since_ms)
            and self.visible(order)
        ]

    def locked(self, api_key: str, besides: Order | None = None) -> dict[str, Decimal]:
        """Per asset, what the account's open orders (other than `besides`) lock, when `locks_open_orders`:
        a sell its unfilled base, a buy its unfilled quantity x the price in the quote."""
        locked: dict[str, Decimal] = {}
        if not self.locks_open_orders:
            return locked
        for order in self.orders.values():
            if order is besides or order.api_key != api_key or order.status not in OPEN:
                continue
            market = self.markets[order.symbol_id]
            left = order.orig_qty - order.executed if order.resting else order.pending_qty
            price = order.limit_price or self.prices[order.symbol_id]
            if order.side == "SELL":
                asset, amount = market.base, left
            else:
                asset, amount = market.quote, (left * price).quantize(QUANTUM)
            locked[asset] = locked.get(asset, Decimal(0)) + amount
        return locked

    def trade(self, order: Order, qty: Decimal) -> None:
        """Someone trades `qty` against our resting limit order, at its price: it fills in part (or whole)."""
        if not order.resting or order.limit_price is None or order.status not in OPEN:
            raise ValueError(f"order {order.order_id} is not resting in the book")
        self._fill(order, self.markets[order.symbol_id], qty, maker=True)
        order.status = "FILLED" if order.executed == order.orig_qty else "PARTIALLY_FILLED"

    def _reached(self, order: Order) -> bool:
        """Whether the ticker price has reached a resting limit order's price."""
        if not order.resting or order.limit_price is None or order.status not in OPEN:
            return False
        price = self.prices[order.symbol_id]
        return price <= order.limit_price if order.side == "BUY" else price >= order.limit_price

    def _settle(self, order: Order) -> None:
        """A resting order whose delay has passed fills now (funds short by then: it expires); a resting
        limit order whose price the market reached fills the rest at its price."""
        if self._reached(order):
            self._fill(order, self.markets[order.symbol_id], order.orig_qty - order.executed, maker=True)
            order.status = "FILLED"
            return
        if (
            order.status != "NEW"
            or order.resting
            or self.clock() - order.created < self.faults.fill_delay_seconds
        ):
            return
        qty, order.pending_qty = order.pending_qty, Decimal(0)
        try:
            self._fill(order, self.markets[order.symbol_id], qty)
        except Rejected:
            order.status = "EXPIRED"
            return
        order.status = "FILLED" if qty == order.orig_qty else "EXPIRED"

    def _check_filters(self, market: FakeMarket, qty: Decimal) -> None:
        if qty < market.min_qty or qty % market.step != 0:
            raise Rejected(400, -1013, "Filter failure: LOT_SIZE")
        if qty * self.prices[market.symbol_id] < market.min_notional:
            raise Rejected(400, -1013, f"Filter failure: {market.notional_filter}")

    def _changes(
        self, order: Order, market: FakeMarket, qty: Decimal, maker: bool = False
    ) -> tuple[dict[str, Decimal], Trade]:
        """The balance changes and the trade of filling `qty` of `order` now (a taker at the touch, a
        resting order at its own price); NO_FUNDS when short."""
        held = self.balances(order.api_key)
        price = order.limit_price if maker and order.limit_price is not None else None
        price = price if price is not None else self._touch(market.symbol_id, order.side)
        rate = self.maker_fee if maker and self.maker_fee is not None else self.taker_fee
        cost = (qty * price).quantize(QUANTUM)
        if order.side == "BUY":
            fee = (qty * rate).quantize(QUANTUM, rounding=ROUND_CEILING)
            changes, fee_asset = {market.quote: -cost, market.base: qty - fee}, market.base
        else:
            fee = (cost * rate).quantize(QUANTUM, rounding=ROUND_CEILING)
            changes, fee_asset = {market.base: -qty, market.quote: cost - fee}, market.quote
        locked = self.locked(order.api_key, besides=order)
        if any(
            held.get(asset, Decimal(0)) - locked.get(asset, Decimal(0)) + delta < 0
            for asset, delta in changes.items()
        ):
            raise NO_FUNDS
        trade = Trade(next(self._ids), order.order_id, price, qty, fee, fee_asset, order.time_ms, maker)
        return changes, trade

    def _fill(self, order: Order, market: FakeMarket, qty: Decimal, maker: bool = False) -> None:
        changes, trade = self._changes(order, market, qty, maker)
        if qty == 0:
            return
        held = self.balances(order.api_key)
        for asset, delta in changes.items():
            held[asset] = held.get(asset, Decimal(0)) + delta
        order.trades.append(trade)

    def lookup(self, api_key: str, symbol_id: str, client_order_id: str) -> Order:
        order = self.by_client_id(api_key, client_order_id)
        if order is None or order.symbol_id != symbol_id or not self.visible(order):
            raise NOT_FOUND
        self._settle(order)
        return order

    def cancel(self, api_key: str, symbol_id: str, client_order_id: str) -> Order:
        order = self.lookup(api_key, symbol_id, client_order_id)
        if order.status not in OPEN:
            raise UNKNOWN_ORDER
        order.status = "CANCELED"
        return order

    def trades(self, api_key: str, symbol_id: str, order_id: int | None) -> list[Trade]:
        for order in self.orders.values():
            self._settle(order)
        found = [
            trade
            for order in self.orders.values()
            if order.api_key == api_key and order.symbol_id == symbol_id and self.visible(order)
            for trade in order.trades
            if order_id is None or trade.order_id == order_id
        ]
        return [t for t in found for _ in range(2)] if self.faults.fills_twice else found

    # -- wallet: addresses, withdrawals, deposits -------------------------------------------------------

    def network(self, coin: str, network: str) -> FakeNetwork | None:
        return next((n for n in self.networks.get(coin, []) if n.network == network), None)

    def address(self, api_key: str, coin: str, network: str) -> str:
        """The account's deposit address for the coin on the network (deterministic)."""
        self.balances(api_key)
        if self.network(coin, network) is None:
            raise Rejected(400, -4018, "The coin does not exist or the network is not supported.")
        return f"{network.lower()}-{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"

    def withdraw(
        self, api_key: str, coin: str, network: str, address: str, amount: Decimal, withdraw_order_id: str
    ) -> Withdrawal:
        held = self.balances(api_key)
        found = self.network(coin, network)
        if found is None or not found.withdraw_enabled:
            raise Rejected(400, -4019, "The current currency is not open for withdrawal.")
        to_key = next((k for k in self.accounts if self.address(k, coin, network) == address), None)
        if to_key is None and address not in self.outside:
            raise Rejected(400, -4007, "Withdrawal address invalid.")
        if amount < found.withdraw_min or amount <= found.withdraw_fee:
            raise Rejected(400, -4003, "The withdrawal amount is below the minimum.")
        if held.get(coin, Decimal(0)) < amount:
            raise Rejected(400, -4026, "Account has insufficient balance for requested action.")
        held[coin] -= amount
        withdrawal_id = f"w{next(self._ids)}"
        withdrawal = Withdrawal(
            withdrawal_id=withdrawal_id,
            withdraw_order_id=withdraw_order_id,
            api_key=api_key,
            to_key=to_key,
            coin=coin,
            network=network,
            address=address,
            amount=amount,
            fee=found.withdraw_fee,
            tx_id="0x" + hashlib.sha256(withdrawal_id.encode()).hexdigest(),
            created=self.clock(),
            time_ms=int(time.time() * 1000),
        )
        self.withdrawals.append(withdrawal)
        self._settle_withdrawals()
        return withdrawal

    def _settle_withdrawals(self) -> None:
        """Withdrawals whose delay has passed complete: the destination is credited amount - fee."""
        for w in self.withdrawals:
            if w.status == 4 and self.clock() - w.created >= self.faults.transfer_delay_seconds:
                w.status = 6
                if w.to_key is None:
                    continue  # gone out of the fake
                held = self.accounts[w.to_key]
                held[w.coin] = held.get(w.coin, Decimal(0)) + w.amount - w.fee

    def withdrawal_history(
        self,
        api_key: str,
        coin: str | None,
        withdraw_order_id: str | None,
        params: dict[str, str] | None = None,
    ) -> list[Withdrawal]:
        """``GET /sapi/v1/capital/withdraw/history`` (see the module's docstring): the account's withdrawals
        in the window, filtered, newest first, `offset` and `limit` applied."""
        params = params or {}
        self.balances(api_key)
        self._settle_withdrawals()
        now_ms = int(time.time() * 1000)
        window_ms = (7 if withdraw_order_id else 90) * DAY_MS
        end = int(params.get("endTime", now_ms))
        start = int(params.get("startTime", end - window_ms))
        if end - start > window_ms:
            days = window_ms // DAY_MS
            raise Rejected(400, -1127, f"More than {days} days between startTime and endTime.")
        ids = set(params["idList"].split(",")) if "idList" in params else None
        status = int(params["status"]) if "status" in params else None
        found = [
            w
            for w in self.withdrawals
            if w.api_key == api_key
            and (coin is None or w.coin == coin)
            and (withdraw_order_id is None or w.withdraw_order_id == withdraw_order_id)
            and start <= w.time_ms // 1000 * 1000 <= end
            and (ids is None or w.withdrawal_id in ids)
            and (status is None or w.status == status)
        ]
        found.sort(key=lambda w: (w.time_ms, w.withdrawal_id), reverse=True)
        offset = int(params.get("offset", 0))
        limit = min(int(params.get("limit", 1000)), 1000)
        return found[offset : offset + limit]

    def deposit_history(self, api_key: str, coin: str | None) -> list[Withdrawal]:
        """Deposits into the account: the withdrawals addressed to it (credited once completed)."""
        self.balances(api_key)
        self._settle_withdrawals()
        return [w for w in self.withdrawals if w.to_key == api_key and (coin is None or w.coin == coin)]

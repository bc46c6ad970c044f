"""The paper exchange: a `rebal.venue.Venue` whose balances, orders and fills live in Postgres.

Every process that trades on it (the tracker reads, the executor places) shares one state, and a second
run resumes with the balances the first one left. Orders are market orders that fill at once, in one
transaction, at the moving price of the moment:

- prices move deterministically with the injected clock (`MovingPrices`): a bounded sine per asset plus
  a small noise derived from a hash of (asset, time bucket), around the base prices of a prices document;
- the fee is charged in the quote (`fee_in_received` off: a buy costs ``amount·price·(1+fee)``, a sell
  yields ``amount·price·(1−fee)``, the cost rounded to `QUOTE_QUANTUM`, the fee rounded up to it), or, as
  Binance does (each fill's `commissionAsset`), in the asset received: a buy's fee out of the base bought.

It keeps the unpleasant parts of a real venue's documented behaviour (Binance Spot REST API,
https://developers.binance.com/docs/binance-spot-api-docs/rest-api), each switchable for tests:

- a client order id is unique among OPEN orders only ("newClientOrderId: a unique id among open orders"):
  placing it again after its order ended places a NEW order (`place_order` is not idempotent);
- a new order is not shown by look-ups until it is `order_visible_after` old ("Memory => Database";
  -2013 "Order does not exist.");
- new orders are limited per account (`orders_per_10s`; Binance's ORDERS limit is 50 per 10 s): one more
  is refused with `VenueRateLimited` and the seconds to wait (HTTP 429, -1015 "Too many new orders").

Limit orders (a `price` given): one that crosses the touch (a buy at or above the ask, a sell at or below
the bid) trades at once like a market order; one that does not rests, locking what it would spend (Binance
reports it `locked`), and fills whole at its own price once the moving price reaches it (checked whenever
the exchange is asked anything), unless cancelled first. A post-only one that would cross is refused:
Binance's "LIMIT_MAKER are LIMIT orders that will be rejected if they would immediately match and trade as
a taker" (-2010 "Order would immediately match and take."). The touch is the moving price ± half of
`spread_bps` (0: bid = ask = the price). Each paper exchange may price apart from the others
(`price_factor`: its assets at that multiple of the moving prices, the prices document's quote at 1).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, Context, Decimal
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from rebal.core.market import Markets, Prices
from rebal.core.venues import Quote
from rebal.events import derive_id
from rebal.venue import (
    BELOW_MIN_AMOUNT,
    BELOW_MIN_COST,
    INACTIVE_SYMBOL,
    INSUFFICIENT_FUNDS,
    INVALID_ADDRESS,
    NOT_POSITIVE,
    NOT_STEP_MULTIPLE,
    POST_ONLY_WOULD_TAKE,
    UNKNOWN_SYMBOL,
    AssetNetwork,
    Balances,
    BookTop,
    ClientIdInUse,
    DepositAddress,
    Fill,
    InsufficientFunds,
    MarketInfo,
    OrderRejected,
    OrderState,
    OrderStatus,
    Side,
    Transfer,
    TransferRefused,
    TransferStatus,
    VenueError,
    VenueRateLimited,
    transfer_problem,
)

Clock = Callable[[], datetime]
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# The one network the paper exchange moves assets on, between its accounts and other paper exchanges.
PAPER_NETWORK = "internal"
# A paper deposit address: "paper:<exchange>:<account>".
ADDRESS_PREFIX = "paper:"
# An address outside the paper exchanges, "outside:<anything>" (a bank account's number, a wallet): a
# withdrawal there is debited when asked, "sent" after the transfer delay, and credited nowhere (an
# operator's wire from an exchange to a bank, as the paper exchange plays it).
OUTSIDE_PREFIX = "outside:"

# Significant digits of a price (a venue's tick, roughly): 60123.45678 or 0.0001234567.
PRICE_DIGITS = 10
# Quote amounts (costs, fees, proceeds) are kept to this quantum.
QUOTE_QUANTUM = Decimal("1e-8")
# The multiplier of a moving price is rounded to this many places before it becomes a Decimal.
FACTOR_PLACES = 10

# Rejection reasons (the `reason` of `OrderRejected` and of a stored rejected order) are the port's.
__all__ = [
    "BELOW_MIN_AMOUNT",
    "BELOW_MIN_COST",
    "FACTOR_PLACES",
    "INACTIVE_SYMBOL",
    "INSUFFICIENT_FUNDS",
    "NOT_POSITIVE",
    "NOT_STEP_MULTIPLE",
    "OUTSIDE_PREFIX",
    "PAPER_NETWORK",
    "PRICE_DIGITS",
    "QUOTE_QUANTUM",
    "UNKNOWN_SYMBOL",
    "Clock",
    "Connection",
    "MovingPrices",
    "PaperVenue",
    "markets_of",
    "order_rejection",
    "utc_now",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MovingPrices:
    """Base prices that move with time: ``base·(1 + A·sin(2πt/period + phase(asset)) + noise)``.

    The valuation quote of the prices document stays at 1 (it is the unit). The phase and the noise come
    from a hash of the asset (and of the time bucket), so the same time gives the same prices in every
    process. Bounded: the factor stays within ``1 ± (amplitude + noise)``.
    """

    base: Prices
    amplitude: float = 0.02
    period_seconds: float = 3600.0
    noise: float = 0.001
    bucket_seconds: float = 10.0

    def factor(self, asset: str, t: float) -> Decimal:
        if asset == self.base.quote:
            return Decimal(1)
        phase = 2 * math.pi * _unit(asset)
        wave = self.amplitude * math.sin(2 * math.pi * t / self.period_seconds + phase)
        bucket = math.floor(t / self.bucket_seconds) if self.bucket_seconds > 0 else 0
        jitter = self.noise * (2 * _unit(f"{asset}|{bucket}") - 1)
        return Decimal(f"{1 + wave + jitter:.{FACTOR_PLACES}f}")

    def asset_price(self, asset: str, at: datetime) -> Decimal | None:
        """The asset's price in the prices document's quote at `at`; None when the asset has no price."""
        base = self.base.get(asset)
        if base is None:
            return None
        return base * self.factor(asset, at.timestamp())

    def symbol_price(self, symbol: str, at: datetime) -> Decimal | None:
        """``BASE/QUOTE``: price(base)/price(quote), to `PRICE_DIGITS` significant digits."""
        base, _, quote = symbol.partition("/")
        base_price, quote_price = self.asset_price(base, at), self.asset_price(quote, at)
        if base_price is None or quote_price is None:
            return None
        return _significant(base_price / quote_price, PRICE_DIGITS)


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) from a string."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _significant(value: Decimal, digits: int) -> Decimal:
    return Context(prec=digits, rounding=ROUND_DOWN).create_decimal(value).normalize()


def markets_of(document: object, exchange: str) -> dict[str, MarketInfo]:
    """The exchange's symbols from a markets document (docs/formats.md), as `MarketInfo`."""
    parsed = Markets.parse(document)
    if exchange not in parsed.exchanges:
        raise ValueError(f"the markets document lists no exchange {exchange!r}")
    return {
        symbol: MarketInfo(
            symbol=symbol,
            base=market.base,
            quote=market.quote,
            amount_step=market.amount_step,
            min_amount=market.min_amount,
            min_cost=market.min_cost,
            fee_rate=market.fee_rate,
        )
        for symbol, market in sorted(parsed.exchanges[exchange].items())
    }


def order_rejection(market: MarketInfo | None, amount: Decimal) -> str:
    """Why an order of `amount` on `market` is invalid whatever the balances and price ("" if it is not)."""
    if market is None:
        return UNKNOWN_SYMBOL
    if not market.active:
        return INACTIVE_SYMBOL
    if amount <= 0:
        return NOT_POSITIVE
    if amount % market.amount_step != 0:
        return NOT_STEP_MULTIPLE
    if amount < market.min_amount:
        return BELOW_MIN_AMOUNT
    return ""


@dataclass(frozen=True)
class _Outcome:
    status: OrderStatus
    reason: str = ""
    fill: Fill | None = None


@dataclass
class PaperVenue:
    """One paper exchange (`exchange`) on a Postgres pool; migration 0002 must have run."""

    exchange: str
    pool: asyncpg.Pool
    market_info: Mapping[str, MarketInfo]
    price_model: MovingPrices
    clock: Clock = field(default=utc_now)
    # A withdrawal is credited to its destination this long after it was asked for.
    transfer_delay: timedelta = timedelta(seconds=60)
    # The withdrawal fee per asset (taken from the amount); 0 for an asset not listed.
    withdraw_fees: Mapping[str, Decimal] = field(default_factory=dict)
    # Look-ups (the order, open orders) show a new order only once it is this old.
    order_visible_after: timedelta = timedelta(0)
    # At most this many new orders per account in any 10 seconds (None: no limit).
    orders_per_10s: int | None = None
    # The trading fee in the asset received (a buy's in the base), as Binance takes it; else in the quote.
    fee_in_received: bool = False
    # The spread around the moving price, in basis points: bid = price·(1 − s/20000), ask = price·(1 +
    # s/20000); market orders and crossing limit orders trade at the touch. 0: bid = ask = the price.
    spread_bps: Decimal = Decimal(0)
    # This exchange's own prices: its assets at `price_factor` x the moving price (the prices document's
    # quote at 1), so two paper exchanges can price one asset apart as real ones do.
    price_factor: Decimal = Decimal(1)

    @classmethod
    def from_documents(
        cls,
        exchange: str,
        pool: asyncpg.Pool,
        markets: object,
        prices: object,
        clock: Clock = utc_now,
        transfer_delay: timedelta = timedelta(seconds=60),
        withdraw_fees: Mapping[str, Decimal] | None = None,
        *,
        order_visible_after: timedelta = timedelta(0),
        orders_per_10s: int | None = None,
        fee_in_received: bool = False,
        spread_bps: Decimal = Decimal(0),
        price_factor: Decimal = Decimal(1),
        **movement: float,
    ) -> PaperVenue:
        """From a markets document and a prices document; `movement` tunes `MovingPrices`."""
        model = MovingPrices(Prices.parse(prices), **movement)
        fees = dict(withdraw_fees or {})
        return cls(
            exchange,
            pool,
            markets_of(markets, exchange),
            model,
            clock,
            transfer_delay,
            fees,
            order_visible_after,
            orders_per_10s,
            fee_in_received,
            spread_bps,
            price_factor,
        )

    @property
    def name(self) -> str:
        return self.exchange

    @property
    def valuation_quote(self) -> str:
        return self.price_model.base.quote

    async def markets(self) -> Mapping[str, MarketInfo]:
        return self.market_info

    async def close(self) -> None:
        """Nothing to close: the pool is the service's."""

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """Any ``BASE/QUOTE`` whose two assets have a base price (not only the listed markets)."""
        now = self.clock()
        found: dict[str, Decimal] = {}
        for symbol in symbols:
            price = self._price(symbol, now)
            if price is None:
                raise VenueError(f"{self.exchange}: no price for {symbol}")
            found[symbol] = price
        return found

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """The best bid and ask of each symbol (`book_top`'s, for many symbols at once)."""
        now = self.clock()
        found: dict[str, Quote] = {}
        for symbol in symbols:
            top = self._top(symbol, now)
            found[symbol] = Quote(top.bid, top.ask)
        return found

    def _price(self, symbol: str, at: datetime) -> Decimal | None:
        """The symbol's price on this exchange: its assets at `price_factor` x the moving price."""
        price = self.price_model.symbol_price(symbol, at)
        if price is None or self.price_factor == 1:
            return price
        base, _, quote = symbol.partition("/")
        unit, one = self.price_model.base.quote, Decimal(1)
        factor = (self.price_factor if base != unit else one) / (self.price_factor if quote != unit else one)
        return _significant(price * factor, PRICE_DIGITS)

    async def balances(self, account: str) -> Balances:
        await self._credit_due()
        async with self.pool.acquire() as connection, connection.transaction():
            await self._match(connection, self.clock())
            rows = await connection.fetch(
                "SELECT asset, amount FROM paper.balances WHERE exchange = $1 AND account = $2"
                " AND amount <> 0 ORDER BY asset",
                self.exchange,
                account,
            )
            locked = await self._locked(connection, account)
        return Balances(
            free={row["asset"]: row["amount"] - locked.get(row["asset"], Decimal(0)) for row in rows},
            locked={asset: amount for asset, amount in sorted(locked.items()) if amount},
        )

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool:
        """Load an account's starting balances, only when it has none yet; True when it seeded."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"paper|{self.exchange}|{account}"
            )
            held = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM paper.balances WHERE exchange = $1 AND account = $2)",
                self.exchange,
                account,
            )
            if held:
                return False
            await connection.executemany(
                "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ($1, $2, $3, $4)",
                [(self.exchange, account, asset, amount) for asset, amount in sorted(amounts.items())],
            )
            return True

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
        """A new order under the client id (refused only while an order under it is open): a market order,
        or a limit order at `price` that trades at once if it crosses, else rests (`post_only`: refused
        rather than cross)."""
        now = self.clock()
        async with self.pool.acquire() as connection, connection.transaction():
            await self._admit(connection, account, now)
            await self._match(connection, now)
            order_id = await self._open(connection, account, client_order_id, symbol, side, amount, now)
            outcome = await self._limit(connection, account, symbol, side, amount, price, post_only, now)
            if outcome is None:
                outcome = await self._execute(connection, account, symbol, side, amount, client_order_id, now)
            await self._record(connection, order_id, client_order_id, amount, outcome, now)
            if outcome.status == "open":
                await connection.execute(
                    "UPDATE paper.orders SET price = $2, post_only = $3 WHERE order_id = $1",
                    order_id,
                    price,
                    post_only,
                )
            state = await self._load(connection, client_order_id)
        if state is None:  # inserted above, in the same transaction
            raise RuntimeError(f"{client_order_id}: order vanished after placement")
        if state.status == "rejected":
            if state.reason == INSUFFICIENT_FUNDS:
                raise InsufficientFunds(client_order_id)
            raise OrderRejected(client_order_id, state.reason)
        return state

    async def _open(
        self,
        connection: Connection,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        now: datetime,
    ) -> int:
        """The order's row, open; `ClientIdInUse` while an order under the client id is open (Binance takes
        an id again once its order has ended)."""
        order_id = await connection.fetchval(
            "INSERT INTO paper.orders (exchange, client_order_id, account, symbol, side, amount, status,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)"
            " ON CONFLICT (exchange, client_order_id) WHERE status = 'open' DO NOTHING"
            " RETURNING order_id",
            self.exchange,
            client_order_id,
            account,
            symbol,
            side,
            amount,
            now,
        )
        if order_id is None:
            raise ClientIdInUse(client_order_id)
        return int(order_id)

    async def _admit(self, connection: Connection, account: str, now: datetime) -> None:
        """Refuse a new order beyond `orders_per_10s` (the account's orders of the last 10 seconds)."""
        if self.orders_per_10s is None:
            return
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"paper-orders|{self.exchange}|{account}"
        )
        window = timedelta(seconds=10)
        recent = await connection.fetch(
            "SELECT created_at FROM paper.orders WHERE exchange = $1 AND account = $2 AND created_at > $3"
            " ORDER BY created_at DESC LIMIT $4",
            self.exchange,
            account,
            now - window,
            self.orders_per_10s,
        )
        if len(recent) >= self.orders_per_10s:
            wait = (recent[-1]["created_at"] + window - now).total_seconds()
            raise VenueRateLimited(
                f"{self.exchange}: too many new orders (at most {self.orders_per_10s} per 10 s)", wait
            )

    def _top(self, symbol: str, now: datetime) -> BookTop:
        price = self._price(symbol, now)
        if price is None:
            raise VenueError(f"{self.exchange}: no price for {symbol}")
        half = self.spread_bps / 20000
        return BookTop(
            _significant(price * (1 - half), PRICE_DIGITS), _significant(price * (1 + half), PRICE_DIGITS)
        )

    async def book_top(self, symbol: str) -> BookTop:
        """The best bid and ask now: the moving price ± half of `spread_bps`."""
        return self._top(symbol, self.clock())

    async def _limit(
        self,
        connection: Connection,
        account: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        price: Decimal | None,
        post_only: bool,
        now: datetime,
    ) -> _Outcome | None:
        """A limit order's outcome when it does not trade at once: rejected (invalid, post-only that would
        cross, funds short of what it locks) or open (resting); None: a market order, or one that crosses."""
        if price is None:
            return None
        market = self.market_info.get(symbol)
        reason = order_rejection(market, amount) or ("" if price > 0 else NOT_POSITIVE)
        if market is None or reason:
            return _Outcome("rejected", reason)
        top = self._top(symbol, now)
        if top.ask <= price if side == "buy" else top.bid >= price:
            return _Outcome("rejected", POST_ONLY_WOULD_TAKE) if post_only else None
        if (amount * price).quantize(QUOTE_QUANTUM) < market.min_cost:
            return _Outcome("rejected", BELOW_MIN_COST)
        asset, needed = self._locks(market, side, amount, price)
        free = (await self._holdings(connection, account)).get(asset, Decimal(0))
        free -= (await self._locked(connection, account)).get(asset, Decimal(0))
        return _Outcome("open") if needed <= free else _Outcome("rejected", INSUFFICIENT_FUNDS)

    def _locks(self, market: MarketInfo, side: Side, amount: Decimal, price: Decimal) -> tuple[str, Decimal]:
        """What a resting order locks: a sell its base, a buy its cost (and its fee if paid in the quote)."""
        if side == "sell":
            return market.base, amount
        cost = (amount * price).quantize(QUOTE_QUANTUM)
        fee = (
            Decimal(0)
            if self.fee_in_received
            else (cost * market.fee_rate).quantize(QUOTE_QUANTUM, rounding=ROUND_CEILING)
        )
        return market.quote, cost + fee

    async def _holdings(self, connection: Connection, account: str) -> dict[str, Decimal]:
        rows = await connection.fetch(
            "SELECT asset, amount FROM paper.balances WHERE exchange = $1 AND account = $2",
            self.exchange,
            account,
        )
        return {row["asset"]: row["amount"] for row in rows}

    async def _locked(self, connection: Connection, account: str) -> dict[str, Decimal]:
        """Per asset, what the account's resting limit orders lock."""
        rows = await connection.fetch(
            "SELECT symbol, side, amount, price FROM paper.orders"
            " WHERE exchange = $1 AND account = $2 AND status = 'open' AND price IS NOT NULL",
            self.exchange,
            account,
        )
        locked: dict[str, Decimal] = {}
        for row in rows:
            market = self.market_info.get(row["symbol"])
            if market is not None:
                asset, amount = self._locks(market, row["side"], row["amount"], row["price"])
                locked[asset] = locked.get(asset, Decimal(0)) + amount
        return locked

    async def _match(self, connection: Connection, now: datetime) -> None:
        """Resting limit orders the moving price has reached fill now, whole, at their own price."""
        rows = await connection.fetch(
            "SELECT order_id, client_order_id, account, symbol, side, amount, price FROM paper.orders"
            " WHERE exchange = $1 AND status = 'open' AND price IS NOT NULL ORDER BY order_id FOR UPDATE",
            self.exchange,
        )
        for row in rows:
            price = self._price(row["symbol"], now)
            reached = price is not None and (
                price <= row["price"] if row["side"] == "buy" else price >= row["price"]
            )
            if not reached:
                continue
            market = self.market_info[row["symbol"]]
            args = (connection, row["account"], market, row["side"], row["amount"], row["price"])
            outcome = await self._fill(*args, row["client_order_id"], locked_by_itself=True)
            filled = outcome if outcome.status == "filled" else _Outcome("expired", outcome.reason)
            await self._record(
                connection, row["order_id"], row["client_order_id"], row["amount"], filled, now
            )

    async def _execute(
        self,
        connection: Connection,
        account: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        client_order_id: str,
        now: datetime,
    ) -> _Outcome:
        market = self.market_info.get(symbol)
        reason = order_rejection(market, amount)
        if market is None or reason:
            return _Outcome("rejected", reason)
        top = self._top(symbol, now)
        price = top.ask if side == "buy" else top.bid
        if (amount * price).quantize(QUOTE_QUANTUM) < market.min_cost:
            return _Outcome("rejected", BELOW_MIN_COST)
        return await self._fill(connection, account, market, side, amount, price, client_order_id)

    async def _fill(
        self,
        connection: Connection,
        account: str,
        market: MarketInfo,
        side: Side,
        amount: Decimal,
        price: Decimal,
        client_order_id: str,
        *,
        locked_by_itself: bool = False,
    ) -> _Outcome:
        """Fill `amount` at `price` now: the balances moved and the fill made, or rejected for want of what
        is free (held less what resting orders lock; a resting order filling spends what it locked)."""
        cost = (amount * price).quantize(QUOTE_QUANTUM)
        fee, fee_asset = (
            (cost * market.fee_rate).quantize(QUOTE_QUANTUM, rounding=ROUND_CEILING),
            market.quote,
        )
        if side == "buy" and self.fee_in_received:
            fee, fee_asset = (
                (amount * market.fee_rate).quantize(QUOTE_QUANTUM, rounding=ROUND_CEILING),
                market.base,
            )
        rows = await connection.fetch(
            "SELECT asset, amount FROM paper.balances WHERE exchange = $1 AND account = $2"
            " AND asset = ANY($3::text[]) ORDER BY asset FOR UPDATE",
            self.exchange,
            account,
            sorted({market.base, market.quote}),
        )
        held = {row["asset"]: row["amount"] for row in rows}
        locked = await self._locked(connection, account)
        if locked_by_itself:
            asset, own = self._locks(market, side, amount, price)
            locked[asset] = locked.get(asset, Decimal(0)) - own
        held = {asset: amount - locked.get(asset, Decimal(0)) for asset, amount in held.items()}
        if side == "buy" and fee_asset == market.base:
            changes = {market.quote: -cost, market.base: amount - fee}
        elif side == "buy":
            changes = {market.quote: -(cost + fee), market.base: amount}
        else:
            changes = {market.base: -amount, market.quote: cost - fee}
        if any(held.get(asset, Decimal(0)) + delta < 0 for asset, delta in changes.items()):
            return _Outcome("rejected", INSUFFICIENT_FUNDS)
        # The debited row exists (it was locked above); the credited one may be new.
        for asset, delta in sorted(changes.items()):
            await connection.execute(
                "UPDATE paper.balances SET amount = amount + $4"
                " WHERE exchange = $1 AND account = $2 AND asset = $3"
                if delta < 0
                else "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $4",
                self.exchange,
                account,
                asset,
                delta,
            )
        # The n-th order under a client id (n > 0 only when the id was used again after its order ended).
        earlier = await connection.fetchval(
            "SELECT count(*) - 1 FROM paper.orders WHERE exchange = $1 AND client_order_id = $2",
            self.exchange,
            client_order_id,
        )
        cause = (client_order_id,) if not earlier else (client_order_id, earlier)
        trade_id = "paper-" + derive_id("paper-fill", self.exchange, *cause).hex
        return _Outcome("filled", fill=Fill(trade_id, amount, price, fee, fee_asset))

    async def _record(
        self,
        connection: Connection,
        order_id: int,
        client_order_id: str,
        amount: Decimal,
        outcome: _Outcome,
        now: datetime,
    ) -> None:
        await connection.execute(
            "UPDATE paper.orders SET status = $2, filled = $3, reason = $4 WHERE order_id = $1",
            order_id,
            outcome.status,
            amount if outcome.fill is not None else Decimal(0),
            outcome.reason,
        )
        if outcome.fill is not None:
            fill = outcome.fill
            await connection.execute(
                "INSERT INTO paper.fills"
                " (trade_id, exchange, client_order_id, order_id, amount, price, fee, fee_asset, ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                fill.trade_id,
                self.exchange,
                client_order_id,
                order_id,
                fill.amount,
                fill.price,
                fill.fee,
                fill.fee_asset,
                now,
            )

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        """The latest order under the client id (`symbol`, when given, must match: the port's look-up);
        None while it is younger than `order_visible_after`."""
        async with self.pool.acquire() as connection, connection.transaction():
            await self._match(connection, self.clock())
            state = await self._load(connection, client_order_id, visible=True)
        if state is None or state.account != account or (symbol is not None and state.symbol != symbol):
            return None
        return state

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        """The account's orders still open: resting limit orders (paper market orders fill or are rejected
        as they are placed, so one is only open caught mid-placement)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await self._match(connection, self.clock())
            ids = await connection.fetch(
                "SELECT client_order_id FROM paper.orders"
                " WHERE exchange = $1 AND account = $2 AND status = 'open'"
                " AND ($3::text IS NULL OR symbol = $3) ORDER BY created_at, client_order_id",
                self.exchange,
                account,
                symbol,
            )
            found = [await self._load(connection, row["client_order_id"], visible=True) for row in ids]
        return [state for state in found if state is not None]

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        """Cancel a resting order (one the price has reached fills first: the cancel loses the race); the
        order as it ended, None when unknown."""
        async with self.pool.acquire() as connection, connection.transaction():
            await self._match(connection, self.clock())
            await connection.execute(
                "UPDATE paper.orders SET status = 'cancelled' WHERE exchange = $1 AND client_order_id = $2"
                " AND account = $3 AND symbol = $4 AND status = 'open'",
                self.exchange,
                client_order_id,
                account,
                symbol,
            )
        return await self.order(account, client_order_id, symbol)

    async def _load(
        self, connection: Connection, client_order_id: str, visible: bool = False
    ) -> OrderState | None:
        """The latest order under the client id; with `visible`, only once look-ups may show it."""
        row = await connection.fetchrow(
            "SELECT order_id, account, symbol, side, amount, status, filled, reason FROM paper.orders"
            " WHERE exchange = $1 AND client_order_id = $2 AND ($3::timestamptz IS NULL OR created_at <= $3)"
            " ORDER BY order_id DESC LIMIT 1",
            self.exchange,
            client_order_id,
            self.clock() - self.order_visible_after if visible and self.order_visible_after else None,
        )
        if row is None:
            return None
        fills = await connection.fetch(
            "SELECT trade_id, amount, price, fee, fee_asset FROM paper.fills WHERE order_id = $1"
            " ORDER BY ts, trade_id",
            row["order_id"],
        )
        return OrderState(
            client_order_id=client_order_id,
            account=row["account"],
            symbol=row["symbol"],
            side=row["side"],
            amount=row["amount"],
            status=row["status"],
            filled=row["filled"],
            fills=tuple(
                Fill(f["trade_id"], f["amount"], f["price"], f["fee"], f["fee_asset"]) for f in fills
            ),
            reason=row["reason"],
        )

    # -- transfers (`rebal.venue.TransferVenue`) -------------------------------------------------------

    def _assets(self) -> set[str]:
        found = set(self.price_model.base.prices) | {self.price_model.base.quote}
        for market in self.market_info.values():
            found |= {market.base, market.quote}
        return found

    async def networks(self, asset: str) -> Mapping[str, AssetNetwork]:
        """Every asset of the markets and prices moves on `PAPER_NETWORK`, both ways."""
        if asset not in self._assets():
            return {}
        fee = self.withdraw_fees.get(asset, Decimal(0))
        return {PAPER_NETWORK: AssetNetwork(asset, PAPER_NETWORK, True, True, fee)}

    async def deposit_address(self, account: str, asset: str, network: str) -> DepositAddress:
        if network not in await self.networks(asset):
            raise TransferRefused(f"{self.exchange}:{account}", f"no deposits of {asset} on {network}")
        return DepositAddress(asset, network, f"{ADDRESS_PREFIX}{self.exchange}:{account}")

    async def withdraw(
        self, account: str, transfer_id: str, asset: str, amount: Decimal, destination: DepositAddress
    ) -> Transfer:
        """Debit `amount` now; credit ``amount - fee`` to the destination after `transfer_delay` (to an
        `OUTSIDE_PREFIX` address: nothing is credited, the withdrawal is "sent" then). Asking again under
        the same transfer id returns the existing withdrawal and moves nothing."""
        source = (await self.networks(asset)).get(destination.network)
        # Deposits are open on every paper exchange for every asset this one moves.
        problem = transfer_problem(source, source, amount)
        exchange, _, to_account = destination.address.removeprefix(ADDRESS_PREFIX).partition(":")
        if destination.address.startswith(OUTSIDE_PREFIX) and len(destination.address) > len(OUTSIDE_PREFIX):
            exchange, to_account = "", destination.address  # leaves the paper exchanges: credited nowhere
        elif not destination.address.startswith(ADDRESS_PREFIX) or not exchange or not to_account:
            problem = problem or INVALID_ADDRESS
        now = self.clock()
        async with self.pool.acquire() as connection, connection.transaction():
            existing = await self._transfer(connection, transfer_id)
            if existing is not None:
                return existing
            if problem or source is None:
                raise TransferRefused(transfer_id, problem)
            held = await connection.fetchval(
                "SELECT amount FROM paper.balances WHERE exchange = $1 AND account = $2 AND asset = $3"
                " FOR UPDATE",
                self.exchange,
                account,
                asset,
            )
            if (held or Decimal(0)) < amount:
                raise TransferRefused(transfer_id, INSUFFICIENT_FUNDS)
            await connection.execute(
                "UPDATE paper.balances SET amount = amount - $4 WHERE exchange = $1 AND account = $2"
                " AND asset = $3",
                self.exchange,
                account,
                asset,
                amount,
            )
            await connection.execute(
                "INSERT INTO paper.transfers (exchange, transfer_id, account, to_exchange, to_account, asset,"
                " network, amount, fee, txid, created_at, credit_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                self.exchange,
                transfer_id,
                account,
                exchange,
                to_account,
                asset,
                destination.network,
                amount,
                source.withdraw_fee,
                "paper-tx-" + derive_id("paper-transfer", self.exchange, transfer_id).hex,
                now,
                now + self.transfer_delay,
            )
            found = await self._transfer(connection, transfer_id)
        if found is None:  # inserted above, in the same transaction
            raise RuntimeError(f"{transfer_id}: transfer vanished after it was written")
        return found

    async def withdrawal(self, account: str, transfer_id: str, asset: str) -> Transfer | None:
        await self._credit_due()
        async with self.pool.acquire() as connection:
            found = await self._transfer(connection, transfer_id)
        return found if found is not None and found.asset == asset else None

    async def deposit(self, account: str, asset: str, txid: str) -> Transfer | None:
        await self._credit_due()
        row = await self.pool.fetchrow(
            "SELECT transfer_id, asset, network, amount, fee, txid, credited FROM paper.transfers"
            " WHERE to_exchange = $1 AND to_account = $2 AND asset = $3 AND txid = $4",
            self.exchange,
            account,
            asset,
            txid,
        )
        if row is None:
            return None
        status: TransferStatus = "credited" if row["credited"] else "pending"
        return Transfer(
            row["transfer_id"], row["asset"], row["network"], row["amount"], row["fee"], status, row["txid"]
        )

    async def withdrawals(self, account: str, asset: str, since: datetime) -> Sequence[Transfer]:
        """Every withdrawal of `asset` out of the account asked at or after `since`, oldest first, each
        named by the transfer id it was asked under."""
        await self._credit_due()
        rows = await self.pool.fetch(
            "SELECT transfer_id, asset, network, amount, fee, txid, credited, created_at FROM paper.transfers"
            " WHERE exchange = $1 AND account = $2 AND asset = $3 AND created_at >= $4"
            " ORDER BY created_at, transfer_id",
            self.exchange,
            account,
            asset,
            since,
        )
        return [_withdrawal_of(row) for row in rows]

    async def _transfer(self, connection: Connection, transfer_id: str) -> Transfer | None:
        row = await connection.fetchrow(
            "SELECT transfer_id, asset, network, amount, fee, txid, credited, created_at FROM paper.transfers"
            " WHERE exchange = $1 AND transfer_id = $2",
            self.exchange,
            transfer_id,
        )
        return None if row is None else _withdrawal_of(row)

    async def _credit_due(self) -> None:
        """Credit every transfer into this exchange whose delay has passed (once: the row is marked)."""
        now = self.clock()
        async with self.pool.acquire() as connection, connection.transaction():
            due = await connection.fetch(
                "UPDATE paper.transfers SET credited = true"
                " WHERE to_exchange = $1 AND NOT credited AND credit_at <= $2"
                " RETURNING to_account, asset, amount - fee AS received",
                self.exchange,
                now,
            )
            # Withdrawals out of the paper exchanges (`OUTSIDE_PREFIX`): sent once due, credited nowhere.
            await connection.execute(
                "UPDATE paper.transfers SET credited = true"
                " WHERE exchange = $1 AND to_exchange = '' AND NOT credited AND credit_at <= $2",
                self.exchange,
                now,
            )
            for row in sorted(due, key=lambda r: (r["to_account"], r["asset"])):
                await connection.execute(
                    "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (exchange, account, asset)"
                    " DO UPDATE SET amount = paper.balances.amount + $4",
                    self.exchange,
                    row["to_account"],
                    row["asset"],
                    row["received"],
                )


def _withdrawal_of(row: asyncpg.Record) -> Transfer:
    """A `paper.transfers` row as its source sees it: "sent" once credited (or, going outside, once due)."""
    status: TransferStatus = "sent" if row["credited"] else "pending"
    return Transfer(
        row["transfer_id"],
        row["asset"],
        row["network"],
        row["amount"],
        row["fee"],
        status,
        row["txid"],
        requested_at=row["created_at"],
    )


@dataclass(frozen=True)
class Credited:
    """A deposit from outside onto a paper account: whether it was new, and the balance after it."""

    new: bool
    balance: Decimal


async def credit(
    pool: asyncpg.Pool,
    exchange: str,
    account: str,
    asset: str,
    amount: Decimal,
    reference: str,
    at: datetime,
) -> Credited:
    """Credit `amount` of `asset` to a paper account from outside, as money arriving on a real exchange
    would (`rebal paper deposit`): recorded in `paper.deposits` once per (exchange, reference) and added
    to the balance in the same transaction, so asking again with the same reference changes nothing."""
    if not amount > 0:
        raise ValueError(f"a deposit must be positive, not {amount}")
    async with pool.acquire() as connection, connection.transaction():
        new = await connection.fetchval(
            "INSERT INTO paper.deposits (exchange, reference, account, asset, amount, credited_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            exchange,
            reference,
            account,
            asset,
            amount,
            at,
        )
        if new:
            await connection.execute(
                "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $4",
                exchange,
                account,
                asset,
                amount,
            )
        balance = await connection.fetchval(
            "SELECT amount FROM paper.balances WHERE exchange = $1 AND account = $2 AND asset = $3",
            exchange,
            account,
            asset,
        )
    return Credited(bool(new), balance or Decimal(0))

"""A real exchange behind the `rebal.venue.Venue` port, through ccxt's async clients.

- Markets: ``load_markets`` precision and limits become `MarketInfo` (`amount_step`, `truncate_amount`);
  the fee is the market's taker fee.
- Orders are MARKET orders under our client order id (the exchange's parameter name comes from
  `PROFILES`), amounts truncated to the step, never rounded up. A client id of an order still OPEN is
  refused by the venue as a duplicate (ccxt's `DuplicateOrderId`; Binance's documented "Duplicate order
  sent." is registered with ccxt's error table by the profile): the refusal is answered by a look-up, and
  when the venue does not show the order yet, `ClientIdInUse` says it exists. A client id whose order has
  ENDED may be taken again as a new order (Binance): `place_order` is not idempotent.
- A submit whose outcome is unknown (timeout, network, a 5xx) is looked up by its client id; when the venue
  does not show it yet, `OrderOutcomeUnknown` says so: the caller keeps looking (venues show a new order
  late) and places it again only once a window of look-ups proved the venue never saw it.
- A look-up by client id that finds nothing also searches the account's open orders and its recent
  orders of the symbol (where the exchange lists them) before it answers None.
- New orders go through `OrderRate`, the venue's order-count limits (Binance: 50 per 10 s, 160,000 a
  day), counted from each order's answer (the latest the venue can have counted it), beside the
  request-weight budget (`RequestBudget`).
- ccxt exceptions are translated by class: authentication → `VenueAuthError` (stop, do not retry); rate
  limit → `VenueRateLimited`; network → `VenueError`; insufficient funds and invalid orders →
  `OrderRejected` with the reason. ccxt does not retry by itself (``maxRetriesOnFailure`` is 0): every
  retry is the caller's, with the same client id.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors

from rebal import metrics
from rebal.core.venues import Quote
from rebal.venue import (
    BELOW_MIN_AMOUNT,
    BELOW_MIN_COST,
    EXTERNAL_ID_PREFIX,
    INACTIVE_SYMBOL,
    INSUFFICIENT_FUNDS,
    INVALID_ADDRESS,
    INVALID_ORDER,
    POST_ONLY_WOULD_TAKE,
    UNKNOWN_SYMBOL,
    AssetNetwork,
    Balances,
    BookTop,
    ClientIdInUse,
    DepositAddress,
    InsufficientFunds,
    MarketInfo,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderState,
    Side,
    Transfer,
    TransferRefused,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_venues.ccxt_pacing import Backoff, OrderRate, RequestBudget, retry_after_of
from rebal_venues.ccxt_profiles import DEFAULT_PROFILE, PROFILES, ExchangeProfile, error_kind
from rebal_venues.ccxt_settings import CcxtVenueSettings
from rebal_venues.ccxt_translate import (
    EXPIRED,
    amount_step,
    decimal_of,
    fill_of,
    market_info,
    order_status,
    ticker_figures,
    transfer_of,
    truncate_amount,
)

__all__ = [
    "DEFAULT_PROFILE",
    "EXPIRED",
    "PROFILES",
    "Backoff",
    "CcxtVenue",
    "ExchangeProfile",
    "InsufficientFunds",
    "OrderOutcomeUnknown",
    "OrderRate",
    "RequestBudget",
    "VenueAuthError",
    "VenueRateLimited",
    "amount_step",
    "error_kind",
    "market_info",
    "open_ccxt_venue",
    "truncate_amount",
]

T = TypeVar("T")
# Up to this many symbols, prices are read one ticker at a time (Binance: weight 2 each) rather than every
# ticker at once (weight 80): the executor reads one or a few prices at a time.
SINGLE_TICKERS_UP_TO = 10
# Beyond this many symbols, every ticker is read without naming them: Binance weighs a list of more than
# 100 symbols as all of them (80), and a list of thousands makes a URL longer than servers take (8 KiB).
LISTED_TICKERS_UP_TO = 100
DEFAULT_BACKOFF = Backoff()


class CcxtVenue:
    """One account (one set of keys) on one ccxt exchange. Close it (`close`, or ``async with``)."""

    def __init__(
        self,
        name: str,
        account: str,
        client: ccxt_async.Exchange,
        profile: ExchangeProfile,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        order_rate: OrderRate | None = None,
    ) -> None:
        self._name = name
        self._account = account
        self._client = client
        self._profile = profile
        self._backoff = backoff
        self._sleep = sleep
        self._order_rate = order_rate or OrderRate(
            profile.orders_per_10s, profile.orders_per_day, sleep=sleep
        )
        exact = client.exceptions.setdefault("exact", {})
        exact.update(profile.exact_errors)
        self._markets: dict[str, MarketInfo] | None = None
        # The symbol of each order we placed (the look-up by client id needs it on most exchanges).
        self._symbols: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"CcxtVenue(name={self._name!r}, account={self._account!r}, exchange={self._client.id!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def account(self) -> str:
        return self._account

    @property
    def client(self) -> ccxt_async.Exchange:
        """The ccxt client (benchmarks read its request count and throttle; nothing else should)."""
        return self._client

    @property
    def profile(self) -> ExchangeProfile:
        """What differs on this exchange (its client id parameters, its limits)."""
        return self._profile

    @property
    def sandboxed(self) -> bool:
        """Trading on the exchange's testnet."""
        return bool(self._client.isSandboxModeEnabled)

    async def __aenter__(self) -> CcxtVenue:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    def _count(self, exc: BaseException) -> None:
        metrics.EXCHANGE_ERRORS.labels(exchange=self._name, error=error_kind(exc)).inc()

    async def _request(self, call: Callable[[], Awaitable[T]]) -> T:
        """One ccxt call; a 429 is counted and retried after the venue's Retry-After (`Backoff`), the
        last one re-raised. Every other ccxt error is counted and re-raised for the caller to translate."""
        attempt = 0
        while True:
            try:
                return await call()
            except ccxt_errors.DDoSProtection as exc:
                self._count(exc)
                attempt += 1
                delay = self._backoff.delay(attempt, retry_after_of(self._client.last_response_headers))
                if attempt > self._backoff.retries or delay > self._backoff.max_seconds:
                    raise
                await self._sleep(delay)
            except ccxt_errors.OrderNotFound:
                raise  # an answer, not an error: the look-up's None
            except ccxt_errors.BaseError as exc:
                self._count(exc)
                raise

    def _rate_limited(self, what: str, exc: ccxt_errors.BaseError) -> VenueRateLimited:
        retry_after = retry_after_of(self._client.last_response_headers)
        return VenueRateLimited(f"{self._name} {what}: {exc}", retry_after)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """ccxt exceptions of a read (or a cancel) as the port's, by class."""
        try:
            yield
        except ccxt_errors.AuthenticationError as exc:
            raise VenueAuthError(f"{self._name} {what}: {exc}") from exc
        except ccxt_errors.DDoSProtection as exc:
            raise self._rate_limited(what, exc) from exc
        except ccxt_errors.BaseError as exc:
            raise VenueError(f"{self._name} {what}: {exc}") from exc

    def _check_account(self, account: str) -> None:
        if account != self._account:
            raise ValueError(f"{self!r} holds the keys of account {self._account!r}, not {account!r}")

    async def markets(self) -> Mapping[str, MarketInfo]:
        if self._markets is None:
            with self._translated("load_markets"):
                loaded = await self._request(self._client.load_markets)
            mode = int(self._client.precisionMode)
            self._markets = {
                symbol: market_info(market, mode)
                for symbol, market in sorted(loaded.items())
                if self._trades(market)
            }
        return self._markets

    def _trades(self, market: Mapping[str, Any]) -> bool:
        """Whether this adapter trades a market ccxt lists: the spot markets."""
        return bool(market.get("spot", True))

    async def reload_markets(self) -> Mapping[str, MarketInfo]:
        """The markets read again (a market may have stopped trading since)."""
        with self._translated("load_markets"):
            await self._request(lambda: self._client.load_markets(reload=True))
        self._markets = None
        return await self.markets()

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return ticker_figures(await self._tickers(symbols), symbols, "last", self._name, "price")

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """The tickers' best bid and ask (ccxt's unified ticker `bid`/`ask`; a side not shown is None)."""
        tickers = await self._tickers(symbols)
        found: dict[str, Quote] = {}
        for symbol in symbols:
            ticker = tickers.get(symbol) or {}
            bid, ask = ticker.get("bid"), ticker.get("ask")
            found[symbol] = Quote(
                decimal_of(bid) if bid else None,
                decimal_of(ask) if ask else None,
            )
        return found

    async def _tickers(self, symbols: Sequence[str]) -> Mapping[str, Any]:
        with self._translated("fetch_tickers"):
            if len(symbols) <= SINGLE_TICKERS_UP_TO:
                tickers = {}
                for symbol in symbols:
                    one = functools.partial(self._client.fetch_ticker, symbol)
                    tickers[symbol] = await self._request(one)
            elif len(set(symbols)) <= LISTED_TICKERS_UP_TO:
                tickers = await self._request(lambda: self._client.fetch_tickers(sorted(set(symbols))))
            else:
                tickers = await self._request(self._client.fetch_tickers)
        return dict(tickers)

    async def balances(self, account: str) -> Balances:
        self._check_account(account)
        with self._translated("fetch_balance"):
            raw = await self._request(self._client.fetch_balance)
        free, used = raw.get("free") or {}, raw.get("used") or {}
        return Balances(
            free={asset: decimal_of(v) for asset, v in sorted(free.items()) if v},
            locked={asset: decimal_of(v) for asset, v in sorted(used.items()) if v},
        )

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool:
        """A real exchange's balances are what they are: nothing is ever seeded (False)."""
        self._check_account(account)
        return False

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
        extra: Mapping[str, Any] | None = None,
    ) -> OrderState:
        """A market order under our client id, or a limit order at `price` (`post_only`: ccxt's unified
        ``postOnly``, Binance's LIMIT_MAKER); `extra`: more of ccxt's order params, as ``reduceOnly``."""
        self._check_account(account)
        size = await self._order_size(client_order_id, symbol, amount)
        self._symbols[client_order_id] = symbol
        params = {**(extra or {}), self._profile.client_id_param: client_order_id}
        if post_only:
            params["postOnly"] = True
        kind, limit = ("market", None) if price is None else ("limit", str(price))
        what = f"create_order {client_order_id}"
        try:
            async with self._order_rate.sending():
                placed = await self._request(
                    lambda: self._client.create_order(symbol, kind, side, str(size), limit, params)
                )
        except ccxt_errors.AuthenticationError as exc:
            raise VenueAuthError(f"{self._name} {what}: {exc}") from exc
        except ccxt_errors.OrderImmediatelyFillable as exc:  # a post-only order that would take
            raise OrderRejected(client_order_id, POST_ONLY_WOULD_TAKE) from exc
        except ccxt_errors.InsufficientFunds as exc:
            raise InsufficientFunds(client_order_id, str(exc)) from exc
        except ccxt_errors.DuplicateOrderId as exc:
            # An order under this id is open there: it exists, whether a look-up shows it yet or not.
            existing = await self._lookup(client_order_id, symbol)
            if existing is None:
                raise ClientIdInUse(client_order_id, str(exc)) from exc
            return existing
        except (ccxt_errors.InvalidOrder, ccxt_errors.BadRequest, ccxt_errors.OperationRejected) as exc:
            return await self._existing_or_rejected(client_order_id, symbol, size, exc)
        except ccxt_errors.DDoSProtection as exc:  # refused before it was processed, retries spent
            raise self._rate_limited(what, exc) from exc
        except ccxt_errors.BaseError as exc:  # timeout, network, a 5xx: the venue may have it
            return await self._resolve_unknown(client_order_id, symbol, exc)
        trades = await self._order_trades(placed)
        return self._state(client_order_id, symbol, placed, trades)

    async def _order_size(self, client_order_id: str, symbol: str, amount: Decimal) -> Decimal:
        market = (await self.markets()).get(symbol)
        if market is None:
            raise OrderRejected(client_order_id, UNKNOWN_SYMBOL)
        if not market.active:
            raise OrderRejected(client_order_id, INACTIVE_SYMBOL)
        precision = self._client.markets[symbol]["precision"].get("amount")
        size = truncate_amount(amount, int(self._client.precisionMode), precision, market.amount_step)
        if size < market.min_amount:
            raise OrderRejected(client_order_id, BELOW_MIN_AMOUNT)
        return size

    async def _existing_or_rejected(
        self, client_order_id: str, symbol: str, size: Decimal, refusal: ccxt_errors.BaseError
    ) -> OrderState:
        """A refused submit: the existing order when the venue shows one under the id (a duplicate refusal
        on a venue whose profile does not classify it), else the rejection. Below the market's minimum
        cost at the last price is named as such (a fact we compute, not the venue's words parsed); any
        other refusal carries the venue's words."""
        existing = await self._lookup(client_order_id, symbol)
        if existing is not None:
            return existing
        for kind, reason in self._profile.rejection_reasons.items():
            if isinstance(refusal, kind):
                raise OrderRejected(client_order_id, reason) from refusal
        market = (await self.markets())[symbol]
        if market.min_cost > 0:
            try:
                price = (await self.prices([symbol]))[symbol]
            except VenueError:
                price = None
            if price is not None and size * price < market.min_cost:
                raise OrderRejected(client_order_id, BELOW_MIN_COST) from refusal
        raise OrderRejected(client_order_id, f"{INVALID_ORDER}: {refusal}") from refusal

    async def _resolve_unknown(
        self, client_order_id: str, symbol: str, cause: ccxt_errors.BaseError
    ) -> OrderState:
        """The submit may or may not have reached the venue: ask the venue, by our client id."""
        try:
            existing = await self._lookup(client_order_id, symbol)
        except VenueError as exc:
            unknown = OrderOutcomeUnknown(client_order_id, f"{cause}; look-up failed: {exc}")
            metrics.EXCHANGE_ERRORS.labels(exchange=self._name, error="outcome_unknown").inc()
            raise unknown from cause
        if existing is None:
            metrics.EXCHANGE_ERRORS.labels(exchange=self._name, error="outcome_unknown").inc()
            raise OrderOutcomeUnknown(client_order_id, str(cause)) from cause
        return existing

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        """The order by our client id; `symbol` is needed (by most exchanges) unless this venue placed it."""
        self._check_account(account)
        known = symbol or self._symbols.get(client_order_id)
        if known is None:
            raise ValueError(f"{self._name}: the symbol of order {client_order_id} is needed to look it up")
        return await self._lookup(client_order_id, known)

    async def _lookup(self, client_order_id: str, symbol: str) -> OrderState | None:
        params = {self._profile.lookup_param: client_order_id}
        with self._translated(f"fetch_order {client_order_id}"):
            try:
                found = await self._request(lambda: self._client.fetch_order(None, symbol, params))
            except ccxt_errors.OrderNotFound:
                found = await self._listed(client_order_id, symbol)
                if found is None:
                    return None
        return self._state(client_order_id, symbol, found, await self._order_trades(found))

    async def _listed(self, client_order_id: str, symbol: str) -> dict[str, Any] | None:
        """The order under the client id among the account's open orders, then its recent orders of the
        symbol (the latest wins), where the exchange lists them: a venue may list an order its by-id
        look-up does not find yet."""
        listings = []
        if self._client.has.get("fetchOpenOrders"):
            listings.append(lambda: self._client.fetch_open_orders(symbol))
        if self._client.has.get("fetchOrders"):
            listings.append(lambda: self._client.fetch_orders(symbol))
        for listing in listings:
            found = [o for o in await self._request(listing) if o.get("clientOrderId") == client_order_id]
            if found:
                return dict(found[-1])
        return None

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        """The account's open orders (ccxt ``fetch_open_orders``), ours and others'; an order without a client
        id is named ``venue:<the exchange's order id>``. Their fills are not fetched (``filled`` says how
        much): a look-up by client id gives them for an order of ours."""
        self._check_account(account)
        with self._translated("fetch_open_orders"):
            await self.markets()
            found = await self._request(lambda: self._client.fetch_open_orders(symbol))
        states = []
        for order in found:
            cid = str(order.get("clientOrderId") or "") or f"{EXTERNAL_ID_PREFIX}{order['id']}"
            states.append(self._state(cid, str(order["symbol"]), order, ()))
        return sorted(states, key=lambda state: (state.symbol, state.client_order_id))

    async def book_top(self, symbol: str) -> BookTop:
        """The best bid and ask (ccxt ``fetch_ticker``; Binance's 24hr ticker carries them)."""
        with self._translated(f"fetch_ticker {symbol}"):
            ticker = await self._request(lambda: self._client.fetch_ticker(symbol))
        bid, ask = decimal_of(ticker.get("bid")), decimal_of(ticker.get("ask"))
        if bid <= 0 or ask <= 0:
            raise VenueError(f"{self._name}: no bid and ask for {symbol}")
        return BookTop(bid, ask)

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        """Cancel our order by client id; the order as it ended (a fill may win the race), None if unknown."""
        self._check_account(account)
        params = {self._profile.lookup_param: client_order_id}
        # Refused when already filled, cancelled or never seen: the look-up below tells which.
        refused = (ccxt_errors.OrderNotFound, ccxt_errors.OperationRejected)
        with self._translated(f"cancel_order {client_order_id}"), suppress(*refused):
            await self._request(lambda: self._client.cancel_order(None, symbol, params))
        return await self._lookup(client_order_id, symbol)

    async def _order_trades(self, order: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The order's trades, each once (a venue may report a trade twice): those of the order's own answer
        when they account for all it filled (Binance's FULL answer to a market order), else the venue's
        trades of the order (one more request, Binance weight 20)."""
        filled = decimal_of(order.get("filled"))
        if filled <= 0:
            return []
        own = {str(t["id"]): t for t in order.get("trades") or [] if t.get("id") is not None}
        if own and sum((decimal_of(t.get("amount")) for t in own.values()), Decimal(0)) == filled:
            return sorted(own.values(), key=lambda t: (t.get("timestamp") or 0, str(t["id"])))
        order_id = str(order["id"])
        params = {self._profile.trades_order_param: order_id} if self._profile.trades_order_param else {}
        with self._translated(f"fetch_my_trades {order_id}"):
            trades = await self._request(
                lambda: self._client.fetch_my_trades(order["symbol"], None, None, params)
            )
        unique = {str(t["id"]): t for t in trades if str(t.get("order")) == order_id}
        return sorted(unique.values(), key=lambda t: (t.get("timestamp") or 0, str(t["id"])))

    def _state(
        self,
        client_order_id: str,
        symbol: str,
        order: Mapping[str, Any],
        trades: Sequence[Mapping[str, Any]],
    ) -> OrderState:
        filled = decimal_of(order.get("filled"))
        status, reason = order_status(str(order.get("status")), filled)
        return OrderState(
            client_order_id=client_order_id,
            account=self._account,
            symbol=symbol,
            side=order["side"],
            amount=decimal_of(order.get("amount")),
            status=status,
            filled=filled,
            fills=tuple(fill_of(trade) for trade in trades),
            reason=reason,
        )

    # -- transfers (`rebal.venue.TransferVenue`) -------------------------------------------------------

    async def networks(self, asset: str) -> Mapping[str, AssetNetwork]:
        """The asset's networks as the venue lists them now (ccxt ``fetch_currencies``)."""
        with self._translated("fetch_currencies"):
            currencies = await self._request(self._client.fetch_currencies)
        networks = (currencies or {}).get(asset, {}).get("networks") or {}
        return {
            code: AssetNetwork(
                asset=asset,
                network=code,
                deposit_enabled=bool(network.get("deposit")),
                withdraw_enabled=bool(network.get("withdraw")),
                withdraw_fee=decimal_of(network.get("fee")),
                withdraw_min=decimal_of(((network.get("limits") or {}).get("withdraw") or {}).get("min")),
            )
            for code, network in sorted(networks.items())
        }

    async def deposit_address(self, account: str, asset: str, network: str) -> DepositAddress:
        self._check_account(account)
        with self._translated(f"fetch_deposit_address {asset} {network}"):
            found = await self._request(
                lambda: self._client.fetch_deposit_address(asset, {"network": network})
            )
        return DepositAddress(asset, network, str(found["address"]), str(found.get("tag") or ""))

    async def withdraw(
        self, account: str, transfer_id: str, asset: str, amount: Decimal, destination: DepositAddress
    ) -> Transfer:
        """Withdraw under our transfer id (Binance: ``withdrawOrderId``): a known id returns the existing
        withdrawal; a request whose answer was lost is looked up by it, never sent again blindly."""
        self._check_account(account)
        existing = await self.withdrawal(account, transfer_id, asset)
        if existing is not None:
            return existing
        params: dict[str, Any] = {
            "network": destination.network,
            self._profile.transfer_id_param: transfer_id,
        }
        if destination.tag:
            params["tag"] = destination.tag
        what = f"withdraw {transfer_id}"
        try:
            # The tag travels in params: exchanges differ on whether it is also a positional argument.
            await self._request(
                lambda: self._client.withdraw(asset, str(amount), destination.address, params=params)
            )
        except ccxt_errors.AuthenticationError as exc:
            raise VenueAuthError(f"{self._name} {what}: {exc}") from exc
        except ccxt_errors.InsufficientFunds as exc:
            raise TransferRefused(transfer_id, INSUFFICIENT_FUNDS) from exc
        except ccxt_errors.InvalidAddress as exc:
            raise TransferRefused(transfer_id, f"{INVALID_ADDRESS}: {exc}") from exc
        except (ccxt_errors.BadRequest, ccxt_errors.OperationRejected, ccxt_errors.InvalidOrder) as exc:
            raise TransferRefused(transfer_id, f"refused: {exc}") from exc
        except ccxt_errors.DDoSProtection as exc:
            raise self._rate_limited(what, exc) from exc
        except ccxt_errors.BaseError as exc:  # no answer: the venue may have it
            found = await self.withdrawal(account, transfer_id, asset)
            if found is None:
                metrics.EXCHANGE_ERRORS.labels(exchange=self._name, error="outcome_unknown").inc()
                raise OrderOutcomeUnknown(transfer_id, str(exc)) from exc
            return found
        found = await self.withdrawal(account, transfer_id, asset)
        if found is None:
            raise OrderOutcomeUnknown(transfer_id, "accepted, but not in the withdrawal history yet")
        return found

    async def withdrawal(self, account: str, transfer_id: str, asset: str) -> Transfer | None:
        self._check_account(account)
        params = {self._profile.transfer_id_param: transfer_id}
        with self._translated(f"fetch_withdrawals {transfer_id}"):
            found = await self._request(lambda: self._client.fetch_withdrawals(asset, None, None, params))
        ours = [t for t in found if (t.get("info") or {}).get(self._profile.transfer_id_param) == transfer_id]
        return transfer_of(transfer_id, ours[-1], withdrawal=True) if ours else None

    async def withdrawals(self, account: str, asset: str, since: datetime) -> Sequence[Transfer]:
        """ccxt's ``fetch_withdrawals(asset, since)``: on Binance ``GET /sapi/v1/capital/withdraw/history``
        with ``startTime`` = `since` and ``endTime`` 90 days later (the endpoint's longest window; ccxt
        sends both), up to its default ``limit`` of 1000 records (a fiat code, USD or EUR, ccxt asks
        ``/sapi/v1/fiat/orders`` instead). Binance does not document the order of the records: they are
        sorted here, oldest first. A record with our ``withdrawOrderId`` is named by it, any other by
        ``venue:<Binance's id>``."""
        self._check_account(account)
        # Binance dates a withdrawal to the second (``applyTime``): one asked in the same second as `since`
        # but after it reads as earlier, so the window starts at `since`'s second (ccxt filters by it too).
        since = since.replace(microsecond=0)
        since_ms = int(since.timestamp()) * 1000
        with self._translated(f"fetch_withdrawals {asset}"):
            found = await self._request(lambda: self._client.fetch_withdrawals(asset, since_ms))
        listed = []
        for tx in found:
            ours = str((tx.get("info") or {}).get(self._profile.transfer_id_param) or "")
            name = ours or f"{EXTERNAL_ID_PREFIX}{tx.get('id')}"
            transfer = transfer_of(name, tx, withdrawal=True)
            if transfer.requested_at is None or transfer.requested_at >= since:
                listed.append(transfer)
        return sorted(listed, key=lambda t: (t.requested_at or since, t.transfer_id))

    async def deposit(self, account: str, asset: str, txid: str) -> Transfer | None:
        self._check_account(account)
        with self._translated(f"fetch_deposits {asset}"):
            found = await self._request(lambda: self._client.fetch_deposits(asset))
        ours = [t for t in found if t.get("txid") == txid]
        return transfer_of(str(ours[-1].get("id")), ours[-1], withdrawal=False) if ours else None


def _with_origin(url: object, origin: str) -> object:
    """An API url (or a dict of them) with its scheme and host replaced by `origin`, its path kept."""
    if isinstance(url, dict):
        return {key: _with_origin(value, origin) for key, value in url.items()}
    if isinstance(url, str):
        parts = urlsplit(url)
        return origin.rstrip("/") + parts.path
    return url


def open_ccxt_venue(settings: CcxtVenueSettings) -> CcxtVenue:
    """The venue of `settings`: its ccxt client built, sandboxed and pointed as configured."""
    if settings.exchange_id not in ccxt_async.exchanges:
        raise ValueError(f"ccxt has no exchange {settings.exchange_id!r}")
    profile = PROFILES.get(settings.exchange_id, DEFAULT_PROFILE)
    config: dict[str, Any] = {
        "apiKey": settings.api_key.get_secret_value(),
        "secret": settings.secret.get_secret_value(),
        "enableRateLimit": settings.enable_rate_limit,
        "timeout": settings.timeout_ms,
        "options": {**profile.options, **settings.options},
    }
    if settings.rate_limit_ms is not None:
        config["rateLimit"] = settings.rate_limit_ms
    client: ccxt_async.Exchange = getattr(ccxt_async, settings.exchange_id)(config)
    # ccxt calls `throttler(cost)` before each request when enableRateLimit is on: our wall-clock bucket.
    client.throttler = RequestBudget(1000 / float(client.rateLimit), settings.rate_limit_burst)
    if settings.sandbox:
        if not client.urls.get("test"):
            raise ValueError(f"{settings.exchange_id} has no sandbox: set sandbox = false to trade live")
        client.set_sandbox_mode(True)
    if settings.api_base_url is not None:
        client.urls["api"] = _with_origin(client.urls["api"], settings.api_base_url)
    backoff = Backoff(settings.rate_limit_retries, settings.backoff_seconds, settings.max_backoff_seconds)
    order_rate = OrderRate(
        settings.orders_per_10s if settings.orders_per_10s is not None else profile.orders_per_10s,
        settings.orders_per_day if settings.orders_per_day is not None else profile.orders_per_day,
    )
    kind: type[CcxtVenue] = CcxtVenue
    if profile.futures:
        # Imported here: the derivatives adapter builds on this module.
        from rebal_venues.ccxt_futures import CcxtFuturesVenue

        kind = CcxtFuturesVenue
    return kind(settings.venue_name, settings.account, client, profile, backoff, order_rate=order_rate)

"""The fake exchange over HTTP: enough of Binance's spot REST API (v3) for an unmodified ccxt `binance`.

Signed endpoints accept any signature but need a known ``X-MBX-APIKEY``. Errors are Binance's: HTTP 400
with ``{"code": -2010, "msg": …}``, 401 for a bad key, 429 with ``Retry-After`` when rate-limited; every
answer carries ``X-MBX-USED-WEIGHT-1M`` (Binance: "every request will contain
X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter) in the response headers"). What the book models of
Binance's documented behaviour is in `tests.fake_exchange.state`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fake_exchange.futures import FakeFutures, add_routes
from tests.fake_exchange.state import (
    FakeBook,
    Order,
    Rejected,
    RequestKind,
    TooManyOrders,
    Trade,
    Withdrawal,
    request_weight,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BOOK = web.AppKey("book", FakeBook)


def _num(value: Decimal) -> str:
    return f"{value:.8f}"


def _market_json(book: FakeBook, symbol_id: str) -> dict[str, Any]:
    market = book.markets[symbol_id]
    return {
        "symbol": symbol_id,
        "status": "BREAK" if symbol_id in book.faults.halted else "TRADING",
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _num(market.tick),
                "maxPrice": "1000000",
                "tickSize": _num(market.tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _num(market.min_qty),
                "maxQty": "9000000",
                "stepSize": _num(market.step),
            },
            {"filterType": market.notional_filter, "minNotional": _num(market.min_notional)},
        ],
    }


def _order_json(book: FakeBook, order: Order, with_fills: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "symbol": order.symbol_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.time_ms,
        "time": order.time_ms,
        "updateTime": order.time_ms,
        "price": _num(order.limit_price or Decimal(0)),
        "origQty": _num(order.orig_qty),
        "executedQty": _num(order.executed),
        "cummulativeQuoteQty": _num(order.quote_qty),
        "status": order.status,
        "timeInForce": "GTC",
        "type": "LIMIT_MAKER"
        if order.maker_only
        else "LIMIT"
        if order.resting or order.limit_price is not None
        else "MARKET",
        "side": order.side,
    }
    if with_fills:
        trades = order.trades * (2 if book.faults.fills_twice else 1)
        answer["fills"] = [
            {
                "price": _num(t.price),
                "qty": _num(t.qty),
                "commission": _num(t.commission),
                "commissionAsset": t.commission_asset,
                "tradeId": t.trade_id,
            }
            for t in trades
        ]
    return answer


def _trade_json(order: Order, trade: Trade) -> dict[str, Any]:
    return {
        "symbol": order.symbol_id,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": _num(trade.price),
        "qty": _num(trade.qty),
        "quoteQty": _num(trade.qty * trade.price),
        "commission": _num(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": order.side == "BUY",
        "isMaker": trade.maker,
        "isBestMatch": True,
    }


async def _params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.method == "POST":
        params.update({key: str(value) for key, value in (await request.post()).items()})
    return params


def _error(rejected: Rejected, headers: dict[str, str]) -> web.Response:
    if isinstance(rejected, TooManyOrders):
        headers = {**headers, "Retry-After": f"{rejected.retry_after:.3f}"}
    body = {"code": rejected.code, "msg": rejected.msg}
    return web.json_response(body, status=rejected.http_status, headers=headers)


def endpoint(kind: RequestKind | None, signed: bool = False) -> Callable[..., Handler]:
    """A handler with the common parts: recorded, rate-limited by kind, key checked, errors as Binance's."""

    def wrap(handle: Callable[[FakeBook, dict[str, str], str], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            book = request.app[BOOK]
            params = await _params(request)
            weight = request_weight(request.method, request.path, params)
            used = {"X-MBX-USED-WEIGHT-1M": f"{book.used_weight(weight):g}"}
            wait = book.rate_limit.admit(weight) if book.rate_limit is not None else None
            if wait is not None:
                headers = {**used, "Retry-After": f"{wait:.3f}"}
                body = {"code": -1003, "msg": "Too much request weight used."}
                return web.json_response(body, status=429, headers=headers)
            if kind is not None:
                book.requests.append((kind, params))
                if book.faults.rate_limited.get(kind, 0) > 0:
                    book.faults.rate_limited[kind] -= 1
                    headers = {**used, "Retry-After": str(book.faults.retry_after_seconds)}
                    body = {"code": -1003, "msg": "Too many requests."}
                    return web.json_response(body, status=429, headers=headers)
            api_key = request.headers.get("X-MBX-APIKEY", "")
            try:
                if signed and (api_key not in book.accounts or "signature" not in params):
                    raise Rejected(401, -2015, "Invalid API-key, IP, or permissions for action.")
                return web.json_response(await handle(book, params, api_key), headers=used)
            except Rejected as rejected:
                return _error(rejected, used)

        return handler

    return wrap


@endpoint(None)
async def ping(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    return {}


@endpoint(None)
async def server_time(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    return {"serverTime": int(time.time() * 1000)}


@endpoint("markets")
async def exchange_info(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    symbols = [_market_json(book, symbol_id) for symbol_id in sorted(book.markets)]
    return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [], "symbols": symbols}


def _ticker(book: FakeBook, symbol_id: str) -> dict[str, Any]:
    last = _num(book.prices[symbol_id])
    bid, ask = book.top(symbol_id)
    return {
        "symbol": symbol_id,
        "lastPrice": last,
        "bidPrice": _num(bid),
        "askPrice": _num(ask),
        "openPrice": last,
        "highPrice": last,
        "lowPrice": last,
        "volume": "0",
        "quoteVolume": "0",
        "closeTime": int(time.time() * 1000),
    }


@endpoint("tickers")
async def ticker_24hr(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    if "symbol" in params:
        return _ticker(book, book.market(params["symbol"]).symbol_id)
    return [_ticker(book, symbol_id) for symbol_id in sorted(book.prices)]


@endpoint("tickers")
async def ticker_price(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    if "symbol" in params:
        return {
            "symbol": params["symbol"],
            "price": _num(book.prices[book.market(params["symbol"]).symbol_id]),
        }
    return [{"symbol": s, "price": _num(p)} for s, p in sorted(book.prices.items())]


@endpoint("balances", signed=True)
async def account(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    locked = book.locked(api_key)
    balances = [
        {
            "asset": asset,
            "free": _num(amount - locked.get(asset, Decimal(0))),
            "locked": _num(locked.get(asset, Decimal(0))),
        }
        for asset, amount in sorted(book.balances(api_key).items())
    ]
    return {"canTrade": True, "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"]}


@endpoint("create", signed=True)
async def create_order(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    kind = params.get("type")
    if kind not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
        raise Rejected(400, -1013, "Only MARKET, LIMIT and LIMIT_MAKER orders on the fake exchange.")
    limit = Decimal(params["price"]) if kind in ("LIMIT", "LIMIT_MAKER") else None
    client_order_id = params.get("newClientOrderId") or f"fake-{len(book.orders)}"
    qty = Decimal(params["quantity"])
    if book.faults.order_trips:  # a slow trip: the venue sees (and counts) the order only now
        await book.sleep(book.faults.order_trips.pop(0))
    order = book.create(
        api_key, params["symbol"], params["side"], qty, client_order_id, limit, kind == "LIMIT_MAKER"
    )
    if book.faults.submit_delay_seconds:  # accepted and stored: only the answer is late
        await asyncio.sleep(book.faults.submit_delay_seconds)
    return _order_json(book, order, with_fills=True)


@endpoint("order", signed=True)
async def get_order(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    order = book.lookup(api_key, params["symbol"], params.get("origClientOrderId", ""))
    return _order_json(book, order, with_fills=False)


@endpoint("cancel", signed=True)
async def cancel_order(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    order = book.cancel(api_key, params["symbol"], params.get("origClientOrderId", ""))
    return _order_json(book, order, with_fills=False)


@endpoint("open_orders", signed=True)
async def open_orders(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    symbol_id = params.get("symbol")
    if symbol_id is not None:
        book.market(symbol_id)
    return [_order_json(book, order, with_fills=False) for order in book.open_orders(api_key, symbol_id)]


@endpoint("all_orders", signed=True)
async def all_orders(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    since = int(params["startTime"]) if "startTime" in params else None
    found = book.all_orders(api_key, params["symbol"], since)
    return [_order_json(book, order, with_fills=False) for order in found]


@endpoint("trades", signed=True)
async def my_trades(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    book.balances(api_key)
    order_id = int(params["orderId"]) if "orderId" in params else None
    by_id = {order.order_id: order for order in book.orders.values()}
    return [_trade_json(by_id[t.order_id], t) for t in book.trades(api_key, params["symbol"], order_id)]


@endpoint("currencies", signed=True)
async def capital_config(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    book.balances(api_key)
    return [
        {
            "coin": coin,
            "name": coin,
            "depositAllEnable": any(n.deposit_enabled for n in networks),
            "withdrawAllEnable": any(n.withdraw_enabled for n in networks),
            "trading": True,
            "isLegalMoney": False,
            "free": _num(book.accounts[api_key].get(coin, Decimal(0))),
            "locked": "0",
            "networkList": [
                {
                    "network": n.network,
                    "coin": coin,
                    "name": n.network,
                    "isDefault": i == 0,
                    "depositEnable": n.deposit_enabled,
                    "withdrawEnable": n.withdraw_enabled,
                    "withdrawFee": _num(n.withdraw_fee),
                    "withdrawMin": _num(n.withdraw_min),
                    "withdrawMax": "9999999",
                    "withdrawIntegerMultiple": "0.00000001",
                    "depositDust": "0.00000001",
                    "minConfirm": 1,
                    "unLockConfirm": 0,
                    "sameAddress": False,
                }
                for i, n in enumerate(networks)
            ],
        }
        for coin, networks in sorted(book.networks.items())
    ]


@endpoint("deposit_address", signed=True)
async def deposit_address(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    coin, network = params["coin"], params.get("network", "")
    return {"coin": coin, "address": book.address(api_key, coin, network), "tag": "", "url": ""}


@endpoint("withdraw", signed=True)
async def withdraw_apply(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    withdrawal = book.withdraw(
        api_key,
        params["coin"],
        params.get("network", ""),
        params["address"],
        Decimal(params["amount"]),
        params.get("withdrawOrderId", ""),
    )
    return {"id": withdrawal.withdrawal_id}


def _withdrawal_json(w: Withdrawal) -> dict[str, Any]:
    # "withdrawOrderId": "will not be returned if there's no withdrawOrderId for this withdraw".
    named = {"withdrawOrderId": w.withdraw_order_id} if w.withdraw_order_id else {}
    return {
        "id": w.withdrawal_id,
        "amount": _num(w.amount),
        "transactionFee": _num(w.fee),
        "coin": w.coin,
        "status": w.status,
        "address": w.address,
        "txId": w.tx_id,
        "applyTime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(w.time_ms / 1000)),
        "network": w.network,
        "transferType": 0,
        "confirmNo": 1,
        "walletType": 0,
        **named,
    }


@endpoint("withdrawals", signed=True)
async def withdraw_history(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    found = book.withdrawal_history(api_key, params.get("coin"), params.get("withdrawOrderId"), params)
    return [_withdrawal_json(w) for w in found]


@endpoint("deposits", signed=True)
async def deposit_history(book: FakeBook, params: dict[str, str], api_key: str) -> Any:
    return [
        {
            "id": "d" + w.withdrawal_id,
            "amount": _num(w.amount - w.fee),
            "coin": w.coin,
            "network": w.network,
            "status": 1 if w.status == 6 else 0,
            "address": w.address,
            "addressTag": "",
            "txId": w.tx_id,
            "insertTime": w.time_ms,
            "transferType": 0,
            "confirmTimes": "1/1",
            "unlockConfirm": 0,
            "walletType": 0,
        }
        for w in book.deposit_history(api_key, params.get("coin"))
    ]


def application(book: FakeBook, futures: FakeFutures | None = None) -> web.Application:
    app = web.Application()
    if futures is not None:
        add_routes(app, futures)
    app[BOOK] = book
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    app.router.add_get("/api/v3/ticker/24hr", ticker_24hr)
    app.router.add_get("/api/v3/ticker/price", ticker_price)
    app.router.add_get("/api/v3/account", account)
    app.router.add_post("/api/v3/order", create_order)
    app.router.add_get("/api/v3/order", get_order)
    app.router.add_delete("/api/v3/order", cancel_order)
    app.router.add_get("/api/v3/myTrades", my_trades)
    app.router.add_get("/api/v3/openOrders", open_orders)
    app.router.add_get("/api/v3/allOrders", all_orders)
    app.router.add_get("/sapi/v1/capital/config/getall", capital_config)
    app.router.add_get("/sapi/v1/capital/deposit/address", deposit_address)
    app.router.add_post("/sapi/v1/capital/withdraw/apply", withdraw_apply)
    app.router.add_get("/sapi/v1/capital/withdraw/history", withdraw_history)
    app.router.add_get("/sapi/v1/capital/deposit/hisrec", deposit_history)
    return app


@asynccontextmanager
async def serving(book: FakeBook, futures: FakeFutures | None = None) -> AsyncIterator[str]:
    """The fake exchange on 127.0.0.1 and a free port, while the block runs (with its USDⓈ-M futures
    under ``/fapi`` when given); yields its origin."""
    runner = web.AppRunner(application(book, futures), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()

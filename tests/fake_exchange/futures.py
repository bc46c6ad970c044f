"""The fake exchange's USDⓈ-M futures: enough of Binance's futures REST API (``/fapi``) for an unmodified
ccxt `binanceusdm` client, with the unpleasant parts Binance documents
(https://developers.binance.com/docs/derivatives/usds-margined-futures):

- one-way mode: one position per symbol, its amount signed (``positionAmt``); a symbol trades at 20x
  cross until "Change Initial Leverage" / "Change Margin Type" say otherwise;
- a market order is answered ``NEW`` with nothing executed (the default ``newOrderRespType`` is ACK): its
  fill shows only when the order is looked up (``GET /fapi/v1/order``) and in ``userTrades``;
- a ``reduceOnly`` order that would not reduce the position is refused, -2022 "ReduceOnly Order is
  rejected."; an order increasing a position needs its initial margin (notional / leverage) and fee
  free, else -2019 "Margin is insufficient."; an opening order under the contract's minimum notional is
  refused, -4164 (reduce-only orders are exempt);
- a leverage above the symbol's bracket is refused, -4028 "Leverage N is not valid"; the margin type of a
  symbol with a position cannot change, -4048; asking for the margin type already set is -4046 "No need
  to change margin type." (which ccxt answers itself);
- liquidation at the mark price: at every signed request, cross positions whose margin balance is at or
  below their maintenance margin are closed at the mark price by an order whose client id starts with
  ``autoclose-`` (Binance's liquidation orders), the clearance fee taken; a negative wallet is brought back
  to zero (the insurance fund).

The pages followed (https://developers.binance.com/docs/derivatives/usds-margined-futures/...):
``trade/rest-api/New-Order`` (``newOrderRespType`` ACK by default, ``reduceOnly``),
``trade/rest-api/Change-Initial-Leverage``, ``trade/rest-api/Change-Margin-Type``,
``trade/rest-api/Position-Information-V3``, ``account/rest-api/Account-Information-V3``,
``market-data/rest-api/Mark-Price`` (premiumIndex), ``error-code`` (-2019, -2022, -4028, -4046, -4048, -4164)
and ``user-data-streams/Event-Order-Update`` (a client order id starting ``autoclose-`` is a liquidation).

Faults the tests switch on (`FuturesFaults`): every leverage change refused (-4028), every reduce-only
order refused (-2022). The margin arithmetic is the core's (`rebal.core.margin`), Binance's formulas.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from aiohttp import web

from rebal.core.margin import Held, cross_in_liquidation, liquidation_price
from tests.fake_exchange.state import BAD_KEY, NOT_FOUND, OPEN, Order, Rejected, Trade

QUANTUM = Decimal("1e-8")
DEFAULT_LEVERAGE = 20
CROSSED, ISOLATED = "CROSSED", "ISOLATED"
FuturesHandler = Callable[["FakeFutures", dict[str, str], str], Awaitable[Any]]
FUTURES = web.AppKey("futures", object)


@dataclass(frozen=True)
class FakeContract:
    base: str
    quote: str
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_leverage: int = 125
    maint_margin_rate: Decimal = Decimal("0.004")

    @property
    def symbol_id(self) -> str:
        return self.base + self.quote


@dataclass
class FuturesFaults:
    # Every leverage change is refused with -4028 (the venue refusing the leverage asked).
    refuse_leverage: bool = False
    # Every reduce-only order is refused with -2022 (as when the position changed under it).
    reject_reduce_only: bool = False


@dataclass
class FakePosition:
    amount: Decimal
    entry_price: Decimal


@dataclass
class FakeFutures:
    contracts: dict[str, FakeContract]
    marks: dict[str, Decimal]
    # API key -> wallet balance in USDT.
    wallets: dict[str, Decimal]
    taker_fee: Decimal = Decimal("0.0005")
    liquidation_fee_rate: Decimal = Decimal("0.0125")
    faults: FuturesFaults = field(default_factory=FuturesFaults)
    positions: dict[tuple[str, str], FakePosition] = field(default_factory=dict)
    settings: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    # Order id -> whether it was placed reduce-only.
    reduce_only: dict[int, bool] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5001))

    def requests_of(self, path: str) -> list[dict[str, str]]:
        return [params for seen, params in self.requests if seen == path]

    def contract(self, symbol_id: str) -> FakeContract:
        if symbol_id not in self.contracts:
            raise Rejected(400, -1121, "Invalid symbol.")
        return self.contracts[symbol_id]

    def setting(self, api_key: str, symbol_id: str) -> tuple[int, str]:
        return self.settings.get((api_key, symbol_id), (DEFAULT_LEVERAGE, CROSSED))

    def wallet(self, api_key: str) -> Decimal:
        if api_key not in self.wallets:
            raise BAD_KEY
        return self.wallets[api_key]

    def held(self, api_key: str) -> list[Held]:
        found = []
        for (key, symbol_id), position in sorted(self.positions.items()):
            if key == api_key:
                leverage, _ = self.setting(api_key, symbol_id)
                rate = self.contracts[symbol_id].maint_margin_rate
                found.append(
                    Held(
                        symbol_id,
                        position.amount,
                        position.entry_price,
                        self.marks[symbol_id],
                        leverage,
                        rate,
                    )
                )
        return found

    def available(self, api_key: str) -> Decimal:
        held = self.held(api_key)
        pnl = sum((h.unrealized_pnl for h in held), Decimal(0))
        used = sum((h.initial_margin for h in held), Decimal(0))
        return max(self.wallet(api_key) + pnl - used, Decimal(0))

    # -- liquidation at the mark price ------------------------------------------------------------------

    def liquidate(self, api_key: str) -> None:
        """Close every cross position at the mark price when the account is in liquidation."""
        held = self.held(api_key)
        if not cross_in_liquidation(self.wallet(api_key), held):
            return
        for position in held:
            pnl = position.unrealized_pnl
            fee = (position.notional * self.liquidation_fee_rate).quantize(QUANTUM, rounding=ROUND_CEILING)
            side = "SELL" if position.amount > 0 else "BUY"
            order = self._order(
                api_key,
                f"autoclose-{int(time.time() * 1000)}",
                position.symbol,
                side,
                abs(position.amount),
                True,
            )
            order.status = "FILLED"
            order.trades.append(
                Trade(
                    next(self._ids),
                    order.order_id,
                    position.mark_price,
                    abs(position.amount),
                    fee,
                    "USDT",
                    order.time_ms,
                )
            )
            self.orders[order.order_id] = order
            del self.positions[(api_key, position.symbol)]
            self.wallets[api_key] = max(self.wallets[api_key] + pnl - fee, Decimal(0))

    # -- settings -------------------------------------------------------------------------------------

    def set_leverage(self, api_key: str, symbol_id: str, leverage: int) -> dict[str, Any]:
        self.wallet(api_key)
        contract = self.contract(symbol_id)
        if self.faults.refuse_leverage or not 1 <= leverage <= contract.max_leverage:
            raise Rejected(400, -4028, f"Leverage {leverage} is not valid")
        _, mode = self.setting(api_key, symbol_id)
        self.settings[(api_key, symbol_id)] = (leverage, mode)
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": symbol_id}

    def set_margin_type(self, api_key: str, symbol_id: str, margin_type: str) -> dict[str, Any]:
        self.wallet(api_key)
        self.contract(symbol_id)
        leverage, mode = self.setting(api_key, symbol_id)
        if mode == margin_type:
            raise Rejected(400, -4046, "No need to change margin type.")
        if (api_key, symbol_id) in self.positions:
            raise Rejected(400, -4048, "Margin type cannot be changed if there exists position.")
        self.settings[(api_key, symbol_id)] = (leverage, margin_type)
        return {"code": 200, "msg": "success"}

    # -- orders ---------------------------------------------------------------------------------------

    def _order(
        self, api_key: str, client_order_id: str, symbol_id: str, side: str, qty: Decimal, reduce_only: bool
    ) -> Order:
        order = Order(
            order_id=next(self._ids),
            client_order_id=client_order_id,
            api_key=api_key,
            symbol_id=symbol_id,
            side="BUY" if side == "BUY" else "SELL",
            orig_qty=qty,
            status="NEW",
            created=time.monotonic(),
            time_ms=int(time.time() * 1000),
        )
        self.reduce_only[order.order_id] = reduce_only
        return order

    def create(
        self, api_key: str, symbol_id: str, side: str, qty: Decimal, client_order_id: str, reduce_only: bool
    ) -> Order:
        """A market order, filled at once at the mark price (answered NEW: the ACK response)."""
        self.wallet(api_key)
        contract = self.contract(symbol_id)
        previous = self.by_client_id(api_key, client_order_id)
        if previous is not None and previous.status in OPEN:
            raise Rejected(400, -2010, "Duplicate order sent.")
        if qty < contract.min_qty or qty % contract.step != 0:
            raise Rejected(400, -1013, "Filter failure: LOT_SIZE")
        position = self.positions.get((api_key, symbol_id))
        held = position.amount if position is not None else Decimal(0)
        delta = qty if side == "BUY" else -qty
        reduces = held != 0 and (held > 0) != (delta > 0)
        if reduce_only and (self.faults.reject_reduce_only or not reduces or qty > abs(held)):
            raise Rejected(400, -2022, "ReduceOnly Order is rejected.")
        price = self.marks[symbol_id]
        closed = min(qty, abs(held)) if reduces else Decimal(0)
        opened = qty - closed
        if opened > 0 and not reduce_only and opened * price < contract.min_notional:
            raise Rejected(
                400,
                -4164,
                f"Order's notional must be no smaller than {contract.min_notional}"
                " (unless you choose reduce only).",
            )
        leverage, _ = self.setting(api_key, symbol_id)
        fee = (qty * price * self.taker_fee).quantize(QUANTUM, rounding=ROUND_CEILING)
        if opened * price / leverage + fee > self.available(api_key) + closed * price / leverage:
            raise Rejected(400, -2019, "Margin is insufficient.")
        pnl = (
            (closed * (price - position.entry_price) * (1 if held > 0 else -1))
            if position and closed
            else Decimal(0)
        )
        after = held + delta
        if after == 0:
            self.positions.pop((api_key, symbol_id), None)
        elif position is None or (after > 0) != (held > 0):
            self.positions[(api_key, symbol_id)] = FakePosition(after, price)
        else:
            entry = (
                position.entry_price
                if opened == 0
                else (abs(held) * position.entry_price + opened * price) / abs(after)
            )
            self.positions[(api_key, symbol_id)] = FakePosition(after, entry)
        self.wallets[api_key] += pnl - fee
        order = self._order(
            api_key, client_order_id or f"web_{next(self._ids)}", symbol_id, side, qty, reduce_only
        )
        order.trades.append(Trade(next(self._ids), order.order_id, price, qty, fee, "USDT", order.time_ms))
        self.orders[order.order_id] = order
        return order

    def by_client_id(self, api_key: str, client_order_id: str) -> Order | None:
        found = [
            o for o in self.orders.values() if o.api_key == api_key and o.client_order_id == client_order_id
        ]
        return found[-1] if found and client_order_id else None

    def lookup(self, api_key: str, symbol_id: str, client_order_id: str) -> Order:
        order = self.by_client_id(api_key, client_order_id)
        if order is None or order.symbol_id != symbol_id:
            raise NOT_FOUND
        order.status = "FILLED"  # the ACK answer said NEW; the order filled at once
        return order


# -- HTTP -----------------------------------------------------------------------------------------------


def _num(value: Decimal) -> str:
    return f"{value:.8f}"


def _order_json(order: Order, reduce_only: bool, answered: bool) -> dict[str, Any]:
    """An order as ``/fapi/v1/order`` shows it; `answered`: the ACK answer to its placement."""
    executed = Decimal(0) if answered else order.executed
    average = order.quote_qty / order.executed if order.executed and not answered else Decimal(0)
    return {
        "orderId": order.order_id,
        "symbol": order.symbol_id,
        "status": "NEW" if answered else order.status,
        "clientOrderId": order.client_order_id,
        "price": "0",
        "avgPrice": _num(average),
        "origQty": _num(order.orig_qty),
        "executedQty": _num(executed),
        "cumQty": _num(executed),
        "cumQuote": _num(Decimal(0) if answered else order.quote_qty),
        "timeInForce": "GTC",
        "type": "MARKET",
        "origType": "MARKET",
        "reduceOnly": reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "time": order.time_ms,
        "updateTime": order.time_ms,
    }


def _contract_json(contract: FakeContract) -> dict[str, Any]:
    return {
        "symbol": contract.symbol_id,
        "pair": contract.symbol_id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": contract.base,
        "quoteAsset": contract.quote,
        "marginAsset": contract.quote,
        "pricePrecision": 2,
        "quantityPrecision": max(0, -contract.step.normalize().as_tuple().exponent),  # type: ignore[operator]
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": "0.10"},
            {
                "filterType": "LOT_SIZE",
                "minQty": _num(contract.min_qty),
                "maxQty": "1000",
                "stepSize": _num(contract.step),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _num(contract.min_qty),
                "maxQty": "120",
                "stepSize": _num(contract.step),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": _num(contract.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def _position_json(futures: FakeFutures, api_key: str, held: Held, others: list[Held]) -> dict[str, Any]:
    price = liquidation_price(held, futures.wallet(api_key), others)
    return {
        "symbol": held.symbol,
        "positionSide": "BOTH",
        "positionAmt": _num(held.amount),
        "entryPrice": _num(held.entry_price),
        "breakEvenPrice": _num(held.entry_price),
        "markPrice": _num(held.mark_price),
        "unRealizedProfit": _num(held.unrealized_pnl),
        "liquidationPrice": _num(price or Decimal(0)),
        "isolatedMargin": "0",
        "notional": _num(held.amount * held.mark_price),
        "marginAsset": "USDT",
        "isolatedWallet": "0",
        "initialMargin": _num(held.initial_margin),
        "maintMargin": _num(held.maintenance_margin),
        "positionInitialMargin": _num(held.initial_margin),
        "openOrderInitialMargin": "0",
        "adl": 1,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": int(time.time() * 1000),
    }


async def _params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.method in ("POST", "DELETE"):
        params.update({key: str(value) for key, value in (await request.post()).items()})
    return params


def endpoint(
    signed: bool = False,
) -> Callable[[FuturesHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A handler with the common parts: recorded, key and liquidation checked, errors as Binance's."""

    def wrap(handle: FuturesHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            futures = request.app[FUTURES]
            assert isinstance(futures, FakeFutures)
            params = await _params(request)
            futures.requests.append((request.path, params))
            api_key = request.headers.get("X-MBX-APIKEY", "")
            try:
                if signed:
                    if api_key not in futures.wallets or "signature" not in params:
                        raise BAD_KEY
                    futures.liquidate(api_key)
                return web.json_response(await handle(futures, params, api_key))
            except Rejected as rejected:
                return web.json_response(
                    {"code": rejected.code, "msg": rejected.msg}, status=rejected.http_status
                )

        return handler

    return wrap


@endpoint()
async def ping(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    return {}


@endpoint()
async def server_time(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    return {"serverTime": int(time.time() * 1000)}


@endpoint()
async def exchange_info(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    return {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        "futuresType": "U_MARGINED",
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_contract_json(c) for _, c in sorted(futures.contracts.items())],
    }


def _ticker(symbol_id: str, price: Decimal) -> dict[str, Any]:
    last = _num(price)
    now = int(time.time() * 1000)
    return {
        "symbol": symbol_id,
        "priceChange": "0",
        "priceChangePercent": "0",
        "weightedAvgPrice": last,
        "lastPrice": last,
        "lastQty": "0",
        "openPrice": last,
        "highPrice": last,
        "lowPrice": last,
        "volume": "0",
        "quoteVolume": "0",
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": 0,
        "lastId": 0,
        "count": 0,
    }


@endpoint()
async def ticker_24hr(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    if "symbol" in params:
        futures.contract(params["symbol"])
        return _ticker(params["symbol"], futures.marks[params["symbol"]])
    return [_ticker(s, p) for s, p in sorted(futures.marks.items())]


def _premium(symbol_id: str, price: Decimal) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "symbol": symbol_id,
        "markPrice": _num(price),
        "indexPrice": _num(price),
        "estimatedSettlePrice": _num(price),
        "lastFundingRate": "0.00010000",
        "interestRate": "0.00010000",
        "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000,
        "time": now,
    }


@endpoint()
async def premium_index(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    if "symbol" in params:
        futures.contract(params["symbol"])
        return _premium(params["symbol"], futures.marks[params["symbol"]])
    return [_premium(s, p) for s, p in sorted(futures.marks.items())]


@endpoint(signed=True)
async def account(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    wallet = futures.wallet(api_key)
    held = futures.held(api_key)
    pnl = sum((h.unrealized_pnl for h in held), Decimal(0))
    used = sum((h.initial_margin for h in held), Decimal(0))
    maint = sum((h.maintenance_margin for h in held), Decimal(0))
    available = futures.available(api_key)
    asset = {
        "asset": "USDT",
        "walletBalance": _num(wallet),
        "unrealizedProfit": _num(pnl),
        "marginBalance": _num(wallet + pnl),
        "maintMargin": _num(maint),
        "initialMargin": _num(used),
        "positionInitialMargin": _num(used),
        "openOrderInitialMargin": "0",
        "crossWalletBalance": _num(wallet),
        "crossUnPnl": _num(pnl),
        "availableBalance": _num(available),
        "maxWithdrawAmount": _num(available),
        "updateTime": int(time.time() * 1000),
    }
    return {
        "totalInitialMargin": _num(used),
        "totalMaintMargin": _num(maint),
        "totalWalletBalance": _num(wallet),
        "totalUnrealizedProfit": _num(pnl),
        "totalMarginBalance": _num(wallet + pnl),
        "totalPositionInitialMargin": _num(used),
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": _num(wallet),
        "totalCrossUnPnl": _num(pnl),
        "availableBalance": _num(available),
        "maxWithdrawAmount": _num(available),
        "assets": [asset],
        "positions": [],
    }


@endpoint(signed=True)
async def position_risk(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    held = futures.held(api_key)
    return [
        _position_json(futures, api_key, h, held) for h in held if params.get("symbol") in (None, h.symbol)
    ]


@endpoint(signed=True)
async def leverage_bracket(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.wallet(api_key)
    return [
        {
            "symbol": c.symbol_id,
            "notionalCoef": 1.0,
            "brackets": [
                {
                    "bracket": 1,
                    "initialLeverage": c.max_leverage,
                    "notionalCap": 1_000_000_000,
                    "notionalFloor": 0,
                    "maintMarginRatio": float(c.maint_margin_rate),
                    "cum": 0.0,
                }
            ],
        }
        for _, c in sorted(futures.contracts.items())
        if params.get("symbol") in (None, c.symbol_id)
    ]


@endpoint(signed=True)
async def symbol_config(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.wallet(api_key)
    found = []
    for symbol_id in sorted(futures.contracts):
        leverage, mode = futures.setting(api_key, symbol_id)
        found.append(
            {
                "symbol": symbol_id,
                "marginType": mode,
                "isAutoAddMargin": "false",
                "leverage": leverage,
                "maxNotionalValue": "1000000",
            }
        )
    return [c for c in found if params.get("symbol") in (None, c["symbol"])]


@endpoint(signed=True)
async def change_leverage(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    return futures.set_leverage(api_key, params["symbol"], int(params["leverage"]))


@endpoint(signed=True)
async def change_margin_type(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    return futures.set_margin_type(api_key, params["symbol"], params["marginType"])


@endpoint(signed=True)
async def new_order(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    if params.get("type") != "MARKET":
        raise Rejected(400, -1116, "Invalid orderType.")
    reduce_only = params.get("reduceOnly", "false").lower() == "true"
    order = futures.create(
        api_key,
        params["symbol"],
        params["side"],
        Decimal(params["quantity"]),
        params.get("newClientOrderId", ""),
        reduce_only,
    )
    return _order_json(order, reduce_only, answered=True)


@endpoint(signed=True)
async def get_order(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    order = futures.lookup(api_key, params["symbol"], params.get("origClientOrderId", ""))
    return _order_json(order, futures.reduce_only.get(order.order_id, False), answered=False)


@endpoint(signed=True)
async def cancel_order(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.lookup(api_key, params["symbol"], params.get("origClientOrderId", ""))
    raise Rejected(400, -2011, "Unknown order sent.")  # market orders fill at once: never open


@endpoint(signed=True)
async def open_orders(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.wallet(api_key)
    return []  # market orders fill at once: nothing rests


@endpoint(signed=True)
async def all_orders(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.wallet(api_key)
    return [
        _order_json(o, futures.reduce_only.get(o.order_id, False), answered=False)
        for o in futures.orders.values()
        if o.api_key == api_key and o.symbol_id == params["symbol"]
    ]


@endpoint(signed=True)
async def user_trades(futures: FakeFutures, params: dict[str, str], api_key: str) -> Any:
    futures.wallet(api_key)
    order_id = int(params["orderId"]) if "orderId" in params else None
    return [
        {
            "buyer": order.side == "BUY",
            "commission": _num(trade.commission),
            "commissionAsset": trade.commission_asset,
            "id": trade.trade_id,
            "maker": False,
            "orderId": order.order_id,
            "price": _num(trade.price),
            "qty": _num(trade.qty),
            "quoteQty": _num(trade.qty * trade.price),
            "realizedPnl": "0",
            "side": order.side,
            "positionSide": "BOTH",
            "symbol": order.symbol_id,
            "time": trade.time_ms,
        }
        for order in futures.orders.values()
        if order.api_key == api_key and order.symbol_id == params["symbol"]
        for trade in order.trades
        if order_id is None or trade.order_id == order_id
    ]


def add_routes(app: web.Application, futures: FakeFutures) -> None:
    """Serve `futures` under ``/fapi`` on `app`."""
    app[FUTURES] = futures
    routes = [
        ("GET", "/fapi/v1/ping", ping),
        ("GET", "/fapi/v1/time", server_time),
        ("GET", "/fapi/v1/exchangeInfo", exchange_info),
        ("GET", "/fapi/v1/ticker/24hr", ticker_24hr),
        ("GET", "/fapi/v1/premiumIndex", premium_index),
        ("GET", "/fapi/v2/account", account),
        ("GET", "/fapi/v3/account", account),
        ("GET", "/fapi/v2/positionRisk", position_risk),
        ("GET", "/fapi/v3/positionRisk", position_risk),
        ("GET", "/fapi/v1/leverageBracket", leverage_bracket),
        ("GET", "/fapi/v1/symbolConfig", symbol_config),
        ("POST", "/fapi/v1/leverage", change_leverage),
        ("POST", "/fapi/v1/marginType", change_margin_type),
        ("POST", "/fapi/v1/order", new_order),
        ("GET", "/fapi/v1/order", get_order),
        ("DELETE", "/fapi/v1/order", cancel_order),
        ("GET", "/fapi/v1/openOrders", open_orders),
        ("GET", "/fapi/v1/allOrders", all_orders),
        ("GET", "/fapi/v1/userTrades", user_trades),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)

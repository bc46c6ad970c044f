"""Perpetual futures accounts on a real exchange through ccxt's unified derivatives API: a `CcxtVenue` that
is also a `rebal.futures.FuturesVenue` (opened by `open_ccxt_venue` for an exchange whose profile says
``futures``: ``binanceusdm``, Binance USDⓈ-M).

- Contracts: the linear perpetuals of ``load_markets`` (``swap`` and ``linear``, settling in their quote),
  their steps and minimums as for spot; the maximum leverage and the maintenance margin rate of the first
  notional tier (``fetchLeverageTiers``), read once.
- Mark prices: ``fetchMarkPrices``; positions: ``fetchPositions`` (the leverage and margin mode from
  ``fetchLeverages`` where the positions do not carry them, as Binance's v3 position risk does not);
  margin: ``fetchBalance``'s total (the margin balance) and free (available) in the settlement asset, the
  wallet balance being the total less the positions' unrealized PnL.
- Settings: ``setLeverage`` and ``setMarginMode`` (a margin mode already set is no error: ccxt's
  ``MarginModeAlreadySet``); any other refusal is `LeverageRefused` / `MarginModeRefused`.
- Orders: ``createOrder`` with ``reduceOnly``, under our client id, with the spot orders' look-ups,
  unknown-outcome handling and rate limits (`CcxtVenue.place_order`); Binance's -2022 is registered with
  ccxt's error table as `ReduceOnlyRejected` and answered `OrderRejected(REDUCE_ONLY_REJECTED)`.

ccxt exceptions are translated by class, never by message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ccxt.base import errors as ccxt_errors

from rebal.core.contracts import MAX_LEVERAGE, Contract
from rebal.core.positions import MarginMode, Position
from rebal.futures import LeverageRefused, Margin, MarginModeRefused
from rebal.venue import OrderState, Side, VenueAuthError, VenueError
from rebal_venues.ccxt_translate import decimal_of, ticker_figures
from rebal_venues.ccxt_venue import CcxtVenue

# The settlement asset of the USDⓈ-M contracts this adapter trades.
SETTLE = "USDT"


class CcxtFuturesVenue(CcxtVenue):
    """One futures account (one set of keys) on a ccxt derivatives exchange (see the module doc)."""

    _contracts: dict[str, Contract] | None = None

    def _trades(self, market: Mapping[str, Any]) -> bool:
        """The linear perpetuals settling in their quote, as markets (what the spot adapter sizes and
        checks orders with)."""
        return bool(
            market.get("swap") and market.get("linear") and market.get("settle") == market.get("quote")
        )

    async def contracts(self) -> Mapping[str, Contract]:
        if self._contracts is None:
            markets = await self.markets()
            tiers: Mapping[str, Any] = {}
            if self._client.has.get("fetchLeverageTiers"):
                with self._translated("fetch_leverage_tiers"):
                    tiers = await self._request(lambda: self._client.fetch_leverage_tiers(list(markets)))
            self._contracts = {}
            for symbol, market in markets.items():
                first = (tiers.get(symbol) or [{}])[0]
                leverage = int(decimal_of(first.get("maxLeverage")) or MAX_LEVERAGE)
                self._contracts[symbol] = Contract(
                    symbol=symbol,
                    base=market.base,
                    quote=market.quote,
                    amount_step=market.amount_step,
                    min_amount=market.min_amount,
                    min_cost=market.min_cost,
                    fee_rate=market.fee_rate,
                    max_leverage=min(max(leverage, 1), MAX_LEVERAGE),
                    maintenance_margin_rate=decimal_of(first.get("maintenanceMarginRate")),
                )
        return self._contracts

    async def mark_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        if not symbols:
            return {}
        with self._translated("fetch_mark_prices"):
            tickers = await self._request(lambda: self._client.fetch_mark_prices(list(symbols)))
        return ticker_figures(tickers, symbols, "markPrice", self._name, "mark price")

    async def positions(self, account: str) -> Sequence[Position]:
        self._check_account(account)
        await self.markets()
        with self._translated("fetch_positions"):
            raw = await self._request(self._client.fetch_positions)
        held = [
            p for p in raw if decimal_of(p.get("contracts")) > 0 and p.get("symbol") in (self._markets or {})
        ]
        settings: Mapping[str, Any] = {}
        if any(p.get("leverage") is None or p.get("marginMode") is None for p in held):
            with self._translated("fetch_leverages"):
                settings = await self._request(
                    lambda: self._client.fetch_leverages(sorted({str(p["symbol"]) for p in held}))
                )
        return sorted(
            (_position(p, settings.get(str(p["symbol"])) or {}) for p in held), key=lambda p: p.symbol
        )

    async def margin(self, account: str) -> Margin:
        self._check_account(account)
        with self._translated("fetch_balance"):
            raw = await self._request(self._client.fetch_balance)
        total = decimal_of((raw.get("total") or {}).get(SETTLE))
        free = decimal_of((raw.get("free") or {}).get(SETTLE))
        pnl = sum((p.unrealized_pnl for p in await self.positions(account)), Decimal(0))
        return Margin(SETTLE, total - pnl, pnl, free)

    async def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        self._check_account(account)
        await self.markets()
        try:
            await self._request(lambda: self._client.set_leverage(leverage, symbol))
        except ccxt_errors.AuthenticationError as exc:
            raise VenueAuthError(f"{self._name} set_leverage {symbol}: {exc}") from exc
        except ccxt_errors.NetworkError as exc:
            raise VenueError(f"{self._name} set_leverage {symbol}: {exc}") from exc
        except ccxt_errors.BaseError as exc:  # refused: not valid, too low for the position
            raise LeverageRefused(f"{self._name} {symbol}: leverage {leverage} refused: {exc}") from exc

    async def set_margin_mode(self, account: str, symbol: str, mode: MarginMode) -> None:
        self._check_account(account)
        await self.markets()
        try:
            await self._request(lambda: self._client.set_margin_mode(mode, symbol))
        except ccxt_errors.MarginModeAlreadySet:
            return  # already in that mode: nothing to change
        except ccxt_errors.AuthenticationError as exc:
            raise VenueAuthError(f"{self._name} set_margin_mode {symbol}: {exc}") from exc
        except ccxt_errors.NetworkError as exc:
            raise VenueError(f"{self._name} set_margin_mode {symbol}: {exc}") from exc
        except ccxt_errors.BaseError as exc:  # refused: a position or an open order on the symbol
            raise MarginModeRefused(f"{self._name} {symbol}: margin mode {mode} refused: {exc}") from exc

    async def place_position_order(
        self, account: str, client_order_id: str, symbol: str, side: Side, amount: Decimal, reduce_only: bool
    ) -> OrderState:
        extra = {"reduceOnly": True} if reduce_only else {}
        return await self.place_order(account, client_order_id, symbol, side, amount, extra=extra)


def _position(raw: Mapping[str, Any], setting: Mapping[str, Any]) -> Position:
    """A ccxt unified position (with its symbol's leverage structure) as the port's."""
    size = _clean(decimal_of(raw.get("contracts")) * (decimal_of(raw.get("contractSize")) or Decimal(1)))
    amount = -size if raw.get("side") == "short" else size
    leverage = raw.get("leverage") or setting.get("longLeverage") or 1
    mode = raw.get("marginMode") or setting.get("marginMode") or "cross"
    liquidation = raw.get("liquidationPrice")
    return Position(
        symbol=str(raw["symbol"]),
        amount=amount,
        entry_price=_clean(decimal_of(raw.get("entryPrice"))),
        mark_price=_clean(decimal_of(raw.get("markPrice"))),
        leverage=int(decimal_of(leverage)),
        margin_mode="isolated" if mode == "isolated" else "cross",
        liquidation_price=_clean(decimal_of(liquidation)) if liquidation else None,
        unrealized_pnl=_clean(decimal_of(raw.get("unrealizedPnl"))),
    )


def _clean(value: Decimal) -> Decimal:
    """A number from ccxt's floats without its float form's noise: ``0.40`` is 0.4, ``-0.0`` is 0."""
    return Decimal(0) if value == 0 else value.normalize()

"""What differs per exchange behind `CcxtVenue`: the client order id's parameter names, ccxt's options, the
venue's documented error messages ccxt does not classify, its order-count limits; and the metrics label of
a ccxt exception, by its class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ccxt.base import errors as ccxt_errors

from rebal.futures import REDUCE_ONLY_REJECTED


def error_kind(exc: BaseException) -> str:
    """The `rebal_exchange_errors_total` label of a ccxt exception, by its class."""
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (ccxt_errors.DDoSProtection, "rate_limit"),  # RateLimitExceeded is one
        (ccxt_errors.AuthenticationError, "auth"),  # PermissionDenied, AccountSuspended too
        (ccxt_errors.InsufficientFunds, "insufficient_funds"),
        (ccxt_errors.OrderNotFound, "order_not_found"),
        (ccxt_errors.InvalidOrder, "invalid_order"),
        (ccxt_errors.BadRequest, "invalid_order"),
        (ccxt_errors.OperationRejected, "invalid_order"),
        (ccxt_errors.NetworkError, "network"),
    )
    return next((kind for cls, kind in kinds if isinstance(exc, cls)), "other")


@dataclass(frozen=True)
class ExchangeProfile:
    """What differs per exchange: the client order id's parameter names and ccxt options for spot."""

    client_id_param: str = "clientOrderId"
    lookup_param: str = "clientOrderId"
    # Parameter of fetch_my_trades restricting it to one order id (None: filter the trades ourselves).
    trades_order_param: str | None = None
    # Our id of a withdrawal, sent with it and looked up by it.
    transfer_id_param: str = "clientId"
    options: Mapping[str, Any] = field(default_factory=dict)
    # The venue's documented error messages ccxt does not classify itself: message → ccxt exception class,
    # added to the client's exact-match table (ccxt translates; we still act on classes only).
    exact_errors: Mapping[str, type[ccxt_errors.BaseError]] = field(default_factory=dict)
    # The venue's order-count limits per account: new orders per 10 seconds and per day (None: none known).
    orders_per_10s: int | None = None
    orders_per_day: int | None = None
    # A refusal's port reason by the ccxt exception class (one `exact_errors` names): a class listed here
    # is not an `invalid_order` but this reason.
    rejection_reasons: Mapping[type[ccxt_errors.BaseError], str] = field(default_factory=dict)
    # A derivatives exchange: its accounts are perpetual futures accounts (`rebal_venues.ccxt_futures`).
    futures: bool = False


class ReduceOnlyRejected(ccxt_errors.InvalidOrder):  # type: ignore[misc]  # ccxt is untyped
    """A reduce-only order that would not reduce the position (Binance -2022 "ReduceOnly Order is
    rejected."), registered with ccxt's error table by the futures profile."""


PROFILES: Mapping[str, ExchangeProfile] = {
    "binance": ExchangeProfile(
        client_id_param="newClientOrderId",
        lookup_param="origClientOrderId",
        trades_order_param="orderId",
        transfer_id_param="withdrawOrderId",
        options={
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            # The coins' networks, fees and deposit/withdraw switches (the transfer pre-check needs them).
            "fetchCurrencies": True,
            # The reconciliation lists all open orders of the account at once (weight 80, once per cycle).
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
        # Binance answers a client id of an open order with -2010 "Duplicate order sent." (its errors
        # page), which ccxt maps to the generic InvalidOrder: it means the order exists.
        exact_errors={"Duplicate order sent.": ccxt_errors.DuplicateOrderId},
        # Binance's ORDERS rate limits (exchangeInfo `rateLimits`): 50 per 10 SECOND, 160,000 per DAY.
        orders_per_10s=50,
        orders_per_day=160_000,
    ),
    # Binance USDⓈ-M futures (its own ccxt class, the /fapi API): one-way mode, market orders answered ACK.
    "binanceusdm": ExchangeProfile(
        client_id_param="newClientOrderId",
        lookup_param="origClientOrderId",
        trades_order_param="orderId",
        options={"fetchCurrencies": False, "warnOnFetchOpenOrdersWithoutSymbol": False},
        # ccxt picks its USDⓈ-M error table by the request's host (fapi.binance.com); registered by
        # Binance's documented message too, the classes hold on any host (a testnet, a proxy).
        exact_errors={
            "Duplicate order sent.": ccxt_errors.DuplicateOrderId,
            "ReduceOnly Order is rejected.": ReduceOnlyRejected,
            "Margin is insufficient.": ccxt_errors.InsufficientFunds,
        },
        rejection_reasons={ReduceOnlyRejected: REDUCE_ONLY_REJECTED},
        # USDⓈ-M's ORDERS rate limit (exchangeInfo `rateLimits`): 300 per 10 SECOND (and 1,200 a minute).
        orders_per_10s=300,
        futures=True,
    ),
}
DEFAULT_PROFILE = ExchangeProfile()

"""ccxt's unified structures as the port's values: a market's step and minimums (`market_info`), an amount
truncated to them, an order's status, a fill, a transfer; every ccxt number as an exact decimal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from ccxt.base.decimal_to_precision import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE

from rebal.venue import (
    INVALID_ORDER,
    Fill,
    MarketInfo,
    OrderStatus,
    Transfer,
    TransferStatus,
    VenueError,
)

# The reason of an order that ended before it filled completely (a market order out of liquidity).
EXPIRED = "expired"


def decimal_of(value: object) -> Decimal:
    """A ccxt number (float, int or str; None is 0) as an exact decimal of its shortest repr."""
    return Decimal(0) if value is None else Decimal(str(value))


def ticker_figures(
    tickers: Mapping[str, Any], symbols: Sequence[str], key: str, venue: str, what: str
) -> dict[str, Decimal]:
    """Each symbol's `key` figure of its ticker (``last``, ``markPrice``); a symbol without one is a
    `VenueError` naming `what` was missing."""
    found: dict[str, Decimal] = {}
    for symbol in symbols:
        figure = (tickers.get(symbol) or {}).get(key)
        if figure is None:
            raise VenueError(f"{venue}: no {what} for {symbol}")
        found[symbol] = decimal_of(figure)
    return found


def amount_step(mode: int, precision: object, min_amount: Decimal) -> Decimal:
    """The amount step of a market from its ccxt amount precision.

    TICK_SIZE: the precision is the step. DECIMAL_PLACES: 10^-places. SIGNIFICANT_DIGITS has no constant
    step; the step at the minimum amount (the finest the venue accepts) is reported, and `truncate_amount`
    cuts each amount to its significant digits at submit.
    """
    if precision is None:
        return min_amount if min_amount > 0 else Decimal(1).scaleb(-8)
    if mode == TICK_SIZE:
        return decimal_of(precision)
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(decimal_of(precision)))
    if mode == SIGNIFICANT_DIGITS:
        digits = int(decimal_of(precision))
        anchor = min_amount if min_amount > 0 else Decimal(1)
        return Decimal(1).scaleb(anchor.adjusted() - digits + 1)
    raise ValueError(f"unknown ccxt precision mode {mode}")


def truncate_amount(amount: Decimal, mode: int, precision: object, step: Decimal) -> Decimal:
    """`amount` truncated (never rounded up) to the market's step, and to its significant digits."""
    truncated = (amount / step).to_integral_value(rounding=ROUND_DOWN) * step
    if mode == SIGNIFICANT_DIGITS and precision is not None and truncated > 0:
        quantum = Decimal(1).scaleb(truncated.adjusted() - int(decimal_of(precision)) + 1)
        truncated = truncated.quantize(quantum, rounding=ROUND_DOWN)
    return truncated.normalize() if truncated else Decimal(0)


def price_step(mode: int, precision: object) -> Decimal:
    """The price tick of a market from its ccxt price precision (0: not a constant tick — SIGNIFICANT_DIGITS,
    or not given)."""
    if precision is None:
        return Decimal(0)
    if mode == TICK_SIZE:
        return decimal_of(precision)
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(decimal_of(precision)))
    return Decimal(0)


def market_info(market: Mapping[str, Any], mode: int) -> MarketInfo:
    """A ccxt unified market as `MarketInfo`."""
    limits = market.get("limits") or {}
    min_amount = decimal_of((limits.get("amount") or {}).get("min"))
    step = amount_step(mode, (market.get("precision") or {}).get("amount"), min_amount)
    return MarketInfo(
        symbol=market["symbol"],
        base=market["base"],
        quote=market["quote"],
        amount_step=step,
        min_amount=max(min_amount, step),
        min_cost=decimal_of((limits.get("cost") or {}).get("min")),
        fee_rate=decimal_of(market.get("taker")),
        active=market.get("active") is not False,
        price_step=price_step(mode, (market.get("precision") or {}).get("price")),
    )


def transfer_of(transfer_id: str, tx: Mapping[str, Any], withdrawal: bool) -> Transfer:
    """A ccxt transaction as a `Transfer`; a deposit's amount is what was credited (its fee is the
    withdrawal's, unknown here: 0). ccxt's ``timestamp`` (ms; Binance's ``applyTime`` of a withdrawal) is
    its `requested_at`."""
    status: TransferStatus
    if tx.get("status") == "ok":
        status = "sent" if withdrawal else "credited"
    elif tx.get("status") in {"failed", "canceled"}:
        status = "failed"
    else:
        status = "pending"
    fee = decimal_of((tx.get("fee") or {}).get("cost")) if withdrawal else Decimal(0)
    stamp = tx.get("timestamp")
    return Transfer(
        transfer_id=transfer_id,
        asset=str(tx.get("currency")),
        network=str(tx.get("network") or ""),
        amount=decimal_of(tx.get("amount")),
        fee=fee,
        status=status,
        txid=str(tx.get("txid") or ""),
        reason=str(tx.get("status")) if status == "failed" else "",
        requested_at=None if stamp is None else datetime.fromtimestamp(int(stamp) / 1000, UTC),
    )


def order_status(status: str, filled: Decimal) -> tuple[OrderStatus, str]:
    """A ccxt order status as the port's (`filled` says how much of an expired or cancelled order did)."""
    if status == "closed":
        return "filled", ""
    if status == "open":
        return ("partially_filled" if filled > 0 else "open"), ""
    if status == "expired":
        return "expired", EXPIRED
    if status == "canceled":
        return "cancelled", ""
    if status == "rejected":
        return "rejected", INVALID_ORDER
    return "open", ""


def fill_of(trade: Mapping[str, Any]) -> Fill:
    fee = trade.get("fee") or {}
    return Fill(
        trade_id=str(trade["id"]),
        amount=decimal_of(trade.get("amount")),
        price=decimal_of(trade.get("price")),
        fee=decimal_of(fee.get("cost")),
        fee_asset=str(fee.get("currency") or ""),
    )

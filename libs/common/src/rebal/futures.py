"""The futures venue port: what the tracker and the executor need from a venue's perpetual futures
accounts, beside the spot port (`rebal.venue`), whichever venue it is.

The paper exchange (`rebal_venues.paper_futures`) and ccxt's derivatives API (`rebal_venues.ccxt_futures`:
``fetchPositions``, ``setLeverage``, ``setMarginMode``, ``createOrder`` with ``reduceOnly``) implement
it. A futures account is an account of the venue like any other: `balances` is its collateral (the margin
balance: wallet balance with the unrealized PnL), orders are looked up by client id with the same
`order` call and answer with the same `OrderState`s and errors (`rebal.venue`), so the executor's
journal, look-ups and reconciliation apply to futures orders unchanged.

Errors besides the spot port's (all `VenueError`s, none retryable):

- `LeverageRefused`: the venue refused the leverage asked for a symbol (above the contract's maximum, or
  too low for the position held);
- `MarginModeRefused`: the venue refused the margin mode (a position or an open order on the symbol);
- `OrderRejected` with reason `REDUCE_ONLY_REJECTED`: a reduce-only order that would not reduce the
  position (none held, or on the same side), as Binance's -2022 "ReduceOnly Order is rejected.".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from rebal.core.contracts import Contract
from rebal.core.positions import MarginMode, Position
from rebal.venue import OrderState, Side, Venue, VenueError

REDUCE_ONLY_REJECTED = "reduce_only_rejected"


@dataclass(frozen=True)
class Margin:
    """A futures account's collateral in its quote: the wallet balance (deposits, realized PnL, fees and
    funding), the unrealized PnL of its positions, and what is free for new positions."""

    asset: str
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    available: Decimal

    @property
    def margin_balance(self) -> Decimal:
        return self.wallet_balance + self.unrealized_pnl


class LeverageRefused(VenueError):
    """The venue refused the leverage of a symbol."""

    retryable = False


class MarginModeRefused(VenueError):
    """The venue refused the margin mode of a symbol."""

    retryable = False


@runtime_checkable
class FuturesVenue(Venue, Protocol):
    """A venue with perpetual futures accounts."""

    async def contracts(self) -> Mapping[str, Contract]:
        """Every linear perpetual the venue lists, by symbol (``BTC/USDT:USDT``), without mark prices."""
        ...

    async def mark_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """The mark price of each symbol."""
        ...

    async def positions(self, account: str) -> Sequence[Position]:
        """The account's open positions (one per symbol: one-way mode), sorted by symbol."""
        ...

    async def margin(self, account: str) -> Margin: ...

    async def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        """Set the symbol's leverage (idempotent); `LeverageRefused` says why not."""
        ...

    async def set_margin_mode(self, account: str, symbol: str, mode: MarginMode) -> None:
        """Set the symbol's margin mode (idempotent: the mode already set is no error); `MarginModeRefused`
        says why not."""
        ...

    async def place_position_order(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        reduce_only: bool,
    ) -> OrderState:
        """A market order on a perpetual, under our client order id (not idempotent, as `place_order`)."""
        ...

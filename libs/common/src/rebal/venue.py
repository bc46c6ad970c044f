"""The venue port: what the tracker and the executor need from an exchange, whichever it is.

The paper exchange (`rebal_venues.paper`) and any ccxt exchange (`rebal_venues.ccxt_venue`) implement it.
Adapters translate venue payloads and venue errors into these values and exceptions (ccxt's by exception
class, never by message text); nothing above this port sees a venue's own types.

Errors, all `VenueError`s; `retryable` says whether trying again (under the SAME client order id) can help:

- `VenueRateLimited` (retryable, `retry_after` seconds when the venue said): slow down;
- `OrderOutcomeUnknown` (retryable): a submit ended without an answer and the venue does not show the order
  yet: look it up by client id (repeatedly: venues show a new order late), never under a new id;
  `ClientIdInUse` is the venue saying an order under that id is open there: it exists, look it up;
- other plain `VenueError`s (retryable): network trouble, the venue unavailable;
- `VenueAuthError` (not retryable): keys refused or lacking a permission: stop trading there and alert;
- `OrderRejected` (not retryable, `reason`): the venue refused the order; `InsufficientFunds` is the
  rejection for want of balance (refresh the balance and resize once); a post-only order that would have
  traded at once is refused with `POST_ONLY_WOULD_TAKE` (re-price it, or take).

Orders are market orders unless `place_order` gets a limit `price` (optionally `post_only`: a maker order,
Binance's LIMIT_MAKER); a limit order that does not cross rests until it fills or is cancelled
(`Resting`: the venue's best bid and ask, and cancel by client id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable

from rebal.core.venues import Quote

Side = Literal["buy", "sell"]
# "expired": the venue ended the order before it filled completely (a market order out of liquidity, an
# IOC remainder); `filled` says how much did.
OrderStatus = Literal["open", "filled", "partially_filled", "cancelled", "rejected", "expired"]
# The statuses after which an order never changes again.
TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset({"filled", "cancelled", "rejected", "expired"})

# Rejection reasons every venue uses (the `reason` of `OrderRejected`; a venue's own words may follow
# ``invalid_order: ``).
UNKNOWN_SYMBOL = "unknown_symbol"
INACTIVE_SYMBOL = "inactive_symbol"
NOT_POSITIVE = "amount_not_positive"
NOT_STEP_MULTIPLE = "not_step_multiple"
BELOW_MIN_AMOUNT = "below_min_amount"
BELOW_MIN_COST = "below_min_cost"
INSUFFICIENT_FUNDS = "insufficient_funds"
ID_REUSED = "client_order_id_reused"
INVALID_ORDER = "invalid_order"
# A post-only (maker) order refused because it would have matched at once (Binance: -2010 "Order would
# immediately match and take.").
POST_ONLY_WOULD_TAKE = "post_only_would_take"

# The client order id given to a venue order that has none (placed by hand, by another program):
# "venue:<the exchange's order id>", stable across look-ups.
EXTERNAL_ID_PREFIX = "venue:"


@dataclass(frozen=True)
class MarketInfo:
    """One tradable symbol, as the venue states it (the planner's `Market` is built from this)."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal
    min_amount: Decimal
    min_cost: Decimal
    fee_rate: Decimal
    active: bool = True
    # The price tick (Binance's PRICE_FILTER tickSize); 0: not known, limit prices are sent as computed.
    price_step: Decimal = Decimal(0)


@dataclass(frozen=True)
class BookTop:
    """The best bid and ask of a market now, in its quote."""

    bid: Decimal
    ask: Decimal


@dataclass(frozen=True)
class Fill:
    trade_id: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str


@dataclass(frozen=True)
class OrderState:
    """An order as the venue knows it, looked up by our client order id."""

    client_order_id: str
    account: str
    symbol: str
    side: Side
    amount: Decimal
    status: OrderStatus
    filled: Decimal = Decimal(0)
    fills: tuple[Fill, ...] = ()
    reason: str = ""


class VenueError(Exception):
    """A venue problem; `retryable` says whether the same call (same client order id) may succeed later."""

    retryable: bool = True


class VenueRateLimited(VenueError):
    """The venue asked us to slow down; `retry_after` (seconds) when it said how long."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VenueAuthError(VenueError):
    """The venue refused our keys or their permissions: stop trading on it and alert; retrying is useless."""

    retryable = False


class OrderOutcomeUnknown(VenueError):
    """A submit ended without an answer and the venue does not show the order (yet): look it up again or
    place it again under the same client order id, never under a new one."""

    def __init__(self, client_order_id: str, cause: str) -> None:
        super().__init__(f"{client_order_id}: outcome unknown ({cause})")
        self.client_order_id = client_order_id


class ClientIdInUse(OrderOutcomeUnknown):
    """The venue refused a submit as a duplicate: an order under this client id is open there. The order
    EXISTS (perhaps not yet visible to look-ups): look it up again; never mark it rejected."""

    def __init__(self, client_order_id: str, cause: str = "duplicate client order id") -> None:
        super().__init__(client_order_id, cause)


class OrderRejected(VenueError):
    """The venue refused the order (invalid, below minimum, insufficient funds); the reason says which."""

    retryable = False

    def __init__(self, client_order_id: str, reason: str) -> None:
        super().__init__(f"{client_order_id}: {reason}")
        self.client_order_id = client_order_id
        self.reason = reason


class InsufficientFunds(OrderRejected):
    """Refused for want of balance (reason `INSUFFICIENT_FUNDS`): refresh the balance and resize once."""

    def __init__(self, client_order_id: str, detail: str = "") -> None:
        super().__init__(client_order_id, INSUFFICIENT_FUNDS)
        self.detail = detail


@dataclass(frozen=True)
class Balances:
    """Free and locked (in open orders) amount per asset of one account."""

    free: Mapping[str, Decimal]
    locked: Mapping[str, Decimal] = field(default_factory=dict)


# -- transfers between accounts and exchanges ----------------------------------------------------------

# A withdrawal is "pending" until the source venue has sent it ("sent"); a deposit is "pending" until the
# destination venue credits it ("credited"); either may end "failed" (cancelled or refused on the way).
TransferStatus = Literal["pending", "sent", "credited", "failed"]

# Reasons a transfer is refused before or when it is asked for (the `reason` of `TransferRefused`).
WITHDRAW_NETWORK_UNKNOWN = "withdraw_network_unknown"
DEPOSIT_NETWORK_UNKNOWN = "deposit_network_unknown"
WITHDRAWALS_DISABLED = "withdrawals_disabled"
DEPOSITS_DISABLED = "deposits_disabled"
BELOW_WITHDRAW_MIN = "below_withdraw_min"
NOT_ABOVE_FEE = "amount_not_above_fee"
INVALID_ADDRESS = "invalid_address"

# The executor's withdrawals (its transfer legs between exchanges) carry transfer ids with this prefix
# (``rt-<hash>-<n>``); a withdrawal listed without one of ours is named `EXTERNAL_ID_PREFIX` + the venue's
# own id (one an operator made by hand, for instance a bank transfer task's).
TRANSFER_ID_PREFIX = "rt-"


@dataclass(frozen=True)
class AssetNetwork:
    """How an asset moves in or out of a venue on one network (ccxt's unified network code)."""

    asset: str
    network: str
    deposit_enabled: bool
    withdraw_enabled: bool
    # Charged in the asset and taken from the amount: the destination receives ``amount - fee``.
    withdraw_fee: Decimal
    withdraw_min: Decimal = Decimal(0)


@dataclass(frozen=True)
class DepositAddress:
    asset: str
    network: str
    address: str
    tag: str = ""


@dataclass(frozen=True)
class Transfer:
    """A withdrawal (by our transfer id) or a deposit (by the transaction id), as the venue reports it.

    `amount` is what left the source (the fee taken from it); `requested_at` when the venue took the
    withdrawal (Binance's ``applyTime``, to the second; None when the venue did not say)."""

    transfer_id: str
    asset: str
    network: str
    amount: Decimal
    fee: Decimal
    status: TransferStatus
    txid: str = ""
    reason: str = ""
    requested_at: datetime | None = None

    @property
    def received(self) -> Decimal:
        """What the destination is credited: the amount less the withdrawal fee."""
        return self.amount - self.fee


class TransferRefused(VenueError):
    """The venue refused the withdrawal (or the pre-check did); `reason` says why. Not retryable."""

    retryable = False

    def __init__(self, transfer_id: str, reason: str) -> None:
        super().__init__(f"{transfer_id}: {reason}")
        self.transfer_id = transfer_id
        self.reason = reason


def transfer_problem(source: AssetNetwork | None, destination: AssetNetwork | None, amount: Decimal) -> str:
    """Why `amount` cannot be withdrawn on the source's network and deposited on the destination's
    (the same network at both ends): "" when it can. The fee is taken from the amount."""
    if source is None:
        return WITHDRAW_NETWORK_UNKNOWN
    if destination is None or destination.network != source.network:
        return DEPOSIT_NETWORK_UNKNOWN
    checks = (
        (not source.withdraw_enabled, WITHDRAWALS_DISABLED),
        (not destination.deposit_enabled, DEPOSITS_DISABLED),
        (amount < source.withdraw_min, BELOW_WITHDRAW_MIN),
        (amount <= source.withdraw_fee, NOT_ABOVE_FEE),
    )
    return next((reason for failed, reason in checks if failed), "")


class Venue(Protocol):
    """An exchange, or the paper exchange. Every call is idempotent or a read."""

    @property
    def name(self) -> str: ...

    async def markets(self) -> Mapping[str, MarketInfo]:
        """Every tradable symbol with its steps, minimums and fee."""
        ...

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """The last price of each symbol, in its quote."""
        ...

    async def balances(self, account: str) -> Balances: ...

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
        """Place a market order, or a limit order at `price` (`post_only`: refused with
        `POST_ONLY_WOULD_TAKE` rather than trade at once). NOT idempotent: while an order under the client
        id is open the venue refuses the id (`ClientIdInUse`), but once it has ended the venue may take the
        same id as a NEW order (Binance: "a unique id among open orders"). So an id whose outcome is
        unknown is placed again only after look-ups spread over a window proved the venue never saw it."""
        ...

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        """Look an order up by our client order id (the latest order under it); None: the venue does not
        show it NOW — venues show a new order late, so one None is no proof it was never placed. Many
        exchanges need the `symbol` for the look-up: pass it whenever it is known (a ccxt venue refuses
        without it unless it placed the order itself)."""
        ...

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        """Every order of the account still open at the venue (of one symbol, or all), ours or not. An
        order placed without a client id is named `EXTERNAL_ID_PREFIX` + the venue's own order id."""
        ...


@runtime_checkable
class QuotingVenue(Venue, Protocol):
    """A venue that shows its best bid and ask of many symbols at once (optional: the tracker asks for
    them to fill the snapshot's per-venue prices, `rebal.core.venues`; `Resting.book_top` is one market's
    for the executor's limit orders)."""

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """The best bid and ask of each symbol, in its quote (a side the venue does not show is None)."""
        ...


@runtime_checkable
class Resting(Protocol):
    """A venue where limit orders rest (the executor's limit order types need it): its book's top, and a
    cancel by our client id."""

    async def book_top(self, symbol: str) -> BookTop:
        """The best bid and ask of `symbol` now."""
        ...

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        """Cancel our order by client id; the order as it ended (a fill may win the race: count what
        filled), None when the venue does not know it."""
        ...


class TransferVenue(Venue, Protocol):
    """A venue that moves assets out and in (optional: the executor checks for it before a transfer leg).

    A withdrawal is idempotent by our `transfer_id` (derived from the run and the leg): asking again returns
    the existing withdrawal; a withdrawal whose answer was lost is looked up by that id."""

    async def networks(self, asset: str) -> Mapping[str, AssetNetwork]:
        """The networks the asset moves on, by network code (empty: the venue does not move it)."""
        ...

    async def deposit_address(self, account: str, asset: str, network: str) -> DepositAddress: ...

    async def withdraw(
        self, account: str, transfer_id: str, asset: str, amount: Decimal, destination: DepositAddress
    ) -> Transfer:
        """Withdraw `amount` (the fee taken from it) to `destination`; `TransferRefused` says why not."""
        ...

    async def withdrawal(self, account: str, transfer_id: str, asset: str) -> Transfer | None:
        """Our withdrawal by its transfer id (None: the venue never saw it)."""
        ...

    async def deposit(self, account: str, asset: str, txid: str) -> Transfer | None:
        """The deposit of transaction `txid` into the account (None: not seen yet)."""
        ...

    async def withdrawals(self, account: str, asset: str, since: datetime) -> Sequence[Transfer]:
        """Every withdrawal of `asset` out of the account the venue took at or after `since` (ccxt's
        ``fetchWithdrawals``), ours or not, oldest first (then by id); each has its `requested_at`. One of
        ours is named by its transfer id, any other by `EXTERNAL_ID_PREFIX` + the venue's id."""
        ...


@runtime_checkable
class WithdrawalHistory(Protocol):
    """A venue that lists an account's withdrawals (`TransferVenue.withdrawals`), checkable at run time: the
    tracker asks it for the money on its way from an exchange to a bank account (docs/execution.md)."""

    async def withdrawals(self, account: str, asset: str, since: datetime) -> Sequence[Transfer]: ...


async def check_transfer(
    source: TransferVenue, destination: TransferVenue, asset: str, network: str, amount: Decimal
) -> str:
    """The pre-check of a transfer, asking both venues now: "" when `amount` of `asset` can leave `source`
    and enter `destination` on `network`, else the reason (`transfer_problem`)."""
    leaving = (await source.networks(asset)).get(network)
    entering = (await destination.networks(asset)).get(network)
    return transfer_problem(leaving, entering, amount)

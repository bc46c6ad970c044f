"""Executor settings. Whether a plan is executed is the plan's own `dry_run` (dry-run by default), and then
only when live trading is switched on here (`live`, off by default)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator

from rebal.settings import DatabaseSettings, Section, ServiceSettings
from rebal_venues.settings import PaperSettings

# A leg's orders get client ids from (plan, leg, attempt) with attempt = slice·ATTEMPTS_PER_SLICE + try:
# tries 0..reprices are the slice's limit orders, TAKE_ATTEMPT its market order for the rest.
ATTEMPTS_PER_SLICE = 100
MAX_REPRICES = ATTEMPTS_PER_SLICE - 2


class OrderType(Section):
    """How a leg's orders are placed. `market` (the default): market orders. `limit`: a limit order at the
    best bid (a buy) or ask (a sell) moved `offset_bps` towards the other side (negative: further back),
    rounded to the tick away from the other side; `post_only`: a maker order, refused by the venue rather
    than trade at once (then re-priced at once). It rests `rest_seconds`; still not filled, it is cancelled
    (what filled before the cancel is counted) and re-placed at the new best price, at most `reprices`
    times; after that the rest is taken by a market order."""

    type: Literal["market", "limit"] = "market"
    offset_bps: Decimal = Field(default=Decimal(0), ge=-1000, le=1000)
    post_only: bool = False
    rest_seconds: float = Field(default=30.0, gt=0)
    reprices: int = Field(default=2, ge=0, le=MAX_REPRICES)


class OrderTypes(Section):
    """The order type of a leg: its market's (`markets`, by symbol: "BTC/USDT"), else its account's
    (`accounts`, by account path: "demo/binance/spot"), else `default`."""

    default: OrderType = OrderType()
    accounts: dict[str, OrderType] = Field(default_factory=dict)
    markets: dict[str, OrderType] = Field(default_factory=dict)

    def of(self, account: str, symbol: str) -> OrderType:
        return self.markets.get(symbol) or self.accounts.get(account) or self.default


class ExecutionSettings(Section):
    # How often an order is looked up until it is filled or rejected, and for how long.
    poll_interval_seconds: float = Field(default=0.2, gt=0)
    order_timeout_seconds: float = Field(default=30.0, gt=0)
    # Buys are sized at the current price raised by this much, so a small move cannot overspend.
    price_buffer: Decimal = Field(default=Decimal("0.002"), ge=0, lt=1)
    # A submit whose outcome is unknown (timeout, network, a 5xx) is looked up by its client id every
    # `lookup_interval_seconds`; only when at least `lookup_queries` look-ups, the first and the last
    # `lookup_window_seconds` apart, all answered "not found" is it proven absent (a look-up that fails
    # proves nothing; after twice the window without that proof it stays unknown, left to reconcile).
    lookup_window_seconds: float = Field(default=15.0, gt=0)
    lookup_interval_seconds: float = Field(default=3.0, gt=0)
    lookup_queries: int = Field(default=4, ge=2)
    # How long a request can still reach the venue after we gave up on its answer (Binance refuses one
    # older than its recvWindow, 5 s by default); the look-up window must be longer.
    race_window_seconds: float = Field(default=5.0, ge=0)
    # A proven-absent order is sent again under the SAME id, this many sends in all, with backoff.
    placement_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=0.2, gt=0)
    retry_max_seconds: float = Field(default=10.0, gt=0)
    # A rate limit is never a failure: the same id is sent again after the venue's Retry-After, else after
    # rate_limit_base_seconds·2^n (at most rate_limit_max_seconds), until the run's deadline.
    rate_limit_base_seconds: float = Field(default=1.0, gt=0)
    rate_limit_max_seconds: float = Field(default=60.0, gt=0)
    # Guardrails, in each market's quote (None: no limit). An order above the per-order limit, or one that
    # would take the run's orders above the per-run limit, is not sent: its leg is skipped with the reason.
    max_order_notional: Decimal | None = Field(default=None, gt=0)
    max_run_notional: Decimal | None = Field(default=None, gt=0)
    # When a buy's current price is further than this (a fraction) from the plan's estimate after the sells,
    # the run stops before its buys and asks for a re-plan (status replan_needed).
    max_price_move: Decimal = Field(default=Decimal("0.02"), gt=0)
    # A run must end this long after its plan was made: a queued plan older than this is not started
    # (cancelled: re-plan), and a run still going after it stops before its next leg (timed_out). It keeps
    # an executor that was down for a while from trading on stale prices.
    run_timeout_seconds: float = Field(default=600.0, gt=0)
    # A transfer leg waits this long for the destination to credit it (looked up every poll).
    transfer_timeout_seconds: float = Field(default=600.0, gt=0)
    transfer_poll_seconds: float = Field(default=2.0, gt=0)
    # A transfer to or from a bank account is an operator's task: the buys it funds wait this long for
    # `rebal transfer confirm ID` (7 days: a wire can take days), then the run ends partial (an alert).
    bank_transfer_timeout_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    # A sell sizes from a balance read younger than this when no order of ours touched its asset since
    # (`execution.holdings`; 0: a read per sell). A read answers every asset of the account (Binance:
    # weight 20, ~25 ms of CPU for 2,500 assets through ccxt): 20 such accounts read every 2 s took a
    # quarter of a core.
    balances_max_age_seconds: float = Field(default=10.0, ge=0)
    # Unfinished runs and our open orders are reconciled with the venues this often (and at start).
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    # Market (the default) or limit orders, per account or market (`OrderTypes`).
    order_types: OrderTypes = OrderTypes()
    # Large orders: per market (symbol), the most one order may be worth in the market's quote; a larger
    # leg is sent as slices of at most this value, `slice_interval_seconds` apart (TWAP-like), each under
    # its own client id derived from the leg, never skipped for its size. At most `max_slices` slices.
    max_order_value: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(default_factory=dict)
    slice_interval_seconds: float = Field(default=60.0, ge=0)
    max_slices: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _window_outlasts_the_race(self) -> Self:
        if self.lookup_window_seconds <= self.race_window_seconds:
            raise ValueError(
                "execution.lookup_window_seconds must be longer than execution.race_window_seconds: a "
                "request still in flight could reach the venue after the look-ups proved it absent"
            )
        return self


class FuturesLimits(Section):
    """The pre-trade checks of futures accounts (`rebal_executor.execution.positions`): a plan is refused
    when it would set a symbol's leverage above `max_leverage`, leave positions worth more than
    `max_leverage` times the account's margin balance, or leave a position whose liquidation price is
    nearer its mark price than `min_liquidation_distance` (a fraction of the mark: 0.1 is 10%)."""

    max_leverage: Decimal = Field(default=Decimal(3), ge=1, le=125)
    min_liquidation_distance: Decimal = Field(default=Decimal("0.1"), ge=0, lt=1)


class AllowedAddress(Section):
    """A deposit address withdrawals may go to: on `exchange`, for `asset` over `network` (and its
    `tag`/memo, where the network has one)."""

    exchange: str = Field(min_length=1)
    asset: str = Field(min_length=1)
    network: str = Field(min_length=1)
    address: str = Field(min_length=1)
    tag: str = ""


# The executor's Postgres connections by default: within a run each account trades in a task of its own
# and writes its journal while its other accounts do (docs/execution.md), so a plan over N accounts keeps
# up to N connections busy, plus the worker's own and the health check's. The services' default (5)
# made the sixth account's writes wait for another's.
CONCURRENT_ACCOUNTS = 20
EXECUTOR_POOL_SIZE = CONCURRENT_ACCOUNTS + 2


class ExecutorDatabaseSettings(DatabaseSettings):
    pool_size: int = Field(default=EXECUTOR_POOL_SIZE, ge=1, le=100)


class ExecutorSettings(ServiceSettings):
    service: ClassVar[str] = "executor"
    # Off: plans are acked and ignored (an operator's stop switch).
    enabled: bool = True
    # Live trading: until this is on, every non-dry-run plan is refused (RunFinished cancelled, with the
    # reason). The demo and the tests switch it on for the paper exchange (REBAL__LIVE=true).
    live: bool = False
    # Transfers between accounts (plan.transfers): off by default; when on, they run after the sells and
    # before the buys, which wait for the credit (venues that cannot move assets skip them).
    transfers: bool = False
    # Withdrawals go only to these deposit addresses (per exchange, asset and network): a transfer whose
    # destination is not listed refuses its run before any leg. Empty (the default): no withdrawal at all.
    withdrawal_allowlist: tuple[AllowedAddress, ...] = ()
    database: ExecutorDatabaseSettings = ExecutorDatabaseSettings()
    execution: ExecutionSettings = ExecutionSettings()
    futures: FuturesLimits = FuturesLimits()
    paper: PaperSettings = PaperSettings()

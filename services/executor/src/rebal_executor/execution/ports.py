"""What the execution engine works with: the journal it writes before acting, the records it reads back,
and the context every step shares (venues, publisher, settings, journal, clock, sleep).

The journal is a port: `rebal_executor.journal.PostgresJournal` is the service's, an in-memory one backs
the engine's tests (tests/executor/memory_journal.py). Both move runs and orders only through the pure
transition tables of `rebal.core.execution` and return an illegal move as a value.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from rebal import bus
from rebal.core.execution import IllegalTransition, OrderStage, RunState, TradedFill
from rebal.events import RebalancePlanned
from rebal.venue import Balances, Fill, OrderState, Side, Venue
from rebal_executor.settings import ExecutorSettings

UNFINISHED: tuple[RunState, ...] = ("queued", "sells_in_progress", "buys_in_progress")
# The order stages in which an order of ours may still be live at a venue (sent and not final).
MAYBE_LIVE: tuple[OrderStage, ...] = ("submitted", "outcome_unknown", "accepted", "partially_filled")


@dataclass(frozen=True)
class RunRecord:
    plan_id: uuid.UUID
    run_id: uuid.UUID  # the correlation id: what RunStarted/RunFinished and the CLI call the run
    plan: RebalancePlanned
    state: RunState
    reason: str


@dataclass(frozen=True)
class OrderRecord:
    client_order_id: str
    plan_id: uuid.UUID
    leg: int
    attempt: int
    exchange: str
    account: str
    symbol: str
    side: Side
    amount: Decimal
    notional: Decimal
    state: OrderStage
    filled: Decimal
    reason: str
    # The leg's whole amount when the leg is worked as several orders (slices, re-placed limit orders);
    # None: this order is the whole leg.
    leg_amount: Decimal | None = None
    # A limit order's price, journaled when it is written: the only price it is ever sent at. None: a
    # market order.
    limit_price: Decimal | None = None
    # A worked buy's share of its group's budget (the quote the buys step allotted it, buffer and fee in):
    # all the leg's orders together never spend more. None: not a worked buy (or sized before it was kept).
    leg_budget: Decimal | None = None


@dataclass(frozen=True)
class TaskRecord:
    """An operator's transfer task (a plan transfer to or from a bank account: `rebal_executor.execution.
    bank`): `state` waiting, confirmed (with what was `received`) or expired."""

    task_id: str
    plan_id: uuid.UUID
    transfer: int
    asset: str
    from_account: str
    to_account: str
    amount: Decimal
    state: str
    received: Decimal | None
    opened_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Report:
    placed: int
    filled: int
    skipped: int
    failed: int
    reasons: tuple[str, ...]


class Journal(Protocol):
    """The executor's write-ahead journal: what it intends is written before it acts."""

    # -- runs
    async def enqueue(self, run_id: uuid.UUID, plan: RebalancePlanned) -> bool:
        """Record a plan to run (state queued); False when it was already recorded (a redelivery)."""
        ...

    async def run(self, plan_id: uuid.UUID) -> RunRecord | None: ...

    async def unfinished(self) -> list[RunRecord]:
        """Runs not finished: in progress first, then queued, each in the order it arrived."""
        ...

    async def coalesce(self) -> dict[uuid.UUID, uuid.UUID]:
        """Supersede older queued plans of a portfolio by its newest: superseded run → superseding run."""
        ...

    async def move_run(
        self, plan_id: uuid.UUID, wanted: RunState, reason: str = "", at: datetime | None = None
    ) -> RunState | IllegalTransition:
        """Move a run if the table allows it; `at` is kept as its start (sells_in_progress) or its end."""
        ...

    async def last_run_end(self, portfolio_id: str) -> datetime | None:
        """When the portfolio's latest run that started trading ended (None: none did)."""
        ...

    # -- orders
    async def orders(self, plan_id: uuid.UUID) -> list[OrderRecord]: ...

    async def latest_order(self, plan_id: uuid.UUID, leg: int) -> OrderRecord | None: ...

    async def create_order(self, order: OrderRecord) -> OrderRecord:
        """Write the order (state created) before it is sent; the existing row if it is already there."""
        ...

    async def move_order(
        self, client_order_id: str, wanted: OrderStage, *, filled: Decimal | None = None, reason: str = ""
    ) -> OrderStage | IllegalTransition: ...

    async def record_fill(self, exchange: str, client_order_id: str, fill: Fill) -> bool:
        """Record a fill once by its trade id; False when it was already recorded."""
        ...

    async def delivered(self, plan_id: uuid.UUID, leg: int, base: str, quote: str) -> Decimal:
        """What a sell leg's fills delivered in its quote, net of fees charged in it (every attempt)."""
        ...

    async def leg_fills(self, plan_id: uuid.UUID, leg: int) -> list[TradedFill]:
        """The fills of every attempt of one leg, with what each traded."""
        ...

    async def leg_outcome(self, plan_id: uuid.UUID, leg: int) -> str | None: ...

    async def sent_notional(self, plan_id: uuid.UUID) -> Decimal:
        """What the run's orders the venue took (or may take) are worth, for the per-run limit."""
        ...

    async def order(self, client_order_id: str) -> OrderRecord | None: ...

    async def open_orders(self, portfolio_id: str | None = None) -> list[OrderRecord]:
        """Our orders (of one portfolio, or all) that may still be live at a venue: sent and not final."""
        ...

    async def record_transfer(
        self, plan_id: uuid.UUID, transfer_id: str, state: str, reason: str
    ) -> None: ...

    async def touched_accounts(self) -> list[tuple[str, str]]:
        """Every (exchange, account) the executor ever placed an order on."""
        ...

    # -- operators' transfer tasks (bank accounts)
    async def open_task(self, task: TaskRecord) -> TaskRecord:
        """Record a task (state waiting) unless it is there; the stored row either way."""
        ...

    async def task(self, task_id: str) -> TaskRecord | None: ...

    async def tasks(self, plan_id: uuid.UUID) -> list[TaskRecord]:
        """The run's tasks, by transfer."""
        ...

    async def confirm_task(
        self, task_id: str, received: Decimal | None, by: str, at: datetime
    ) -> tuple[TaskRecord, bool] | None:
        """Confirm a waiting task with `received` (None: its amount); the row and whether this changed it
        (False: it was already confirmed, or it expired). None when there is no such task."""
        ...

    async def expire_task(self, task_id: str, reason: str) -> bool:
        """End a waiting task unconfirmed; True when it was waiting."""
        ...

    async def known_order(self, client_order_id: str) -> bool: ...

    async def saw_external(self, exchange: str, order: OrderState, looks_ours: bool, at: datetime) -> bool:
        """Record an open order at the venue that is not ours; True the first time it is seen."""
        ...

    # -- balances at the start and the end of a run
    async def record_balances(
        self, plan_id: uuid.UUID, moment: str, exchange: str, account: str, balances: Balances
    ) -> None: ...

    async def run_balances(
        self, plan_id: uuid.UUID, moment: str
    ) -> dict[tuple[str, str], dict[str, Decimal]]: ...

    async def run_fills(self, plan_id: uuid.UUID) -> dict[tuple[str, str], list[TradedFill]]: ...

    # -- the run report
    async def add_note(self, plan_id: uuid.UUID, key: str, reason: str) -> bool:
        """A reason line, once per key; True when it is new."""
        ...

    async def note(self, plan_id: uuid.UUID, key: str, reason: str) -> None: ...

    async def leg_done(self, plan_id: uuid.UUID, leg: int) -> bool: ...

    async def legs_done(self, plan_id: uuid.UUID) -> frozenset[int]:
        """The run's legs that ended (`leg_done` for all of them in one read: a phase of 50k legs)."""
        ...

    async def legs_written(self, plan_id: uuid.UUID) -> frozenset[int]:
        """The run's legs with an order written (`latest_order` is not None), in one read."""
        ...

    async def finish_leg(self, plan_id: uuid.UUID, leg: int, outcome: str, placed: bool) -> None: ...

    async def report(self, plan_id: uuid.UUID) -> Report: ...

    # -- the kill switch
    async def halted(self, portfolio_id: str) -> bool: ...

    async def set_halted(
        self, portfolio_id: str, halted: bool, reason: str, requested_by: str, at: datetime
    ) -> bool:
        """Record a halt or a resume commanded `at`; an older command changes nothing. True if applied."""
        ...

    async def halted_portfolios(self) -> list[str]: ...


@runtime_checkable
class Cancels(Protocol):
    """A venue that can cancel an order by our client id (the kill switch uses it when the venue can)."""

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What every step of a run works with. Steps read these at call time, so a test may swap the clock,
    the sleep or the venues of a running engine."""

    venues: Mapping[str, Venue]
    publisher: bus.EventSink
    settings: ExecutorSettings
    journal: Journal
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Reconciliation's evidence that an order of a finished run never reached its venue: when each
    # look-up answered "not found" (in memory: a restart gathers it again, which is only slower).
    absences: dict[str, list[datetime]] = field(default_factory=dict)
    # When a run's clock restarted: an operator confirmed a transfer it waited for (`bank`), so its
    # deadline counts from then (`guards.deadline`). Set on each pass of the run, from the journal.
    restarted: dict[uuid.UUID, datetime] = field(default_factory=dict)

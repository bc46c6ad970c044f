"""Tracker wiring: `build(settings)` makes the app `python -m rebal_tracker` serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faststream.asgi import AsgiFastStream

from rebal import bus, db, service, telemetry
from rebal.core.assemble import bank_accounts, layout_accounts
from rebal.core.tree import parse_tree
from rebal.events import (
    StrategyReturnReported,
    TakeSnapshot,
    TransferConfirmed,
    TransferTaskExpired,
    TransferTaskOpened,
)
from rebal.io import load, load_document
from rebal_tracker.banks import BankBook
from rebal_tracker.handlers import SERVICE, register
from rebal_tracker.returns import ReturnsIngest, ReturnsStore
from rebal_tracker.settings import TrackerSettings
from rebal_tracker.stats import StatsRefresher, StatsStore
from rebal_tracker.tracker import Tracker, utc_now
from rebal_venues.factory import ConfiguredVenue, open_venues

log = logging.getLogger("rebal.tracker")


@dataclass
class Runtime:
    """What the tracker opens at start (pool, migrations, venues, seed) and closes at shutdown."""

    settings: TrackerSettings
    publisher: bus.EventSink
    database: service.Database
    tracker: Tracker | None = None
    banks: BankBook | None = None
    ingest: ReturnsIngest | None = None
    stats: StatsRefresher | None = None
    venues: Mapping[str, ConfiguredVenue] = field(default_factory=dict)
    schedule: asyncio.Task[None] | None = field(default=None, init=False)
    stats_task: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self) -> None:
        tracking = self.settings.tracking
        pool = await self.database.open()
        async with pool.acquire() as connection:
            applied = await db.migrate(connection)
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        layout = load_document(tracking.layout_file)
        load(tracking.layout_file, lambda doc: parse_tree(doc, "real"))  # a bad layout stops the start
        if not isinstance(layout, dict):
            raise ValueError(f"{tracking.layout_file}: the layout must be a tree document")
        self.venues = open_venues(_exchanges(layout), pool, self.settings.paper)
        venues = telemetry.traced_venues(self.venues)
        quote = next(iter(venues.values())).valuation_quote if venues else "USD"
        self.banks = BankBook(tracking.portfolio_id, bank_accounts(layout), pool)
        restated = await self.banks.open(utc_now())
        if restated:
            log.info("bank balances stated by the layout: %s", ", ".join(restated))
        self.tracker = Tracker(
            tracking.portfolio_id,
            layout,
            quote,
            venues,
            self.publisher,
            banks=self.banks,
            venue_prices=tracking.venue_prices,
        )
        seeded = await self.tracker.seed()
        if seeded:
            log.info("seeded the paper exchange for %s", ", ".join(seeded))
        self.stats = StatsRefresher(
            StatsStore(pool), tracking.stats_windows_days, tracking.stats_debounce_seconds
        )
        self.ingest = ReturnsIngest(ReturnsStore(pool), on_stored=self.stats.mark)

    async def start_schedule(self) -> None:
        if self.tracker is not None:
            interval = self.settings.tracking.snapshot_interval_seconds
            self.schedule = asyncio.create_task(self.tracker.run_schedule(interval))
        if self.stats is not None:
            self.stats_task = asyncio.create_task(self.stats.run(), name="tracker-stats")

    async def stop(self) -> None:
        for task in (self.schedule, self.stats_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for venue in self.venues.values():
            await venue.close()
        await self.database.close()

    async def on_take_snapshot(self, command: TakeSnapshot) -> None:
        if self.tracker is None:
            raise RuntimeError("the tracker has not started")
        await self.tracker.on_take_snapshot(command)

    async def on_transfer_confirmed(self, event: TransferConfirmed) -> None:
        if self.banks is None:
            raise RuntimeError("the tracker has not started")
        if await self.banks.record(event):
            log.info("bank ledger: transfer task %s recorded", event.task_id)

    async def on_task_opened(self, event: TransferTaskOpened) -> None:
        if self.tracker is None:
            raise RuntimeError("the tracker has not started")
        if await self.tracker.on_task_opened(event):
            log.info("bank tasks: transfer task %s out of a bank recorded", event.task_id)

    async def on_task_expired(self, event: TransferTaskExpired) -> None:
        if self.banks is None:
            raise RuntimeError("the tracker has not started")
        if await self.banks.expire_task(event):
            log.info("bank tasks: transfer task %s expired, its bank keeps its money", event.task_id)

    async def on_returns(self, events: Sequence[StrategyReturnReported]) -> None:
        if self.ingest is None:
            raise RuntimeError("the tracker has not started")
        await self.ingest.on_returns(events)


def _exchanges(layout: dict[str, Any]) -> list[str]:
    return sorted({str(account.exchange) for account in layout_accounts(layout) if account.exchange})


def build(settings: TrackerSettings) -> AsgiFastStream:
    """The tracker on its broker: snapshots on schedule and on `TakeSnapshot`, the bots' returns stored
    and their statistics kept; venues and Postgres opened (and migrated) at start."""
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    runtime = Runtime(settings, publisher, database)
    register(
        broker,
        publisher,
        runtime.on_take_snapshot,
        runtime.on_returns,
        on_transfer_confirmed=runtime.on_transfer_confirmed,
        on_task_opened=runtime.on_task_opened,
        on_task_expired=runtime.on_task_expired,
        batch_size=settings.tracking.return_batch_size,
    )
    return service.build(
        SERVICE,
        broker,
        settings,
        checks=[("postgres", database.ping)],
        on_startup=[runtime.start],
        after_startup=[runtime.start_schedule],
        on_shutdown=[runtime.stop],
    )

"""Executor wiring: `build(settings)` makes the app (`python -m rebal_executor` serves it); nothing is wired
at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from faststream.asgi import AsgiFastStream

from rebal import bus, db, service, telemetry
from rebal.events import ConfirmTransfer, HaltTrading, RebalancePlanned, ResumeTrading
from rebal.io import load_document
from rebal_executor.execution import Executor
from rebal_executor.handlers import SERVICE, register
from rebal_executor.journal import PostgresJournal
from rebal_executor.locks import account_locks
from rebal_executor.settings import ExecutorSettings
from rebal_venues.factory import ConfiguredVenue, open_venues

log = logging.getLogger("rebal.executor")


@dataclass
class Runtime:
    """What the executor opens at start (pool, migrations, venues, the journal and its worker) and closes.

    Plans are written to the journal and acked; one worker task runs them (resumed runs first) and, every
    `reconcile_interval_seconds` and at start, reconciles unfinished runs and our open orders with the
    venues."""

    settings: ExecutorSettings
    publisher: bus.EventSink
    database: service.Database
    executor: Executor | None = None
    venues: Mapping[str, ConfiguredVenue] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pool = await self.database.open()
        async with pool.acquire() as connection:
            applied = await db.migrate(connection)
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        markets = load_document(self.settings.paper.markets_file)
        exchanges = list(markets) if isinstance(markets, dict) else []
        self.venues = open_venues(exchanges, pool, self.settings.paper)
        self.executor = Executor(
            telemetry.traced_venues(self.venues),
            self.publisher,
            self.settings,
            PostgresJournal(pool),
            lock=lambda accounts: account_locks(pool, accounts),
        )
        await self.executor.restore_halts(self.settings.portfolios)
        self._wake.set()  # reconcile at start
        self._worker = asyncio.create_task(self._work(self.executor), name="executor-worker")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for venue in self.venues.values():
            await venue.close()
        await self.database.close()

    async def _work(self, executor: Executor) -> None:
        interval = self.settings.execution.reconcile_interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await executor.drain()
            except Exception:  # the journal or a venue is away: log, and try again at the next wake-up
                log.exception("executing the queued runs failed; retrying in %g s", interval)

    def _ready(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("the executor has not started")
        return self.executor

    async def on_plan(self, plan: RebalancePlanned) -> None:
        if await self._ready().accept(plan):
            self._wake.set()

    async def on_halt(self, command: HaltTrading) -> None:
        await self._ready().halt(command)

    async def on_resume(self, command: ResumeTrading) -> None:
        await self._ready().resume(command)
        self._wake.set()

    async def on_confirm(self, command: ConfirmTransfer) -> None:
        await self._ready().confirm_transfer(command)
        self._wake.set()  # the buys that waited for it


def build(settings: ExecutorSettings) -> AsgiFastStream:
    """The executor's app for `settings`: its broker, subscribers, worker and health checks."""
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    runtime = Runtime(settings, publisher, database)
    register(broker, publisher, runtime.on_plan, runtime.on_halt, runtime.on_resume, runtime.on_confirm)
    return service.build(
        SERVICE,
        broker,
        settings,
        checks=[("postgres", database.ping)],
        on_startup=[runtime.start],
        on_shutdown=[runtime.stop],
    )

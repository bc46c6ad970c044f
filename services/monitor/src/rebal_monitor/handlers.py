"""Monitor handlers: every event and command on the bus into the journal."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from faststream.nats import NatsBroker

from rebal import bus, db, subjects
from rebal.events import Event
from rebal.service import Database
from rebal_monitor.journal import record

log = logging.getLogger("rebal.monitor")
SERVICE = "monitor"


@dataclass
class Monitor:
    database: Database

    async def start(self) -> None:
        pool = await self.database.open()
        async with pool.acquire() as connection:
            applied = await db.migrate(connection)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    async def on_event(self, event: Event) -> None:
        pool = self.database.pool
        if pool is None:
            raise RuntimeError("the database pool is not open")
        await record(pool, event)


def register(broker: NatsBroker, publisher: bus.Publisher, monitor: Monitor) -> None:
    bus.consume_all(
        broker,
        publisher,
        service=SERVICE,
        durable="monitor-events",
        filter_subject=subjects.ALL_EVENTS,
        handler=monitor.on_event,
    )
    bus.consume_all(
        broker,
        publisher,
        service=SERVICE,
        durable="monitor-commands",
        filter_subject=subjects.ALL_COMMANDS,
        handler=monitor.on_event,
    )

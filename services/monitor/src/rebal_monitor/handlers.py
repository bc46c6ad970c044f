"""Monitor handlers: every event and command on the bus into the journal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from faststream.nats import NatsBroker

from rebal import bus, db, metrics, subjects
from rebal.events import BalanceSnapshotTaken, Event, TargetWeightsComputed
from rebal.service import Database
from rebal_monitor.journal import record_many

log = logging.getLogger("rebal.monitor")
SERVICE = "monitor"
BATCH_SIZE = 500


@dataclass
class Monitor:
    database: Database
    # Told after each batch is journaled, with the portfolios it touched (the notifier delivers what it
    # enqueued at once; the API forgets what it kept of them).
    on_journaled: Callable[[Set[str]], None] = lambda portfolios: None

    async def start(self) -> None:
        pool = await self.database.open()
        async with pool.acquire() as connection:
            applied = await db.migrate(connection)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    async def on_events(self, events: Sequence[Event]) -> None:
        pool = self.database.pool
        if pool is None:
            raise RuntimeError("the database pool is not open")
        await record_many(pool, events)
        for event in events:  # at once (`rebal_monitor.gauges` reads them back every few seconds too)
            if isinstance(event, BalanceSnapshotTaken):
                metrics.LATEST_SNAPSHOT.labels(portfolio=event.portfolio_id).set(
                    event.occurred_at.timestamp()
                )
            elif isinstance(event, TargetWeightsComputed):
                metrics.LATEST_TARGET.labels(portfolio=event.portfolio_id).set(event.occurred_at.timestamp())
        self.on_journaled({event.portfolio_id for event in events})


def register(broker: NatsBroker, publisher: bus.Publisher, monitor: Monitor) -> None:
    """Everything on the bus, in stream order, in batches (strategy returns alone can be 20k a second)."""
    for durable, subject in (
        ("monitor-events", subjects.ALL_EVENTS),
        ("monitor-commands", subjects.ALL_COMMANDS),
    ):
        bus.consume_all_batch(
            broker,
            publisher,
            service=SERVICE,
            durable=durable,
            filter_subject=subject,
            handler=monitor.on_events,
            batch_size=BATCH_SIZE,
        )

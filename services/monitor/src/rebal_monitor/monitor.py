"""The monitor's journaling: the database migrated at start, every batch of events and commands recorded
(`journal.py`), the latest snapshot's and target's gauges set at once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from rebal import db, metrics
from rebal.events import BalanceSnapshotTaken, Event, TargetWeightsComputed
from rebal.service import Database
from rebal_monitor.journal import record_many

log = logging.getLogger("rebal.monitor")


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

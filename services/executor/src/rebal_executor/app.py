"""Executor wiring: `faststream run rebal_executor.app:app` or `python -m rebal_executor`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rebal import bus, db, service
from rebal.events import RebalancePlanned
from rebal.io import load_document
from rebal_executor.handlers import SERVICE, Executor, register
from rebal_executor.locks import account_locks
from rebal_executor.settings import ExecutorSettings
from rebal_venues.factory import open_venues

log = logging.getLogger("rebal.executor")


@dataclass
class Runtime:
    """What the executor opens at start (pool, migrations, the paper venues) and closes at shutdown."""

    settings: ExecutorSettings
    publisher: bus.EventSink
    database: service.Database
    executor: Executor | None = None

    async def start(self) -> None:
        pool = await self.database.open()
        async with pool.acquire() as connection:
            applied = await db.migrate(connection)
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        markets = load_document(self.settings.paper.markets_file)
        exchanges = list(markets) if isinstance(markets, dict) else []
        venues = open_venues(exchanges, pool, self.settings.paper)
        self.executor = Executor(venues, self.publisher, self.settings)

    async def stop(self) -> None:
        await self.database.close()

    async def on_plan(self, plan: RebalancePlanned) -> None:
        if self.executor is None or self.database.pool is None:
            raise RuntimeError("the executor has not started")
        if plan.dry_run:
            await self.executor.on_plan(plan)  # nothing is executed: no lock needed
            return
        accounts = {(order.exchange, order.account) for order in plan.orders}
        async with account_locks(self.database.pool, accounts):
            await self.executor.on_plan(plan)


settings = ExecutorSettings()
broker = service.make_broker(settings, SERVICE)
publisher = bus.Publisher(broker)
database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
runtime = Runtime(settings, publisher, database)
register(broker, publisher, runtime.on_plan)
app = service.build(
    SERVICE,
    broker,
    settings,
    checks=[("postgres", database.ping)],
    on_startup=[runtime.start],
    on_shutdown=[runtime.stop],
)

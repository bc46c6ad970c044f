"""Optimizer wiring: `build(settings)` makes the app `python -m rebal_optimizer` serves.

Postgres is opened only when a portfolio has an allocation across strategies (their returns are there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from faststream.asgi import AsgiFastStream
from threadpoolctl import threadpool_limits

from rebal import bus, db, service
from rebal_optimizer.allocations import Allocations
from rebal_optimizer.allocator import ReturnMatrix
from rebal_optimizer.handlers import SERVICE, register
from rebal_optimizer.manual import ManualTargets
from rebal_optimizer.settings import OptimizerSettings
from rebal_optimizer.store import PostgresStrategyData
from rebal_optimizer.targets import Targets


@dataclass
class LazyData:
    """The strategies' data once the pool is open (at start)."""

    database: service.Database
    store: PostgresStrategyData | None = field(default=None)

    async def open(self) -> None:
        pool = await self.database.open()
        async with pool.acquire() as connection:
            await db.migrate(connection)
        self.store = PostgresStrategyData(pool)

    def _store(self) -> PostgresStrategyData:
        if self.store is None:
            raise RuntimeError("the optimizer's database is not open yet")
        return self.store

    async def strategies(self, portfolio: str) -> list[str]:
        return await self._store().strategies(portfolio)

    async def matrix(self, portfolio: str, strategies: list[str], lookback: int) -> ReturnMatrix:
        return await self._store().matrix(portfolio, strategies, lookback)

    async def count(self, portfolio: str) -> int:
        return await self._store().count(portfolio)

    async def positions(self, portfolio: str) -> dict[str, dict[str, Decimal]]:
        return await self._store().positions(portfolio)


def build(settings: OptimizerSettings) -> AsgiFastStream:
    """The optimizer on its broker: each portfolio's target from its file, or allocated across its
    strategies (Postgres, where their returns are, is opened only then)."""
    threadpool_limits(limits=settings.blas_threads)
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    history = bus.StreamHistory(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    # The operators' targets are read from Postgres when it answers (the optimizer works without it).
    manual = ManualTargets(database, publisher, history)
    targets = Targets(publisher, history, settings, manual=manual)
    data = LazyData(database)
    allocations = Allocations(publisher, history, settings, data, manual=manual)
    register(broker, publisher, allocations, manual)
    checks = [("targets", targets.ready)]
    on_startup = []
    on_shutdown = [targets.stop, allocations.stop, database.close]
    if settings.allocations:
        checks.append(("postgres", database.ping))
        on_startup.append(data.open)
    return service.build(
        SERVICE,
        broker,
        settings,
        checks=checks,
        on_startup=on_startup,
        after_startup=[targets.start, allocations.start],
        on_shutdown=on_shutdown,
    )

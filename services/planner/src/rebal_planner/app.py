"""Planner wiring: `build(settings)` makes the app `python -m rebal_planner` serves."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from rebal import bus, service
from rebal_planner import funds
from rebal_planner.handlers import SERVICE, Planner, register
from rebal_planner.settings import PlannerSettings


def build(settings: PlannerSettings) -> AsgiFastStream:
    """The planner on its broker: plans from commands, snapshots and targets; the funds' ledgers and
    cycles on Postgres (opened, and migrated, at start)."""
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    history = bus.StreamHistory(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    register(broker, publisher, Planner(history, publisher, settings))
    fund_service = funds.FundService(database, history, publisher)
    funds.register(broker, publisher, fund_service)
    return service.build(
        SERVICE,
        broker,
        settings,
        checks=[("postgres", database.ping)],
        on_startup=[fund_service.start],
        on_shutdown=[database.close],
    )

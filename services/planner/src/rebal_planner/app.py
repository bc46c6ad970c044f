"""Planner wiring: `build(settings)` makes the app `python -m rebal_planner` serves."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from rebal import bus, service
from rebal_planner import funds
from rebal_planner.approvals import Approvals, JournalPreviews
from rebal_planner.handlers import SERVICE, Planner, register, register_approvals
from rebal_planner.settings import PlannerSettings


def build(settings: PlannerSettings) -> AsgiFastStream:
    """The planner on its broker: plans from commands, snapshots and targets, approved previews made
    live; the funds' ledgers and cycles. Postgres (the funds, the journal's previews) is opened, and
    migrated, at start."""
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    history = bus.StreamHistory(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    register(broker, publisher, Planner(history, publisher, settings))
    register_approvals(broker, publisher, Approvals(JournalPreviews(database), publisher))
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

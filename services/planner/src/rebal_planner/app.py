"""Planner wiring: `build(settings)` makes the app `python -m rebal_planner` serves."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from rebal import bus, service
from rebal_planner import autopilot, funds
from rebal_planner.approvals import Approvals, JournalPreviews
from rebal_planner.handlers import SERVICE, register, register_approvals
from rebal_planner.inputs import snapshot_cache
from rebal_planner.planner import Planner
from rebal_planner.settings import PlannerSettings, load_networks


def build(settings: PlannerSettings) -> AsgiFastStream:
    """The planner on its broker: plans from commands, snapshots and targets, approved previews made
    live; the autopilot (policies on snapshots, targets and its clock); the funds' ledgers and cycles.
    Postgres (the funds, the journal's previews, the policies) is opened, and migrated, at start."""
    broker = service.make_broker(settings, SERVICE)
    publisher = bus.Publisher(broker)
    history = bus.StreamHistory(broker)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    snapshots = snapshot_cache(load_networks(settings.planning.network_file))
    planner = Planner(history, publisher, settings, snapshots=snapshots)
    pilot = autopilot.Autopilot(
        database, history, publisher, settings.autopilot, planner.snapshots, planner.targets
    )
    planner.autopilot = pilot
    register(broker, publisher, planner)
    approvals = Approvals(JournalPreviews(database), publisher, on_live=pilot.on_live_plan)
    register_approvals(broker, publisher, approvals)
    autopilot.register(broker, publisher, pilot)
    fund_service = funds.FundService(database, history, publisher)
    funds.register(broker, publisher, fund_service)
    return service.build(
        SERVICE,
        broker,
        settings,
        checks=[("postgres", database.ping)],
        on_startup=[fund_service.start],  # opens and migrates the database
        after_startup=[pilot.start],
        on_shutdown=[pilot.stop, database.close],
    )

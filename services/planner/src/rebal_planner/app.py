"""Planner wiring: `faststream run rebal_planner.app:app` or `python -m rebal_planner`."""

from __future__ import annotations

from rebal import bus, service
from rebal_planner import funds
from rebal_planner.handlers import SERVICE, Planner, register
from rebal_planner.settings import PlannerSettings

settings = PlannerSettings()
broker = service.make_broker(settings, SERVICE)
publisher = bus.Publisher(broker)
register(broker, publisher, Planner(bus.StreamHistory(broker), publisher, settings))
fund_part = funds.wire(broker, publisher, settings)  # issue 6: ledgers, deposits, withdrawals, cycles
app = service.build(SERVICE, broker, settings, **fund_part.hooks())

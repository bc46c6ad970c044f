"""Optimizer wiring: `faststream run rebal_optimizer.app:app` or `python -m rebal_optimizer`."""

from __future__ import annotations

from rebal import bus, service
from rebal_optimizer.handlers import SERVICE, Targets
from rebal_optimizer.settings import OptimizerSettings

settings = OptimizerSettings()
broker = service.make_broker(settings, SERVICE)
targets = Targets(bus.Publisher(broker), bus.StreamHistory(broker), settings)
app = service.build(
    SERVICE,
    broker,
    settings,
    checks=[("targets", targets.ready)],
    after_startup=[targets.start],
    on_shutdown=[targets.stop],
)

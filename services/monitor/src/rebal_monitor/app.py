"""Monitor wiring: `faststream run rebal_monitor.app:app` or `python -m rebal_monitor`."""

from __future__ import annotations

from rebal import bus, service
from rebal_monitor.handlers import SERVICE, Monitor, register
from rebal_monitor.settings import MonitorSettings

settings = MonitorSettings()
broker = service.make_broker(settings, SERVICE)
database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
monitor = Monitor(database)
register(broker, bus.Publisher(broker), monitor)
app = service.build(
    SERVICE,
    broker,
    settings,
    checks=[("postgres", database.ping)],
    on_startup=[monitor.start],
    on_shutdown=[database.close],
)

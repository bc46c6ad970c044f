"""Monitor wiring: `python -m rebal_monitor`.

One ASGI app on the monitor's port: FastStream's (the journal's consumers, /livez, /readyz, /metrics and
the lifespan that starts them) and the operators' API and dashboard (FastAPI) for every other path.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from fastapi import FastAPI
from faststream.asgi import AsgiFastStream

from rebal import bus, service
from rebal_monitor.api import Deps, create_api
from rebal_monitor.gauges import Gauges
from rebal_monitor.handlers import SERVICE, register
from rebal_monitor.monitor import Monitor
from rebal_monitor.notifier import Notifier
from rebal_monitor.queries import ApiPool
from rebal_monitor.settings import MonitorSettings

HEALTH_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/config"})


class MonitorApp:
    """The lifespan and the health paths go to FastStream's app, everything else to the API."""

    def __init__(self, stream: AsgiFastStream, api: FastAPI) -> None:
        self.stream = stream
        self.api = api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or scope.get("path") in HEALTH_PATHS:
            await self.stream(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def build(settings: MonitorSettings) -> MonitorApp:
    broker = service.make_broker(settings, SERVICE)
    database = service.Database(settings.database.url.get_secret_value(), settings.database.pool_size)
    notifier = Notifier(lambda: database.pool, settings.notify)
    publisher = bus.Publisher(broker)

    async def nats_ready() -> None:
        if not await broker.ping(timeout=service.READY_TIMEOUT_SECONDS):
            raise RuntimeError("NATS does not answer")

    api_database = ApiPool(settings.database.url.get_secret_value(), settings.api.pool_size)
    deps = Deps(
        pool=lambda: api_database.pool,
        publisher=publisher,
        settings=settings.api,
        portfolios=settings.portfolios,
        checks={"nats": nats_ready, "postgres": database.ping},
    )

    def journaled(portfolios: Set[str]) -> None:
        notifier.wake()
        for portfolio in portfolios:  # what the API keeps of them is out of date (`Deps.answers`)
            deps.answers.forget(portfolio)

    monitor = Monitor(database, on_journaled=journaled)
    register(broker, publisher, monitor)
    gauges = Gauges(lambda: api_database.pool)
    stream = service.build(
        SERVICE,
        broker,
        settings,
        checks=[("postgres", database.ping)],
        on_startup=[monitor.start, api_database.open],  # migrations first
        after_startup=[gauges.start, notifier.start],
        on_shutdown=[notifier.stop, gauges.stop, api_database.close, database.close],
    )
    return MonitorApp(stream, create_api(deps))

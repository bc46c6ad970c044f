"""The real monitor (journal, API) under uvicorn on a loopback port, and a planner beside it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from faststream.nats import NatsBroker

from rebal import bus
from rebal_monitor.app import build
from rebal_monitor.settings import MonitorSettings
from rebal_planner.handlers import Planner
from rebal_planner.handlers import register as register_planner
from rebal_planner.settings import PlannerSettings
from tests.messaging import started

TOKEN = "t" * 40
SHUTDOWN_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def monitor_settings(nats_url: str, dsn: str, **api: Any) -> MonitorSettings:
    return MonitorSettings(
        nats={"url": nats_url},
        database={"url": dsn},
        http={"host": "127.0.0.1", "port": free_port()},
        api={"token": TOKEN, **api},
    )


@dataclass
class Running:
    url: str
    client: httpx.AsyncClient
    settings: MonitorSettings


@asynccontextmanager
async def running_monitor(settings: MonitorSettings) -> AsyncIterator[Running]:
    """The monitor serving on its port until the block ends; a client with the token."""
    app = build(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.http.port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{settings.http.port}"
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            for _ in range(400):
                if server.started:
                    break
                if task.done():
                    task.result()
                await asyncio.sleep(0.025)
            assert server.started, "the monitor did not start"
            yield Running(url, client, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, SHUTDOWN_SECONDS)  # a stop that hangs fails the test, not the run


@asynccontextmanager
async def running_planner(nats_url: str) -> AsyncIterator[None]:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    settings = PlannerSettings(nats={"url": nats_url})
    register_planner(broker, publisher, Planner(bus.StreamHistory(broker), publisher, settings))
    async with started(broker):
        yield

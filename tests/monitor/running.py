"""The real monitor (journal, API) under uvicorn on a loopback port, and a planner beside it: each built
by its service's `build(settings)`, as `python -m rebal_<name>` builds it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from rebal_monitor.app import build
from rebal_monitor.settings import MonitorSettings
from rebal_planner.app import build as build_planner
from rebal_planner.settings import PlannerSettings

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


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """The ASGI app under uvicorn (its lifespan: start-up and shut-down hooks) until the block ends; its
    URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.025)
        assert server.started, "the service did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, SHUTDOWN_SECONDS)  # a stop that hangs fails the test, not the run


@dataclass
class Running:
    url: str
    client: httpx.AsyncClient
    settings: MonitorSettings


@asynccontextmanager
async def running_monitor(settings: MonitorSettings) -> AsyncIterator[Running]:
    """The monitor serving on its port until the block ends; a client with the token."""
    async with (
        serving(build(settings), settings.http.port) as url,
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        yield Running(url, client, settings)


@asynccontextmanager
async def running_planner(nats_url: str, dsn: str) -> AsyncIterator[None]:
    """The planner (plans, approvals, funds) on its own port."""
    settings = PlannerSettings(nats={"url": nats_url}, database={"url": dsn}, http={"port": free_port()})
    async with serving(build_planner(settings), settings.http.port):
        yield

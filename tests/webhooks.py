"""A webhook receiver for the tests: a real HTTP endpoint (aiohttp) on loopback that keeps every POST it
gets (headers and raw body) and answers with the statuses it is told to (then 200)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from rebal_devstack import _proc
from rebal_devstack._proc import LOOPBACK


@dataclass
class Receiver:
    base: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where to post (any path below it is taken too)."""
        return f"{self.base}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, body in self.received]

    def kinds(self) -> list[str]:
        """The Rebal notifications' kinds, in the order they arrived."""
        return [body["kind"] for body in self.bodies() if isinstance(body, dict) and "kind" in body]


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    kept = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", kept.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _proc.free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    kept.base = f"http://{LOOPBACK}:{port}"
    try:
        yield kept
    finally:
        await runner.cleanup()

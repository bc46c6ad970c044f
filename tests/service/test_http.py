"""Every service's HTTP side: /livez, /readyz (naming what is not ready), /metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
from faststream.nats import NatsBroker

from rebal import service
from rebal.settings import ServiceSettings
from tests.messaging import started


async def call(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.get(path)


async def test_health_and_metrics_with_nats_up(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    app = service.build("test", broker, ServiceSettings(nats={"url": nats_url}))
    async with started(broker):
        live, ready, metrics = [await call(app, p) for p in ("/livez", "/readyz", "/metrics")]
    assert live.status_code == 200
    assert ready.status_code == 200 and json.loads(ready.text)["status"] == "ok"
    assert metrics.status_code == 200 and "rebal_events_published_total" in metrics.text


async def test_readiness_names_what_failed() -> None:
    broker = NatsBroker("nats://127.0.0.1:1", connect_timeout=1)

    async def database_down() -> None:
        raise ConnectionRefusedError("postgres at 127.0.0.1:1 refused the connection")

    app = service.build("test", broker, ServiceSettings(), checks=[("postgres", database_down)])
    ready = await call(app, "/readyz")
    assert ready.status_code == 503
    body = json.loads(ready.text)
    assert body["status"] == "unavailable" and set(body["failed"]) == {"nats", "postgres"}
    assert "refused" in body["failed"]["postgres"]
    assert (await call(app, "/livez")).status_code == 200


async def test_readiness_names_a_consumer_holding_its_messages_until_a_dependency_is_back(
    nats_url: str,
) -> None:
    from collections.abc import Sequence
    from datetime import UTC, datetime

    from rebal import bus
    from rebal.events import StartRebalance, new_event
    from tests.messaging import consume_commands, eventually

    broker = NatsBroker(nats_url)
    app = service.build("test", broker, ServiceSettings(nats={"url": nats_url}))
    handled: list[StartRebalance] = []
    down = True

    async def store(events: Sequence[StartRebalance]) -> None:
        if down:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        handled.extend(events)

    consume_commands(broker, "test-held", store, batch_size=10)
    async with started(broker):
        now = datetime(2026, 1, 1, tzinfo=UTC)
        await bus.Publisher(broker).publish(new_event(StartRebalance, key=1, now=now, portfolio_id="demo"))
        await eventually(lambda: bus.waiting(broker))
        ready = await call(app, "/readyz")
        assert ready.status_code == 503
        refused = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)"
        assert json.loads(ready.text)["failed"] == {"consumers": f"RuntimeError: test-held waits: {refused}"}
        down = False
        await eventually(lambda: handled)
        assert (await call(app, "/readyz")).status_code == 200

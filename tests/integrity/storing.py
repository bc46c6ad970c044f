"""The two services that store what bots report, running as in production (each its own broker): the
tracker (`strategy_returns`) and the monitor (the `events` journal), and reports sent as a bot sends them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import orjson
from faststream.nats import NatsBroker

from rebal import bus, service, subjects
from rebal_monitor.handlers import register as register_monitor
from rebal_monitor.monitor import Monitor
from rebal_tracker.app import Runtime
from rebal_tracker.handlers import register as register_tracker
from rebal_tracker.settings import TrackerSettings
from tests.messaging import started

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def report(index: int, strategy: str = "trend", **changes: Any) -> tuple[str, bytes]:
    """(message id, JSON) of the return a bot reports for period `index` (one a minute from T0)."""
    ts = (T0 + timedelta(minutes=index)).isoformat()
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{strategy}|{ts}"))
    body = {
        "type": "StrategyReturnReported",
        "event_id": event_id,
        "occurred_at": ts,
        "emitted_at": ts,
        "portfolio_id": "demo",
        "strategy_id": strategy,
        "timestamp": ts,
        "period_return": f"0.00{index % 10}",
        **changes,
    }
    return event_id, orjson.dumps(body)


async def send(url: str, reports: list[tuple[str, bytes]], strategy: str = "trend") -> None:
    """Publish as bots do (plain nats-py, `Nats-Msg-Id`), all at once, each acknowledged by the stream."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        subject = subjects.STRATEGY_RETURN_REPORTED.subject(strategy)
        await asyncio.gather(
            *(
                js.publish(subject, body, stream=subjects.EVENTS_STREAM, headers={"Nats-Msg-Id": message_id})
                for message_id, body in reports
            )
        )
    finally:
        await client.drain()


@dataclass
class Stored:
    pool: asyncpg.Pool
    tracker: NatsBroker
    monitor: NatsBroker

    async def returns(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM strategy_returns"))

    async def journaled(self) -> int:
        return int(
            await self.pool.fetchval("SELECT count(*) FROM events WHERE type = 'StrategyReturnReported'")
        )


@asynccontextmanager
async def storing(nats_url: str, dsn: str) -> AsyncIterator[Stored]:
    """The tracker and the monitor consuming from `nats_url` into `dsn`, until the block ends."""
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": dsn},
        tracking={"layout_file": DEMO / "real.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json"},
    )
    tracker_broker, monitor_broker = NatsBroker(nats_url), NatsBroker(nats_url)
    tracker_publisher = bus.Publisher(tracker_broker)
    runtime = Runtime(settings, tracker_publisher, service.Database(dsn, 3))
    register_tracker(tracker_broker, tracker_publisher, runtime.on_take_snapshot, runtime.on_returns)
    monitor = Monitor(service.Database(dsn, 3))
    register_monitor(monitor_broker, bus.Publisher(monitor_broker), monitor)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await runtime.start()
    await monitor.start()
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(started(tracker_broker))
            await stack.enter_async_context(started(monitor_broker))
            yield Stored(pool, tracker_broker, monitor_broker)
    finally:
        await runtime.stop()
        await monitor.database.close()
        await pool.close()

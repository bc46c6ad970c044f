"""Helpers for tests on a real NATS: a fresh server per test, started brokers, waiting, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson
from faststream.nats import NatsBroker

from rebal import bus, subjects
from rebal.events import StartRebalance
from rebal_devstack import credentials
from rebal_devstack.nats import NatsServer

AUTH_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "auth.conf"


def auth_users() -> dict[str, str]:
    """Every user of deploy/nats/auth.conf (``bot-trend``), with the variable its password is read from
    (``BOT_TREND_PASSWORD``)."""
    return credentials.auth_users(AUTH_CONF)


def fresh_nats(directory: Path) -> Iterator[NatsServer]:
    # The server's defaults (max_payload 1 MB), as make run and the deployments run it.
    with NatsServer(directory / "jetstream") as server:
        yield server


async def forget_streams(url: str) -> None:
    """Delete Rebal's streams and payload buckets on a shared server (their consumers go with them)."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for name in [spec.name for spec in bus.STREAMS] + [spec.stream for spec in bus.BUCKETS]:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await client.drain()


@asynccontextmanager
async def started(broker: NatsBroker) -> AsyncIterator[NatsBroker]:
    """Connect, declare the streams, start the subscribers; stop at the end."""
    await broker.connect()
    await bus.declare_streams(broker)
    await broker.start()
    await bus.start_batch_consumers(broker)
    try:
        yield broker
    finally:
        await bus.stop_batch_consumers(broker)
        await broker.stop()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Wait until `check()` is truthy (returns it) or fail after `timeout` seconds (generous: waiting
    costs nothing when it comes, and a CI machine shared with other jobs can be several times slower)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def collecting(
    url: str, subject: str = subjects.ALL_DEAD_LETTERS
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message on `subject` (plain NATS), decoded, as it arrives."""
    client = await nats.connect(url)
    seen: list[dict[str, Any]] = []

    async def keep(message: Any) -> None:
        seen.append({**orjson.loads(message.data), "delivered_on": message.subject})

    subscription = await client.subscribe(subject, cb=keep)
    try:
        yield seen
    finally:
        await subscription.unsubscribe()
        await client.drain()


def consume_commands(
    broker: NatsBroker, durable: str, handler: bus.BatchHandler[StartRebalance], batch_size: int = 10
) -> None:
    """A batch consumer of `StartRebalance` commands on `broker` (the bus's tests use it as any kind)."""
    bus.consume_batch(
        broker,
        bus.Publisher(broker),
        service="tracker",
        kind=StartRebalance,
        durable=durable,
        handler=handler,
        batch_size=batch_size,
    )

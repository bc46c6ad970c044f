"""Driving the running system from outside, as an operator would: commands in, streams and tables read."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from rebal import bus, subjects
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    TakeSnapshot,
    TargetWeightsComputed,
    new_event,
)

PORTFOLIO = "demo"
E = TypeVar("E", bound=Event)
T = TypeVar("T")
# What a JetStream client sees for a moment while a cluster that lost a node elects new leaders.
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
QUOTE_QUANTUM = Decimal("1e-8")


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Client]:
    connection = await nats.connect(url.split(","))  # one server, or a cluster
    try:
        yield connection
    finally:
        await connection.drain()


async def patiently(call: Callable[..., Awaitable[T]], *args: Any, timeout: float = 15.0) -> T:
    """`call(*args)`, retried while it fails with a TRANSIENT error, for up to `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await call(*args)
        except TRANSIENT:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def latest(url: str, kind: type[E]) -> E | None:
    subject = kind.topic.subject(PORTFOLIO)
    async with client(url) as nc:
        js = nc.jetstream()
        try:
            message = await patiently(js.get_last_msg, bus.stream_of(subject).name, subject)
        except NotFoundError:
            return None
    event = bus.decode(kind, subject, message.data or b"")
    assert not isinstance(event, str), event
    return event


async def stored(url: str, kind: type[E]) -> list[E]:
    """Every `kind` event of the portfolio the streams hold, oldest first."""
    subject = kind.topic.subject(PORTFOLIO)
    stream = bus.stream_of(subject).name
    events: list[E] = []
    async with client(url) as nc:
        js = nc.jetstream()
        seq = 1
        while True:
            try:
                message = await patiently(js.get_msg, stream, seq, subject, False, True)
            except NotFoundError:
                return events
            event = bus.decode(kind, subject, message.data or b"")
            assert not isinstance(event, str), event
            events.append(event)
            assert message.seq is not None
            seq = message.seq + 1


async def wait_for(url: str, kind: type[E], check: Any = None, timeout: float = 60.0) -> E:
    """The latest `kind` event once there is one; with `check`, the latest one that passes it (another
    may have been stored after it: two snapshots asked for at once are answered in either order)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if check is None:
            last = await latest(url, kind)
            if last is not None:
                return last
        else:
            events = await stored(url, kind)
            passing = [event for event in events if check(event)]
            if passing:
                return passing[-1]
            last = events[-1] if events else None
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {kind.__name__} after {timeout} s (last: {last})")
        await asyncio.sleep(0.1)


async def publish_raw(url: str, subject: str, body: bytes, msg_id: str | None = None) -> None:
    async with client(url) as nc:
        await nc.jetstream().publish(
            subject,
            body,
            stream=bus.stream_of(subject).name,
            headers={"Nats-Msg-Id": msg_id or str(uuid.uuid4())},
        )


async def take_snapshot(url: str) -> BalanceSnapshotTaken:
    """Ask the tracker for a snapshot now and return it."""
    command = new_event(TakeSnapshot, key=uuid.uuid4(), now=datetime.now(UTC), portfolio_id=PORTFOLIO)
    await publish_raw(url, command.subject, command.model_dump_json().encode(), str(command.event_id))
    return await wait_for(url, BalanceSnapshotTaken, lambda e: e.causation_id == command.event_id)


async def ready_for_commands(url: str) -> tuple[TargetWeightsComputed, BalanceSnapshotTaken]:
    """The optimizer's target and a fresh snapshot are on the bus: the planner can plan."""
    target = await wait_for(url, TargetWeightsComputed)
    return target, await take_snapshot(url)


async def stream_messages(url: str) -> list[tuple[str, bytes]]:
    """Every message stored in the events and commands streams, in order."""
    out: list[tuple[str, bytes]] = []
    async with client(url) as nc:
        js = nc.jetstream()
        for name in (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM):
            state = (await patiently(js.stream_info, name)).state
            if state.messages == 0:
                continue
            for seq in range(state.first_seq, state.last_seq + 1):
                message = await patiently(js.get_msg, name, seq)
                assert message.subject is not None
                out.append((message.subject, message.data or b""))
    return out


async def stream_events(url: str) -> list[Event]:
    events = []
    for subject, data in await stream_messages(url):
        event = bus.decode_any(subject, data)
        assert not isinstance(event, str), f"{subject}: {event}"
        events.append(event)
    return events


def once_each(values: list[Any]) -> dict[Any, int]:
    """The values seen more than once, with their count (empty when each is there once)."""
    return {value: count for value, count in Counter(values).items() if count > 1}


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def journal_matches_streams(url: str, dsn: str, timeout: float = 60.0) -> list[Event]:
    """Wait until the monitor's journal holds exactly the events of the streams; those events."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = await stream_events(url)
        ids = [event.event_id for event in events]
        rows = await fetch(dsn, "SELECT event_id FROM events")
        journal = [row["event_id"] for row in rows]
        assert once_each(ids) == {}, "an event id stored twice in the streams"
        if sorted(journal) == sorted(ids):
            return events
        if asyncio.get_running_loop().time() > deadline:
            missing = set(ids) - set(journal)
            extra = set(journal) - set(ids)
            raise AssertionError(f"journal != streams after {timeout} s: missing {missing}, extra {extra}")
        await asyncio.sleep(0.2)


async def balances_from_fills(dsn: str, seed: dict[str, Decimal]) -> dict[str, Decimal]:
    """The paper account's balances recomputed from the seed and each stored fill, applied once."""
    expected = dict(seed)
    fills = await fetch(
        dsn,
        "SELECT o.symbol, o.side, f.amount, f.price, f.fee FROM paper.fills f"
        " JOIN paper.orders o USING (exchange, client_order_id)",
    )
    for fill in fills:
        base, _, quote = fill["symbol"].partition("/")
        cost = (fill["amount"] * fill["price"]).quantize(QUOTE_QUANTUM)
        sign = 1 if fill["side"] == "buy" else -1
        expected[base] = expected.get(base, Decimal(0)) + sign * fill["amount"]
        expected[quote] = expected.get(quote, Decimal(0)) - sign * cost - fill["fee"]
    return {asset: amount for asset, amount in expected.items() if amount != 0}

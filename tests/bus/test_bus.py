"""The bus on a real nats-server: idempotent publishing, dead letters, bounded retries, the latest event."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker

from rebal import bus, metrics, subjects
from rebal.events import BalanceSnapshotTaken, StartRebalance, new_event
from tests.messaging import collecting, consume_commands, eventually, started

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def command(key: str = "run-1", portfolio: str = "demo") -> StartRebalance:
    return new_event(StartRebalance, key=key, now=NOW, portfolio_id=portfolio, dry_run=False)


def snapshot(key: str) -> BalanceSnapshotTaken:
    return new_event(
        BalanceSnapshotTaken,
        key=key,
        now=NOW,
        portfolio_id="demo",
        tree={"name": key, "children": []},
        prices={"quote": "USD", "prices": {}},
    )


async def stream_messages(broker: NatsBroker, stream: str) -> int:
    info = await broker.config.connection_state.stream.stream_info(stream)
    return int(info.state.messages)


async def test_the_same_event_published_twice_is_stored_once(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    async with started(broker):
        event = command()
        assert await publisher.publish(event) is True
        assert await publisher.publish(event) is False  # dropped by the duplicate window
        assert await publisher.publish(command("run-2")) is True
        assert await stream_messages(broker, subjects.COMMANDS_STREAM) == 2


async def test_streams_are_declared_with_an_explicit_duplicate_window(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    async with started(broker):
        for spec in bus.STREAMS:
            info = await broker.config.connection_state.stream.stream_info(spec.name)
            assert info.config.duplicate_window == bus.DUPLICATE_WINDOW_SECONDS
            assert info.config.subjects == list(spec.subjects)
        await bus.declare_streams(broker)  # declaring again (a second service, a restart) is fine


@pytest.mark.parametrize(
    ("payload", "subject", "reason"),
    [
        (
            b'{"type": "StartRebalance", "event_id": ',
            subjects.START_REBALANCE.subject("demo"),
            "Invalid JSON",
        ),
        (
            b'{"type": "StartRebalance", "dry_run": "maybe"}',
            subjects.START_REBALANCE.subject("demo"),
            "event_id",
        ),
        (None, subjects.START_REBALANCE.subject("demo", version=2), "unknown version v2 of rebalance.start"),
        (
            None,
            subjects.START_REBALANCE.subject("other"),
            "subject names 'other' but the payload is about 'demo'",
        ),
        (b"\xff\xfe not utf-8", subjects.START_REBALANCE.subject("demo"), "invalid StartRebalance"),
    ],
)
async def test_unreadable_messages_are_dead_lettered_and_the_service_keeps_serving(
    nats_url: str, payload: bytes | None, subject: str, reason: str
) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    handled: list[StartRebalance] = []

    async def handle(event: StartRebalance) -> None:
        handled.append(event)

    bus.consume(
        broker, publisher, service="planner", kind=StartRebalance, durable="test-commands", handler=handle
    )
    body = payload if payload is not None else command().model_dump_json().encode()
    before = metrics.DEAD_LETTERED.labels(service="planner", topic="rebalance.start")._value.get()
    async with collecting(nats_url) as letters, started(broker):
        await broker.publish(body, subject=subject, stream=subjects.COMMANDS_STREAM)
        good = command("after-the-bad-one")
        await publisher.publish(good)
        await eventually(lambda: letters and handled)
    [letter] = letters
    assert letter["delivered_on"] == subjects.dead_letter("planner")
    assert letter["subject"] == subject and letter["service"] == "planner"
    assert reason in letter["error"]
    raw = letter["payload"].encode() if letter["encoding"] == "utf-8" else base64.b64decode(letter["payload"])
    assert raw == body  # the raw payload, exactly
    assert [e.event_id for e in handled] == [good.event_id]  # still serving
    after = metrics.DEAD_LETTERED.labels(service="planner", topic="rebalance.start")._value.get()
    assert after == before + 1


async def test_a_failing_handler_is_retried_with_backoff_then_succeeds(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus, "BACKOFF_SECONDS", (0.05, 0.05, 0.05, 0.05))
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    attempts: list[int] = []

    async def flaky(event: StartRebalance) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("database went away")

    bus.consume(
        broker, publisher, service="planner", kind=StartRebalance, durable="test-flaky", handler=flaky
    )
    async with collecting(nats_url) as letters, started(broker):
        await publisher.publish(command())
        await eventually(lambda: len(attempts) == 3)
        await asyncio.sleep(0.3)  # no fourth attempt comes
    assert len(attempts) == 3
    assert letters == []


async def test_a_handler_that_always_fails_is_dead_lettered_after_max_deliver(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus, "BACKOFF_SECONDS", (0.05, 0.05, 0.05, 0.05))
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    attempts: list[int] = []

    async def broken(event: StartRebalance) -> None:
        attempts.append(1)
        raise ValueError("no such account")

    bus.consume(
        broker, publisher, service="executor", kind=StartRebalance, durable="test-broken", handler=broken
    )
    async with collecting(nats_url) as letters, started(broker):
        await publisher.publish(command())
        await eventually(lambda: letters)
    assert len(attempts) == bus.MAX_DELIVER
    assert letters[0]["error"] == f"gave up after {bus.MAX_DELIVER} deliveries: ValueError: no such account"


async def test_the_latest_event_is_read_back_from_the_stream(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    async with started(broker):
        history = bus.StreamHistory(broker)
        assert await history.latest(BalanceSnapshotTaken, "demo") is None
        for key in ("first", "second"):
            await publisher.publish(snapshot(key))
        latest: Any = await history.latest(BalanceSnapshotTaken, "demo")
        assert latest is not None and latest.tree["name"] == "second"


async def test_a_handler_longer_than_the_ack_wait_is_not_redelivered_to_another_replica(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus, "ACK_WAIT_SECONDS", 1.0)  # heartbeats every 1/3 s
    calls: list[str] = []
    replicas = [NatsBroker(nats_url), NatsBroker(nats_url)]
    for name, broker in zip(("a", "b"), replicas, strict=True):

        async def slow(event: StartRebalance, name: str = name) -> None:
            calls.append(name)
            await asyncio.sleep(3.0)  # three ack waits

        bus.consume(
            broker,
            bus.Publisher(broker),
            service="executor",
            kind=StartRebalance,
            durable="test-slow",
            handler=slow,
        )
    async with started(replicas[0]), started(replicas[1]):
        await bus.Publisher(replicas[0]).publish(command())
        await eventually(lambda: calls)
        await asyncio.sleep(4.0)
    assert len(calls) == 1, calls


async def test_one_consumer_handles_its_messages_in_order(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    handled: list[str] = []

    async def uneven(event: StartRebalance) -> None:
        index = int(event.requested_by)
        await asyncio.sleep(0.02 if index % 2 == 0 else 0.0)  # a slow one must not be overtaken
        handled.append(event.requested_by)

    bus.consume(
        broker, publisher, service="executor", kind=StartRebalance, durable="test-order", handler=uneven
    )
    sent = [str(i) for i in range(20)]
    async with started(broker):
        for i in sent:
            await publisher.publish(
                new_event(StartRebalance, key=i, now=NOW, portfolio_id="demo", dry_run=False, requested_by=i)
            )
        await eventually(lambda: len(handled) == len(sent))
    assert handled == sent


async def test_two_replicas_share_a_batch_consumer_without_duplicates_or_losses(nats_url: str) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}
    replicas = [NatsBroker(nats_url), NatsBroker(nats_url)]
    for name, broker in zip(("a", "b"), replicas, strict=True):

        async def keep(events: Sequence[StartRebalance], name: str = name) -> None:
            seen[name].extend(e.requested_by for e in events)

        consume_commands(broker, "test-shared", keep, batch_size=50)
    sent = [str(i) for i in range(600)]
    async with started(replicas[0]), started(replicas[1]):
        publisher = bus.Publisher(replicas[0])
        for i in sent:
            await publisher.publish(
                new_event(StartRebalance, key=i, now=NOW, portfolio_id="demo", dry_run=False, requested_by=i)
            )
        await eventually(lambda: len(seen["a"]) + len(seen["b"]) >= len(sent))
    assert sorted(seen["a"] + seen["b"], key=int) == sent  # each exactly once
    assert seen["a"] and seen["b"]  # both did work


async def test_a_batch_that_fails_on_one_message_loses_only_that_one(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is split until the message that fails alone is found: it alone is retried and
    dead-lettered, every other one is handled exactly once (issue 19, point 2)."""
    monkeypatch.setattr(bus, "BACKOFF_SECONDS", (0.05, 0.05, 0.05, 0.05))
    broker = NatsBroker(nats_url)
    handled: list[str] = []

    async def store(events: Sequence[StartRebalance]) -> None:
        if any(event.requested_by == "poison" for event in events):
            raise ValueError("the database refuses one of these")
        handled.extend(event.requested_by for event in events)

    consume_commands(broker, "test-poisoned", store, batch_size=100)
    sent = [str(i) for i in range(300)]
    sent[137] = "poison"
    async with collecting(nats_url) as letters, started(broker):
        publisher = bus.Publisher(broker)
        await asyncio.gather(
            *(
                publisher.publish(
                    new_event(StartRebalance, key=i, now=NOW, portfolio_id="demo", requested_by=name)
                )
                for i, name in enumerate(sent)
            )
        )
        await eventually(lambda: len(letters) == 1 and len(handled) >= len(sent) - 1)
        await asyncio.sleep(0.5)  # nothing else comes
    assert sorted(handled, key=int) == [name for name in sent if name != "poison"]  # each exactly once
    [letter] = letters
    assert '"requested_by":"poison"' in letter["payload"]
    assert letter["error"].startswith(f"gave up after {bus.MAX_DELIVER} deliveries: ValueError")


@pytest.mark.parametrize("batched", [False, True])
async def test_an_outage_holds_the_messages_until_the_dependency_is_back(
    nats_url: str, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """An infrastructure failure is not the message's: nothing is dead-lettered or redelivered however
    long it lasts (here 4 s: 5x the ack wait and 5x the old retry window, both shortened), the consumer
    says it is waiting, and every message is handled once when the dependency is back (point 4)."""
    monkeypatch.setattr(bus, "BACKOFF_SECONDS", (0.05, 0.1, 0.2, 0.4))  # the old window: 0.75 s
    monkeypatch.setattr(bus, "ACK_WAIT_SECONDS", 0.8)
    monkeypatch.setattr(bus, "HOLD_RETRY_SECONDS", (0.1, 0.2))
    broker = NatsBroker(nats_url)
    down = True
    handled: list[str] = []

    async def store(events: Sequence[StartRebalance]) -> None:
        if down:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        handled.extend(event.requested_by for event in events)

    async def store_one(event: StartRebalance) -> None:
        await store([event])

    if batched:
        consume_commands(broker, "test-outage", store, batch_size=10)
    else:
        bus.consume(
            broker,
            bus.Publisher(broker),
            service="planner",
            kind=StartRebalance,
            durable="test-outage",
            handler=store_one,
        )
    sent = [str(i) for i in range(60)]
    async with collecting(nats_url) as letters, started(broker):
        publisher = bus.Publisher(broker)
        for i in sent:
            await publisher.publish(
                new_event(StartRebalance, key=i, now=NOW, portfolio_id="demo", requested_by=i)
            )
        await eventually(lambda: bus.waiting(broker))
        assert "ConnectionRefusedError" in bus.waiting(broker)["test-outage"]
        await asyncio.sleep(4.0)
        assert handled == [] and letters == []
        down = False
        await eventually(lambda: len(handled) >= len(sent))
        await asyncio.sleep(1.0)  # no redelivered copy comes after
        assert bus.waiting(broker) == {}
        js = broker.config.connection_state.stream
        info = await js.consumer_info(subjects.COMMANDS_STREAM, "test-outage")
    assert sorted(handled, key=int) == sent  # each once, in the end
    assert letters == []
    assert info.num_redelivered == 0 and info.num_ack_pending == 0

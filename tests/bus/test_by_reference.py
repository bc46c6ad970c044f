"""Large events on a real nats-server at its default 1 MB max_payload: the large part by reference through
the Object Store, every consumer path reading it whole, refusals and failures said out loud."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import nats
import pytest
from faststream.nats import NatsBroker
from nats.js.object_store import ObjectStore

from rebal import bus, outage, payloads, subjects
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    PayloadRef,
    StrategyReturnReported,
    TakeSnapshot,
    new_event,
)
from tests.messaging import collecting, eventually, started

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLETS = 8000  # some 600 KB of JSON: over the inline limit, under the server's


def big_tree(wallets: int = WALLETS, tag: str = "") -> dict[str, Any]:
    return {
        "name": "demo",
        "children": [
            {
                "name": f"acc{a}",
                "kind": "account",
                "exchange": "paper",
                "quote": "USDT",
                "children": [
                    {"name": f"w{a}-{i}{tag}", "asset": f"A{i % 97}", "amount": f"{i % 1000}.{a}5"}
                    for i in range(wallets // 4)
                ],
            }
            for a in range(4)
        ],
    }


def big_snapshot(key: str = "big", tag: str = "") -> BalanceSnapshotTaken:
    return new_event(
        BalanceSnapshotTaken,
        key=key,
        now=NOW,
        portfolio_id="demo",
        tree=big_tree(tag=tag),
        prices={"quote": "USDT", "prices": {f"A{i}": "1.5" for i in range(97)}},
        markets={"paper": {}},
    )


async def raw_last(broker: NatsBroker, subject: str) -> bytes:
    js = broker.config.connection_state.stream
    message = await js.get_last_msg(subjects.EVENTS_STREAM, subject, direct=True)
    return bytes(message.data or b"")


async def objects(broker: NatsBroker, bucket: str) -> int:
    """Objects in `bucket` (one metadata subject each)."""
    js = broker.config.connection_state.stream
    info = await js.stream_info(subjects.bucket_stream(bucket), subjects_filter=f"$O.{bucket}.M.>")
    return len(info.state.subjects or {})


async def test_a_large_snapshot_travels_by_reference_and_every_consumer_path_reads_it_whole(
    nats_url: str,
) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    one: list[BalanceSnapshotTaken] = []
    batched: list[Event] = []

    async def keep(event: BalanceSnapshotTaken) -> None:
        one.append(event)

    async def keep_all(events: Sequence[Event]) -> None:
        batched.extend(events)

    bus.consume(
        broker, publisher, service="planner", kind=BalanceSnapshotTaken, durable="t-one", handler=keep
    )
    bus.consume_all_batch(
        broker,
        publisher,
        service="monitor",
        durable="t-all",
        filter_subject=subjects.ALL_EVENTS,
        handler=keep_all,
        batch_size=10,
    )
    snapshot = big_snapshot()
    assert len(snapshot.model_dump_json()) > bus.INLINE_LIMIT_BYTES
    async with collecting(nats_url) as letters, started(broker):
        assert await publisher.publish(snapshot) is True
        assert await publisher.publish(snapshot) is False  # the duplicate is dropped, its object kept once
        await eventually(lambda: one and batched)
        wire = await raw_last(broker, snapshot.subject)
        latest = await bus.latest(broker, BalanceSnapshotTaken, "demo")
        stored = await objects(broker, subjects.SNAPSHOTS_BUCKET)
        travelling = BalanceSnapshotTaken.model_validate_json(wire)
        assert travelling.payload_ref is not None
        info = await ObjectStore(
            subjects.SNAPSHOTS_BUCKET,
            subjects.bucket_stream(subjects.SNAPSHOTS_BUCKET),
            broker.config.connection_state.stream,
        ).get_info(travelling.payload_ref.name)
    assert len(wire) < 2048 and travelling.tree == {} and travelling.prices == {}
    assert info.digest == travelling.payload_ref.digest and info.size == travelling.payload_ref.size
    assert stored == 1
    for whole in (one[0], batched[0], latest):
        assert isinstance(whole, BalanceSnapshotTaken)
        assert whole.payload_ref == travelling.payload_ref
        assert whole.model_copy(update={"payload_ref": None}) == snapshot
    assert letters == []


async def test_an_inline_event_of_before_is_still_read_whole(nats_url: str) -> None:
    """Published whole (as before payloads went by reference; 600 KB fits the server's 1 MB)."""
    broker = NatsBroker(nats_url)
    seen: list[BalanceSnapshotTaken] = []

    async def keep(event: BalanceSnapshotTaken) -> None:
        seen.append(event)

    bus.consume(
        broker,
        bus.Publisher(broker),
        service="planner",
        kind=BalanceSnapshotTaken,
        durable="t-old",
        handler=keep,
    )
    snapshot = big_snapshot()
    async with started(broker):
        await broker.publish(
            snapshot.model_dump_json().encode(), subject=snapshot.subject, stream=subjects.EVENTS_STREAM
        )
        await eventually(lambda: seen)
    assert seen == [snapshot]


async def test_a_payload_gone_or_not_matching_is_dead_lettered_with_the_reason(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    handled: list[BalanceSnapshotTaken] = []

    async def keep(event: BalanceSnapshotTaken) -> None:
        handled.append(event)

    bus.consume(
        broker, publisher, service="planner", kind=BalanceSnapshotTaken, durable="t-bad", handler=keep
    )
    first, second = big_snapshot("first"), big_snapshot("second", tag="b")
    async with collecting(nats_url) as letters, started(broker):
        store = bus.payload_store(broker)
        real = await store.put(first, payloads.encode(first))
        gone = real.model_copy(update={"name": "demo/nothing/here"})
        other = await store.put(second, payloads.encode(second))
        swapped = real.model_copy(
            update={"name": other.name}
        )  # the digest of `first`, the object of `second`
        for key, ref in (("gone", gone), ("swapped", swapped)):
            event = payloads.slim(big_snapshot(key), ref)
            await broker.publish(
                event.model_dump_json().encode(), subject=event.subject, stream=subjects.EVENTS_STREAM
            )
        await publisher.publish(first)  # still serving
        await eventually(lambda: len(letters) >= 2 and handled)
    reasons = sorted(letter["error"] for letter in letters)
    assert reasons == [
        f"payload REBAL_SNAPSHOTS/{other.name} does not match the event's digest {real.digest}",
        "payload REBAL_SNAPSHOTS/demo/nothing/here is not in its bucket (expired, or never stored)",
    ]
    assert [e.tree for e in handled] == [first.tree]


def huge_report() -> StrategyReturnReported:
    return new_event(
        StrategyReturnReported,
        key="huge",
        now=NOW,
        portfolio_id="demo",
        strategy_id="trend",
        timestamp=NOW,
        period_return=Decimal("0.01"),
        positions={f"ASSET{i}": Decimal(i) for i in range(30_000)},
    )


async def test_an_event_too_large_with_nothing_to_send_by_reference_fails_at_once(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    report = huge_report()
    async with started(broker):
        with pytest.raises(
            bus.PublishFailed, match=r"is 594 KiB, over the 256 KiB an event may carry in its message"
        ):
            await bus.Publisher(broker).publish(report)
        js = broker.config.connection_state.stream
        info = await js.stream_info(subjects.EVENTS_STREAM)
    assert info.state.messages == 0


async def test_a_handler_whose_publish_cannot_succeed_is_dead_lettered_at_once_with_the_reason(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Retrying changes nothing (the same event is as large the fifth time): the message goes to the dead
    letters on its first delivery, saying why, and the service logs an error."""
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    attempts: list[TakeSnapshot] = []

    async def answer(command: TakeSnapshot) -> None:
        attempts.append(command)
        await publisher.publish(huge_report())

    bus.consume(broker, publisher, service="tracker", kind=TakeSnapshot, durable="t-huge", handler=answer)
    command = new_event(TakeSnapshot, key="huge", now=NOW, portfolio_id="demo")
    async with collecting(nats_url) as letters, started(broker):
        await publisher.publish(command)
        await eventually(lambda: letters)
    [letter] = letters
    assert letter["error"].startswith(
        f"could not publish: StrategyReturnReported {huge_report().event_id} is "
    )
    assert "594 KiB, over the 256 KiB an event may carry in its message" in letter["error"]
    assert len(attempts) == 1
    assert any(
        record.levelname == "ERROR" and "t-huge could not publish" in record.getMessage()
        for record in caplog.records
    )


async def test_a_store_without_room_is_an_outage_the_publisher_waits_out(nats_url: str) -> None:
    """JetStream answers 503 when a store is full, like a disk: the error comes out as it is, an outage
    (`rebal.outage`), so a consumer that publishes holds its message until there is room."""
    broker = NatsBroker(nats_url)
    async with started(broker):
        js = broker.config.connection_state.stream
        full = (await js.stream_info(subjects.bucket_stream(subjects.SNAPSHOTS_BUCKET))).config
        await js.update_stream(full.evolve(max_bytes=1000))  # a store with no room for it
        with pytest.raises(Exception) as raised:
            await bus.Publisher(broker).publish(big_snapshot())
        info = await js.stream_info(subjects.EVENTS_STREAM)
    assert outage.is_outage(raised.value) and not isinstance(raised.value, bus.PublishFailed)
    assert info.state.messages == 0


async def test_a_dead_letter_carries_at_most_the_inline_limit_of_its_payload(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)

    async def never(event: BalanceSnapshotTaken) -> None:
        raise AssertionError("an unreadable message reached the handler")

    bus.consume(
        broker, publisher, service="planner", kind=BalanceSnapshotTaken, durable="t-cut", handler=never
    )
    junk = b'{"type": "BalanceSnapshotTaken", "tree": "' + b"x" * 900_000 + b'"}'
    async with collecting(nats_url) as letters, started(broker):
        await broker.publish(
            junk, subject=BalanceSnapshotTaken.topic.subject("demo"), stream=subjects.EVENTS_STREAM
        )
        await eventually(lambda: letters)
    [letter] = letters
    assert letter["payload"].encode() == junk[: bus.INLINE_LIMIT_BYTES]
    assert letter["error"].endswith("(payload cut to its first 256 KiB of 879 KiB)")


async def test_each_bucket_keeps_its_payloads_longer_than_the_events_pointing_to_them(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    broker = NatsBroker(nats_url)
    try:
        async with started(broker):
            js = client.jetstream()
            events = await js.stream_info(subjects.EVENTS_STREAM)
            for bucket in subjects.PAYLOAD_BUCKETS.values():
                info = await js.stream_info(subjects.bucket_stream(bucket))
                assert info.config.max_age is not None and events.config.max_age is not None
                assert info.config.max_age >= events.config.max_age + 3600
                assert info.config.max_msg_size == bus.MAX_MESSAGE_BYTES
    finally:
        await client.drain()


def test_a_reference_names_one_of_the_buckets_and_a_digest_as_nats_writes_it() -> None:
    data = b"payload"
    ref = PayloadRef(
        bucket="REBAL_PLANS",
        name="demo/x/y",
        digest=payloads.digest_of(data),
        size=7,
        encoding=payloads.ENCODING,
    )
    assert ref.digest == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    with pytest.raises(ValueError, match="digest"):
        PayloadRef.model_validate({**ref.model_dump(), "digest": "md5=abc"})

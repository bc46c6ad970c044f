"""The bus: JetStream streams declared in code, idempotent publishing, explicit acks, dead letters.

- Three streams (events, commands, dead letters), each with an explicit duplicate window: every publish
  sets ``Nats-Msg-Id`` to the event's id, which is derived from its cause, so a redelivered trigger that
  publishes again is dropped by the server instead of having a second effect.
- Every consumer is durable, states its ack policy, and is wrapped by `consume`: a message that does not
  validate (malformed JSON, a schema violation, an unknown version, a value out of bounds) goes to
  ``rebal.dlq.<service>`` with its raw payload and the reason, is counted, and is acked; a handler that
  fails is retried with backoff up to `MAX_DELIVER` times, then dead-lettered too. The service keeps
  serving either way.
- Only a message that fails on its own content is dead-lettered. A batch that fails is split in halves
  until the messages that fail alone are found; the others are stored (once: handlers are idempotent).
  A failure of infrastructure (Postgres or NATS unavailable: `rebal.outage`) is not the message's: the
  consumer holds what it has (extending the ack deadline, so nothing is redelivered or counted), takes
  nothing new, retries every few seconds (`HOLD_RETRY_SECONDS`) and goes on when the dependency is
  back, however long that takes while the stream keeps the messages; `waiting` (and so ``/readyz``)
  names the consumers holding.
- A consumer asked to stop (its service shutting down) stops: it holds nothing for an outage then, and a
  failure on the way is not the message's. What it had not acknowledged is redelivered after the ack wait.
- No message is larger than NATS's default ``max_payload`` (`MAX_MESSAGE_BYTES`, 1 MiB): an event whose
  JSON exceeds `INLINE_LIMIT_BYTES` puts its large part (a tree, a plan's orders) into its producer's
  JetStream Object Store bucket in a compact columnar encoding (`rebal.payloads`) and travels with a
  reference and the digest (`PayloadRef`). Every consumer path (`consume`, `consume_batch`, `latest`)
  fetches the object once, checks the digest and hands the handler the whole event; an object that is
  gone or does not match is the message's fault (dead-lettered with the reason). The buckets keep their
  objects a day longer than the event stream keeps the events pointing to them. A publish that cannot
  succeed (an event too large with nothing to send by reference, an object the server refuses) raises
  `PublishFailed`, which producers turn into an error event (the planner: `PlanFailed`); a handler that
  lets it out has its message dead-lettered at once with the reason and an error logged (retrying it
  would change nothing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, DigestMismatchError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore
from pydantic import ValidationError

from rebal import metrics, outage, payloads, subjects
from rebal.core import bounds
from rebal.core.bounds import TEXT_PATTERN
from rebal.events import EVENT_TYPES, DeadLettered, Event, PayloadRef, derive_id
from rebal.payloads import Body, PayloadError

log = logging.getLogger("rebal.bus")
E = TypeVar("E", bound=Event)
T = TypeVar("T")

DUPLICATE_WINDOW_SECONDS = 120.0
EVENTS_MAX_AGE_SECONDS = 30 * 24 * 3600.0
MAX_DELIVER = 5
BACKOFF_SECONDS = (0.2, 1.0, 5.0, 15.0)
# While a dependency is unavailable, a consumer tries its held messages again after these pauses (then
# every last one): a few seconds of delay after the dependency is back, a cheap attempt meanwhile.
HOLD_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
ACK_WAIT_SECONDS = 10.0
# FastStream handles the messages of one fetch concurrently: fetching one at a time keeps each consumer
# in order (a run, then the next; an order, then its fill). High-rate topics use `consume_batch`.
PULL_BATCH = 1
PULL_TIMEOUT_SECONDS = 1.0
# NATS's default max_payload: the server runs with it, and no stream takes a larger message.
MAX_MESSAGE_BYTES = 1024 * 1024
# An event whose JSON is larger travels by reference (its large part in the Object Store). A quarter of
# the limit: one message never holds up a connection for long, a batch consumer's buffer (4 x 500
# messages) stays within 512 MiB, and the envelope and headers always fit.
INLINE_LIMIT_BYTES = 256 * 1024
# The Object Store's chunks: each one a message of at most this size.
CHUNK_BYTES = INLINE_LIMIT_BYTES
# Past the event stream's age, so a payload outlives every event that points to it.
PAYLOAD_GRACE_SECONDS = 24 * 3600.0
# Payloads a process keeps after fetching them (by digest): a consumer and a `latest` on the same event,
# or a redelivery, fetch once.
FETCHED_KEPT = 8
# A fetch that takes longer gives up (an outage: tried again) rather than wait forever on chunks that
# do not come (nats-py's reader has no deadline of its own).
FETCH_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age: float

    def jstream(self) -> JStream:
        """The FastStream handle for subscribers; the stream itself is declared by `declare_streams`."""
        return JStream(name=self.name, subjects=list(self.subjects), declare=False)

    def config(self, replicas: int) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=self.max_age,
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            num_replicas=replicas,
            max_msg_size=MAX_MESSAGE_BYTES,
            # Services read the latest snapshot/target back: direct gets return the raw message.
            allow_direct=True,
        )


EVENTS = StreamSpec(subjects.EVENTS_STREAM, (subjects.ALL_EVENTS,), EVENTS_MAX_AGE_SECONDS)
COMMANDS = StreamSpec(subjects.COMMANDS_STREAM, (subjects.ALL_COMMANDS,), 7 * 24 * 3600.0)
DEAD_LETTERS = StreamSpec(subjects.DLQ_STREAM, (subjects.ALL_DEAD_LETTERS,), EVENTS_MAX_AGE_SECONDS)
STREAMS = (EVENTS, COMMANDS, DEAD_LETTERS)


@dataclass(frozen=True)
class BucketSpec:
    """A JetStream Object Store bucket for the large part of one producer's events."""

    name: str
    max_age: float

    @property
    def stream(self) -> str:
        return subjects.bucket_stream(self.name)

    def config(self, replicas: int) -> api.StreamConfig:
        """The bucket's stream, as nats-py's `create_object_store` makes it (chunks and metadata
        subjects, rollups for the metadata, direct gets), with its age and chunk size ours."""
        return api.StreamConfig(
            name=self.stream,
            subjects=[f"$O.{self.name}.C.>", f"$O.{self.name}.M.>"],
            max_age=self.max_age,
            max_msg_size=MAX_MESSAGE_BYTES,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            discard=api.DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            allow_direct=True,
        )


BUCKETS = tuple(
    BucketSpec(name, EVENTS_MAX_AGE_SECONDS + PAYLOAD_GRACE_SECONDS)
    for name in sorted(set(subjects.PAYLOAD_BUCKETS.values()))
)


class PublishFailed(Exception):
    """A publish that cannot succeed as it is: an event too large with nothing to send by reference, or
    a payload the server refuses (not an outage: trying again changes nothing). The reason says which."""


def configure(*, ack_wait_seconds: float) -> None:
    """Process-wide consumer settings, from the service's settings, before its consumers are made."""
    global ACK_WAIT_SECONDS  # noqa: PLW0603 - one service per process: its settings are the process's
    ACK_WAIT_SECONDS = ack_wait_seconds


def stream_of(subject: str) -> StreamSpec:
    if subject.startswith(f"{subjects.PREFIX}.cmd."):
        return COMMANDS
    if subject.startswith(f"{subjects.PREFIX}.dlq."):
        return DEAD_LETTERS
    return EVENTS


async def declare_streams(broker: NatsBroker, replicas: int = 1, *, update: bool = True) -> None:
    """Create the streams, and bring an existing one's configuration up to date when `update`.

    On a secured bus only the migration user may update a stream (`deploy/nats/auth.conf`): a service
    under its own user creates what is missing and warns about a configuration that differs, which
    ``python -m rebal.migrate`` brings up to date."""
    js = broker.config.connection_state.stream
    configs = [spec.config(replicas) for spec in STREAMS] + [spec.config(replicas) for spec in BUCKETS]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            if not update:
                log.warning(
                    "stream %s is configured differently from what this version declares; run the"
                    " migration (python -m rebal.migrate) to update it",
                    config.name,
                )
                continue
            await js.update_stream(config)


# How long a publish waits for JetStream's acknowledgement. FastStream's default (0.5 s) failed publishes
# on a busy two-core machine (a burst of 200 concurrent publishes, CI); a retry under the same message id
# is safe anyway, but a slow ack is not a failure.
PUBLISH_ACK_TIMEOUT_SECONDS = 5.0


class PayloadStore:
    """The Object Store buckets of by-reference payloads: producers put, consumers fetch (each payload
    once per process: the last `FETCHED_KEPT` are kept by digest) and check the digest."""

    def __init__(self, js: Callable[[], JetStreamContext]) -> None:
        self._js = js
        self._fetched: OrderedDict[str, bytes] = OrderedDict()

    def _bucket(self, name: str) -> ObjectStore:
        return ObjectStore(name, subjects.bucket_stream(name), self._js())

    async def put(self, event: Event, data: bytes) -> PayloadRef:
        """Store `data` (the payload of `event`) in the bucket of its topic; its reference. The name is
        derived from the event and the content, so a name never stands for two contents: a redelivered
        cause that makes the same event again finds its object there and leaves it (written again,
        nats-py would drop the chunks a consumer may be reading)."""
        bucket = subjects.PAYLOAD_BUCKETS[event.topic]
        digest = payloads.digest_of(data)
        name = f"{event.portfolio_id}/{event.event_id}/{base64.urlsafe_b64decode(digest[8:]).hex()[:16]}"
        store = self._bucket(bucket)
        try:
            await store.get_info(name)
        except ObjectNotFoundError:
            options = api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)
            await store.put(name, data, api.ObjectMeta(name=name, options=options))
        metrics.PAYLOAD_BYTES.labels(topic=event.topic.name).observe(len(data))
        return PayloadRef(bucket=bucket, name=name, digest=digest, size=len(data), encoding=payloads.ENCODING)

    async def fetch(self, ref: PayloadRef) -> bytes:
        """The object `ref` names (raises `PayloadError` when it is not there or does not match)."""
        kept = self._fetched.get(ref.digest)
        if kept is not None:
            self._fetched.move_to_end(ref.digest)
            return kept
        where = f"payload {ref.bucket}/{ref.name}"
        if ref.bucket not in subjects.PAYLOAD_BUCKETS.values():
            raise PayloadError(f"{where}: {ref.bucket} is not one of Rebal's payload buckets")
        into = io.BytesIO()  # written chunk by chunk (nats-py appends to bytes otherwise: quadratic)
        try:
            reading = self._bucket(ref.bucket).get(ref.name, writeinto=into)
            await asyncio.wait_for(reading, FETCH_TIMEOUT_SECONDS)
        except ObjectNotFoundError:
            raise PayloadError(f"{where} is not in its bucket (expired, or never stored)") from None
        except DigestMismatchError:
            raise PayloadError(f"{where} does not match the digest its bucket recorded") from None
        data = into.getvalue()
        if payloads.digest_of(data) != ref.digest:
            raise PayloadError(f"{where} does not match the event's digest {ref.digest}")
        self._fetched[ref.digest] = data
        while len(self._fetched) > FETCHED_KEPT:
            self._fetched.popitem(last=False)
        return data

    async def whole(self, event: E) -> E:
        """`event` with its large part back when it travelled by reference (raises `PayloadError` when
        the payload cannot be read); as it is otherwise. Decoded and validated off the event loop."""
        ref = getattr(event, "payload_ref", None)
        if ref is None:
            return event
        data = await self.fetch(ref)
        return await asyncio.to_thread(_hydrated, event, data, ref)


def _hydrated(event: E, data: bytes, ref: PayloadRef) -> E:
    fields = payloads.decode(type(event), data, ref)
    try:
        return payloads.hydrate(event, fields)
    except ValidationError as exc:
        raise PayloadError(f"payload {ref.bucket}/{ref.name}: invalid {event.type}: {_brief(exc)}") from None


_STORES: weakref.WeakKeyDictionary[NatsBroker, PayloadStore] = weakref.WeakKeyDictionary()


def payload_store(broker: NatsBroker) -> PayloadStore:
    """The broker's `PayloadStore` (one per broker: its fetched payloads are shared by its consumers)."""
    store = _STORES.get(broker)
    if store is None:
        store = _STORES[broker] = PayloadStore(lambda: broker.config.connection_state.stream)
    return store


class Publisher:
    """Publishes events with ``Nats-Msg-Id`` = event id; tells whether the server kept or dropped it.
    An event larger than `INLINE_LIMIT_BYTES` sends its large part by reference (see the module)."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, event: Event, body: Body | None = None) -> bool:
        """True when stored, False when the server dropped it as a duplicate of an earlier publish.

        `body`: the event's large fields given apart (`event` has them empty), as the core made them: a
        small one is put into the event, a large one is encoded straight into the Object Store (no
        model per order). Raises `PublishFailed` when the event cannot be published."""
        if body is not None and body.rows > payloads.INLINE_ROWS:
            event = await self._by_reference(event, lambda: body.encode(type(event)), body.rows)
            data = event.model_dump_json().encode()
        else:
            if body is not None:
                event = body.attach(event)
            data = event.model_dump_json().encode()
            if len(data) > INLINE_LIMIT_BYTES:
                if not payloads.offloadable(type(event)):
                    raise PublishFailed(
                        f"{event.type} {event.event_id} is {_size(len(data))}, over the"
                        f" {_size(INLINE_LIMIT_BYTES)} an event may carry in its message, and has no large"
                        " part to send by reference"
                    )
                event = await self._by_reference(event, functools.partial(payloads.encode, event), None)
                data = event.model_dump_json().encode()
        subject = event.subject
        try:
            ack = await self._broker.publish(
                data,
                subject=subject,
                headers={"Nats-Msg-Id": str(event.event_id)},
                stream=stream_of(subject).name,
                timeout=PUBLISH_ACK_TIMEOUT_SECONDS,
            )
        except MaxPayloadError:
            raise PublishFailed(
                f"{event.type} {event.event_id} ({_size(len(data))}) is over the server's max_payload"
            ) from None
        # FastStream's in-memory test broker acknowledges nothing: count that as stored.
        duplicate = bool(ack is not None and ack.duplicate)
        metrics.PUBLISHED.labels(topic=event.topic.name, duplicate=str(duplicate).lower()).inc()
        return not duplicate

    async def _by_reference(self, event: E, encode: Callable[[], bytes], rows: int | None) -> E:
        data = await asyncio.to_thread(encode)
        try:
            ref = await payload_store(self._broker).put(event, data)
        except Exception as exc:
            if outage.is_outage(exc):
                raise  # NATS is away: the caller holds its message and tries again when it is back
            raise PublishFailed(
                f"the payload of {event.type} {event.event_id} ({_size(len(data))}"
                f"{f', {rows:,} records' if rows is not None else ''}) could not be stored in"
                f" {subjects.PAYLOAD_BUCKETS[event.topic]}: {type(exc).__name__}: {exc}"
            ) from exc
        return payloads.slim(event, ref)

    async def dead_letter(self, service: str, raw: Msg, error: str) -> None:
        """Put a message on ``rebal.dlq.<service>`` with its raw payload, where it came from and why (the
        payload cut to fit a message when it is larger: the stream it came from still holds it)."""
        data: bytes = raw.data or b""
        if len(data) > INLINE_LIMIT_BYTES:
            error = f"{error} (payload cut to its first {_size(INLINE_LIMIT_BYTES)} of {_size(len(data))})"
            data = data[:INLINE_LIMIT_BYTES]
        try:
            payload, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(data).decode("ascii"), "base64"
        letter = DeadLettered(
            service=service,
            subject=raw.subject,
            payload=payload,
            encoding=encoding,
            headers={k: v for k, v in (raw.headers or {}).items() if isinstance(v, str)},
            error=error,
            received_at=datetime.now(UTC),
        )
        await self._broker.publish(
            letter.model_dump_json().encode(),
            subject=subjects.dead_letter(service),
            headers={
                "Nats-Msg-Id": str(derive_id("dead-letter", service, raw.subject, _sequence(raw), error))
            },
            stream=DEAD_LETTERS.name,
            timeout=PUBLISH_ACK_TIMEOUT_SECONDS,
        )
        metrics.DEAD_LETTERED.labels(service=service, topic=_topic_label(raw.subject)).inc()
        log.warning("dead-lettered a message from %s: %s", raw.subject, error)


async def latest(broker: NatsBroker, kind: type[E], key: str) -> E | None:
    """The last `kind` event published for `key` (a portfolio), read straight from the stream (its
    payload fetched when it travelled by reference).

    Services stay stateless across restarts: the stream is the record. None when there is none yet, or
    when the last one cannot be read (it was dead-lettered by its consumers already).
    """
    subject = kind.topic.subject(key)
    js = broker.config.connection_state.stream
    try:
        message = await js.get_last_msg(stream_of(subject).name, subject, direct=True)
    except NotFoundError:
        return None
    event = decode(kind, subject, message.data or b"")
    if not isinstance(event, str):
        try:
            return await payload_store(broker).whole(event)
        except PayloadError as exc:
            event = str(exc)
    log.warning("the last message on %s cannot be read: %s", subject, event)
    return None


class EventSink(Protocol):
    """Where a service's events go: the bus (`Publisher`), or a list in a test. `body`: the event's large
    fields given apart (`Publisher.publish`)."""

    async def publish(self, event: Event, body: Body | None = None) -> bool: ...


class History(Protocol):
    """Where the latest event of a kind for a portfolio can be read back."""

    async def latest(self, kind: type[E], key: str) -> E | None: ...

    async def latest_id(self, kind: type[Event], key: str) -> uuid.UUID | None:
        """Only the id of the latest event (cheap: no payload to validate)."""
        ...


@dataclass(frozen=True)
class StreamHistory:
    """`History` read from the JetStream streams themselves."""

    broker: NatsBroker

    async def latest(self, kind: type[E], key: str) -> E | None:
        return await latest(self.broker, kind, key)

    async def latest_id(self, kind: type[Event], key: str) -> uuid.UUID | None:
        subject = kind.topic.subject(key)
        js = self.broker.config.connection_state.stream
        try:
            message = await js.get_last_msg(stream_of(subject).name, subject, direct=True)
        except NotFoundError:
            return None
        try:
            return uuid.UUID((message.headers or {}).get("Nats-Msg-Id", ""))
        except ValueError:
            return None


def _sequence(raw: Msg) -> str:
    try:
        meta = raw.metadata
    except Exception:  # noqa: BLE001 - a plain (non-JetStream) message has no metadata
        return str(id(raw))
    return f"{meta.stream}:{meta.sequence.stream}"


def _deliveries(raw: Msg) -> int:
    try:
        return int(raw.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - a plain (non-JetStream) message is delivered once
        return 1


@asynccontextmanager
async def _working_on(held: Callable[[], Iterable[Msg]]) -> AsyncIterator[None]:
    """Tell the server the messages `held` returns are still being worked on, so a long handler (an
    executor run) or a wait for a dependency is not redelivered to another replica after
    `ACK_WAIT_SECONDS` (nor counted as a delivery)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_SECONDS / 3)
            for raw in list(held()):
                try:
                    await raw.in_progress()
                except Exception as exc:  # noqa: BLE001 - a lost heartbeat only risks a redelivery
                    log.warning("could not extend the ack deadline of a message on %s: %s", raw.subject, exc)
                    break

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def _stopping() -> bool:
    """Whether the running task was asked to stop (cancelled), even when the cancellation did not reach
    it: on Python 3.11, `asyncio.wait_for` (under every nats-py request, such as a JetStream publish's
    acknowledgement) returns a result that arrives together with the cancellation, and drops the
    cancellation. The request to stop is still counted (`Task.cancelling`)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_WAITING: weakref.WeakKeyDictionary[NatsBroker, dict[str, str]] = weakref.WeakKeyDictionary()


def waiting(broker: NatsBroker) -> dict[str, str]:
    """The durable consumers of `broker` holding messages until a dependency is back, and why."""
    return dict(_WAITING.get(broker, {}))


async def _through_outages(broker: NatsBroker, durable: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()` until it succeeds or fails for another reason than an outage (raised): while a
    dependency is unavailable, wait and try again, however long it takes."""
    pauses = 0
    since: float | None = None
    try:
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if _stopping():  # shutting down: nothing to wait for (the messages come back later)
                    raise asyncio.CancelledError from exc
                if not outage.is_outage(exc):
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                if since is None:
                    since = time.monotonic()
                    log.warning("%s holds its messages until a dependency is back: %s", durable, reason)
                    metrics.CONSUMER_WAITING.labels(consumer=durable).set(1)
                _WAITING.setdefault(broker, {})[durable] = reason
            await asyncio.sleep(HOLD_RETRY_SECONDS[min(pauses, len(HOLD_RETRY_SECONDS) - 1)])
            pauses += 1
    finally:
        if since is not None:
            log.warning("%s held its messages for %.1f s", durable, time.monotonic() - since)
            metrics.CONSUMER_WAITING.labels(consumer=durable).set(0)
            _WAITING.get(broker, {}).pop(durable, None)


@dataclass(frozen=True)
class _Consumer:
    """What the wrappers of a durable consumer need to retry, hold or dead-letter its messages."""

    broker: NatsBroker
    publisher: Publisher
    service: str
    durable: str
    topic: str

    async def outlasting(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await _through_outages(self.broker, self.durable, attempt)

    async def dead_letter(self, raw: Msg, reason: str) -> None:
        await self.outlasting(functools.partial(self.publisher.dead_letter, self.service, raw, reason))
        await raw.ack()

    async def whole(self, raw: Msg, event: E) -> E | None:
        """`event` with its payload when it travelled by reference (fetched through outages); None when
        the payload cannot be read: the message is dead-lettered with the reason."""
        if getattr(event, "payload_ref", None) is None:
            return event
        try:
            return await self.outlasting(functools.partial(payload_store(self.broker).whole, event))
        except PayloadError as exc:
            await self.dead_letter(raw, str(exc))
            return None

    async def retry_or_give_up(self, raw: Msg, reason: str) -> None:
        """The message failed on its content: redeliver it after a backoff, or dead-letter it for good."""
        delivered = _deliveries(raw)
        if delivered >= MAX_DELIVER:
            await self.dead_letter(raw, f"gave up after {delivered} deliveries: {reason}")
            return
        log.warning("handler for %s failed (delivery %d), retrying: %s", raw.subject, delivered, reason)
        metrics.HANDLER_RETRIES.labels(service=self.service, topic=self.topic).inc()
        await raw.nak(delay=BACKOFF_SECONDS[min(delivered, len(BACKOFF_SECONDS)) - 1])


def _topic_label(subject: str) -> str:
    parsed = subjects.parse(subject)
    return parsed[0].name if parsed is not None else "unknown"


def decode(kind: type[E], subject: str, body: bytes) -> E | str:
    """The event, or why it cannot be read (the reason goes with the dead letter)."""
    parsed = subjects.parse(subject)
    if parsed is not None and parsed[1] != subjects.VERSION:
        return f"unknown version v{parsed[1]} of {parsed[0].name} (this service reads v{subjects.VERSION})"
    try:
        event = kind.model_validate_json(body)
    except ValidationError as exc:
        return f"invalid {kind.__name__}: {_brief(exc)}"
    if parsed is not None and parsed[2] != event.subject_key:
        return f"subject names {parsed[2]!r} but the payload is about {event.subject_key!r}"
    return event


def decode_any(subject: str, body: bytes) -> Event | str:
    """Any known event or command, chosen by the subject's topic (for consumers of everything)."""
    parsed = subjects.parse(subject)
    if parsed is None:
        return f"not a Rebal subject: {subject}"
    kind = next((k for k in EVENT_TYPES.values() if k.topic == parsed[0]), None)
    if kind is None:
        return f"no event is published on {parsed[0].name}"
    return decode(kind, subject, body)


def _brief(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(repr(part) if "\x00" in str(part) else str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == TEXT_PATTERN:
            message = f"{error['input']!r} {bounds.text_problem(str(error['input']))}"
        parts.append(f"{where}: {message}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


Handler = Callable[[E], Awaitable[None]]


def consume(
    broker: NatsBroker,
    publisher: Publisher,
    *,
    service: str,
    kind: type[E],
    durable: str,
    handler: Handler[E],
    key: str = "*",
) -> None:
    """Subscribe `handler` to every version of `kind`'s subject with a durable, explicitly acked consumer.

    It is a pull consumer: replicas of a service pull from the same durable consumer, so each message is
    handled by one of them.
    """

    def read(subject: str, body: bytes) -> E | str:
        return decode(kind, subject, body)

    _subscribe(
        broker, publisher, service, kind.topic.any_version(key), durable, read, handler, kind.topic.name
    )


class Durable(NamedTuple):
    """A durable consumer: its stream, its name and the subjects it takes."""

    stream: str
    name: str
    subject: str


_CONSUMERS: weakref.WeakKeyDictionary[NatsBroker, list[Durable]] = weakref.WeakKeyDictionary()


def consumers_of(broker: NatsBroker) -> list[Durable]:
    """Every durable consumer registered on `broker`: what the service's NATS user must be allowed to
    use (`deploy/nats/auth.conf`), and whose backlog it reports."""
    return list(_CONSUMERS.get(broker, []))


def _register(broker: NatsBroker, subject: str, durable: str) -> None:
    _CONSUMERS.setdefault(broker, []).append(Durable(stream_of(subject).name, durable, subject))


def _subscribe(
    broker: NatsBroker,
    publisher: Publisher,
    service: str,
    subject: str,
    durable: str,
    read: Callable[[str, bytes], E | str],
    handler: Handler[E],
    topic: str,
) -> None:
    spec = stream_of(subject)
    _register(broker, subject, durable)
    consumer = _Consumer(broker, publisher, service, durable, topic)
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_SECONDS,
        max_deliver=MAX_DELIVER,
        deliver_policy=api.DeliverPolicy.ALL,
    )

    @broker.subscriber(
        subject,
        stream=spec.jstream(),
        durable=durable,
        pull_sub=PullSub(batch_size=PULL_BATCH, timeout=PULL_TIMEOUT_SECONDS),
        config=config,
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def receive(message: NatsMessage) -> None:
        started = time.perf_counter()
        raw: Msg = message.raw_message
        read_event = read(raw.subject, message.body)
        if isinstance(read_event, str):
            await consumer.dead_letter(raw, read_event)
            return
        try:
            async with _working_on(lambda: (raw,)):
                event = await consumer.whole(raw, read_event)
                if event is None:
                    return
                await consumer.outlasting(functools.partial(handler, event))
        except PublishFailed as exc:  # trying again changes nothing: said at once, not after the retries
            log.error("%s could not publish what a message on %s asked for: %s", durable, raw.subject, exc)
            await consumer.dead_letter(raw, f"could not publish: {exc}")
            return
        except Exception as exc:  # a failure on the message is retried, then dead-lettered
            if _stopping():  # not the message's: it comes back after the ack wait
                raise asyncio.CancelledError from exc
            await consumer.retry_or_give_up(raw, f"{type(exc).__name__}: {exc}")
            return
        await message.ack()
        metrics.HANDLED.labels(service=service, topic=topic).observe(time.perf_counter() - started)


BatchHandler = Callable[[Sequence[E]], Awaitable[None]]


def consume_batch(
    broker: NatsBroker,
    publisher: Publisher,
    *,
    service: str,
    kind: type[E],
    durable: str,
    handler: BatchHandler[E],
    batch_size: int,
) -> BatchConsumer[E]:
    """Like `consume`, for high-rate events: up to `batch_size` messages per fetch, handled in stream
    order by one call, then each acked; unreadable ones are dead-lettered, a failed call is split in
    halves until the messages that fail alone are found, and only those are retried with backoff, then
    dead-lettered. It starts and stops with its service (`service.build`, or `start_batch_consumers` in
    tests)."""

    def read(subject: str, body: bytes) -> E | str:
        return decode(kind, subject, body)

    consumer = BatchConsumer(
        broker,
        publisher,
        service,
        kind.topic.any_version(),
        durable,
        read,
        handler,
        kind.topic.name,
        batch_size,
    )
    _BATCH_CONSUMERS.setdefault(broker, []).append(consumer)
    _register(broker, consumer.subject, durable)
    return consumer


def consume_all_batch(
    broker: NatsBroker,
    publisher: Publisher,
    *,
    service: str,
    durable: str,
    filter_subject: str,
    handler: BatchHandler[Event],
    batch_size: int,
) -> BatchConsumer[Event]:
    """Every known event (or command) under `filter_subject`, in batches handled in stream order."""
    consumer: BatchConsumer[Event] = BatchConsumer(
        broker, publisher, service, filter_subject, durable, decode_any, handler, "any", batch_size
    )
    _BATCH_CONSUMERS.setdefault(broker, []).append(consumer)
    _register(broker, consumer.subject, durable)
    return consumer


@dataclass
class BatchConsumer(Generic[E]):
    """A durable consumer read in batches, in order: the server pushes messages (at most
    4 x `batch_size` unacknowledged), a callback buffers them, and one loop hands them on in batches.

    Not FastStream's batch pull subscriber: it keeps fetching until a whole batch is there or its
    timeout runs out, and a fetch that times out empty raises an error that kills its loop; the
    restarted loop can leave a pull request on the server that captures messages until their ack wait
    expires. Not nats-py's `fetch` either: it waits on a timer for every message (measured: 17k
    returns/s; the buffer: see bench/pipeline.py in README).
    """

    broker: NatsBroker
    publisher: Publisher
    service: str
    subject: str
    durable: str
    read: Callable[[str, bytes], E | str]
    handler: BatchHandler[E]
    topic: str
    batch_size: int
    _task: asyncio.Task[None] | None = None
    _subscription: Any = None

    async def start(self) -> None:
        js = self.broker.config.connection_state.stream
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_SECONDS,
            max_deliver=MAX_DELIVER,
            deliver_policy=api.DeliverPolicy.ALL,
            # Backpressure: the server sends no more than this many unacknowledged messages.
            max_ack_pending=4 * self.batch_size,
        )
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()

        async def arrive(message: Msg) -> None:
            self._buffer.append(message)
            self._arrived.set()

        self._subscription = await js.subscribe(
            self.subject,
            durable=self.durable,
            queue=self.durable,  # replicas share the consumer: each message goes to one of them
            stream=stream_of(self.subject).name,
            config=config,
            cb=arrive,
            manual_ack=True,
        )
        self._task = asyncio.create_task(self._run(), name=f"{self.service}:{self.durable}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._subscription is not None:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _run(self) -> None:
        # Until `stop` cancels it, whether or not the cancellation reaches an await (`_stopping`).
        while not _stopping():
            await self._arrived.wait()
            self._arrived.clear()
            while self._buffer and not _stopping():
                batch = self._buffer[: self.batch_size]
                del self._buffer[: self.batch_size]
                try:
                    # The buffered messages wait too: kept ours while this batch takes long (or waits).
                    async with _working_on(functools.partial(self._held, batch)):
                        await self._handle(batch)
                except Exception:  # unacked, the batch comes back after the ack wait
                    log.exception("%s could not settle a batch of %d", self.durable, len(batch))

    def _held(self, batch: Sequence[Msg]) -> list[Msg]:
        return [*batch, *self._buffer]

    async def _handle(self, batch: Sequence[Msg]) -> None:
        started = time.perf_counter()
        readable: list[tuple[Msg, E]] = []
        for raw in batch:
            event = self.read(raw.subject, raw.data)
            if isinstance(event, str):
                await self._consumer.dead_letter(raw, event)
                continue
            whole = await self._consumer.whole(raw, event)
            if whole is not None:
                readable.append((raw, whole))
        if readable:
            await self._settle(readable)
            elapsed = time.perf_counter() - started
            metrics.HANDLED.labels(service=self.service, topic=self.topic).observe(elapsed)

    @functools.cached_property
    def _consumer(self) -> _Consumer:
        return _Consumer(self.broker, self.publisher, self.service, self.durable, self.topic)

    async def _settle(self, part: Sequence[tuple[Msg, E]]) -> None:
        """Handle `part` in one call; when it fails on content, each half on its own, down to the
        messages that fail alone: only those are retried with backoff (then dead-lettered)."""
        try:
            await self._consumer.outlasting(functools.partial(self.handler, [event for _, event in part]))
        except Exception as exc:  # a failure on the content of one of the messages
            if _stopping():  # not the messages': they come back after the ack wait
                raise asyncio.CancelledError from exc
            if len(part) == 1:
                await self._consumer.retry_or_give_up(part[0][0], f"{type(exc).__name__}: {exc}")
                return
            middle = len(part) // 2
            await self._settle(part[:middle])
            await self._settle(part[middle:])
            return
        for raw, _ in part:
            await raw.ack()


_BATCH_CONSUMERS: weakref.WeakKeyDictionary[NatsBroker, list[BatchConsumer[Any]]] = (
    weakref.WeakKeyDictionary()
)


async def start_batch_consumers(broker: NatsBroker) -> None:
    """Start the batch consumers registered on `broker` (once it is connected and the streams exist)."""
    for consumer in _BATCH_CONSUMERS.get(broker, []):
        await consumer.start()


async def stop_batch_consumers(broker: NatsBroker) -> None:
    for consumer in _BATCH_CONSUMERS.get(broker, []):
        await consumer.stop()


def _size(count: int) -> str:
    return f"{count / 2**20:.2f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def subjects_consumed(kinds: Sequence[type[Event]]) -> list[str]:
    return [kind.topic.any_version() for kind in kinds]


def message_headers(message: NatsMessage) -> dict[str, Any]:
    return dict(message.headers or {})

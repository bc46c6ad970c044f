"""Operator commands over NATS, for the CLI: send one, then follow the run it starts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from rebal import bus, payloads, subjects, telemetry
from rebal.events import (
    Event,
    PlanFailed,
    RebalancePlanned,
    RunFinished,
    StartRebalance,
    derive_run_id,
    new_event,
)
from rebal.settings import NatsSettings

RECONNECTS = 10
# Besides the live subscriptions, the stream's last event of the awaited kind is checked this often: an
# event published while the connection was moving to another server is not missed.
STREAM_CHECK_SECONDS = 1.0


class NotRunning(Exception):
    """NATS, or a service the command needs, did not answer."""


class Unreadable(Exception):
    """The run's plan came by reference and its payload could not be read (the reason says why)."""


@dataclass(frozen=True)
class Outcome:
    command: StartRebalance
    plan: RebalancePlanned | PlanFailed | None
    finished: RunFinished | None


def login(server: str | NatsSettings) -> NatsSettings:
    """The servers and the user to connect as: a bare URL connects anonymously (an open bus)."""
    return server if isinstance(server, NatsSettings) else NatsSettings(url=server)


@asynccontextmanager
async def connected(server: str | NatsSettings, timeout: float = 3.0) -> AsyncIterator[Client]:
    """A client of the bus at ``server``: a URL, or the settings naming the NATS user and its password
    (the client context's, which `make run` writes, or ``REBAL__NATS__USER``/``PASSWORD_FILE``)."""

    errors: list[Exception] = []

    async def quiet(error: Exception) -> None:
        """nats-py prints every failed attempt with a traceback by default; the caller reports once."""
        errors.append(error)

    settings = login(server)
    url = settings.url
    password = settings.password.get_secret_value() if settings.password is not None else None
    try:
        client = await asyncio.wait_for(
            nats.connect(
                settings.servers,
                user=settings.user,
                password=password if settings.user is not None else None,
                connect_timeout=timeout,
                # Reconnect (to another server of a cluster) while following a run, a few times only.
                max_reconnect_attempts=RECONNECTS,
                reconnect_time_wait=0.2,
                error_cb=quiet,
            ),
            timeout * 2,
        )
    except (NoServersError, OSError, NatsTimeout, TimeoutError, NatsError) as exc:
        # An answer refusing the client (no such user, a wrong password, an anonymous client) is why.
        refusal = next((str(e) for e in errors if "authorization" in str(e).lower()), None)
        if refusal is not None:
            as_whom = f"as {settings.user}" if settings.user is not None else "without a user"
            raise NotRunning(f"NATS at {url} refused the connection {as_whom}: {refusal}") from None
        raise NotRunning(f"cannot reach NATS at {url}: {exc or type(exc).__name__}") from None
    try:
        yield client
    finally:
        try:
            await client.drain()
        except (ConnectionReconnectingError, ConnectionClosedError, NatsTimeout):
            await client.close()  # moving to another server of the cluster: nothing left to flush


async def rebalance(
    url: str | NatsSettings, portfolio: str, *, dry_run: bool, band: Decimal, wait: bool, timeout: float
) -> Outcome:
    """Publish `StartRebalance` and, when `wait`, follow its run until planned (and finished, if live)."""
    command = new_event(
        StartRebalance,
        key=uuid.uuid4(),  # an operator's command has no cause on the bus: it is new each time
        now=datetime.now(UTC),
        portfolio_id=portfolio,
        dry_run=dry_run,
        band=band,
        requested_by="cli",
    )
    run_id = derive_run_id(command)
    async with connected(url) as client:
        seen: asyncio.Queue[Event] = asyncio.Queue()

        async def keep(message: Msg) -> None:
            event = bus.decode_any(message.subject, message.data)
            if not isinstance(event, str) and event.correlation_id == run_id:
                await seen.put(event)

        if wait:
            for topic in (RebalancePlanned.topic, PlanFailed.topic, RunFinished.topic):
                await client.subscribe(topic.subject(portfolio), cb=keep)
        try:
            # The root of the rebalance's trace (when tracing is on): planner and executor continue it.
            with telemetry.operator_span("rebal rebalance", portfolio=portfolio):
                await client.jetstream().publish(
                    command.subject,
                    command.model_dump_json().encode(),
                    stream=subjects.COMMANDS_STREAM,
                    headers=dict(telemetry.inject({"Nats-Msg-Id": str(command.event_id)})),
                    timeout=timeout,
                )
        except NatsTimeout:
            raise NotRunning("NATS did not acknowledge the command: are the services running?") from None
        if not wait:
            return Outcome(command, None, None)
        answer = await _next(
            seen,
            client,
            portfolio,
            run_id,
            (RebalancePlanned, PlanFailed),
            timeout,
            "no plan: is the planner running?",
        )
        assert isinstance(answer, RebalancePlanned | PlanFailed)
        plan: RebalancePlanned | PlanFailed = answer
        try:  # a large plan comes by reference: its orders from the Object Store
            if isinstance(answer, RebalancePlanned):
                plan = await bus.PayloadStore(client.jetstream).whole(answer)
        except payloads.PayloadError as exc:
            raise Unreadable(f"the plan of run {run_id} cannot be read: {exc}") from None
        finished = None
        if isinstance(plan, RebalancePlanned) and not dry_run:
            why = "the run did not finish: is the executor running?"
            end = await _next(seen, client, portfolio, run_id, (RunFinished,), timeout, why)
            assert isinstance(end, RunFinished)
            finished = end
    return Outcome(command, plan, finished)


async def _next(
    queue: asyncio.Queue[Event],
    client: Client,
    portfolio: str,
    run_id: uuid.UUID,
    kinds: tuple[type[Event], ...],
    timeout: float,
    why: str,
) -> Event:
    """The run's next event of one of `kinds`: from the live subscriptions, or from the stream."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise NotRunning(f"{why} (waited {timeout:g} s)")
        try:
            event = await asyncio.wait_for(queue.get(), min(left, STREAM_CHECK_SECONDS))
        except TimeoutError:
            stored = await _last_of_run(client, portfolio, run_id, kinds)
            if stored is not None:
                return stored
            continue
        if isinstance(event, kinds):
            return event


async def _last_of_run(
    client: Client, portfolio: str, run_id: uuid.UUID, kinds: tuple[type[Event], ...]
) -> Event | None:
    js = client.jetstream()
    for kind in kinds:
        subject = kind.topic.subject(portfolio)
        try:
            message = await js.get_last_msg(subjects.EVENTS_STREAM, subject, direct=True)
        except (NotFoundError, NatsTimeout, NoRespondersError, ConnectionClosedError):
            continue
        event = bus.decode_any(subject, message.data or b"")
        if not isinstance(event, str) and event.correlation_id == run_id:
            return event
    return None

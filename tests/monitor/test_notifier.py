"""The notifier on a real Postgres and real HTTP receivers: what the journal and the planner enqueue reaches
a signed webhook and apprise URLs, once each, retried through failures, given up on a refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from rebal import db
from rebal.events import HaltTrading, RunFinished, derive_id, new_event
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.journal import record_many
from rebal_monitor.notifier import Notifier
from rebal_monitor.settings import NotifySettings
from tests.webhooks import Receiver, receiving

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
SECRET = "s3cret-shared"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as kept:
        yield kept


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    yield pool
    await pool.close()


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def finished(status: str, key: str = "r1") -> RunFinished:
    return new_event(
        RunFinished,
        key=key,
        now=NOW,
        portfolio_id="demo",
        correlation_id=derive_id("run", key),
        plan_id=derive_id("plan", key),
        status=status,
        placed=2,
        filled=2,
        skipped=0,
        failed=0,
    )


def notifier(pool: asyncpg.Pool, clock: Clock, **settings: Any) -> Notifier:
    """A notifier the test drives (`deliver_due`), rather than its own loop."""
    return Notifier(lambda: pool, NotifySettings(**settings), clock)


async def test_a_run_that_ends_reaches_the_webhook_signed_and_once(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    clock = Clock()
    sender = notifier(pool, clock, webhook_url=receiver.url, webhook_secret=SECRET)
    receiver.statuses = [500, 503]  # down twice, then up
    event = finished("completed")
    await record_many(pool, [event, event])  # redelivered: journaled (and notified) once
    for seconds in (0, 2, 6, 60):
        clock.now = NOW + timedelta(seconds=seconds)
        await sender.deliver_due()
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Rebal-Signature-256"] == expected
    payload = json.loads(body)
    assert headers["X-Rebal-Delivery"] == payload["id"] and headers["X-Rebal-Event"] == "run_finished"
    assert payload["kind"] == "run_finished" and payload["portfolio_id"] == "demo"
    assert payload["title"] == f"demo: run {event.correlation_id} completed"
    assert payload["data"]["status"] == "completed"
    assert {h["X-Rebal-Delivery"] for h, _ in receiver.received} == {payload["id"]}  # the same on every retry
    await sender.deliver_due()
    assert len(receiver.received) == 3
    await sender.stop()


async def test_a_refusal_is_given_up_at_once_and_other_channels_still_get_it(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    clock = Clock()
    sender = notifier(
        pool,
        clock,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        apprise_urls=[f"json://{receiver.base.removeprefix('http://')}/apprise"],
    )
    receiver.statuses = [401]
    halt = new_event(HaltTrading, key="h", now=NOW, portfolio_id="demo", reason="exchange maintenance")
    await record_many(pool, [halt])
    await sender.deliver_due()
    clock.now = NOW + timedelta(hours=1)
    await sender.deliver_due()
    paths = sorted(headers.get("X-Rebal-Event", "apprise") for headers, _ in receiver.received)
    assert paths == ["apprise", "halted"]  # the webhook's 401 once, never again; apprise's JSON once
    apprised = next(json.loads(body) for headers, body in receiver.received if "X-Rebal-Event" not in headers)
    assert apprised["title"] == "demo: trading halted by operator"
    assert apprised["message"] == "exchange maintenance"
    rows = await pool.fetch(
        "SELECT channel, attempts, failed_at IS NOT NULL AS failed FROM notification_deliveries"
    )
    assert sorted((r["channel"], r["attempts"], r["failed"]) for r in rows) == [
        ("apprise:0", 1, False),
        ("webhook", 1, True),
    ]
    await sender.stop()


async def test_nothing_is_sent_with_no_channel_and_kinds_filter(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    clock = Clock()
    quiet = notifier(pool, clock)
    await record_many(pool, [finished("error", "r2")])
    assert await quiet.deliver_due() == 0
    picky = notifier(pool, clock, webhook_url=receiver.url, webhook_secret=SECRET, kinds=["halted"])
    await record_many(pool, [finished("error", "r3")])
    assert await picky.deliver_due() == 0
    assert receiver.received == []
    for sender in (quiet, picky):
        await sender.stop()


async def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(ValueError, match=r"notify\.webhook_secret: a webhook needs a shared secret"):
        NotifySettings(webhook_url="http://127.0.0.1:1/hook")

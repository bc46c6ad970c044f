"""The notifier: the outbox of notifications (`rebal.notifications`) delivered to every configured channel.

Channels: ``webhook`` (an HTTP POST of the notification's JSON, signed) and ``apprise:N`` (the N-th apprise
URL: Telegram, Slack, e-mail, …; the URL itself, a secret, is never stored or logged). Each new
notification gets one delivery per channel (and per kind the settings let through); each delivery is tried
until it succeeds, backing off ``retry_base x 2^(attempt-1)`` seconds (at most ``retry_max``), and given up
after ``max_attempts`` (logged, counted in `rebal_notifications_total{outcome="failed"}`). A webhook
answering 4xx (but 408 and 429) is refused for good at once: trying again would not change it.

The webhook's request (docs/autopilot.md): ``POST`` with ``Content-Type: application/json``, the body the
notification's JSON, ``X-Rebal-Signature-256: sha256=<hex HMAC-SHA256 of the body under the shared
secret>``, ``X-Rebal-Delivery: <notification id>`` (the same on every retry: a receiver drops what it has
seen) and ``X-Rebal-Event: <kind>``.

Replicas share the work: a delivery is claimed with ``FOR UPDATE SKIP LOCKED`` while it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import apprise
import asyncpg
import httpx

from rebal import metrics
from rebal_monitor.settings import NotifySettings

log = logging.getLogger("rebal.monitor.notify")
SIGNATURE_HEADER = "X-Rebal-Signature-256"
DELIVERY_HEADER = "X-Rebal-Delivery"
EVENT_HEADER = "X-Rebal-Event"
WEBHOOK = "webhook"
APPRISE = "apprise"
CLAIM_BATCH = 20
# A webhook's answers worth trying again; any other 4xx will not change by itself.
RETRIED_4XX = frozenset({408, 425, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Attempt:
    """How one send went: delivered, or why not and whether it is worth trying again."""

    ok: bool
    error: str = ""
    final: bool = False


@dataclass
class Notifier:
    pool: Callable[[], asyncpg.Pool | None]
    settings: NotifySettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _task: asyncio.Task[None] | None = None
    _client: httpx.AsyncClient | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def channels(self) -> list[str]:
        named = [WEBHOOK] if self.settings.webhook_url is not None else []
        return named + [f"{APPRISE}:{n}" for n in range(len(self.settings.apprise_urls))]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Deliver now (a notification was just enqueued) rather than at the next poll."""
        self._wake.set()

    async def _work(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
            self._wake.clear()
            try:
                while await self.deliver_due():
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # the database is away
                log.warning("delivering notifications failed (%s); trying again", exc)
            except Exception:  # a defect must not silence every later notification: said, and tried again
                log.exception("delivering notifications failed; trying again")

    async def deliver_due(self) -> int:
        """Fan out the new notifications, then send what is due; how many deliveries were tried."""
        pool = self.pool()
        if pool is None:
            return 0
        await self._fan_out(pool)
        tried = 0
        async with pool.acquire() as connection, connection.transaction():
            due = await connection.fetch(
                "SELECT d.notification_id, d.channel, d.attempts, n.kind, n.payload::text AS payload"
                " FROM notification_deliveries d JOIN notifications n USING (notification_id)"
                " WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= $1"
                " ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
                self.clock(),
                CLAIM_BATCH,
            )
            for row in due:
                tried += 1
                attempt = await self._send(row["channel"], row["kind"], json.loads(row["payload"]))
                await self._settle(connection, row, attempt)
        return tried

    async def _fan_out(self, pool: asyncpg.Pool) -> None:
        channels, kinds = self.channels, list(self.settings.kinds)
        async with pool.acquire() as connection, connection.transaction():
            fresh = await connection.fetch(
                "SELECT notification_id, kind FROM notifications WHERE NOT fanned_out"
                " ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED"
            )
            for row in fresh:
                if row["kind"] in kinds:
                    await connection.executemany(
                        "INSERT INTO notification_deliveries (notification_id, channel, next_attempt_at)"
                        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        [(row["notification_id"], channel, self.clock()) for channel in channels],
                    )
            await connection.execute(
                "UPDATE notifications SET fanned_out = true WHERE notification_id = ANY($1::uuid[])",
                [row["notification_id"] for row in fresh],
            )

    async def _send(self, channel: str, kind: str, payload: dict[str, Any]) -> Attempt:
        if channel == WEBHOOK:
            return await self._webhook(kind, payload)
        name, _, index = channel.partition(":")
        urls = self.settings.apprise_urls
        if name != APPRISE or not index.isdigit() or int(index) >= len(urls):
            return Attempt(False, f"channel {channel} is no longer configured", final=True)
        return await _apprise(urls[int(index)].get_secret_value(), payload, self.settings.timeout_seconds)

    async def _webhook(self, kind: str, payload: dict[str, Any]) -> Attempt:
        url, secret = self.settings.webhook_url, self.settings.webhook_secret
        if url is None or secret is None:
            return Attempt(False, "the webhook is no longer configured", final=True)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_seconds)
        body = body_of(payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret.get_secret_value().encode(), body),
            DELIVERY_HEADER: payload["id"],
            EVENT_HEADER: kind,
        }
        try:
            response = await self._client.post(str(url), content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}"[:300])
        if response.is_success:
            return Attempt(True)
        final = 400 <= response.status_code < 500 and response.status_code not in RETRIED_4XX
        return Attempt(False, f"HTTP {response.status_code}", final=final)

    async def _settle(self, connection: Any, row: asyncpg.Record, attempt: Attempt) -> None:
        channel = row["channel"].partition(":")[0]
        attempts = row["attempts"] + 1
        now = self.clock()
        if attempt.ok:
            outcome = "delivered"
            await connection.execute(
                "UPDATE notification_deliveries SET attempts = $3, delivered_at = $4, last_error = NULL"
                " WHERE notification_id = $1 AND channel = $2",
                row["notification_id"],
                row["channel"],
                attempts,
                now,
            )
        elif attempt.final or attempts >= self.settings.max_attempts:
            outcome = "failed"
            await connection.execute(
                "UPDATE notification_deliveries SET attempts = $3, failed_at = $4, last_error = $5"
                " WHERE notification_id = $1 AND channel = $2",
                row["notification_id"],
                row["channel"],
                attempts,
                now,
                attempt.error,
            )
            log.error(
                "notification %s (%s) not delivered to %s after %d attempts: %s",
                row["notification_id"],
                row["kind"],
                row["channel"],
                attempts,
                attempt.error,
            )
        else:
            outcome = "retried"
            wait = min(
                self.settings.retry_base_seconds * 2 ** (attempts - 1), self.settings.retry_max_seconds
            )
            await connection.execute(
                "UPDATE notification_deliveries SET attempts = $3, next_attempt_at = $4, last_error = $5"
                " WHERE notification_id = $1 AND channel = $2",
                row["notification_id"],
                row["channel"],
                attempts,
                now + timedelta(seconds=wait),
                attempt.error,
            )
        metrics.NOTIFICATIONS.labels(channel=channel, outcome=outcome).inc()


async def _apprise(url: str, payload: dict[str, Any], timeout: float) -> Attempt:
    """One apprise URL told the notification's title and text (apprise's plugins do the rest)."""
    sender = apprise.Apprise()
    if not sender.add(url):
        return Attempt(False, "apprise does not understand this URL", final=True)
    try:
        sent = await asyncio.wait_for(
            asyncio.to_thread(
                sender.notify, body=payload["text"] or payload["title"], title=payload["title"]
            ),
            timeout * 2,
        )
    except TimeoutError:
        return Attempt(False, "apprise timed out")
    return Attempt(True) if sent else Attempt(False, "apprise could not send it")

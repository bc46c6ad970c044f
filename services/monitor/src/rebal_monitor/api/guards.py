"""What keeps one client from taking the API from the others: bounded bodies, a rate per token, and a
brief memory of what is costly to learn.

- `BodyLimit` (ASGI middleware, before routing and authentication): a body announced larger than the
  limit is refused (413) without reading it; one that grows past the limit while it arrives is refused
  as soon as it does; one that does not arrive within the timeout is refused (408). A body within the
  limit is handed to the route as it came.
- `RateLimit`: at most N requests per token in any one second (a moving window, `limits`' in-memory
  storage); beyond it, 429 with ``Retry-After``.
- `Kept`: values kept for a short while by key, each made by one caller while the others wait for it,
  forgotten by group when what they were made from changes (the answers of ``/status`` and
  ``/portfolio/history``: under a crowd of clients, Postgres was asked the same thing by each);
  `Recent`, one such value (the peers' readiness in ``/status``: probing four services on every request
  was most of its cost).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

T = TypeVar("T")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over `max_bytes` (413) or slower than `timeout_seconds` (408)."""

    def __init__(self, app: Asgi, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.limit = f"{max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await _refuse(send, 413, f"the request body ({announced} bytes) is over the {self.limit} limit")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client went away: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await _refuse(send, 413, f"the request body is over the {self.limit} limit")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(send, 408, f"the request body did not arrive within {self.timeout_seconds:g} s")
            return
        body = b"".join(chunks)
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or ())
    return b"transfer-encoding" in headers or _content_length(scope) not in (None, 0)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The rest of the body is not read: the connection closes after the answer.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class RateLimit:
    """At most `per_second` requests per key (a token's scope) in any one second."""

    per_second: int
    storage: MemoryStorage = field(default_factory=MemoryStorage)

    def __post_init__(self) -> None:
        self.item = RateLimitItemPerSecond(self.per_second)
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def wait_for(self, key: str) -> float | None:
        """None when the request may go ahead (and counts it), else the seconds until it may."""
        if await self.limiter.hit(self.item, key):
            return None
        stats = await self.limiter.get_window_stats(self.item, key)
        return max(stats.reset_time - time.time(), 0.0)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class Kept(Generic[T]):
    """Values by key, each made by one caller while the others with the same key wait for that making
    (never a crowd of them), and kept `ttl_seconds` from when the making began (0: nothing kept, nothing
    shared). Each value belongs to a group (the portfolio): `forget(group)` drops the group's values at
    once, and a making under way when it is called is handed to its waiters but not kept (it may have read
    before the change); callers after it make anew. While a value that has merely grown old (nothing
    forgotten) is made anew, callers get the old one, for at most another `ttl_seconds`: only its first
    caller waits (under load, a crowd waiting a second for the peers' health was the tail of /status)."""

    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    _values: dict[Hashable, tuple[float, Hashable, T]] = field(default_factory=dict)
    _making: dict[Hashable, tuple[Hashable, asyncio.Task[T]]] = field(default_factory=dict)
    _changes: collections.Counter[Hashable] = field(default_factory=collections.Counter)

    def peek(self, key: Hashable) -> T | None:
        """The value kept for `key` if it is fresh, else None (nothing is made)."""
        kept = self._values.get(key)
        if kept is None or self.clock() - kept[0] >= self.ttl_seconds:
            return None
        return kept[2]

    async def get(self, key: Hashable, group: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        if self.ttl_seconds <= 0:
            return await make()
        now = self.clock()
        kept = self._values.get(key)
        if kept is not None and now - kept[0] < self.ttl_seconds:
            return kept[2]
        making = self._making.get(key)
        if making is None:
            task = asyncio.ensure_future(self._make(key, group, make, now))
            making = self._making[key] = (group, task)
        elif kept is not None and now - kept[0] < 2 * self.ttl_seconds:
            return kept[2]  # the old value while someone makes the new one
        # A caller that goes away (its client disconnected) leaves the making to the others.
        return await asyncio.shield(making[1])

    def forget(self, group: Hashable) -> None:
        self._changes[group] += 1
        for key in [key for key, (_, of, _) in self._values.items() if of == group]:
            del self._values[key]
        for key in [key for key, (of, _) in self._making.items() if of == group]:
            del self._making[key]

    async def _make(
        self, key: Hashable, group: Hashable, make: Callable[[], Awaitable[T]], began: float
    ) -> T:
        changes = self._changes[group]
        try:
            value = await make()
        finally:
            if (making := self._making.get(key)) is not None and making[1] is asyncio.current_task():
                del self._making[key]
        if self._changes[group] == changes:
            now = self.clock()
            for old in [k for k, (at, _, _) in self._values.items() if now - at >= 2 * self.ttl_seconds]:
                del self._values[old]  # the memory holds what was asked lately, no more
            self._values[key] = (began, group, value)
        return value


@dataclass
class Recent(Generic[T]):
    """The value `make` gives, made again when it is older than `ttl_seconds`; callers that come while it
    is being made wait for that one making (never a crowd of them)."""

    make: Callable[[], Awaitable[T]]
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    kept: Kept[T] = field(init=False)

    def __post_init__(self) -> None:
        self.kept = Kept(self.ttl_seconds, self.clock)

    async def get(self) -> T:
        return await self.kept.get(None, None, self.make)

"""Pacing a ccxt venue: the request-weight budget in front of every request (`RequestBudget`), the
venue's order-count limits in front of every new order (`OrderRate`), and how a 429 is retried
(`Backoff`, after the venue's Retry-After)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["Backoff", "OrderRate", "RequestBudget", "retry_after_of"]


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RequestBudget:
    """The venue's rate limit in front of every request: ccxt's request costs (Binance: weight / 5) drawn
    from a bucket refilled on the wall clock at `per_second`, holding up to `capacity`.

    It replaces ccxt's own leaky bucket, which refills only while a request is waiting: the caller's work
    between requests (journal writes, sizing) never counted toward the next wait, so a run paid the rate
    limit's waits on top of all its other time. Like ccxt's, a request goes when the bucket is not in debt
    and may take it into debt by its cost (the next one waits the debt off)."""

    def __init__(
        self,
        per_second: float,
        capacity: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_second = per_second
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._at = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.per_second)
        self._at = now

    async def __call__(self, cost: float | None = None) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 0:
                await self._sleep(-self._tokens / self.per_second)
                self._refill()
            self._tokens -= 1.0 if cost is None else float(cost)


class OrderRate:
    """A venue's order-count limits in front of every new order: at most `per_10s` in any 10 seconds and
    `per_day` in any 24 hours (None: that limit is off); a placement (`sending`) waits until it fits. Binance
    refuses one more with 429 (-1015 "Too many new orders") and counts repeated 429s toward an IP ban (418).

    The venue counts an order when it ARRIVES, which we never see: only that it is after we sent it and
    before its answer came back. So an order counts from its answer (the latest its arrival can be) for a
    window's length, and from when it is sent until then it is in flight and fills a place in every window.
    Counting from the send instead let an order whose trip was shorter than one sent before it arrive
    inside the venue's window: a 100k-order run met 37,589 refusals."""

    def __init__(
        self,
        per_10s: int | None,
        per_day: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = [(10.0, n) for n in (per_10s,) if n] + [(86_400.0, n) for n in (per_day,) if n]
        self._clock = clock
        self._sleep = sleep
        # The answer times of the orders within each limit's window, oldest first (answers come back in
        # clock order, so appending keeps it sorted): each placement drops the ones that left it and looks
        # at one entry (a list of the day's orders, scanned at every placement, made 100k orders quadratic).
        self._answered: dict[float, deque[float]] = {span: deque() for span, _ in self._limits}
        self._in_flight = 0
        self._an_answer = asyncio.Event()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """The body sends one new order and has its answer (or an error) when it ends."""
        await self._wait_for_a_place()
        try:
            yield
        finally:
            self._in_flight -= 1
            answered_at = self._clock()
            for recent in self._answered.values():
                recent.append(answered_at)
            self._an_answer.set()

    async def _wait_for_a_place(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                wait: float | None = 0.0  # None: until an order in flight is answered
                for span, limit in self._limits:
                    recent = self._answered[span]
                    while recent and now - recent[0] >= span:
                        recent.popleft()
                    # The oldest answers that must leave the window for one more to fit.
                    leaving = self._in_flight + len(recent) - limit + 1
                    if leaving > len(recent):
                        wait = None
                    elif leaving > 0 and wait is not None:
                        wait = max(wait, span - (now - recent[leaving - 1]))
                if wait is None:
                    self._an_answer.clear()
                    await self._an_answer.wait()
                elif wait > 0:
                    await self._sleep(wait)
                else:
                    self._in_flight += 1
                    return


@dataclass(frozen=True)
class Backoff:
    """How a rate-limited request is retried inside the adapter (same request, same client order id).

    A 429 is retried up to `retries` times, after the venue's ``Retry-After`` when it sent one, else after
    ``base·2^(attempt-1)`` seconds; a wait longer than `max_seconds` is not slept: `VenueRateLimited` goes
    to the caller at once.
    """

    retries: int = 3
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        return retry_after if retry_after is not None else self.base_seconds * 2 ** (attempt - 1)

"""Pacing a ccxt venue: the request-weight budget in front of every request (`RequestBudget`), the
venue's order-count limits in front of every new order (`OrderRate`), and how a 429 is retried
(`Backoff`, after the venue's Retry-After)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
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
    `per_day` in any 24 hours (None: that limit is off); a placement waits until it fits. Binance refuses
    one more with 429 (-1015 "Too many new orders") and counts it against the IP's bans."""

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
        # The times of the orders sent within each limit's window, oldest first: each placement drops the
        # ones that left it and looks at one entry (a list of the day's orders, scanned at every
        # placement, made a 100k-order run quadratic).
        self._sent: dict[float, deque[float]] = {span: deque() for span, _ in self._limits}
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                wait = 0.0
                for span, limit in self._limits:
                    recent = self._sent[span]
                    while recent and now - recent[0] >= span:
                        recent.popleft()
                    if len(recent) >= limit:
                        wait = max(wait, span - (now - recent[-limit]))
                if wait <= 0:
                    for recent in self._sent.values():
                        recent.append(now)
                    return
                await self._sleep(wait)


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

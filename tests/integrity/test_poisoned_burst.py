"""Issue 19, point 2: one bad message in a burst costs only itself, in the tracker and in the monitor.

Before: with one return carrying ``positions: {"\\u0000": "0.1"}`` and one of ``"1e-20000"`` in a burst of
300, both services retried the whole batch the bad ones were in, then dead-lettered all of it (measured
on this test before the fix: see the report printed by the test and the commit message).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from rebal import bus
from rebal_devstack.pytest_plugin import FreshDatabase
from tests.integrity.storing import report, send, storing
from tests.messaging import collecting

BURST = 300


async def test_a_burst_with_two_poisoned_returns_stores_every_other_one_once(
    nats_url: str, database: FreshDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus, "BACKOFF_SECONDS", (0.05, 0.05, 0.05, 0.05))  # whatever is retried, quickly
    reports = [report(i) for i in range(BURST)]
    reports[100] = report(100, positions={"\u0000": "0.1"})
    reports[200] = report(200, period_return="1e-20000")
    async with collecting(nats_url) as letters, storing(nats_url, database.dsn) as stored:
        await send(nats_url, reports)
        settled: dict[str, int] = {}

        async def both_settled() -> bool:
            by_service = Counter(letter["service"] for letter in letters)
            settled.update(
                tracker=await stored.returns(),
                monitor=await stored.journaled(),
                tracker_letters=by_service["tracker"],
                monitor_letters=by_service["monitor"],
            )
            return (
                settled["tracker"] + settled["tracker_letters"] >= BURST
                and settled["monitor"] + settled["monitor_letters"] >= BURST
            )

        for _ in range(600):
            if await both_settled():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything still coming would change the figures below
        await both_settled()
        print(f"\nburst of {BURST}, 2 poisoned: {settled}")
        assert settled == {"tracker": 298, "monitor": 298, "tracker_letters": 2, "monitor_letters": 2}
        ts = await stored.pool.fetch("SELECT extract(epoch FROM ts)::bigint AS s FROM strategy_returns")
        assert len({row["s"] for row in ts}) == 298  # each once (the key is strategy and timestamp)
    reasons = sorted(letter["error"] for letter in letters if letter["service"] == "tracker")
    assert "no more than 100 decimal places" in reasons[0]
    assert "NUL character" in reasons[1]

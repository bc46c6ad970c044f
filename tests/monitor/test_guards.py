"""`Recent`: a costly answer made once for a crowd and kept for a while (the peers' health in /status)."""

from __future__ import annotations

import asyncio

import pytest

from rebal_monitor.api.guards import Recent, retry_after


async def test_a_crowd_waits_for_one_making_and_the_value_is_kept_until_it_is_old() -> None:
    now = [0.0]
    made: list[int] = []
    release = asyncio.Event()

    async def make() -> int:
        made.append(len(made))
        await release.wait()
        return len(made)

    recent = Recent(make, ttl_seconds=1.0, clock=lambda: now[0])
    crowd = [asyncio.ensure_future(recent.get()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*crowd) == [1] * 50
    assert made == [0]
    now[0] = 0.9
    assert await recent.get() == 1 and made == [0]
    now[0] = 1.0
    assert await recent.get() == 2 and made == [0, 1]


async def test_a_failed_making_is_not_kept() -> None:
    calls = []

    async def make() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("peer gone")
        return "ok"

    recent = Recent(make, ttl_seconds=60.0, clock=lambda: 0.0)
    with pytest.raises(RuntimeError, match="peer gone"):
        await recent.get()
    assert await recent.get() == "ok"


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(s) for s in (0.0, 0.2, 1.0, 1.01)] == ["1", "1", "1", "2"]

"""`Recent` and `Kept`: a costly answer made once for a crowd and kept for a while (the peers' health and
the answers of /status and /portfolio/history), by key, forgotten when what it was made from changes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from rebal_monitor.api.guards import Kept, Recent, retry_after


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


async def test_kept_values_are_shared_by_key_and_never_across_keys() -> None:
    made: list[tuple[str, ...]] = []
    release = asyncio.Event()
    kept: Kept[str] = Kept(ttl_seconds=1.0, clock=lambda: 0.0)

    def maker(key: tuple[str, ...]) -> Callable[[], Awaitable[str]]:
        async def make() -> str:
            made.append(key)
            await release.wait()
            return "/".join(key)

        return make

    keys = [("demo", "status", "operator"), ("demo", "status", "viewer"), ("other", "status", "operator")]
    crowd = [asyncio.ensure_future(kept.get(key, key[0], maker(key))) for key in keys * 20]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*crowd) == ["/".join(key) for key in keys] * 20
    assert sorted(made) == sorted(keys)  # one making per key, none shared between keys
    assert await kept.get(keys[1], "demo", maker(keys[1])) == "demo/status/viewer" and len(made) == 3
    assert kept.peek(keys[0]) == "demo/status/operator" and kept.peek(("demo", "history")) is None


async def test_forgetting_a_group_drops_its_values_and_the_making_under_way() -> None:
    version = ["before"]
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> str:
        seen = version[0]  # what was read before the change
        reading.set()
        await release.wait()
        return seen

    async def now() -> str:
        return version[0]

    kept: Kept[str] = Kept(ttl_seconds=1.0, clock=lambda: 0.0)
    assert await kept.get("other-status", "other", now) == "before"
    under_way = asyncio.ensure_future(kept.get("demo-status", "demo", slow))
    await reading.wait()
    version[0] = "after"
    kept.forget("demo")
    # Who asks after the change gets a fresh answer, never the one read before it...
    assert await kept.get("demo-status", "demo", now) == "after"
    release.set()
    assert await under_way == "before"  # (the caller who asked before it gets what was read then)
    # ... and the making under way is not kept in place of the fresh one.
    assert await kept.get("demo-status", "demo", now) == "after"
    assert await kept.get("other-status", "other", now) == "before"  # another group keeps its answer


async def test_nothing_is_kept_at_a_ttl_of_zero_and_old_values_go() -> None:
    now = [0.0]
    calls: list[int] = []

    async def make() -> int:
        calls.append(1)
        return len(calls)

    off: Kept[int] = Kept(ttl_seconds=0.0, clock=lambda: now[0])
    assert [await off.get("demo", "demo", make) for _ in range(3)] == [1, 2, 3]
    kept: Kept[int] = Kept(ttl_seconds=1.0, clock=lambda: now[0])
    for group in range(100):
        await kept.get(group, group, make)
    now[0] = 2.0
    await kept.get("new", "new", make)
    assert list(kept._values) == ["new"]  # bounded by what the last second asked


async def test_an_old_value_stands_while_its_successor_is_made_but_never_after_a_change() -> None:
    now = [0.0]
    release = asyncio.Event()
    made: list[int] = []

    async def make() -> int:
        made.append(1)
        number = len(made)
        if number > 1:
            await release.wait()
        return number

    kept: Kept[int] = Kept(ttl_seconds=1.0, clock=lambda: now[0])
    assert await kept.get("k", "demo", make) == 1
    now[0] = 1.5
    first = asyncio.ensure_future(kept.get("k", "demo", make))  # makes anew, waits for it
    await asyncio.sleep(0)
    assert await kept.get("k", "demo", make) == 1  # the others get the old value meanwhile
    kept.forget("demo")
    later = asyncio.ensure_future(kept.get("k", "demo", make))  # after a change: never the old value
    await asyncio.sleep(0)
    assert not later.done()
    release.set()
    assert (await first, await later) == (2, 3)
    now[0] = 3.6  # older than twice the ttl: nobody gets it any more
    release.clear()
    stale = asyncio.ensure_future(kept.get("k", "demo", make))
    again = asyncio.ensure_future(kept.get("k", "demo", make))
    await asyncio.sleep(0)
    assert not stale.done() and not again.done()
    release.set()
    assert (await stale, await again) == (4, 4)

"""Executor replicas never run two plans for one account at once (Postgres advisory locks)."""

from __future__ import annotations

import asyncio

import asyncpg

from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.locks import account_locks, lock_key


async def run(pool: asyncpg.Pool, accounts: list[tuple[str, str]], name: str, log: list[str]) -> None:
    async with account_locks(pool, accounts):
        log.append(f"{name} in")
        await asyncio.sleep(0.3)
        log.append(f"{name} out")


async def test_one_account_is_run_by_one_replica_at_a_time(database: FreshDatabase) -> None:
    # Two pools: two replicas, each with its own connections (advisory locks are per session).
    first, second = [await asyncpg.create_pool(database.dsn, min_size=1, max_size=2) for _ in range(2)]
    try:
        log: list[str] = []
        await asyncio.gather(
            run(first, [("paper", "demo/spot")], "a", log),
            run(second, [("paper", "demo/spot"), ("paper", "demo/margin")], "b", log),
        )
        assert log in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])

        log.clear()
        await asyncio.gather(  # different accounts run side by side
            run(first, [("paper", "demo/spot")], "a", log),
            run(second, [("paper", "demo/margin")], "b", log),
        )
        assert log[:2] == ["a in", "b in"] or log[:2] == ["b in", "a in"]
    finally:
        await first.close()
        await second.close()


async def test_a_crashed_replicas_locks_are_released(database: FreshDatabase) -> None:
    held = await asyncpg.connect(database.dsn)
    await held.execute("SELECT pg_advisory_lock($1)", lock_key("paper", "demo/spot"))
    pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=1)
    try:
        waiting = asyncio.create_task(run(pool, [("paper", "demo/spot")], "b", log := []))
        await asyncio.sleep(0.2)
        assert log == []  # blocked by the other session
        held.terminate()  # the holder dies: its session, and its lock, end
        await asyncio.wait_for(waiting, 5)
        assert log == ["b in", "b out"]
    finally:
        await pool.close()


def test_lock_keys_are_stable_signed_64_bit_integers() -> None:
    key = lock_key("paper", "demo/spot")
    assert key == lock_key("paper", "demo/spot") and key != lock_key("paper", "demo/margin")
    assert -(2**63) <= key < 2**63

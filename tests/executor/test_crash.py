"""Crash tests: the executor as a real process (`python -m rebal_executor`) on a real nats-server, Postgres
and the paper exchange, SIGKILLed again and again during one run at points observed from outside (journal
rows), then restarted. The run must complete with every order placed once at the venue, every fill counted
once, and the holdings exactly what an uninterrupted run gives."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import nats
import pytest

from rebal import bus
from rebal_devstack import _proc
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import Services
from tests.executor.test_executor import SPOT, order, paper, plan
from tests.messaging import fresh_nats
from tests.paper_support import migrated_pool

ROOT = Path(__file__).resolve().parents[2]
D = Decimal
EXECUTOR_ENV = {
    "REBAL__PAPER__AMPLITUDE": "0",
    "REBAL__PAPER__NOISE": "0",
    "REBAL__NATS__ACK_WAIT_SECONDS": "1",
    "REBAL__LIVE": "true",
}
SEED = {"BTC": D(1), "SOL": D(100), "USDT": D(1000)}
# Twelve legs: six sells, then six buys (enough quote: nothing is scaled, so the outcome is exact).
LEGS = (
    *(order("BTC/USDT", "sell", "0.01", 1) for _ in range(3)),
    *(order("SOL/USDT", "sell", "1", 1) for _ in range(3)),
    *(order("ETH/USDT", "buy", "0.1", 2) for _ in range(6)),
)
# 3 x (600 - 0.6) + 3 x (150 - 0.15) = 2247.75 in; 6 x (300 + 0.3) = 1801.8 out.
EXPECTED = {"BTC": D("0.97"), "SOL": D("97"), "ETH": D("0.6"), "USDT": D("1445.95")}
# Kill when the journal holds at least this many transitions (a run of 12 orders makes 4 + 12 x 3 = 40);
# 0 is "right after the plan was published" (before the executor journaled or acked it).
THRESHOLDS = (0, 3, 7, 12, 17, 22, 27, 32, 37)
# A restart costs a process start (mostly imports: ~2 s on an idle 2-core machine, far more under load).
DEADLINE_SECONDS = 300


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[str]:
    for server in fresh_nats(tmp_path):
        yield server.url


async def snapshot(pool: asyncpg.Pool) -> str:
    """Where the run was when it was killed, as the journal and the venue show it."""
    run = await pool.fetchval("SELECT state FROM execution.runs")
    if run is None:
        return "plan not journaled yet (not acked)"
    states = Counter(r["state"] for r in await pool.fetch("SELECT state FROM execution.orders"))
    venue = await pool.fetchval("SELECT count(*) FROM paper.orders")
    if states["created"]:
        return f"{run}: an order written, not sent"
    if states["submitted"] and venue > sum(n for s, n in states.items() if s != "submitted"):
        return f"{run}: an order taken by the venue, its answer not recorded"
    if states["submitted"]:
        return f"{run}: an order submitted, not at the venue yet"
    done = sum(states.values())
    return f"{run}: between legs ({done} orders done)" if done else f"{run}: journaled, no order yet"


async def test_sigkill_at_many_points_of_a_run_never_places_or_counts_twice(
    nats_server: str, database: FreshDatabase, tmp_path: Path
) -> None:
    services = Services(
        nats_url=nats_server,
        database_url=database.dsn,
        root=ROOT,
        log_dir=tmp_path / "logs",
        service_env={"executor": EXECUTOR_ENV},
        names=("executor",),
    )
    executor = services["executor"]
    kills: list[str] = []
    async for pool in migrated_pool(database.dsn):
        await paper(pool).seed(SPOT, SEED)
        try:
            executor.start()
            await asyncio.to_thread(executor.wait_ready)
            the_plan = plan(*LEGS, key="crash", occurred_at=datetime.now(UTC))
            client = await nats.connect(nats_server)
            try:
                await client.jetstream().publish(
                    the_plan.subject,
                    the_plan.model_dump_json().encode(),
                    stream=bus.stream_of(the_plan.subject).name,
                    headers={"Nats-Msg-Id": str(the_plan.event_id)},
                )
            finally:
                await client.drain()
            deadline = time.monotonic() + DEADLINE_SECONDS
            last = -1  # transitions at the last kill: each new process must get somewhere before it dies
            for threshold in THRESHOLDS:
                while not await _finished(pool):
                    count = await pool.fetchval("SELECT count(*) FROM execution.transitions")
                    if count >= threshold and count > last:
                        break
                    assert time.monotonic() < deadline, f"no progress; killed at {kills}"
                    await asyncio.sleep(0.002)
                else:
                    break
                executor.kill()
                await asyncio.to_thread(_proc.wait_gone, [executor.pid or 0], 5.0)
                kills.append(await snapshot(pool))
                last = await pool.fetchval("SELECT count(*) FROM execution.transitions")
                executor.start()  # not waited for: it resumes the run as it starts, and is killed again
            while not await _finished(pool):
                assert time.monotonic() < deadline, f"the run did not finish; killed at {kills}"
                await asyncio.sleep(0.05)
        finally:
            services.kill()
            left = _proc.wait_gone(services.pids, timeout=10.0)
        assert left == []
        print(f"\n{len(kills)} kill points survived:", *kills, sep="\n  ")
        assert len(kills) >= 6, kills

        assert await pool.fetchval("SELECT state FROM execution.runs") == "completed"
        # Each leg placed once at the venue, under its first (and only) client id; each fill once.
        venue_orders = await pool.fetch("SELECT client_order_id, status, filled FROM paper.orders")
        assert len(venue_orders) == len(LEGS)
        assert all(r["status"] == "filled" and r["client_order_id"].endswith("-0") for r in venue_orders)
        journal = await pool.fetch("SELECT client_order_id, state FROM execution.orders")
        assert sorted(r["client_order_id"] for r in journal) == sorted(
            r["client_order_id"] for r in venue_orders
        )
        assert {r["state"] for r in journal} == {"filled"}
        assert await pool.fetchval("SELECT count(*) FROM paper.fills") == len(LEGS)
        assert await pool.fetchval("SELECT count(*) FROM execution.fills") == len(LEGS)
        assert (await paper(pool).balances(SPOT)).free == EXPECTED
        report = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE placed) AS placed,"
            " count(*) FILTER (WHERE outcome = 'filled') AS filled FROM execution.legs"
        )
        assert (report["placed"], report["filled"]) == (len(LEGS), len(LEGS))


async def _finished(pool: asyncpg.Pool) -> bool:
    state = await pool.fetchval("SELECT state FROM execution.runs")
    return state is not None and state not in ("queued", "sells_in_progress", "buys_in_progress")

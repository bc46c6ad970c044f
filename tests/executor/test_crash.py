"""Crash tests: the executor as a real process on a real nats-server, Postgres and the (honest) paper
exchange, SIGKILLed again and again during one run at points observed from outside (journal rows), then
restarted. The run must complete with every order placed once at the venue, every fill counted once, and
the holdings exactly what an uninterrupted run gives.

The paper exchange is as unkind as Binance here: it takes a client id again once its order has ended
(a blind resend after a kill would trade twice and show as a second order) and shows a new order to
look-ups only after a while. Each restart is a process forked from a server that imported the executor
once (`crash_child`), so fifty restarts fit in about a minute."""

from __future__ import annotations

import asyncio
import multiprocessing
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
from tests.executor import crash_child
from tests.executor.test_executor import SPOT, order, paper, plan
from tests.messaging import fresh_nats
from tests.paper_support import migrated_pool

ROOT = Path(__file__).resolve().parents[2]
D = Decimal
EXECUTOR_ENV = {
    "REBAL__PAPER__AMPLITUDE": "0",
    "REBAL__PAPER__NOISE": "0",
    # Honest: a new order is not shown to look-ups for 0.6 s, longer than a restart takes (an executor
    # that resent after one look-up would place it twice); the look-up window below is longer still.
    "REBAL__PAPER__ORDER_VISIBLE_AFTER_SECONDS": "0.6",
    "REBAL__NATS__ACK_WAIT_SECONDS": "1",
    "REBAL__LIVE": "true",
    # A short look-up window: an order written as submitted before the kill is proven absent (or found)
    # in 0.7 s, not 15.
    "REBAL__EXECUTION__LOOKUP_WINDOW_SECONDS": "0.7",
    "REBAL__EXECUTION__LOOKUP_INTERVAL_SECONDS": "0.1",
    "REBAL__EXECUTION__LOOKUP_QUERIES": "3",
    "REBAL__EXECUTION__RACE_WINDOW_SECONDS": "0.3",
    "REBAL__EXECUTION__RECONCILE_INTERVAL_SECONDS": "1",
}
SEED = {"BTC": D(1), "SOL": D(100), "USDT": D(1000)}
# Twenty-eight legs: fourteen sells, then fourteen buys (enough quote: nothing is scaled, the outcome is
# exact).
LEGS = (
    *(order("BTC/USDT", "sell", "0.01", 1) for _ in range(7)),
    *(order("SOL/USDT", "sell", "1", 1) for _ in range(7)),
    *(order("ETH/USDT", "buy", "0.1", 2) for _ in range(14)),
)
# 7 x (600 - 0.6) + 7 x (150 - 0.15) = 5244.75 in; 14 x (300 + 0.3) = 4204.2 out.
EXPECTED = {"BTC": D("0.93"), "SOL": D("93"), "ETH": D("1.4"), "USDT": D("2040.55")}
# A run of 28 orders makes 4 + 28 x 3 = 88 transitions: the executor is killed at every count it
# reaches, each time only after the restarted process made progress; 0 is "right after the plan was
# published" (before the executor journaled or acked it). How many counts a kill lands on depends on how
# fast the executor is against the watcher (a restarted executor makes several transitions before the kill
# lands: 69-75 points on a quiet machine, 43 at load 7), so the rule is not a share of them but:
# - the process was killed right after EVERY kind of step each leg goes through (the order's transitions,
#   from_state -> to_state, made at least once per leg), so each step's crash was recovered from; and
# - it was killed again and again: at a third of the run's transitions at least.
KILL_POINTS_WANTED = 30
# The steps every leg's order goes through in the journal (from_state -> to_state).
LEG_STEPS = {(None, "created"), ("created", "submitted"), ("submitted", "filled")}
DEADLINE_SECONDS = 240


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[str]:
    for server in fresh_nats(tmp_path):
        yield server.url


async def where(pool: asyncpg.Pool) -> str:
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
    if states["submitted"] or states["outcome_unknown"]:
        return f"{run}: an order submitted, not at the venue yet"
    done = sum(states.values())
    return f"{run}: between legs ({done} orders done)" if done else f"{run}: journaled, no order yet"


async def test_sigkill_after_every_step_of_a_run_never_places_or_counts_twice(
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
    child = services["executor"]
    env, log = dict(child.env), str(child.log_path)
    child.log_path.parent.mkdir(parents=True, exist_ok=True)
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(["tests.executor.crash_child"])
    processes: list[multiprocessing.process.BaseProcess] = []

    def start() -> multiprocessing.process.BaseProcess:
        process = forks.Process(target=crash_child.serve, args=(env, log, str(ROOT)), daemon=False)
        process.start()
        processes.append(process)
        return process

    kills: list[tuple[int, str]] = []
    killed_after: set[tuple[str | None, str]] = set()  # the last transition journaled at each kill
    began = time.monotonic()
    async for pool in migrated_pool(database.dsn):
        await paper(pool).seed(SPOT, SEED)
        try:
            running = start()
            ready = time.monotonic() + 90
            while await asyncio.to_thread(child.readyz) != 200:  # the first start only: later ones are
                assert running.is_alive() and time.monotonic() < ready, child.tail()  # killed as they resume
                await asyncio.sleep(0.1)
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
            while not await _finished(pool):
                count = await pool.fetchval("SELECT count(*) FROM execution.transitions")
                if count <= last:
                    assert time.monotonic() < deadline, f"no progress; killed at {kills}"
                    await asyncio.sleep(0.001)
                    continue
                running.kill()
                running.join(5)
                count = await pool.fetchval("SELECT count(*) FROM execution.transitions")
                kills.append((count, await where(pool)))
                killed_after.update(await last_step(pool))
                last = count
                running = start()
            while not await _finished(pool):
                assert time.monotonic() < deadline, f"the run did not finish; killed at {kills}"
                await asyncio.sleep(0.05)
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join(5)
            left = _proc.wait_gone([p.pid for p in processes if p.pid], timeout=10.0)
        assert left == []
        points = sorted({count for count, _ in kills})
        took = time.monotonic() - began
        print(
            f"\n{len(kills)} kills at {len(points)} distinct kill points (journal transitions "
            f"{points[0]}..{points[-1]}), each restarted, in {took:.1f} s:",
            *(f"{n} x {what}" for what, n in sorted(Counter(what for _, what in kills).items())),
            sep="\n  ",
        )
        steps = Counter(
            (r["from_state"], r["to_state"])
            for r in await pool.fetch(
                "SELECT from_state, to_state FROM execution.transitions WHERE client_order_id IS NOT NULL"
            )
        )
        assert {step for step, n in steps.items() if n >= len(LEGS)} == LEG_STEPS, steps
        assert LEG_STEPS - killed_after == set(), (killed_after, kills)
        assert len(points) >= KILL_POINTS_WANTED, kills

        assert await pool.fetchval("SELECT state FROM execution.runs") == "completed"
        # Each leg placed once at the venue, under its first (and only) client id; each fill once.
        venue_orders = await pool.fetch("SELECT client_order_id, status, filled FROM paper.orders")
        assert len(venue_orders) == len(LEGS), "an order was placed twice"
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


async def last_step(pool: asyncpg.Pool) -> set[tuple[str | None, str]]:
    """The last order transition journaled (from_state, to_state), if the last transition was an order's."""
    row = await pool.fetchrow(
        "SELECT client_order_id, from_state, to_state FROM execution.transitions ORDER BY seq DESC LIMIT 1"
    )
    if row is None or row["client_order_id"] is None:
        return set()
    return {(row["from_state"], row["to_state"])}


async def _finished(pool: asyncpg.Pool) -> bool:
    state = await pool.fetchval("SELECT state FROM execution.runs")
    return state is not None and state not in ("queued", "sells_in_progress", "buys_in_progress")

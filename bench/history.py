"""`GET /portfolio/history` latency with 10,000 runs stored (issue 7's figure: p99 under 50 ms).

Starts a nats-server and Postgres of its own, journals N finished runs through the monitor's own
projections (`rebal_monitor.journal.record_many`: each run a plan with two orders, one skip, an order
placed and filled per leg and the run's end), starts the real monitor (`python -m rebal_monitor`, uvicorn
on loopback) and times requests from an httpx client over HTTP, one at a time:

- the first page (`limit=50`, the newest runs, what the dashboard and `rebal history` ask for);
- deep pages: following `next_cursor` from the first page to the last (keyset pagination: a page 200
  pages down costs what the first does).

Prints p50/p90/p99/max per kind, the load average while it ran (latency on a busy machine is mostly
waiting for a CPU), and the CPU the monitor process and Postgres spent per request.

Usage: ``.venv/bin/python bench/history.py [--runs 10000] [--requests 1000] [--limit 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from rebal import db
from rebal.events import (
    Event,
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    SkippedOrder,
    derive_id,
    new_event,
)
from rebal_devstack._proc import children_of
from rebal_devstack.nats import NatsServer
from rebal_devstack.postgres import PostgresServer
from rebal_devstack.stack import Child
from rebal_monitor.journal import record_many

ROOT = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 50.0
TOKEN = "bench-token-" + "x" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH_RUNS = 250
STORE_CONNECTIONS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def a_run(index: int) -> list[Event]:
    """Run `index`: planned 10 minutes after the previous one, two legs filled, one skip."""
    at = START + timedelta(minutes=10 * index)
    legs = [
        PlannedOrder(
            account="demo/paper/spot",
            exchange="paper",
            symbol=symbol,
            side=side,
            amount=Decimal(amount),
            est_price=Decimal(price),
            est_cost=Decimal(amount) * Decimal(price),
            est_fee=Decimal("0.5"),
            phase=1 if side == "sell" else 2,
        )
        for symbol, side, amount, price in (
            ("BTC/USDT", "sell", "0.01", "60000"),
            ("ETH/USDT", "buy", "0.2", "3000"),
        )
    ]
    skip = SkippedOrder(
        path="demo/paper/spot/crypto/arb/sol", symbol="SOL/USDT", side="buy", amount=Decimal("0.01"),
        reason="below the market's minimum cost 5",
    )  # fmt: skip
    plan = new_event(
        RebalancePlanned,
        key=index,
        now=at,
        portfolio_id="demo",
        correlation_id=derive_id("bench-run", index),
        dry_run=False,
        band=Decimal("0.01"),
        snapshot_id=derive_id("snapshot", index),
        target_id=derive_id("target", 0),
        total_value=Decimal(100000),
        orders=tuple(legs),
        skipped=(skip,),
    )
    events: list[Event] = [plan]
    for leg, order in enumerate(legs):
        cid = f"rb-{index}-{leg}"
        placed = plan.caused(
            OrderPlaced,
            now=at,
            key=leg,
            client_order_id=cid,
            account=order.account,
            exchange=order.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=order.amount,
            phase=order.phase,
        )
        filled = placed.caused(
            OrderFilled,
            now=at + timedelta(seconds=1),
            client_order_id=cid,
            trade_id=f"t-{index}-{leg}",
            symbol=order.symbol,
            side=order.side,
            amount=order.amount,
            price=order.est_price,
            fee=order.est_fee,
            fee_asset="USDT",
        )
        events += [placed, filled]
    events.append(
        plan.caused(
            RunFinished,
            now=at + timedelta(seconds=2),
            plan_id=plan.event_id,
            status="completed_with_adjustments",
            placed=2,
            filled=2,
            skipped=1,
            failed=0,
            reasons=("leg 2 SOL/USDT buy skipped: below the market's minimum cost 5",),
        )
    )
    return events


async def store(dsn: str, runs: int) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=STORE_CONNECTIONS)
    try:
        async with pool.acquire() as connection:
            await db.migrate(connection)
        started = time.perf_counter()
        batches = iter(range(0, runs, BATCH_RUNS))

        async def writer() -> None:
            # Runs are independent and the projections do not depend on arrival order.
            for first in batches:
                batch = [event for i in range(first, min(first + BATCH_RUNS, runs)) for event in a_run(i)]
                await record_many(pool, batch)

        await asyncio.gather(*(writer() for _ in range(STORE_CONNECTIONS)))
        elapsed = time.perf_counter() - started
        async with pool.acquire() as connection:
            await connection.execute("ANALYZE")
            counts = [
                await connection.fetchval(f"SELECT count(*) FROM {t}") for t in ("runs", "orders", "fills")
            ]
        print(f"  stored {counts[0]:,} runs, {counts[1]:,} orders, {counts[2]:,} fills in {elapsed:.1f} s")
        return elapsed
    finally:
        await pool.close()


@contextlib.contextmanager
def monitor(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """The real monitor as a process (the devstack's `Child`), until its /readyz answers: (url, pid)."""
    port = free_port()
    full = {**os.environ, **env, "REBAL__HTTP__PORT": str(port), "REBAL__API__TOKEN": TOKEN}
    child = Child("monitor", ["-m", "rebal_monitor"], full, log, ROOT, port)
    child.start()
    try:
        child.wait_ready(60)
        assert child.pid is not None
        yield child.url, child.pid
    finally:
        child.stop()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU of `root` and every process below it (from /proc)."""
    total = 0.0
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        pending += children_of(pid)
    return total


@dataclass(frozen=True)
class Processes:
    monitor: int
    postgres: int

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.monitor), cpu_seconds(self.postgres)


def summary(name: str, seconds: list[float]) -> float:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    print(
        f"  {name:<28} n={len(ms):>5}  p50 {q[49]:6.2f} ms  p90 {q[89]:6.2f} ms  p99 {q[98]:6.2f} ms"
        f"  max {ms[-1]:6.2f} ms"
    )
    return q[98]


def used(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


async def measure(
    url: str, processes: Processes, requests: int, limit: int, runs: int
) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}) as client:

        async def page(cursor: str | None) -> tuple[float, dict[str, object]]:
            params: dict[str, object] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            started = time.perf_counter()
            response = await client.get("/portfolio/history", params=params)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed, response.json()

        for _ in range(50):  # warm-up: connections, plans cached by Postgres, code paths
            await page(None)
        # The two kinds alternate, so that what else the machine does weighs on both alike.
        first: list[float] = []
        deep: list[float] = []
        cursor: str | None = None
        seen = 0
        cpu_start = processes.cpu()
        for _ in range(requests):
            elapsed, body = await page(None)
            first.append(elapsed)
            shown = body["runs"]
            assert isinstance(shown, list) and len(shown) == limit
            assert len(shown[0]["orders"]) == 2 and shown[0]["orders"][0]["fills"], "orders and fills"
            if cursor is None:  # start the walk (again) after the first page
                cursor, seen = str(body["next_cursor"]), len(shown)
            elapsed, body = await page(cursor)
            deep.append(elapsed)
            seen += len(body["runs"])  # type: ignore[arg-type]
            cursor = body["next_cursor"]  # type: ignore[assignment]
            if cursor is None:
                assert seen == runs, f"walked {seen} runs of {runs}"
        cpu = used(cpu_start, processes.cpu())
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"GET /portfolio/history?limit={limit} over HTTP (uvicorn on loopback, one request at a time)")
        print(f"  load average during the run: {load} (on {os.cpu_count()} CPUs)")
        p99_first = summary("first page", first)
        p99_deep = summary("following next_cursor", deep)
        monitor_ms, postgres_ms = (spent / (2 * requests) * 1000 for spent in cpu)
        print(f"  CPU per request: monitor {monitor_ms:.2f} ms, Postgres {postgres_ms:.2f} ms")
        return p99_first, p99_deep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="rebal-bench-history-") as tmp:
        base = Path(tmp)
        with (
            NatsServer(base / "nats" / "jetstream") as nats_server,
            PostgresServer(base / "pg" / "data") as postgres,
        ):
            dsn = postgres.ensure_database("rebal")
            print(f"Journaling {args.runs:,} runs (2 orders, 2 fills, 1 skip each) via the monitor's journal")
            asyncio.run(store(dsn, args.runs))
            env = {"REBAL__NATS__URL": nats_server.url, "REBAL__DATABASE__URL": dsn}
            with monitor(env, base / "monitor.log") as (url, pid):
                assert postgres.pid is not None
                processes = Processes(monitor=pid, postgres=postgres.pid)
                p99_first, p99_deep = asyncio.run(
                    measure(url, processes, args.requests, args.limit, args.runs)
                )
    worst = max(p99_first, p99_deep)
    verdict = "met" if worst < P99_TARGET_MS else "NOT met"
    print(
        f"target: p99 under {P99_TARGET_MS:.0f} ms with {args.runs:,} runs stored: {worst:.2f} ms, {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

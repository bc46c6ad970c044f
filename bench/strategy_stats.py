"""Strategy statistics benchmark: what one recompute of a portfolio's statistics costs the tracker.

A recompute (`rebal_tracker.stats.StatsRefresher.refresh`) reads every stored return of the portfolio
(one `array_agg` query), computes since-inception and rolling-window statistics per strategy and the
pair correlations (numpy, off the event loop), and replaces the portfolio's rows in one transaction. The
tracker runs it at most once per `stats_debounce_seconds` (2 s by default) while returns arrive, so its
cost bounds the tracker's statistics load.

Cases: the demo bot after a day (3 strategies reporting every second), daily strategies over ten years,
and many strategies. Real Postgres (the devstack's), fresh database; median of `--repeat` recomputes.

    python bench/strategy_stats.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np

from rebal import db
from rebal_devstack.postgres import PostgresServer
from rebal_tracker.stats import StatsStore, compute

CASES = (  # (label, strategies, returns each, seconds between returns)
    ("demo bot, one day at 1/s", 3, 86_400, 1.0),
    ("daily, 10 years", 10, 3_650, 86_400.0),
    ("daily, 3 years, 50 strategies", 50, 1_095, 86_400.0),
)
WINDOWS = (90,)
T0 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


async def load(pool: asyncpg.Pool, portfolio: str, strategies: int, count: int, spacing: float) -> None:
    rng = np.random.default_rng(7)
    for s in range(strategies):
        returns = np.round(rng.normal(0.0003, 0.01, count), 8)
        stamps = [datetime.fromtimestamp(T0 + i * spacing, UTC) for i in range(count)]
        await pool.execute(
            "INSERT INTO strategy_returns (strategy_id, ts, period_return, portfolio_id)"
            " SELECT $1, * FROM unnest($2::timestamptz[], $3::numeric[]), (SELECT $4::text) p",
            f"{portfolio}-s{s:03d}",
            stamps,
            [str(r) for r in returns],
            portfolio,
        )


async def run(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, PostgresServer(Path(tmp) / "pg") as postgres:
        dsn = postgres.ensure_database("rebal")
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as connection:
            await db.migrate(connection)
        store = StatsStore(pool)
        print("| case | strategies | returns | read (ms) | compute (ms) | write (ms) | recompute (ms) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for index, (label, strategies, count, spacing) in enumerate(CASES):
            portfolio = f"p{index}"
            await load(pool, portfolio, strategies, count, spacing)
            reads, computes, writes, totals = [], [], [], []
            for _ in range(repeat):
                start = time.perf_counter()
                series = await store.series(portfolio)
                read = time.perf_counter()
                stats, pairs = await asyncio.to_thread(compute, series, WINDOWS)
                computed = time.perf_counter()
                await store.replace(portfolio, stats, pairs, datetime.now(UTC))
                end = time.perf_counter()
                reads.append(read - start)
                computes.append(computed - read)
                writes.append(end - computed)
                totals.append(end - start)
            med = [statistics.median(v) * 1000 for v in (reads, computes, writes, totals)]
            print(
                f"| {label} | {strategies} | {strategies * count:,} | {med[0]:.0f} | {med[1]:.0f} | "
                f"{med[2]:.0f} | {med[3]:.0f} |"
            )
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.repeat))


if __name__ == "__main__":
    main()

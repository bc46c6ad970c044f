"""Gauges read back from the journal every `INTERVAL_SECONDS`: when each portfolio's latest snapshot and
target were published, and each fund's users, waiting flows and latest cycle (`rebal.metrics`).

Read from Postgres rather than set as events arrive, so that a restarted or second monitor reports the
same figures at once; a failed reading is logged and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from rebal import metrics

log = logging.getLogger("rebal.monitor")
INTERVAL_SECONDS = 10.0
LATEST = (
    "SELECT portfolio_id, type, extract(epoch FROM max(occurred_at))::float8 AS at FROM events"
    " WHERE type IN ('BalanceSnapshotTaken', 'TargetWeightsComputed') GROUP BY portfolio_id, type"
)
FUND_USERS = "SELECT fund_id, count(DISTINCT user_id) AS n FROM fund_ledger WHERE amount > 0 GROUP BY fund_id"
FUND_FLOWS = (
    "SELECT fund_id, kind, count(*) AS n FROM fund_flows WHERE status IN ('pending', 'running')"
    " GROUP BY fund_id, kind"
)
FUND_CYCLES = (
    "SELECT DISTINCT ON (fund_id) fund_id, status, extract(epoch FROM updated_at)::float8 AS at"
    " FROM fund_cycles ORDER BY fund_id, created_at DESC"
)


async def read(pool: asyncpg.Pool) -> None:
    """Set every gauge from the journal and the fund tables."""
    latest = await pool.fetch(LATEST)
    for row in latest:
        gauge = metrics.LATEST_SNAPSHOT if row["type"] == "BalanceSnapshotTaken" else metrics.LATEST_TARGET
        gauge.labels(portfolio=row["portfolio_id"]).set(row["at"])
    funds = {row["fund_id"]: row["n"] for row in await pool.fetch("SELECT fund_id, 0 AS n FROM funds")}
    users = {row["fund_id"]: row["n"] for row in await pool.fetch(FUND_USERS)}
    flows = {(row["fund_id"], row["kind"]): row["n"] for row in await pool.fetch(FUND_FLOWS)}
    for fund in funds:
        metrics.FUND_USERS.labels(fund=fund).set(users.get(fund, 0))
        for kind in ("deposit", "withdrawal"):
            metrics.FUND_PENDING_FLOWS.labels(fund=fund, kind=kind).set(flows.get((fund, kind), 0))
    metrics.FUND_LAST_CYCLE.clear()
    for row in await pool.fetch(FUND_CYCLES):
        metrics.FUND_LAST_CYCLE.labels(fund=row["fund_id"], status=row["status"]).set(row["at"])


@dataclass
class Gauges:
    pool: Callable[[], asyncpg.Pool | None]
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="monitor:gauges")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            pool = self.pool()
            if pool is not None:
                try:
                    await read(pool)
                except Exception as exc:  # noqa: BLE001 - a missed reading only delays the figures
                    log.warning("could not read the gauges: %s", exc)
            await asyncio.sleep(INTERVAL_SECONDS)

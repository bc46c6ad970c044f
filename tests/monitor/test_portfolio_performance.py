"""The portfolio's own performance on the real monitor: from its journaled snapshots, net of the money
that came in (a paper deposit), at a stated frequency, and not annualised from minutes of data."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from rebal.events import BalanceSnapshotTaken, new_event
from rebal.service import Database
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.journal import record_many
from rebal_monitor.monitor import Monitor
from rebal_venues.paper import credit
from tests.monitor.running import monitor_settings, running_monitor
from tests.monitor.test_api import load

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def valued(at: datetime, btc: str, usdt: str = "22000") -> BalanceSnapshotTaken:
    """The demo's snapshot with BTC at `btc` and `usdt` of cash."""
    tree: dict[str, Any] = copy.deepcopy(load("real"))
    spot = tree["children"][0]["children"][0]
    spot["children"][1]["children"][0]["amount"] = usdt
    prices = load("prices")
    prices["prices"]["BTC"] = btc
    return new_event(
        BalanceSnapshotTaken, key=at.isoformat(), now=at, portfolio_id="demo", tree=tree, prices=prices,
        markets=load("markets"),
    )  # fmt: skip


async def test_the_performance_is_the_portfolio_s_own_net_of_a_deposit(
    nats_url: str, database: FreshDatabase
) -> None:
    monitor = Monitor(Database(database.dsn))
    await monitor.start()
    pool = monitor.database.pool
    assert pool is not None
    # 0.8 BTC + 5 ETH (15000) + 100 SOL (15000) + cash: 100000 at 60000, 104800 at 66000; then 10000
    # USDT arrive (a deposit, not a gain): 114800 with BTC still at 66000.
    await record_many(pool, [valued(NOW, "60000"), valued(NOW + timedelta(seconds=60), "66000")])
    await credit(
        pool, "paper", "demo/paper/spot", "USDT", Decimal(10000), "wire-1", NOW + timedelta(seconds=90)
    )
    # A snapshot journaled before values were kept (its row removed): valued when asked.
    await record_many(pool, [valued(NOW + timedelta(seconds=120), "66000", usdt="32000")])
    await pool.execute("DELETE FROM portfolio_values WHERE at = $1", NOW + timedelta(seconds=120))
    await monitor.database.close()

    async with running_monitor(monitor_settings(nats_url, database.dsn)) as running:
        performance = (await running.client.get("/portfolio/performance")).json()
        own = performance["portfolio"]
        assert own["source"] == "snapshots" and own["quote"] == "USDT" and own["money_places"] == 2
        assert own["frequency"]["step"] == "1 min" and own["periods"] == 2 and own["observations"] == 3
        assert (own["first_value"], own["last_value"], own["net_flows"]) == ("100000", "114800", "10000")
        assert own["time_weighted_return"] == pytest.approx(0.048)  # not 14.8%: 10000 came in
        assert own["max_drawdown"] == 0
        assert own["annualised"] is None
        assert own["not_annualised"] == (
            "2 periods of 1 min over 2 min: annualised figures need at least 30 periods over at least 30 days"
        )
        assert [(f["kind"], f["amount"], f["value"]) for f in own["flows"]] == [
            ("paper deposit", "10000", "10000")
        ]
        equity = (await running.client.get("/portfolio/equity")).json()
        assert [p["value"] for p in equity["points"]] == ["100000", "104800", "114800"]
        assert [p["index"] for p in equity["points"]] == pytest.approx([1.0, 1.048, 1.048])
        assert equity["step"] == "1 min" and equity["source"] == "snapshots"
    connection = await asyncpg.connect(database.dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM portfolio_values") == 3
    finally:
        await connection.close()


async def test_a_stretch_without_snapshots_is_a_break_in_the_curve_not_flat_periods(
    nats_url: str, database: FreshDatabase
) -> None:
    # Snapshots a minute apart, then the system stopped for 28 minutes, then two more.
    monitor = Monitor(Database(database.dsn))
    await monitor.start()
    pool = monitor.database.pool
    assert pool is not None
    minutes = [0, 1, 2, 30, 31]
    prices = ["60000", "60000", "60000", "66000", "66000"]
    await record_many(
        pool, [valued(NOW + timedelta(minutes=m), p) for m, p in zip(minutes, prices, strict=True)]
    )
    await monitor.database.close()

    async with running_monitor(monitor_settings(nats_url, database.dsn)) as running:
        own = (await running.client.get("/portfolio/performance")).json()["portfolio"]
        assert own["frequency"]["step"] == "1 min" and own["observations"] == 5
        # Two periods before the stop, one after: the 28 minutes are one gap, not 28 flat periods.
        assert (own["periods"], own["gaps"], own["gap_seconds"], own["gap_span"]) == (3, 1, 1680.0, "28 min")
        assert own["time_weighted_return"] == pytest.approx(0.048)
        assert own["not_annualised"].startswith(
            "3 periods of 1 min over 31 min (28 min of it without valuations):"
        )
        points = (await running.client.get("/portfolio/equity")).json()["points"]
        assert len(points) == 32
        shown = [p["value"] for p in points]
        assert shown[:3] == ["100000", "100000", "100000"] and shown[-2:] == ["104800", "104800"]
        assert shown[3:30] == [None] * 27 and all(p["index"] is None for p in points[3:30])

"""The monitor's metrics a Grafana user needs: the API's requests and latencies by route, each
portfolio's latest snapshot and target time, each fund's users, waiting flows and latest cycle."""

from __future__ import annotations

import re
from datetime import timedelta

import asyncpg
import httpx
from prometheus_client import REGISTRY

from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor import gauges
from tests.monitor.running import monitor_settings, running_monitor
from tests.monitor.test_api import NOW, journaled, publish, snapshot, target


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit("} ", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_api_requests_snapshot_and_target_times_and_funds_are_measured(
    nats_url: str, database: FreshDatabase
) -> None:
    async with running_monitor(monitor_settings(nats_url, database.dsn)) as monitor:
        await publish(nats_url, snapshot("tick-1", when=NOW + timedelta(seconds=5)), target())
        await journaled(monitor.client, "/portfolio/weights")
        for _ in range(3):
            assert (await monitor.client.get("/portfolio/weights")).status_code == 200
        labels = {"method": "GET", "route": "/portfolio/plans/{plan_id}", "status": "404"}
        before = (
            REGISTRY.get_sample_value("rebal_api_requests_total", labels) or 0.0
        )  # one registry a process
        plan = await monitor.client.get("/portfolio/plans/00000000-0000-4000-8000-000000000000")
        assert plan.status_code == 404
        pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=2)
        try:
            await pool.execute(
                "INSERT INTO funds (fund_id, exchange, account, quote, weights, prices_from, updated_at)"
                " VALUES ('growth', 'paper', 'growth/paper/main', 'USDT', '{\"USDT\": \"1\"}', 'demo', now())"
            )
            await pool.execute(
                "INSERT INTO fund_ledger VALUES ('growth', 'alice', 'USDT', 250),"
                " ('growth', 'bob', 'USDT', 0)"
            )
            await pool.execute(
                "INSERT INTO fund_flows (flow_id, fund_id, user_id, kind, amount, status, created_at)"
                " VALUES (gen_random_uuid(), 'growth', 'alice', 'withdrawal', 100, 'pending', now())"
            )
            await gauges.read(pool)
        finally:
            await pool.close()
        async with httpx.AsyncClient(base_url=monitor.url) as bare:
            text = (await bare.get("/metrics")).text
    weights = sample(text, "rebal_api_requests_total", method="GET", route="/portfolio/weights", status="200")
    assert weights is not None and weights >= 3
    # The route's template, not the id asked for: bounded labels.
    assert sample(text, "rebal_api_requests_total", **labels) == before + 1
    assert "00000000-0000-4000-8000-000000000000" not in text
    assert sample(text, "rebal_api_request_seconds_count", route="/portfolio/weights") is not None
    assert (
        sample(text, "rebal_latest_snapshot_timestamp_seconds", portfolio="demo")
        == (NOW + timedelta(seconds=5)).timestamp()
    )
    assert sample(text, "rebal_latest_target_timestamp_seconds", portfolio="demo") == NOW.timestamp()
    assert sample(text, "rebal_fund_users", fund="growth") == 1
    assert sample(text, "rebal_fund_pending_flows", fund="growth", kind="withdrawal") == 1
    assert sample(text, "rebal_fund_pending_flows", fund="growth", kind="deposit") == 0

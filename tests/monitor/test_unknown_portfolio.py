"""Rebalancing an unknown portfolio (issue 19.5): the planner's `PlanFailed` carries its run, the monitor
journals it (it used to fail NOT NULL on `runs.run_id` and dead-letter it), the API answers 404 and
`rebal rebalance` exits 2, both naming the portfolio (they used to give 503 / exit 3 after the timeout)."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
from typer.testing import CliRunner

from rebal import subjects
from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from tests.monitor.running import monitor_settings, running_monitor, running_planner
from tests.monitor.test_api import publish, snapshot, target


async def dead_letters(nats_url: str) -> int:
    client = await nats.connect(nats_url)
    try:
        return int((await client.jetstream().stream_info(subjects.DLQ_STREAM)).state.messages)
    finally:
        await client.close()


async def test_an_unknown_portfolio_is_a_404_and_an_exit_2_and_its_failure_is_journaled(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn)
    async with running_planner(nats_url, database.dsn), running_monitor(settings) as monitor:
        await publish(nats_url, snapshot("tick-1"), target())
        answer = await monitor.client.post("/portfolio/rebalance", json={"portfolio_id": "nowhere"})
        assert answer.status_code == 404, answer.text
        assert "unknown portfolio 'nowhere'" in answer.json()["detail"]

        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["rebalance", "--portfolio", "elsewhere", "--dry-run", "--nats-url", nats_url, "--timeout", "20"],
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: --portfolio: unknown portfolio 'elsewhere'")
        assert len(result.stderr.strip().splitlines()) == 1

        # A configured portfolio still plans; its failure would name the missing input, not "no a ...".
        known = await monitor.client.post("/portfolio/rebalance", json={"portfolio_id": "demo"})
        assert known.status_code == 201, known.text

        connection = await asyncpg.connect(database.dsn)
        try:
            runs = await connection.fetch(
                "SELECT portfolio_id, status FROM runs WHERE status = 'plan_failed' ORDER BY portfolio_id"
            )
        finally:
            await connection.close()
        assert [r["portfolio_id"] for r in runs] == ["elsewhere", "nowhere"]
        assert await dead_letters(nats_url) == 0

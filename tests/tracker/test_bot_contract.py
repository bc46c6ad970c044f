"""The bot contract (docs/bots.md): the example publisher works against a real server and the tracker,
repeats are stored once, and a bad message is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import nats
import pytest
from faststream.nats import NatsBroker

from rebal import bus, service, subjects
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.app import Runtime
from rebal_tracker.handlers import register
from rebal_tracker.settings import TrackerSettings
from tests.messaging import collecting, eventually, started

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
EXAMPLE = ROOT / "examples" / "bot_publisher.py"


def test_the_doc_shows_the_example_as_it_is() -> None:
    doc = (ROOT / "docs" / "bots.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in doc


def run_example(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--nats-url", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_example_bot_reports_and_a_bad_message_is_dead_lettered(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": database.dsn},
        tracking={"layout_file": DEMO / "real.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json"},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 3))
    register(
        broker,
        publisher,
        runtime.on_take_snapshot,
        runtime.on_returns,
        on_transfer_confirmed=runtime.on_transfer_confirmed,
    )
    await runtime.start()
    try:
        async with started(broker), collecting(nats_url) as dead:
            pool = runtime.database.pool
            assert pool is not None
            common = ["--portfolio", "fund", "--strategy", "trend", "--timestamp", "2025-01-02T00:00:00Z"]
            first = [*common, "--return", "0.0123", "--equity", "10123.45", "--position", "BTC=0.5"]
            assert run_example(nats_url, *first) == "stored"
            assert run_example(nats_url, *first) == "duplicate: already reported"
            rows = await eventually_rows(pool)
            assert [(r["portfolio_id"], r["strategy_id"], r["period_return"], r["equity"]) for r in rows] == [
                ("fund", "trend", Decimal("0.0123"), Decimal("10123.45"))
            ]
            assert rows[0]["ts"] == datetime(2025, 1, 2, tzinfo=UTC)
            assert json.loads(rows[0]["positions"]) == {"BTC": "0.5"}

            # A bad return: not stored, dead-lettered with the raw payload and the reason.
            client = await nats.connect(nats_url)
            bad = {
                "type": "StrategyReturnReported",
                "event_id": "5a1d6a3e-0000-4000-8000-000000000001",
                "occurred_at": "2025-01-03T00:00:00Z",
                "emitted_at": "2025-01-03T00:00:00Z",
                "portfolio_id": "fund",
                "strategy_id": "trend",
                "timestamp": "2025-01-03T00:00:00Z",
                "period_return": "lots",
            }
            subject = subjects.STRATEGY_RETURN_REPORTED.subject("trend")
            await client.jetstream().publish(subject, json.dumps(bad).encode(), stream=subjects.EVENTS_STREAM)
            await client.drain()
            [letter] = await eventually(lambda: dead)
            assert letter["delivered_on"] == "rebal.dlq.tracker"
            assert letter["subject"] == subject
            assert json.loads(letter["payload"]) == bad
            assert letter["error"] == (
                "invalid StrategyReturnReported: period_return: Input should be a valid decimal"
            )
            assert await pool.fetchval("SELECT count(*) FROM strategy_returns") == 1
    finally:
        await runtime.stop()


async def eventually_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    for _ in range(200):
        rows = await pool.fetch("SELECT * FROM strategy_returns")
        if rows:
            return list(rows)
        await asyncio.sleep(0.05)
    raise AssertionError("no return stored within 10 s")

"""Scale-out on the real engine: a three-node NATS cluster loses a node in the middle of a rebalance and
of a burst of strategy returns, with two planners and two trackers sharing the work."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from rebal.events import RunFinished, StrategyReturnReported, new_event
from rebal_cli import commands
from rebal_devstack import _proc
from rebal_devstack.nats import NatsCluster
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import Services
from tests.e2e.conftest import ROOT, TEST_SETTINGS
from tests.e2e.flow import (
    PORTFOLIO,
    TRANSIENT,
    fetch,
    journal_matches_streams,
    once_each,
    ready_for_commands,
    wait_for,
)

RETURNS = 3000
# Messages in flight to the killed server come back after the ack wait: 5 s here instead of 30.
REPLICATED = {"REBAL__NATS__STREAM_REPLICAS": "3", "REBAL__NATS__ACK_WAIT_SECONDS": "5"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster", size=3) as running:
        yield running


async def burst(urls: list[str], killed: asyncio.Event) -> int:
    """Publish RETURNS returns with acknowledgements, retrying under the same message id until stored;
    half-way through, let the test kill a node. Returns how many publishes had to be retried."""
    client = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = client.jetstream()
    retried = 0
    start = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for i in range(RETURNS):
            event = new_event(
                StrategyReturnReported,
                key=i,
                now=start,
                portfolio_id=PORTFOLIO,
                strategy_id=f"s{i % 10}",
                timestamp=start + timedelta(minutes=i),
                period_return=Decimal(i % 7) / 1000,
            )
            while True:
                try:
                    await js.publish(
                        event.subject,
                        event.model_dump_json().encode(),
                        headers={"Nats-Msg-Id": str(event.event_id)},
                        timeout=2,
                    )
                    break
                except TRANSIENT:
                    retried += 1
                    await asyncio.sleep(0.2)
            if i == RETURNS // 2:
                killed.set()
                await asyncio.sleep(0)
    finally:
        await client.drain()
    return retried


async def test_a_node_loss_loses_nothing_and_doubles_nothing(
    cluster: NatsCluster, database: FreshDatabase, tmp_path: Path
) -> None:
    settings = {name: {**values, **REPLICATED} for name, values in TEST_SETTINGS.items()}
    common = {"nats_url": cluster.url, "database_url": database.dsn, "root": ROOT, "env": REPLICATED}
    main = Services(**common, log_dir=tmp_path / "logs", service_env=settings)
    replicas = Services(
        **common, log_dir=tmp_path / "replicas", service_env=settings, names=("planner", "tracker")
    )
    try:
        main.start()
        replicas.start()
        await ready_for_commands(cluster.url)
        killed = asyncio.Event()
        publishing = asyncio.create_task(burst(cluster.urls, killed))
        await killed.wait()
        # A live rebalance in flight, and one of the three servers dies under it.
        rebalance = asyncio.create_task(
            commands.rebalance(
                cluster.url, PORTFOLIO, dry_run=False, band=Decimal("0.01"), wait=True, timeout=60
            )
        )
        await asyncio.sleep(0.05)
        cluster.nodes[1].kill()
        retried = await publishing
        outcome = await rebalance
        assert outcome.finished is not None and outcome.finished.status == "completed", outcome.finished

        # Nothing lost, nothing twice: every return stored once, every order and fill once.
        for _ in range(200):
            stored = (await fetch(database.dsn, "SELECT count(*) AS n FROM strategy_returns"))[0]["n"]
            if stored >= RETURNS:
                break
            await asyncio.sleep(0.1)
        assert stored == RETURNS, (stored, retried)
        orders = await fetch(database.dsn, "SELECT client_order_id FROM paper.orders")
        fills = await fetch(database.dsn, "SELECT trade_id FROM paper.fills")
        assert once_each([o["client_order_id"] for o in orders]) == {}
        assert once_each([f["trade_id"] for f in fills]) == {}
        assert len(orders) == outcome.finished.placed
        finished = await wait_for(cluster.url, RunFinished)
        assert finished.correlation_id == outcome.finished.correlation_id
        await journal_matches_streams(cluster.url, database.dsn)
        for name in ("planner", "tracker"):
            assert replicas[name].running and main[name].running
    finally:
        main.kill()
        replicas.kill()
        left = _proc.wait_gone(main.pids + replicas.pids, timeout=10.0)
    assert left == []

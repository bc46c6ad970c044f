"""The live pipeline at 100k wallets, the five services as processes on a nats-server at its default 1 MB
max_payload (issue 17): the snapshot and target go by reference as the tracker and the optimizer send
them, the planner plans from them, `rebal rebalance` gets the plan whole, the monitor journals it whole,
and nothing is dead-lettered. Lean on purpose (some 40 s): one portfolio, one dry-run command."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import nats
import orjson
import pytest
from faststream.nats import NatsBroker

from rebal import bus, subjects
from rebal.events import (
    BalanceSnapshotTaken,
    RebalancePlanned,
    StartRebalance,
    TargetWeightsComputed,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_planner.planning import parse_snapshot, parse_target, plan_event
from tests.bench.test_reference_agreement import generate
from tests.e2e.conftest import TEST_SETTINGS, System, running_system

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]
WALLETS = 100_000
PORTFOLIO = "large"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def quiet_system(database: FreshDatabase, tmp_path: Path) -> Iterator[System]:
    """The five services, the planner previewing nothing by itself: the one plan is the command's."""
    settings = {
        **TEST_SETTINGS,
        "planner": {**TEST_SETTINGS["planner"], "REBAL__PLANNING__PREVIEW_ON_NEW_DATA": "false"},
    }
    yield from running_system(database, tmp_path, settings)


async def test_a_100k_wallet_portfolio_goes_through_the_pipeline_within_the_default_payload_limit(
    quiet_system: System,
) -> None:
    real, target, prices, markets = generate.generate(WALLETS, 7)
    snapshot = new_event(
        BalanceSnapshotTaken,
        key="large",
        now=NOW,
        portfolio_id=PORTFOLIO,
        tree=real,
        prices=prices,
        markets=markets,
    )
    desired = new_event(TargetWeightsComputed, key="large", now=NOW, portfolio_id=PORTFOLIO, tree=target)
    assert len(snapshot.model_dump_json()) > 4 * bus.MAX_MESSAGE_BYTES  # no way as one message
    broker = NatsBroker(quiet_system.nats_url)
    await broker.connect()
    try:
        publisher = bus.Publisher(broker)
        assert await publisher.publish(snapshot) and await publisher.publish(desired)
        started = time.monotonic()
        cli = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "rebal"),
            *("rebalance", "--portfolio", PORTFOLIO, "--dry-run", "--json"),
            *("--nats-url", quiet_system.nats_url, "--timeout", "120"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "REBAL_CONTEXT": "none"},
        )
        out, err = await asyncio.wait_for(cli.communicate(), 180)
        seconds = time.monotonic() - started
        assert cli.returncode == 0, err.decode()
        shown = orjson.loads(out)["plan"]
        js = broker.config.connection_state.stream
        wire = await js.get_last_msg(
            subjects.EVENTS_STREAM, RebalancePlanned.topic.subject(PORTFOLIO), direct=True
        )
    finally:
        await broker.stop()
    expected = plan_event(
        new_event(StartRebalance, key="same inputs", now=NOW, portfolio_id=PORTFOLIO),
        snapshot_id=snapshot.event_id,
        target_id=desired.event_id,
        snapshot=parse_snapshot(snapshot),
        target=parse_target(desired),
        band=Decimal(0),
        dry_run=True,
        now=NOW,
    )
    assert isinstance(expected, RebalancePlanned) and len(expected.orders) > 80_000
    travelled = RebalancePlanned.model_validate_json(wire.data or b"")
    assert travelled.payload_ref is not None and len(wire.data or b"") < 2048
    assert shown["payload_ref"] == travelled.payload_ref.model_dump(mode="json")
    for part in ("orders", "skipped", "projected_weights", "budgets", "transfers"):
        assert shown[part] == orjson.loads(
            orjson.dumps([r.model_dump(mode="json") for r in getattr(expected, part)])
        ), part
    assert shown["total_value"] == str(expected.total_value)
    print(f"command -> plan whole at the CLI: {seconds:.1f} s")

    connection = await asyncpg.connect(quiet_system.dsn)
    try:
        journaled = None
        deadline = time.monotonic() + 90
        while journaled is None and time.monotonic() < deadline:
            journaled = await connection.fetchval(
                "SELECT jsonb_array_length(payload->'orders') FROM events WHERE event_id = $1",
                travelled.event_id,
            )
            await asyncio.sleep(0.5)
    finally:
        await connection.close()
    assert journaled == len(expected.orders)  # the monitor's journal keeps the plan whole
    client = await nats.connect(quiet_system.nats_url)
    try:
        letters = (await client.jetstream().stream_info(subjects.DLQ_STREAM)).state.messages
    finally:
        await client.drain()
    assert letters == 0  # every service read every message, by reference or not

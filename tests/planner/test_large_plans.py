"""Plans larger than a message, on a real nats-server at its default limits: by reference, whole at the
other end; and a plan the server cannot take said out loud, down to the CLI's exit status."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import (
    BalanceSnapshotTaken,
    RebalancePlanned,
    StartRebalance,
    TargetWeightsComputed,
    new_event,
)
from rebal_devstack.nats import NatsServer
from rebal_planner.handlers import register
from rebal_planner.planner import Planner
from rebal_planner.planning import parse_snapshot, parse_target, plan_event
from rebal_planner.settings import PlannerSettings
from tests.bench.test_reference_agreement import generate
from tests.messaging import eventually, started

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SETTINGS = PlannerSettings(planning={"preview_on_new_data": False})


def inputs(wallets: int, assets: int = 200) -> tuple[BalanceSnapshotTaken, TargetWeightsComputed]:
    real, target, prices, markets = generate.generate(wallets, 7, generate.Shape(assets=assets))
    snapshot = new_event(
        BalanceSnapshotTaken, key="s", now=NOW, portfolio_id="demo", tree=real, prices=prices, markets=markets
    )
    return snapshot, new_event(TargetWeightsComputed, key="t", now=NOW, portfolio_id="demo", tree=target)


def planner_on(broker: NatsBroker) -> bus.Publisher:
    publisher = bus.Publisher(broker)
    register(broker, publisher, Planner(bus.StreamHistory(broker), publisher, SETTINGS, clock=lambda: NOW))
    return publisher


async def test_a_plan_of_thousands_of_orders_travels_by_reference_and_arrives_whole(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = planner_on(broker)
    arrived: list[RebalancePlanned] = []

    async def executor(plan: RebalancePlanned) -> None:
        arrived.append(plan)

    bus.consume(
        broker, publisher, service="executor", kind=RebalancePlanned, durable="t-plans", handler=executor
    )
    snapshot, target = inputs(4000)
    command = new_event(StartRebalance, key="big", now=NOW, portfolio_id="demo", dry_run=True)
    async with started(broker):
        for event in (snapshot, target, command):
            await publisher.publish(event)
        await eventually(lambda: arrived)
        js = broker.config.connection_state.stream
        wire = await js.get_last_msg("REBAL_EVENTS", RebalancePlanned.topic.subject("demo"), direct=True)
    expected = plan_event(
        command,
        snapshot_id=snapshot.event_id,
        target_id=target.event_id,
        snapshot=parse_snapshot(snapshot),
        target=parse_target(target),
        band=Decimal(0),
        dry_run=True,
        now=NOW,
    )
    [plan] = arrived
    assert isinstance(expected, RebalancePlanned) and len(expected.orders) > 2000
    assert plan.payload_ref is not None and len(wire.data or b"") < 2048
    assert plan.model_dump_json(exclude={"payload_ref"}) == expected.model_dump_json(exclude={"payload_ref"})


async def test_a_plan_the_server_cannot_take_becomes_a_plan_failed_and_the_waiting_cli_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server configured below Rebal's message sizes (max_payload 64 KiB): the plan's publish fails at
    once, the planner logs why and publishes PlanFailed instead, and `rebal rebalance` exits 1 with it."""
    with NatsServer(tmp_path / "jetstream", extra_config="max_payload: 65536") as server:
        broker = NatsBroker(server.url)
        publisher = planner_on(broker)
        # A 40 KB snapshot, a 100 KB plan: inline by Rebal's rule, over this server's limit.
        snapshot, target = inputs(400, assets=30)
        async with started(broker):
            await publisher.publish(snapshot)
            await publisher.publish(target)
            cli = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "rebal"),
                "rebalance",
                "--portfolio",
                "demo",
                "--dry-run",
                "--nats-url",
                server.url,
                "--timeout",
                "60",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "300", "REBAL_CONTEXT": "none"},
            )
            with caplog.at_level(logging.ERROR, logger="rebal.planner"):
                output, _ = await asyncio.wait_for(cli.communicate(), 90)
    text = output.decode()
    assert cli.returncode == 1, text
    assert "no plan" in text and "the plan could not be published" in text and "max_payload" in text, text
    assert any("could not publish the plan of run" in r.getMessage() for r in caplog.records)

"""deploy/nats/auth.conf on a real nats-server: each client may do only what it should."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from faststream.nats import NatsBroker

from rebal import bus, service, subjects
from rebal.events import RebalancePlanned, StartRebalance, StrategyReturnReported, new_event
from rebal_devstack.nats import NatsServer
from rebal_planner.handlers import Planner, register
from rebal_planner.settings import PlannerSettings
from tests.messaging import eventually, started
from tests.planner.test_planner import snapshot, target

ROOT = Path(__file__).resolve().parents[2]
USERS = ("tracker", "optimizer", "planner", "executor", "monitor", "api", "bot_trend")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def password(user: str) -> str:
    return f"pw-{user}"


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for user in USERS:
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", password(user))
    base = tmp_path / "nats"
    base.mkdir()
    shutil.copy(ROOT / "deploy" / "nats" / "auth.conf", base / "auth.conf")
    with NatsServer(base / "jetstream", extra_config="max_payload: 8MB\ninclude ./auth.conf") as server:
        yield server.url


@asynccontextmanager
async def client(url: str, user: str, errors: list[str]) -> AsyncIterator[Any]:
    async def keep(error: Exception) -> None:
        errors.append(str(error))

    connection = await nats.connect(
        url, user=user.replace("_", "-"), password=password(user), error_cb=keep, allow_reconnect=False
    )
    try:
        yield connection
    finally:
        await connection.drain()


def broker_as(url: str, user: str) -> NatsBroker:
    settings = PlannerSettings(nats={"url": url, "user": user, "password": password(user)})
    return service.make_broker(settings, user)


async def test_anonymous_clients_are_refused(secured: str) -> None:
    with pytest.raises((nats.errors.NoServersError, nats.errors.Error, OSError)):
        await nats.connect(secured, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=2)


async def test_a_bot_reports_its_own_returns_but_neither_commands_nor_another_bots(secured: str) -> None:
    tracker = broker_as(secured, "tracker")
    async with started(tracker):  # the tracker declares the streams, as at start
        errors: list[str] = []
        async with client(secured, "bot_trend", errors) as bot:
            own = new_event(
                StrategyReturnReported,
                key=1,
                now=NOW,
                portfolio_id="demo",
                strategy_id="trend",
                timestamp=NOW,
                period_return="0.001",
            )
            await bot.publish(own.subject, own.model_dump_json().encode())
            command = new_event(StartRebalance, key=1, now=NOW, portfolio_id="demo", dry_run=False)
            await bot.publish(command.subject, command.model_dump_json().encode())
            other = subjects.STRATEGY_RETURN_REPORTED.subject("arb")
            await bot.publish(other, own.model_dump_json().encode())
            await bot.flush()
            await eventually(lambda: len(errors) >= 2)
        js = tracker.config.connection_state.stream
        returns = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter="rebal.evt.strategy.>")
        commands = await js.stream_info(subjects.COMMANDS_STREAM)
    assert returns.state.messages == 1 and commands.state.messages == 0
    assert any(
        "permissions violation for publish to" in e.lower() and command.subject in e for e in errors
    ), errors
    assert any(other in e for e in errors), errors


async def test_a_service_cannot_delete_a_stream(secured: str) -> None:
    planner = broker_as(secured, "planner")
    async with started(planner):
        js = planner.config.connection_state.stream
        with pytest.raises(nats.errors.Error):  # refused: the request gets no answer
            await js.delete_stream(subjects.EVENTS_STREAM)
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.name == subjects.EVENTS_STREAM


async def test_the_planner_works_under_its_own_user(secured: str) -> None:
    planner_broker = broker_as(secured, "planner")
    publisher = bus.Publisher(planner_broker)
    settings = PlannerSettings(planning={"preview_on_new_data": False})
    register(planner_broker, publisher, Planner(bus.StreamHistory(planner_broker), publisher, settings))
    tracker, optimizer, api = (broker_as(secured, user) for user in ("tracker", "optimizer", "api"))
    plans: list[RebalancePlanned] = []

    @api.subscriber(RebalancePlanned.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        plans.append(RebalancePlanned.model_validate(body))

    async with started(planner_broker), started(tracker), started(optimizer), started(api):
        await bus.Publisher(tracker).publish(snapshot())
        await bus.Publisher(optimizer).publish(target())
        await bus.Publisher(api).publish(
            new_event(StartRebalance, key="op", now=NOW, portfolio_id="demo", dry_run=True)
        )
        await eventually(lambda: plans)
    assert plans[0].orders


async def test_the_monitor_approves_through_the_planner_and_may_not_publish_a_plan(secured: str) -> None:
    """The monitor sends `ApprovePlan`; the planner, under its own user, makes the preview live. A plan
    the monitor publishes itself is refused by the server."""
    from datetime import timedelta

    from rebal.events import ApprovePlan, derive_run_id
    from rebal_planner.approvals import Approvals
    from rebal_planner.handlers import register_approvals
    from tests.fakes import FakePreviews
    from tests.planner.test_approvals import preview as make_preview

    preview = make_preview()
    assert isinstance(preview, RebalancePlanned) and preview.dry_run
    planner_broker = broker_as(secured, "planner")
    publisher = bus.Publisher(planner_broker)
    register_approvals(
        planner_broker, publisher, Approvals(FakePreviews([preview]), publisher, clock=lambda: NOW)
    )
    monitor, api = broker_as(secured, "monitor"), broker_as(secured, "api")
    live: list[RebalancePlanned] = []

    @api.subscriber(RebalancePlanned.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        live.append(RebalancePlanned.model_validate(body))

    async with started(planner_broker), started(monitor), started(api):
        approval = new_event(
            ApprovePlan,
            key=preview.event_id,
            now=NOW,
            portfolio_id="demo",
            plan_id=preview.event_id,
            expires_at=NOW + timedelta(minutes=5),
        )
        assert await bus.Publisher(monitor).publish(approval)
        await eventually(lambda: live)
        errors: list[str] = []
        async with client(secured, "monitor", errors) as plain:
            forged = preview.model_copy(update={"event_id": derive_run_id(preview), "dry_run": False})
            await plain.publish(forged.subject, forged.model_dump_json().encode())
            await plain.flush()
            await eventually(lambda: errors)
        js = planner_broker.config.connection_state.stream
        plans = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter="rebal.evt.rebalance.>")
    assert [(p.dry_run, p.orders, p.correlation_id) for p in live] == [
        (False, preview.orders, derive_run_id(approval))
    ]
    assert plans.state.messages == 1  # the planner's live plan; the monitor's was refused
    assert any("permissions violation for publish to" in e.lower() and forged.subject in e for e in errors), (
        errors
    )


async def test_operators_ask_for_an_optimization_and_backfill_and_the_optimizer_reports_failures(
    secured: str,
) -> None:
    from rebal.events import OptimizationFailed, RunOptimization

    tracker, optimizer, api = (broker_as(secured, user) for user in ("tracker", "optimizer", "api"))
    async with started(tracker), started(optimizer), started(api):
        command = new_event(RunOptimization, key="op", now=NOW, portfolio_id="demo")
        assert await bus.Publisher(api).publish(command)
        backfilled = new_event(
            StrategyReturnReported,
            key="backfill",
            now=NOW,
            portfolio_id="demo",
            strategy_id="arb",
            timestamp=NOW,
            period_return="0.001",
        )
        assert await bus.Publisher(api).publish(backfilled)
        failed = command.caused(
            OptimizationFailed, now=NOW, method="min_variance", reason="r", trigger="command"
        )
        assert await bus.Publisher(optimizer).publish(failed)
        errors: list[str] = []
        async with client(secured, "tracker", errors) as plain:
            await plain.publish(failed.subject, failed.model_dump_json().encode())
            await plain.publish(command.subject, command.model_dump_json().encode())
            await plain.flush()
            await eventually(lambda: len(errors) >= 2)
        js = tracker.config.connection_state.stream
        events = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter="rebal.evt.>")
        commands = await js.stream_info(subjects.COMMANDS_STREAM)
    # The backfilled return and the optimizer's failure; the command once: the tracker's copies refused.
    assert events.state.subjects == {backfilled.subject: 1, failed.subject: 1}, errors
    assert commands.state.messages == 1


async def test_fund_commands_come_from_operators_and_fund_events_from_the_planner_alone(secured: str) -> None:
    from decimal import Decimal

    from rebal.events import FundDeposited, RecordDeposit

    tracker = broker_as(secured, "tracker")
    async with started(tracker):
        errors: list[str] = []
        command = new_event(
            RecordDeposit,
            key=1,
            now=NOW,
            portfolio_id="growth",
            user_id="alice",
            amount=Decimal(10),
            reference="t1",
        )
        fact = command.caused(FundDeposited, now=NOW, user_id="alice", amount=Decimal(10), cash=Decimal(10))
        async with client(secured, "api", errors) as api, client(secured, "planner", errors) as planner:
            await api.publish(command.subject, command.model_dump_json().encode())
            await planner.publish(fact.subject, fact.model_dump_json().encode())
            await api.flush()
            await planner.flush()
        async with client(secured, "executor", errors) as executor:
            await executor.publish(fact.subject, b"{}")
            await executor.flush()
            await eventually(lambda: errors)
        js = tracker.config.connection_state.stream
        funds = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter="rebal.evt.fund.>")
        commands = await js.stream_info(subjects.COMMANDS_STREAM, subjects_filter="rebal.cmd.fund.>")
    assert funds.state.messages == 1 and commands.state.messages == 1
    assert len(errors) == 1 and fact.subject in errors[0], errors


async def test_the_optimizer_answers_a_command_under_its_own_user(secured: str) -> None:
    from rebal.events import OptimizationFailed, RunOptimization
    from rebal_optimizer.handlers import Allocations
    from rebal_optimizer.handlers import register as register_optimizer
    from rebal_optimizer.settings import OptimizerSettings
    from tests.fakes import FakeHistory

    optimizer, api = broker_as(secured, "optimizer"), broker_as(secured, "api")
    publisher = bus.Publisher(optimizer)
    allocations = Allocations(publisher, FakeHistory(), OptimizerSettings(), data=None)  # type: ignore[arg-type]
    register_optimizer(optimizer, publisher, allocations)
    answers: list[OptimizationFailed] = []

    @api.subscriber(OptimizationFailed.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        answers.append(OptimizationFailed.model_validate(body))

    async with started(optimizer), started(api):
        command = new_event(RunOptimization, key="op", now=NOW, portfolio_id="demo")
        await bus.Publisher(api).publish(command)
        await eventually(lambda: answers)
    assert answers[0].causation_id == command.event_id
    assert answers[0].reason == "no allocation is configured for demo"

"""deploy/nats/auth.conf on a real nats-server: each client may do only what it should."""

from __future__ import annotations

import asyncio
import re
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
from rebal_planner.handlers import register, register_approvals
from rebal_planner.planner import Planner
from rebal_planner.settings import PlannerSettings
from tests.messaging import AUTH_CONF, auth_users, eventually, started
from tests.planner.test_planner import snapshot, target

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# A user of the test's own beside auth.conf's: it publishes what a test needs and reads the servers'
# state. auth.conf's users are tested exactly as written.
ADMIN = '    {user: admin, password: "pw-admin", permissions: {publish: ">", subscribe: ">"}}\n'


def password(user: str) -> str:
    return f"pw-{user.replace('-', '_')}"


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for user, variable in auth_users().items():
        monkeypatch.setenv(variable, password(user))
    base = tmp_path / "nats"
    base.mkdir()
    text = AUTH_CONF.read_text()
    end = text.rindex("  ]\n}")
    (base / "auth.conf").write_text(text[:end] + ADMIN + text[end:])
    with NatsServer(base / "jetstream", extra_config="include ./auth.conf") as server:
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


async def test_the_autopilot_triggers_and_schedules_fund_cycles_and_may_send_no_other_command(
    secured: str,
) -> None:
    """The planner publishes `RebalanceTriggered` and a fund's scheduled `RunFundCycle` under its own user;
    it may not send another command (a halt, a rebalance), and the monitor may not publish a trigger."""
    from rebal.events import HaltTrading, RebalanceTriggered, RunFundCycle, derive_id

    tracker = broker_as(secured, "tracker")
    async with started(tracker):
        errors: list[str] = []
        trigger = RebalanceTriggered(
            type="RebalanceTriggered",
            event_id=derive_id("trigger"),
            occurred_at=NOW,
            emitted_at=NOW,
            portfolio_id="demo",
            mode="auto",
            kind="full",
            scope="portfolio",
            reasons=("drift: 1 node outside its band",),
            snapshot_id=derive_id("snapshot"),
            target_id=derive_id("target"),
            policy_version=1,
        )
        cycle = new_event(
            RunFundCycle, key="schedule|1", now=NOW, portfolio_id="growth", requested_by="autopilot"
        )
        halt = new_event(HaltTrading, key=1, now=NOW, portfolio_id="demo")
        rebalance = new_event(StartRebalance, key=1, now=NOW, portfolio_id="demo", dry_run=False)
        async with client(secured, "planner", errors) as planner:
            for allowed in (trigger, cycle):
                await planner.publish(allowed.subject, allowed.model_dump_json().encode())
            await planner.flush()
            await asyncio.sleep(0.3)
            assert errors == []
            for refused in (halt, rebalance):
                await planner.publish(refused.subject, refused.model_dump_json().encode())
            await planner.flush()
            await eventually(lambda: len(errors) >= 2)
        async with client(secured, "monitor", errors) as monitor:
            await monitor.publish(trigger.subject, b"{}")
            await monitor.flush()
            await eventually(lambda: len(errors) >= 3)
        js = tracker.config.connection_state.stream
        triggers = await js.stream_info(
            subjects.EVENTS_STREAM, subjects_filter="rebal.evt.rebalance.triggered.>"
        )
        commands = await js.stream_info(subjects.COMMANDS_STREAM)
    assert triggers.state.messages == 1 and commands.state.messages == 1  # the trigger; the fund's cycle
    assert {halt.subject, rebalance.subject, trigger.subject} == {
        subject
        for subject in (halt.subject, rebalance.subject, trigger.subject)
        if any(subject in e for e in errors)
    }, errors


async def test_the_optimizer_answers_a_command_under_its_own_user(secured: str) -> None:
    from rebal.events import OptimizationFailed, RunOptimization
    from rebal_optimizer.allocations import Allocations
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


# -- each service its own consumers (issue 19, point 6) ----------------------------------------------

SERVICES = ("tracker", "optimizer", "planner", "executor", "monitor")


def service_broker(service_name: str, url: str | None = None) -> NatsBroker:
    """The broker of the service as its `build(settings)` wires it (every durable consumer its code
    registers, and nothing else), connecting to `url` as the service's user. Nothing is opened: the
    junk the tests send is dead-lettered before a handler (or its database) would see it."""
    import importlib

    app = importlib.import_module(f"rebal_{service_name}.app")
    settings_class = {
        "tracker": "TrackerSettings",
        "optimizer": "OptimizerSettings",
        "planner": "PlannerSettings",
        "executor": "ExecutorSettings",
        "monitor": "MonitorSettings",
    }[service_name]
    settings_module = importlib.import_module(f"rebal_{service_name}.settings")
    nats_settings = (
        {} if url is None else {"url": url, "user": service_name, "password": password(service_name)}
    )
    built = app.build(getattr(settings_module, settings_class)(nats=nats_settings))
    broker = built.stream.broker if service_name == "monitor" else built.broker
    assert isinstance(broker, NatsBroker)
    return broker


def granted(user: str) -> set[tuple[str, str]]:
    """(stream, durable) of the consumers auth.conf lets `user` pull from."""
    text = AUTH_CONF.read_text()
    start = text.index(f"{{user: {user}, ")
    end = text.find("{user: ", start + 1)
    block = text[start : end if end > 0 else len(text)]
    return set(re.findall(r'"\$JS\.API\.CONSUMER\.MSG\.NEXT\.([A-Z_]+)\.([a-z-]+)"', block))


@pytest.mark.parametrize("service_name", SERVICES)
def test_auth_conf_grants_each_service_exactly_the_consumers_its_code_registers(service_name: str) -> None:
    consumers = bus.consumers_of(service_broker(service_name))
    assert {(c.stream, c.name) for c in consumers} == granted(service_name)
    text = AUTH_CONF.read_text()
    for stream, name, _ in consumers:
        for subject in (
            f"$JS.API.CONSUMER.INFO.{stream}.{name}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{name}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}",
            f"$JS.ACK.{stream}.{name}.>",
        ):
            assert f'"{subject}"' in text, subject
    assert not granted("api") and not granted("migrate") and not granted("bot-trend")


def concrete(subject: str) -> str:
    """A subject a filter takes (its wildcards filled in)."""
    return ".".join("x" if token in ("*", ">") else token for token in subject.split("."))


async def test_each_service_creates_pulls_and_acknowledges_its_own_consumers(secured: str) -> None:
    admin = await nats.connect(secured, user="admin", password="pw-admin")
    js = admin.jetstream()
    try:
        for service_name in SERVICES:
            broker = service_broker(service_name, secured)
            consumers = bus.consumers_of(broker)
            async with started(broker):
                for consumer in consumers:  # junk: read, dead-lettered by the service, acknowledged
                    await js.publish(concrete(consumer.subject), b"{}", stream=consumer.stream)

                async def settled(consumers: list[bus.Durable] = consumers) -> bool:
                    for consumer in consumers:
                        info = await js.consumer_info(consumer.stream, consumer.name)
                        if info.ack_floor.consumer_seq < 1 or info.num_ack_pending or info.num_pending:
                            return False
                    return True

                for _ in range(200):
                    if await settled():
                        break
                    await asyncio.sleep(0.05)
                assert await settled(), service_name
    finally:
        await admin.drain()


async def test_a_service_can_neither_take_another_s_messages_nor_delete_consumers_nor_reshape_a_stream(
    secured: str,
) -> None:
    """What the tracker's user could do before: pull and ack a plan from the executor's consumer (the
    executor never saw it), delete any consumer, and update a stream to max_msgs=1 (purging it)."""
    executor = service_broker("executor", secured)
    async with started(executor):
        pass  # its consumers exist; the executor is away for a moment
    admin = await nats.connect(secured, user="admin", password="pw-admin")
    errors: list[str] = []
    try:
        admin_js = admin.jetstream()
        subject = RebalancePlanned.topic.subject("demo")
        for _ in range(3):
            await admin_js.publish(subject, b"{}", stream=subjects.EVENTS_STREAM)
        async with client(secured, "tracker", errors) as tracker:
            js = tracker.jetstream(timeout=1.0)
            stolen = await js.pull_subscribe_bind("executor-plans", stream=subjects.EVENTS_STREAM)
            with pytest.raises(nats.errors.TimeoutError):
                await stolen.fetch(1, timeout=1.0)
            with pytest.raises(nats.errors.Error):
                await js.delete_consumer(subjects.EVENTS_STREAM, "executor-plans")
            events = await admin_js.stream_info(subjects.EVENTS_STREAM)
            with pytest.raises(nats.errors.Error):
                await js.update_stream(events.config.evolve(max_msgs=1))
            with pytest.raises(nats.errors.Error):
                await js.purge_stream(subjects.EVENTS_STREAM)
            with pytest.raises(nats.errors.Error):  # an ephemeral consumer to read the stream with
                await js.pull_subscribe("rebal.evt.>", stream=subjects.EVENTS_STREAM)
            with pytest.raises(nats.errors.Error):  # a durable of its own making
                await js.pull_subscribe("rebal.evt.>", durable="tracker-spy", stream=subjects.EVENTS_STREAM)
            # A plan delivered to the executor (here pulled by the admin in its place) whose
            # acknowledgement subject the tracker learnt: its acknowledgement is refused.
            executor_view = await admin_js.pull_subscribe_bind(
                "executor-plans", stream=subjects.EVENTS_STREAM
            )
            [delivered] = await executor_view.fetch(1, timeout=5.0)
            await tracker.publish(delivered.reply, b"+ACK")
            await tracker.flush()
            await eventually(lambda: any(delivered.reply.lower() in e for e in errors))  # nats-py: lower
        info = await admin_js.consumer_info(subjects.EVENTS_STREAM, "executor-plans")
        after = await admin_js.stream_info(subjects.EVENTS_STREAM)
    finally:
        await admin.drain()
    # The executor's consumer is there, nothing was taken from it: one delivered (to the executor's
    # stand-in) and unacknowledged, two waiting; the stream is as it was.
    assert (info.num_ack_pending, info.num_pending, info.ack_floor.consumer_seq) == (1, 2, 0)
    assert after.config.max_msgs == events.config.max_msgs == -1 and after.state.messages == 3
    for refused in (
        "$JS.API.CONSUMER.MSG.NEXT.REBAL_EVENTS.executor-plans",
        "$JS.API.CONSUMER.DELETE.REBAL_EVENTS.executor-plans",
        "$JS.API.STREAM.UPDATE.REBAL_EVENTS",
        "$JS.API.STREAM.PURGE.REBAL_EVENTS",
        "$JS.API.CONSUMER.CREATE.REBAL_EVENTS",
    ):
        assert any(f'permissions violation for publish to "{refused.lower()}' in e for e in errors), refused


async def test_only_the_migration_user_updates_a_stream(
    secured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rebal import migrate
    from rebal.settings import ServiceSettings

    tracker = broker_as(secured, "tracker")
    async with started(tracker):  # a first start creates the streams
        js = tracker.config.connection_state.stream
        monkeypatch.setattr(bus, "DUPLICATE_WINDOW_SECONDS", 60.0)  # a new version's configuration
        await bus.declare_streams(tracker, update=False)  # warns, carries on
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.duplicate_window == 120.0
        settings = ServiceSettings(nats={"url": secured, "user": "migrate", "password": password("migrate")})
        await migrate.declare(settings)
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.duplicate_window == 60.0

"""The planner: component tests on FastStream's in-memory broker, then on a real nats-server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from faststream.nats import NatsBroker, TestNatsBroker

from rebal import bus
from rebal.core.plan import Budget, Order, Skip
from rebal.core.shown import Projected
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    PlanFailed,
    PlannedBudget,
    PlannedOrder,
    ProjectedWeight,
    RebalancePlanned,
    SkippedOrder,
    StartRebalance,
    TargetWeightsComputed,
    derive_id,
    derive_run_id,
    new_event,
)
from rebal_planner.handlers import register
from rebal_planner.planner import Planner
from rebal_planner.planning import parse_snapshot, parse_target, parsed_or_error, plan_event
from rebal_planner.settings import PlannerSettings
from tests.bench.test_reference_agreement import generate
from tests.fakes import FakeHistory, RecordingPublisher
from tests.messaging import eventually, started

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
E = TypeVar("E", bound=Event)


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / f"{name}.json").read_text()))


def snapshot(tree: dict[str, Any] | None = None) -> BalanceSnapshotTaken:
    return new_event(
        BalanceSnapshotTaken,
        key="tick-1",
        now=NOW,
        portfolio_id="demo",
        tree=tree or load("real"),
        prices=load("prices"),
        markets=load("markets"),
    )


def target(tree: dict[str, Any] | None = None) -> TargetWeightsComputed:
    return new_event(
        TargetWeightsComputed, key="v1", now=NOW, portfolio_id="demo", tree=tree or load("target")
    )


def rebalance(dry_run: bool = False) -> StartRebalance:
    return new_event(StartRebalance, key="operator-1", now=NOW, portfolio_id="demo", dry_run=dry_run)


def plan(
    cause: Event, snap: BalanceSnapshotTaken, goal: TargetWeightsComputed
) -> RebalancePlanned | PlanFailed:
    return plan_event(
        cause,
        snapshot_id=snap.event_id,
        target_id=goal.event_id,
        snapshot=parsed_or_error(parse_snapshot, snap),
        target=parsed_or_error(parse_target, goal),
        band=Decimal(0),
        dry_run=False,
        now=NOW,
    )


def test_plan_event_carries_the_core_plan_and_derives_its_ids_from_the_cause() -> None:
    cause = rebalance()
    event = plan(cause, snapshot(), target())
    assert isinstance(event, RebalancePlanned)
    assert event.correlation_id == derive_id("run", cause.event_id)
    assert event.causation_id == cause.event_id
    assert [(o.symbol, o.side, str(o.amount)) for o in event.orders][:2] == [
        ("BTC/USDT", "sell", "0.15304"),
        ("ETH/USDT", "sell", "0.5888"),
    ]
    assert event.transfers[0].amount == Decimal("10530")
    assert event.total_value == Decimal("58800")
    again = plan(cause, snapshot(), target())
    assert again.event_id == event.event_id  # a redelivered cause gives the same plan id


def test_the_plan_carries_what_it_was_made_from_and_what_each_account_may_spend() -> None:
    snap, goal = snapshot(), target()
    event = plan(rebalance(), snap, goal)
    assert isinstance(event, RebalancePlanned)
    assert (event.snapshot_id, event.snapshot_taken_at, event.target_id) == (
        snap.event_id,
        snap.occurred_at,
        goal.event_id,
    )
    # binance/spot: 5000 USDT of which arb-bot locks 1000: 4000 free, less the 10530 it sends to the broker
    # (paid from its sells); the broker: its 2500 USD, and the 10530 USDT coming in.
    assert [(b.exchange, b.account, b.asset, b.amount) for b in event.budgets] == [
        ("binance", "alice/binance/spot", "USDT", Decimal("-6530")),
        ("broker", "alice/broker/cash-account", "USD", Decimal("2500")),
        ("broker", "alice/broker/cash-account", "USDT", Decimal("10530")),
    ]


def test_the_plan_event_is_what_validation_would_have_made() -> None:
    """The orders and skips go into the event unvalidated (`Frozen.trusted`): on a generated tree with
    thousands of both, the event equals its validated round trip, field by field and type by type."""
    real, goal, prices, markets = generate.generate(3000, 11)
    snap = new_event(
        BalanceSnapshotTaken, key="g", now=NOW, portfolio_id="demo", tree=real, prices=prices, markets=markets
    )
    event = plan(
        rebalance(), snap, new_event(TargetWeightsComputed, key="g", now=NOW, portfolio_id="demo", tree=goal)
    )
    assert isinstance(event, RebalancePlanned) and len(event.orders) > 1000 and event.skipped
    # The trusted rows are the core's tuples: their fields must come in the models' order.
    assert tuple(PlannedOrder.model_fields) == Order._fields
    assert tuple(SkippedOrder.model_fields) == Skip._fields
    assert tuple(ProjectedWeight.model_fields) == Projected._fields
    assert tuple(PlannedBudget.model_fields) == Budget._fields
    assert event.projected_weights
    validated = RebalancePlanned.model_validate(event.model_dump())
    assert validated == event
    for made, checked in zip(event.orders + event.skipped, validated.orders + validated.skipped, strict=True):
        assert {k: (type(v), str(v)) for k, v in made.__dict__.items()} == {
            k: (type(v), str(v)) for k, v in checked.__dict__.items()
        }
    assert RebalancePlanned.model_validate_json(event.model_dump_json()) == event


def test_bad_input_becomes_a_plan_failed_event_naming_the_node() -> None:
    broken = load("target")
    broken["children"][0]["weight"] = "50%"  # 50% + 60%
    event = plan(rebalance(), snapshot(), target(broken))
    assert isinstance(event, PlanFailed)
    assert event.reason == "target tree: alice: weights of the children sum to 110%, expected 100%"


def test_a_target_asking_for_an_asset_no_market_reaches_fails_before_any_trade() -> None:
    goal = load("target")
    crypto = goal["children"][0]["children"][0]["children"][0]
    crypto["children"].append({"name": "doge", "asset": "DOGE", "weight": "0"})
    crypto["children"][0]["weight"], crypto["children"][-1]["weight"] = "0.6", "0.1"
    prices = load("prices")
    prices["prices"]["DOGE"] = "0.1"  # priced, but no market trades it on binance
    the_snapshot = new_event(
        BalanceSnapshotTaken,
        key="tick-doge",
        now=NOW,
        portfolio_id="demo",
        tree=load("real"),
        prices=prices,
        markets=load("markets"),
    )
    failed = plan(rebalance(), the_snapshot, target(goal))
    assert isinstance(failed, PlanFailed)
    assert failed.reason == (
        "target tree: alice/binance/spot/crypto/doge: no market path for DOGE from USDT on binance: account "
        "alice/binance/spot can never buy it (list a market for it, or leave it out of the target)"
    )


async def test_on_the_in_memory_broker_a_command_becomes_a_plan() -> None:
    broker = NatsBroker()
    publisher = bus.Publisher(broker)
    history = FakeHistory([snapshot(), target()])
    register(broker, publisher, Planner(history, publisher, PlannerSettings(), clock=lambda: NOW))

    @broker.subscriber(RebalancePlanned.topic.subject("demo"), stream=bus.EVENTS.jstream())
    async def plans(body: dict[str, Any]) -> None:
        seen.append(RebalancePlanned.model_validate(body))

    seen: list[RebalancePlanned] = []
    async with TestNatsBroker(broker) as test_broker:
        cause = rebalance()
        await test_broker.publish(cause.model_dump_json().encode(), subject=cause.subject)
        [plan] = seen
        assert plan.dry_run is False and plan.causation_id == cause.event_id
        assert len(plan.orders) == 6


async def test_without_a_snapshot_a_command_fails_with_a_reason() -> None:
    recorder = RecordingPublisher()
    planner = Planner(FakeHistory([target()]), recorder, PlannerSettings(), clock=lambda: NOW)
    command = rebalance()
    await planner.on_command(command)
    [failed] = recorder.published
    assert isinstance(failed, PlanFailed) and failed.reason == "no balance snapshot yet for demo"
    assert failed.correlation_id == derive_run_id(command) and not failed.unknown_portfolio


async def test_an_unknown_portfolio_fails_with_its_run_and_says_so() -> None:
    """Issue 19.5: the failure had no run id (the monitor could not journal it) and read "no a ..."."""
    recorder = RecordingPublisher()
    planner = Planner(FakeHistory([snapshot(), target()]), recorder, PlannerSettings(), clock=lambda: NOW)
    command = new_event(StartRebalance, key="operator-2", now=NOW, portfolio_id="nowhere", dry_run=True)
    await planner.on_command(command)
    [failed] = recorder.published
    assert isinstance(failed, PlanFailed) and failed.unknown_portfolio
    assert failed.correlation_id == derive_run_id(command) and failed.portfolio_id == "nowhere"
    assert failed.reason.startswith("unknown portfolio 'nowhere'")


async def test_new_snapshots_make_dry_run_previews() -> None:
    recorder = RecordingPublisher()
    planner = Planner(FakeHistory([target()]), recorder, PlannerSettings(), clock=lambda: NOW)
    await planner.on_snapshot(snapshot())
    [preview] = recorder.published
    assert isinstance(preview, RebalancePlanned) and preview.dry_run is True


async def test_on_a_real_server_the_plan_uses_the_latest_snapshot_and_target(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    settings = PlannerSettings(planning={"preview_on_new_data": False})
    register(broker, publisher, Planner(bus.StreamHistory(broker), publisher, settings, clock=lambda: NOW))
    plans: list[RebalancePlanned] = []

    @broker.subscriber(RebalancePlanned.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        plans.append(RebalancePlanned.model_validate(body))

    async with started(broker):
        await publisher.publish(snapshot())
        await publisher.publish(target())
        cause = rebalance()
        await publisher.publish(cause)
        await eventually(lambda: plans)
        assert await publisher.publish(cause) is False  # the operator's retry is dropped by the bus
    [plan] = plans
    assert plan.correlation_id == derive_id("run", cause.event_id)
    assert plan.snapshot_id == snapshot().event_id and plan.target_id == target().event_id


async def test_inputs_are_parsed_once_per_event() -> None:
    recorder = RecordingPublisher()
    history = FakeHistory([snapshot(), target()])
    planner = Planner(history, recorder, PlannerSettings(), clock=lambda: NOW)
    await planner.on_command(rebalance())
    cached = planner.snapshots.entries[snapshot().event_id]
    other = new_event(StartRebalance, key="operator-2", now=NOW, portfolio_id="demo", dry_run=True)
    await planner.on_command(other)
    assert planner.snapshots.entries[snapshot().event_id] is cached  # the same parse, reused
    assert len(recorder.published) == 2
    newer = new_event(
        BalanceSnapshotTaken,
        key="tick-2",
        now=NOW,
        portfolio_id="demo",
        tree=load("real"),
        prices=load("prices"),
        markets=load("markets"),
    )
    history.events.append(newer)
    third = new_event(StartRebalance, key="operator-3", now=NOW, portfolio_id="demo", dry_run=True)
    await planner.on_command(third)
    last = recorder.published[-1]
    assert isinstance(last, RebalancePlanned) and last.snapshot_id == newer.event_id  # the stream decides


def test_a_transfer_from_a_bank_account_is_an_operator_s_task_in_the_plan_event() -> None:
    usd = {"name": "usd", "asset": "USD"}
    real = {
        "name": "alice",
        "children": [
            {"name": "bank", "kind": "bank", "quote": "USD", "children": [{**usd, "amount": "1000"}]},
            {
                "name": "broker",
                "kind": "account",
                "exchange": "broker",
                "quote": "USD",
                "children": [{**usd, "amount": "200"}, {"name": "spy", "asset": "SPY", "amount": "0"}],
            },
        ],
    }
    goal = {
        "name": "alice",
        "children": [
            {"name": "bank", "weight": "25%", "children": [{**usd, "weight": 1}]},
            {"name": "broker", "weight": "75%", "children": [{"name": "spy", "asset": "SPY", "weight": 1}]},
        ],
    }
    snap = new_event(
        BalanceSnapshotTaken,
        key="tick-bank",
        now=NOW,
        portfolio_id="demo",
        tree=real,
        prices={"quote": "USD", "prices": {"SPY": "300", "USD": "1"}},
        markets={"broker": {"SPY/USD": {"amount_step": "1", "fee_rate": "0"}}},
    )
    event = plan(rebalance(), snap, target(goal))
    assert isinstance(event, RebalancePlanned)
    [transfer] = event.transfers
    assert (transfer.from_account, transfer.to_account, transfer.amount, transfer.manual) == (
        "alice/bank",
        "alice/broker",
        Decimal(700),
        True,
    )
    assert [(o.symbol, o.side, o.amount) for o in event.orders] == [("SPY/USD", "buy", Decimal(3))]

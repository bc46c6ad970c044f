"""The optimizer service's allocation of a portfolio across its strategies: stored returns (real
Postgres) in, a target whose strategy nodes carry the weights (or why not) out."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from rebal.events import (
    Event,
    OptimizationFailed,
    RunOptimization,
    StrategyReturnReported,
    TargetWeightsComputed,
    derive_id,
    new_event,
)
from rebal.payloads import Body
from rebal.schedule import CronSchedule
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_optimizer.allocations import Allocations
from rebal_optimizer.allocator import Allocator, Trigger
from rebal_optimizer.settings import AllocationSettings, OptimizerSettings
from rebal_optimizer.store import PostgresStrategyData
from rebal_tracker.returns import ReturnRow, ReturnsStore
from tests.fakes import FakeHistory, RecordingPublisher
from tests.optimizer.test_service_targets import BASE, children
from tests.paper_support import migrated_pool

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(database.dsn):
        yield value


def returns_of(seed: int, days: int, scale: float) -> list[Decimal]:
    rng = np.random.default_rng(seed)
    return [Decimal(f"{value:.8f}") for value in rng.normal(0.0005, scale, days)]


async def store(pool: asyncpg.Pool, strategy: str, values: list[Decimal], start: int = 0) -> None:
    rows = [
        ReturnRow.of(
            new_event(
                StrategyReturnReported,
                key=f"{strategy}|{day}",
                now=NOW,
                portfolio_id="fund",
                strategy_id=strategy,
                timestamp=T0 + timedelta(days=day),
                period_return=value,
            )
        )
        for day, value in enumerate(values, start=start)
    ]
    await ReturnsStore(pool).insert(rows)


def base_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.json"
    path.write_text(json.dumps(BASE))
    return path


def ran_before() -> FakeHistory:
    """The streams of a deployment that already has a target for the fund (no base tree is published)."""
    return FakeHistory(
        [new_event(TargetWeightsComputed, key="earlier", now=NOW, portfolio_id="fund", tree=BASE)]
    )


def allocator(
    pool: asyncpg.Pool, tmp_path: Path, publisher: RecordingPublisher, **settings: Any
) -> Allocator:
    allocation = AllocationSettings(account_value=Decimal(100_000), **settings)
    return Allocator(
        "fund",
        allocation,
        base_file(tmp_path),
        PostgresStrategyData(pool),
        FakeHistory(),
        publisher,
        lambda: NOW,
    )


async def test_risk_parity_weights_replace_the_strategy_nodes(pool: asyncpg.Pool, tmp_path: Path) -> None:
    trend, arb = returns_of(1, 200, 0.02), returns_of(2, 200, 0.01)
    await store(pool, "trend", trend)
    await store(pool, "arb", arb)
    await store(pool, "nobody", returns_of(3, 200, 0.01))  # reports, but is not a node: not allocated
    publisher = RecordingPublisher()
    subject = allocator(
        pool,
        tmp_path,
        publisher,
        method="risk_parity",
        estimator="sample",
        target_volatility=0.1,
        max_leverage=2.0,
    )

    event = await subject.run(Trigger("schedule", "2026-01-01T00:00:00+00:00"))

    assert isinstance(event, TargetWeightsComputed) and publisher.published == [event]
    optimization = event.optimization
    assert optimization is not None
    matrix = np.array([[float(a), float(t)] for a, t in zip(arb, trend, strict=True)])
    # Risk parity on two strategies: weights proportional to 1 / volatility (any correlation).
    inverse = 1 / matrix.std(axis=0, ddof=1)
    expected = inverse / inverse.sum()
    assert optimization.weights == pytest.approx({"arb": expected[0], "trend": expected[1]}, abs=1e-6)
    realised = float(np.std(matrix @ expected, ddof=1) * math.sqrt(365.25))  # daily dates
    assert optimization.realised_volatility == pytest.approx(realised, rel=1e-6)
    assert optimization.leverage == pytest.approx(min(0.1 / realised, 2.0), rel=1e-6)
    assert (optimization.method, optimization.status, optimization.observations) == (
        "risk_parity",
        "optimal",
        200,
    )
    assert optimization.account_value == Decimal(100_000) and optimization.trigger == "schedule"
    # The nodes share the 70% the base gave them, in those proportions; cash is unchanged.
    weights = children(event.tree)
    assert Decimal(weights["arb"]) + Decimal(weights["trend"]) == Decimal("0.7")
    assert float(weights["trend"]) == pytest.approx(0.7 * expected[1], abs=1e-9)
    assert weights["cash"] == "30%"
    # The same trigger again: the same event id (the bus drops it).
    again = await subject.run(Trigger("schedule", "2026-01-01T00:00:00+00:00"))
    assert again.event_id == event.event_id and len(publisher.published) == 1


async def test_a_new_day_re_solves_the_same_problem(pool: asyncpg.Pool, tmp_path: Path) -> None:
    await store(pool, "trend", returns_of(1, 100, 0.02))
    await store(pool, "arb", returns_of(2, 100, 0.01))
    subject = allocator(pool, tmp_path, RecordingPublisher(), method="min_variance", lookback_periods=60)
    first = await subject.run(Trigger("data", "200"))
    problem = subject.optimizer
    await store(pool, "trend", returns_of(4, 1, 0.02), start=100)
    await store(pool, "arb", returns_of(5, 1, 0.01), start=100)
    second = await subject.run(Trigger("data", "202"))
    assert isinstance(first, TargetWeightsComputed) and isinstance(second, TargetWeightsComputed)
    assert subject.optimizer is problem  # kept: re-solved with the new data
    assert second.optimization is not None and second.optimization.observations == 60
    assert second.optimization.weights != first.optimization.weights  # type: ignore[union-attr]


async def test_too_little_data_or_an_infeasible_problem_keeps_the_previous_weights(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await store(pool, "trend", returns_of(1, 20, 0.02))
    await store(pool, "arb", returns_of(2, 10, 0.01), start=10)
    publisher = RecordingPublisher()
    subject = allocator(pool, tmp_path, publisher, min_observations=30)
    failed = await subject.run(Trigger("data", "30"))
    assert isinstance(failed, OptimizationFailed)
    assert failed.reason == "only 10 common returns for arb, trend; 30 needed"

    subject = allocator(pool, tmp_path, publisher, min_observations=5)
    solved = await subject.run(Trigger("data", "31"))
    assert isinstance(solved, TargetWeightsComputed)
    previous = subject.weights
    subject.optimizer = None
    subject.settings = AllocationSettings(account_value=Decimal(1), min_observations=5, min_weight=0.6)
    refused = await subject.run(Trigger("data", "32"))
    assert isinstance(refused, OptimizationFailed)
    assert refused.reason == (
        "allocation settings: risk parity takes no constraint beyond long-only and fully invested"
    )
    subject.settings = AllocationSettings(
        method="min_variance", account_value=Decimal(1), min_observations=5, min_weight=0.6
    )
    infeasible = await subject.run(Trigger("data", "33"))
    assert isinstance(infeasible, OptimizationFailed)
    assert infeasible.reason.startswith("infeasible: ")
    assert subject.weights == previous  # the previous allocation stays in force
    assert [type(e).__name__ for e in publisher.published] == [
        "OptimizationFailed",
        "TargetWeightsComputed",
        "OptimizationFailed",
        "OptimizationFailed",
    ]


async def test_an_operators_command_is_answered_by_an_event_it_caused(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await store(pool, "trend", returns_of(1, 40, 0.02))
    await store(pool, "arb", returns_of(2, 40, 0.01))
    publisher = RecordingPublisher()
    settings = OptimizerSettings(
        targets={"files": {"fund": base_file(tmp_path)}},
        allocations={"fund": {"method": "max_sharpe", "account_value": "5000", "min_observations": 30}},
    )
    allocations = Allocations(
        publisher, FakeHistory(), settings, PostgresStrategyData(pool), clock=lambda: NOW
    )
    command = new_event(RunOptimization, key="op-1", now=NOW, portfolio_id="fund")
    await allocations.on_command(command)
    other = new_event(RunOptimization, key="op-2", now=NOW, portfolio_id="elsewhere")
    await allocations.on_command(other)
    target, refused = publisher.published
    assert isinstance(target, TargetWeightsComputed) and target.causation_id == command.event_id
    assert target.optimization is not None and target.optimization.trigger == "command"
    assert sum(target.optimization.weights.values()) == pytest.approx(1.0)
    assert isinstance(refused, OptimizationFailed) and refused.causation_id == other.event_id
    assert refused.reason == "no allocation is configured for elsewhere"


async def test_allocation_settings_are_checked_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(
        ValidationError, match=r"allocations for fund: give each a base tree in targets\.files"
    ):
        OptimizerSettings(targets={"files": {}}, allocations={"fund": {}})
    with pytest.raises(
        ValidationError, match=r"risk_parity takes no parameter risk_aversion \(allowed: none\)"
    ):
        AllocationSettings(parameters={"risk_aversion": 2})
    with pytest.raises(ValidationError, match="reconciler mode needs quote_wallet"):
        AllocationSettings(mode="reconciler")


@pytest.mark.parametrize(
    ("interval", "schedule"),
    [(0, ""), (3600, "0 * * * *"), (86400, "0 0 * * *"), ("604800", "0 0 * * MON")],
)
async def test_an_old_interval_naming_a_calendar_period_is_read_as_its_schedule(
    interval: int | str, schedule: str
) -> None:
    settings = AllocationSettings.model_validate({"interval_seconds": interval, "timezone": "Asia/Tokyo"})
    assert (settings.schedule, settings.timezone) == (schedule, "Asia/Tokyo")
    assert settings.cron() == (CronSchedule(schedule, "Asia/Tokyo") if schedule else None)


async def test_a_schedule_that_cannot_be_read_is_refused_naming_the_key() -> None:
    from pydantic import ValidationError

    default = AllocationSettings()
    assert (default.schedule, default.timezone) == ("0 0 * * *", "UTC")  # daily at midnight, UTC
    with pytest.raises(ValidationError, match=r"interval_seconds 1800 is no longer read: give schedule"):
        OptimizerSettings(
            targets={"files": {"fund": Path("base.json")}}, allocations={"fund": {"interval_seconds": 1800}}
        )
    with pytest.raises(ValidationError, match=r"give schedule .* or the old interval_seconds, not both"):
        AllocationSettings.model_validate({"interval_seconds": 86400, "schedule": "0 0 * * *"})
    with pytest.raises(ValidationError, match=r"schedule\n.*a cron expression has 5 fields"):
        AllocationSettings(schedule="0 0 * *")
    with pytest.raises(ValidationError, match=r"timezone\n.*unknown time zone 'Mars/Olympus'"):
        AllocationSettings(timezone="Mars/Olympus")


async def test_a_bad_allocation_stops_the_service_with_exit_4_and_the_reason() -> None:
    import asyncio
    import os
    import sys

    env = {**os.environ, "REBAL__ALLOCATIONS": '{"demo": {"method": "max_sharpe", "parameters": {"x": 1}}}'}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rebal_optimizer", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 4
    assert "rebal-optimizer: configuration error" in err.decode()
    assert "max_sharpe takes no parameter x (allowed: risk_free)" in err.decode()


async def test_enough_new_returns_trigger_a_solve(pool: asyncpg.Pool, tmp_path: Path) -> None:
    from tests.messaging import eventually

    await store(pool, "trend", returns_of(1, 40, 0.02))
    await store(pool, "arb", returns_of(2, 40, 0.01))
    publisher = RecordingPublisher()
    settings = OptimizerSettings(
        targets={"files": {"fund": base_file(tmp_path)}},
        allocations={
            "fund": {
                "account_value": "1000",
                "after_new_returns": 4,
                "interval_seconds": 0,
                "poll_seconds": 0.05,
            }
        },
    )
    allocations = Allocations(publisher, ran_before(), settings, PostgresStrategyData(pool))
    await allocations.start()
    try:
        await eventually(lambda: publisher.published)  # the first solve, at start
        await store(pool, "trend", returns_of(3, 2, 0.02), start=40)
        await store(pool, "arb", returns_of(4, 1, 0.01), start=40)
        await asyncio.sleep(0.3)
        assert len(publisher.published) == 1  # 3 new returns: not enough yet
        await store(pool, "arb", returns_of(5, 1, 0.01), start=41)
        await eventually(lambda: len(publisher.published) == 2)
    finally:
        await allocations.stop()
    triggers = [e.optimization.trigger for e in publisher.published if isinstance(e, TargetWeightsComputed)]
    assert triggers == ["data", "data"]
    assert publisher.published[1].optimization.observations == 42  # type: ignore[union-attr]


@dataclass
class Clock:
    """The service's clock, moved by the test: ticks are evaluated from it, not from sleeps."""

    at: datetime

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Streams:
    """The bus as the optimizer sees it across restarts: what it publishes is the latest in the streams
    (`FakeHistory`), and an event id already seen is dropped (`RecordingPublisher`)."""

    history: FakeHistory = field(default_factory=FakeHistory)
    published: list[Event] = field(default_factory=list)

    async def publish(self, event: Event, body: Body | None = None) -> bool:
        if any(e.event_id == event.event_id for e in self.published):
            return False
        self.published.append(event)
        self.history.events.append(event)
        return True

    def solves(self) -> list[tuple[str, datetime]]:
        """(trigger, when) of every allocation published."""
        return [
            (e.optimization.trigger, e.occurred_at)
            for e in self.published
            if isinstance(e, TargetWeightsComputed) and e.optimization is not None
        ]


def tick_id(tick: str) -> uuid.UUID:
    """The id of the allocation a schedule's tick publishes (an instant in UTC, ISO 8601)."""
    return derive_id("TargetWeightsComputed", "fund", f"fund|schedule|{tick}")


async def settle(count: Callable[[], int], expected: int) -> None:
    """Wait until `count()` reaches `expected`, then a few polls more: nothing else may come."""
    from tests.messaging import eventually

    await eventually(lambda: count() >= expected)
    await asyncio.sleep(0.3)
    assert count() == expected


async def test_a_weekly_schedule_solves_on_mondays_at_midnight_in_its_zone(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The old weekly interval (604800 s) fell on Thursdays, 00:00 UTC (epoch-aligned); it now means
    Monday 00:00 on the wall clock of the zone, before and after the clocks go forward (29 March 2026)."""
    await store(pool, "trend", returns_of(1, 40, 0.02))
    await store(pool, "arb", returns_of(2, 40, 0.01))
    streams, clock = Streams(), Clock(datetime(2026, 3, 18, 12, tzinfo=UTC))  # a Wednesday
    fund = {"account_value": "1000", "interval_seconds": 604800, "timezone": "Europe/Berlin"}
    settings = OptimizerSettings(
        targets={"files": {"fund": base_file(tmp_path)}},
        allocations={"fund": {**fund, "poll_seconds": 0.05}},
    )
    assert settings.allocations["fund"].schedule == "0 0 * * MON"
    allocations = Allocations(streams, streams.history, settings, PostgresStrategyData(pool), clock=clock)
    await allocations.start()
    try:
        await settle(lambda: len(streams.solves()), 1)  # the first solve, at start
        clock.at = datetime(2026, 3, 19, 0, 30, tzinfo=UTC)  # Thursday: the old tick
        await settle(lambda: len(streams.solves()), 1)
        clock.at = datetime(2026, 3, 22, 22, 59, tzinfo=UTC)  # Sunday 23:59 in Berlin (UTC+1)
        await settle(lambda: len(streams.solves()), 1)
        clock.at = datetime(2026, 3, 22, 23, 0, 1, tzinfo=UTC)  # Monday 00:00:01 in Berlin
        await settle(lambda: len(streams.solves()), 2)
        clock.at = datetime(2026, 3, 29, 21, 59, tzinfo=UTC)  # Sunday 23:59 in Berlin, now UTC+2
        await settle(lambda: len(streams.solves()), 2)
        clock.at = datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # Monday 00:00 in Berlin
        await settle(lambda: len(streams.solves()), 3)
    finally:
        await allocations.stop()
    assert [trigger for trigger, _ in streams.solves()] == ["data", "schedule", "schedule"]
    ticks = [e.event_id for e in streams.published[-2:]]
    assert ticks == [tick_id("2026-03-22T23:00:00+00:00"), tick_id("2026-03-29T22:00:00+00:00")]


async def test_a_tick_missed_while_away_is_solved_once_across_restarts(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await store(pool, "trend", returns_of(1, 40, 0.02))
    await store(pool, "arb", returns_of(2, 40, 0.01))
    streams = Streams()
    # The last solve before the service went away: Sunday noon; the daily tick at midnight was missed.
    sunday = datetime(2026, 3, 22, 12, tzinfo=UTC)
    streams.history.events.append(
        new_event(
            OptimizationFailed,
            key="earlier",
            now=sunday,
            portfolio_id="fund",
            method="x",
            reason="y",
            trigger="data",
        )
    )
    settings = OptimizerSettings(
        targets={"files": {"fund": base_file(tmp_path)}},
        allocations={"fund": {"account_value": "1000", "schedule": "0 0 * * *", "poll_seconds": 0.05}},
    )
    clock = Clock(datetime(2026, 3, 23, 0, 10, tzinfo=UTC))
    starts = [datetime(2026, 3, 23, 0, 10), datetime(2026, 3, 23, 0, 20), datetime(2026, 3, 24, 0, 5)]
    for restart in starts:
        clock.at = restart.replace(tzinfo=UTC)
        allocations = Allocations(streams, streams.history, settings, PostgresStrategyData(pool), clock=clock)
        solved = len(streams.solves())
        await allocations.start()
        try:
            await settle(lambda: len(streams.solves()), solved + 1)  # one at start, none after
        finally:
            await allocations.stop()
    # A tick missed while away is the start's solve; after a restart the tick already solved is not due
    # again (the data are solved at start, as always), the next one is.
    assert streams.solves() == [
        ("schedule", datetime(2026, 3, 23, 0, 10, tzinfo=UTC)),
        ("data", datetime(2026, 3, 23, 0, 20, tzinfo=UTC)),
        ("schedule", datetime(2026, 3, 24, 0, 5, tzinfo=UTC)),
    ]
    solves = [
        e.event_id for e in streams.published if isinstance(e, TargetWeightsComputed) and e.optimization
    ]
    assert (solves[0], solves[2]) == (
        tick_id("2026-03-23T00:00:00+00:00"),
        tick_id("2026-03-24T00:00:00+00:00"),
    )


async def test_until_a_first_allocation_any_new_return_triggers_a_solve(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from tests.messaging import eventually

    await store(pool, "trend", returns_of(1, 10, 0.02))
    await store(pool, "arb", returns_of(2, 9, 0.01))
    publisher = RecordingPublisher()
    settings = OptimizerSettings(
        targets={"files": {"fund": base_file(tmp_path)}},
        allocations={"fund": {"account_value": "1000", "min_observations": 10, "poll_seconds": 0.05}},
    )
    allocations = Allocations(publisher, FakeHistory(), settings, PostgresStrategyData(pool))
    await allocations.start()
    try:
        await eventually(lambda: len(publisher.published) >= 2)
        await asyncio.sleep(0.3)
        # No target yet: the base tree as written is the target until a first allocation.
        base, failed = publisher.published  # no new data: no new attempt
        assert isinstance(base, TargetWeightsComputed) and base.optimization is None
        assert base.tree == BASE
        assert isinstance(failed, OptimizationFailed) and failed.reason.startswith("only 9 common returns")
        await store(pool, "arb", returns_of(3, 1, 0.01), start=9)
        await eventually(lambda: len(publisher.published) == 3)
        await store(pool, "arb", returns_of(4, 1, 0.01), start=10)
        await asyncio.sleep(0.3)
    finally:
        await allocations.stop()
    assert [type(e).__name__ for e in publisher.published] == [
        "TargetWeightsComputed",
        "OptimizationFailed",
        "TargetWeightsComputed",
    ]
    assert publisher.published[-1].optimization is not None  # type: ignore[attr-defined]


async def test_the_base_tree_is_not_published_over_a_target_the_streams_hold(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    publisher = RecordingPublisher()
    earlier = new_event(TargetWeightsComputed, key="earlier", now=NOW, portfolio_id="fund", tree=BASE)
    subject = allocator(pool, tmp_path, publisher)
    subject.history = FakeHistory([earlier])
    assert await subject.publish_base() is False
    subject.history = FakeHistory()
    assert await subject.publish_base() is True
    assert await subject.publish_base() is False  # the bus drops the same event again
    reconciler = allocator(pool, tmp_path, RecordingPublisher(), mode="reconciler", quote_wallet="x")
    assert await reconciler.publish_base() is False  # its targets are positions, never the base


async def test_a_nan_parameter_or_flat_data_publishes_the_reason(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # Settings that escaped validation (built without it): the service refuses them when it allocates.
    await store(pool, "trend", returns_of(1, 60, 0.02))
    await store(pool, "arb", [Decimal("0.001")] * 60)  # a strategy that never moves
    publisher = RecordingPublisher()
    escaped = AllocationSettings.model_construct(
        **{
            **AllocationSettings(account_value=Decimal(100_000)).model_dump(),
            "method": "mean_variance",
            "parameters": {"risk_aversion": math.nan},
        }
    )
    subject = Allocator(
        "fund",
        escaped,
        base_file(tmp_path),
        PostgresStrategyData(pool),
        FakeHistory(),
        publisher,
        lambda: NOW,
    )
    event = await subject.run(Trigger("schedule", "a"))
    assert isinstance(event, OptimizationFailed)
    assert event.reason == "allocation settings: risk_aversion must be a finite number, not nan"
    flat = allocator(pool, tmp_path, publisher, method="risk_parity")
    event = await flat.run(Trigger("schedule", "b"))
    assert isinstance(event, OptimizationFailed) and publisher.published[-1] == event
    assert event.reason.startswith("bad data: arb: constant returns over the last 60 periods")


async def test_irregular_dates_publish_the_reason(pool: asyncpg.Pool, tmp_path: Path) -> None:
    days = [0, 1, 2, 5, 6, 9, 10, 14, 15, 16, 20, *range(21, 120, 3)]
    for name, seed in (("trend", 1), ("arb", 2)):
        for day, value in zip(days, returns_of(seed, len(days), 0.01), strict=True):
            await store(pool, name, [value], start=day)
    event = await allocator(pool, tmp_path, RecordingPublisher(), method="min_variance").run(
        Trigger("schedule", "c")
    )
    assert isinstance(event, OptimizationFailed)
    assert event.reason.startswith("the strategies' common dates: irregular dates")


async def test_the_docs_examples_of_the_optimizer_settings_are_read_as_written() -> None:
    import re
    import tomllib

    doc = (Path(__file__).parents[2] / "docs" / "bots.md").read_text()
    section = doc[doc.index("## The optimizer: allocating") :]
    as_json = json.loads(re.findall(r"```json\n(.*?)```", section, re.DOTALL)[0])["fund"]
    as_toml = tomllib.loads(re.findall(r"```toml\n(.*?)```", section, re.DOTALL)[0])["allocations"]["fund"]
    for written in (as_json, as_toml):
        assert AllocationSettings.model_validate(written).cron() == CronSchedule(
            "0 0 * * MON", "Europe/Berlin"
        )

"""Reconciler mode in the planner: an optimizer target in reconciler mode is planned for execution at
once when the planner is set to (off by default: then it is only previewed, like any target)."""

from __future__ import annotations

from decimal import Decimal

from rebal.events import Optimization, RebalancePlanned, TargetWeightsComputed, new_event
from rebal_planner.planner import Planner
from rebal_planner.settings import PlannerSettings
from tests.fakes import FakeHistory, RecordingPublisher
from tests.planner.test_planner import NOW, load, snapshot


def reconciler_target() -> TargetWeightsComputed:
    optimization = Optimization(
        method="risk_parity",
        weights={"trend": 1.0},
        realised_volatility=0.2,
        target_volatility=0.1,
        leverage=0.5,
        account_value=Decimal(1000),
        status="optimal",
        observations=30,
        trigger="positions",
        mode="reconciler",
        targets={"BTC": Decimal(500)},
    )
    return new_event(
        TargetWeightsComputed,
        key="r1",
        now=NOW,
        portfolio_id="demo",
        tree=load("target"),
        optimization=optimization,
    )


async def test_a_reconciler_target_is_planned_for_execution_when_switched_on() -> None:
    for execute, dry_run in ((True, False), (False, True)):
        publisher = RecordingPublisher()
        settings = PlannerSettings(
            planning={"execute_reconciler_targets": execute, "reconcile_band": "0.002"}
        )
        planner = Planner(FakeHistory([snapshot()]), publisher, settings, clock=lambda: NOW)
        target = reconciler_target()
        await planner.on_target(target)
        [plan] = publisher.published
        assert isinstance(plan, RebalancePlanned)
        assert plan.dry_run is dry_run and plan.causation_id == target.event_id
        assert plan.band == (Decimal("0.002") if execute else Decimal(0))

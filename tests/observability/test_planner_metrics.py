"""The gauges the planner sets: what an operator reads on the overview dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from rebal.events import BalanceSnapshotTaken, Optimization, StartRebalance, TargetWeightsComputed, new_event
from rebal_planner.planner import Planner
from rebal_planner.settings import PlannerSettings
from tests.fakes import FakeHistory, RecordingPublisher

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def allocated(key: str, weights: dict[str, float], leverage: float) -> TargetWeightsComputed:
    optimization = Optimization(
        method="risk_parity",
        weights=weights,
        realised_volatility=0.12,
        target_volatility=0.1,
        leverage=leverage,
        account_value=Decimal(100000),
        status="optimal",
        observations=250,
        trigger="schedule",
    )
    return new_event(
        TargetWeightsComputed,
        key=key,
        now=NOW,
        portfolio_id="metrics-test",
        tree=json.loads((DEMO / "target.json").read_text()),
        source="optimizer",
        optimization=optimization,
    )


async def test_strategy_weights_and_leverage_follow_the_latest_target() -> None:
    planner = Planner(
        FakeHistory(), RecordingPublisher(), PlannerSettings(planning={"preview_on_new_data": False})
    )
    await planner.on_target(allocated("a", {"trend": 0.5, "meanrev": 0.3, "arb": 0.2}, 1.25))
    weights = {
        s: sample("rebal_strategy_weight_ratio", portfolio="metrics-test", strategy=s)
        for s in ("trend", "meanrev", "arb")
    }
    assert weights == {"trend": 0.5, "meanrev": 0.3, "arb": 0.2}
    assert sample("rebal_leverage_ratio", portfolio="metrics-test") == 1.25

    await planner.on_target(allocated("b", {"trend": 0.6, "meanrev": 0.4}, 1.0))
    assert sample("rebal_strategy_weight_ratio", portfolio="metrics-test", strategy="arb") is None  # dropped
    assert sample("rebal_strategy_weight_ratio", portfolio="metrics-test", strategy="trend") == 0.6
    assert sample("rebal_leverage_ratio", portfolio="metrics-test") == 1.0


def demo(name: str) -> dict[str, Any]:
    return dict(json.loads((DEMO / f"{name}.json").read_text()))


async def test_a_plan_sets_value_drift_and_the_weights_of_the_top_levels() -> None:
    """The demo: BTC 48000, ETH 15000, SOL 15000, USDT 22000 = 100000; target crypto 70% (BTC 35%), cash
    30%: BTC is 13 points over, the largest gap."""
    portfolio = "metrics-demo"
    snap = new_event(
        BalanceSnapshotTaken,
        key="m-1",
        now=NOW,
        portfolio_id=portfolio,
        tree=demo("real"),
        prices=demo("prices"),
        markets=demo("markets"),
    )
    goal = new_event(TargetWeightsComputed, key="m-1", now=NOW, portfolio_id=portfolio, tree=demo("target"))
    history = FakeHistory([snap, goal])
    planner = Planner(history, RecordingPublisher(), PlannerSettings(planning={"preview_on_new_data": False}))
    await planner.on_command(
        new_event(StartRebalance, key="m-1", now=NOW, portfolio_id=portfolio, dry_run=True)
    )

    assert sample("rebal_portfolio_value", portfolio=portfolio) == 100000.0
    assert sample("rebal_drift_ratio", portfolio=portfolio) == pytest.approx(0.13)
    nodes = ("paper", "paper/spot", "paper/spot/crypto", "paper/spot/cash")
    actual = {n: sample("rebal_weight_actual_ratio", portfolio=portfolio, node=n) for n in nodes}
    target = {n: sample("rebal_weight_target_ratio", portfolio=portfolio, node=n) for n in nodes}
    assert actual == pytest.approx(
        {"paper": 1.0, "paper/spot": 1.0, "paper/spot/crypto": 0.78, "paper/spot/cash": 0.22}
    )
    assert target == pytest.approx(
        {"paper": 1.0, "paper/spot": 1.0, "paper/spot/crypto": 0.7, "paper/spot/cash": 0.3}
    )
    assert sample("rebal_weight_actual_ratio", portfolio=portfolio, node="paper/spot/crypto/btc") is None

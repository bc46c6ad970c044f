"""Strategies end to end: bots report returns and positions, the optimizer allocates across them in
reconciler mode, the planner and executor bring the paper account to the target positions, and follow
when a strategy's state changes. The five services as processes, real NATS and Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from rebal.events import (
    RunFinished,
    StrategyReturnReported,
    TargetWeightsComputed,
    derive_run_id,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from tests.e2e.conftest import TEST_SETTINGS, System, running_system
from tests.e2e.flow import PORTFOLIO, fetch, publish_raw, take_snapshot, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]
ACCOUNT = "demo/paper/spot"
PRICES = {"BTC": Decimal(60000), "ETH": Decimal(3000), "SOL": Decimal(150), "USDT": Decimal(1)}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 12
ALLOCATION = {
    "demo": {
        "method": "risk_parity",
        "estimator": "sample",
        "mode": "reconciler",
        "quote_wallet": "demo/paper/spot/cash/usdt",
        "min_observations": 10,
        "after_new_returns": 2 * DAYS,
        "interval_seconds": 0,
        "poll_seconds": 0.3,
        "target_volatility": 100,  # far above what the strategies show: the leverage is the cap, 1
        "max_leverage": 1,
    }
}


@pytest.fixture
def reconciling(database: FreshDatabase, tmp_path: Path) -> Iterator[System]:
    """The system with the demo portfolio in reconciler mode and the planner executing its targets."""
    env = {name: dict(values) for name, values in TEST_SETTINGS.items()}
    env["optimizer"]["REBAL__ALLOCATIONS"] = json.dumps(ALLOCATION)
    env["planner"] = {**env["planner"], "REBAL__PLANNING__EXECUTE_RECONCILER_TARGETS": "true"}
    yield from running_system(database, tmp_path, env)


async def report(url: str, strategy: str, day: int, value: str, positions: dict[str, str]) -> None:
    ts = T0 + timedelta(days=day)
    event = new_event(
        StrategyReturnReported,
        key=f"{strategy}|{ts.isoformat()}",
        now=ts,
        portfolio_id=PORTFOLIO,
        strategy_id=strategy,
        timestamp=ts,
        period_return=Decimal(value),
        positions={k: Decimal(v) for k, v in positions.items()},
    )
    await publish_raw(url, event.subject, event.model_dump_json().encode(), str(event.event_id))


async def held(dsn: str) -> dict[str, Decimal]:
    rows = await fetch(dsn, "SELECT asset, amount FROM paper.balances WHERE account = $1", ACCOUNT)
    return {row["asset"]: row["amount"] for row in rows}


async def executed(url: str, after: TargetWeightsComputed | None = None) -> TargetWeightsComputed:
    """The next reconciler target (after `after`) once its run has finished, completed."""
    target = await wait_for(
        url,
        TargetWeightsComputed,
        lambda e: e.optimization is not None and (after is None or e.occurred_at > after.occurred_at),
        timeout=60.0,
    )
    run_id = derive_run_id(target)
    finished = await wait_for(url, RunFinished, lambda e: e.correlation_id == run_id, timeout=60.0)
    assert finished.status in ("completed", "completed_with_adjustments"), finished
    return target


def assert_at_targets(balances: dict[str, Decimal], targets: dict[str, Decimal], account: Decimal) -> None:
    """Each instrument's value within 0.5% of the account of its target (fees, lot steps, the band)."""
    for asset in ("BTC", "ETH", "SOL"):
        value = balances.get(asset, Decimal(0)) * PRICES[asset]
        assert abs(value - targets.get(asset, Decimal(0))) <= account * Decimal("0.005"), (
            asset,
            value,
            targets,
        )


async def test_the_paper_account_follows_the_strategies_positions(reconciling: System) -> None:
    url, dsn = reconciling.nats_url, reconciling.dsn
    await take_snapshot(url)  # the account's value, for the optimizer
    trend = {"BTC": "0.5", "ETH": "0.25"}
    arb = {"ETH": "0.5"}
    for day in range(DAYS):
        await report(url, "trend", day, f"{(-1) ** day * 0.02 + 0.001:.4f}", trend)
        await report(url, "arb", day, f"{(-1) ** (day // 2) * 0.01:.4f}", arb)

    first = await executed(url)
    optimization = first.optimization
    assert optimization is not None and optimization.mode == "reconciler" and optimization.leverage == 1.0
    w = {name: Decimal(repr(weight)) for name, weight in optimization.weights.items()}
    value = optimization.account_value
    assert value == Decimal(100_000)  # 0.8 BTC, 5 ETH, 100 SOL, 22,000 USDT at the demo prices
    # target = account value x leverage x weight x position, summed over the strategies.
    assert optimization.targets is not None
    assert float(optimization.targets["BTC"]) == pytest.approx(
        float(value * w["trend"] * Decimal("0.5")), rel=1e-9
    )
    eth = value * (w["trend"] * Decimal("0.25") + w["arb"] * Decimal("0.5"))
    assert float(optimization.targets["ETH"]) == pytest.approx(float(eth), rel=1e-9)
    assert "SOL" not in optimization.targets  # no strategy holds it: sold
    assert_at_targets(await held(dsn), optimization.targets, value)

    # trend goes flat on BTC: the account follows.
    await report(url, "trend", DAYS, "0.001", {"BTC": "0", "ETH": "0.25"})
    second = await executed(url, after=first)
    assert second.optimization is not None and second.optimization.trigger == "positions"
    assert second.optimization.targets is not None and second.optimization.targets["BTC"] == 0
    assert_at_targets(await held(dsn), second.optimization.targets, second.optimization.account_value)
    assert (await held(dsn)).get("BTC", Decimal(0)) < Decimal("0.0001")

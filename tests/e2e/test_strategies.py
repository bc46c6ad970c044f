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
    BalanceSnapshotTaken,
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


# -- the manager's workflow on a perpetual futures account (docs/strategies.md) --------------------------

FUTURES = "demo/paper/futures"
BTC_PERP = "BTC/USDT:USDT"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The workflow's own example: a long and a short BTC strategy, 60/40, at leverage 2.62.
PORTFOLIO_CONFIG = {
    "account_value": 10000.0,
    "weights": {"btc_ti_24h": 0.6, "btc_ti_24h_short": 0.4},
    "ann_volatility_pct": 11.45,
    "target_vol_pct": 30.0,
    "leverage": 2.62,
}


@pytest.fixture
def futures_reconciling(database: FreshDatabase, tmp_path: Path) -> Iterator[System]:
    """The system with the demo portfolio a 10,000 USDT paper futures account, the optimizer trading the
    manager's portfolio_config.json on it, and the planner executing its targets."""
    base = json.loads((EXAMPLES / "futures" / "target.json").read_text())
    del base["children"][0]["children"][0]["positions"]  # the reconciler writes them
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "portfolio_config.json").write_text(json.dumps(PORTFOLIO_CONFIG))
    allocation = {
        "demo": {
            "mode": "reconciler",
            "futures_account": FUTURES,
            "portfolio_config": str(tmp_path / "portfolio_config.json"),
            "interval_seconds": 0,
            "poll_seconds": 0.3,
        }
    }
    env = {name: dict(values) for name, values in TEST_SETTINGS.items()}
    env["tracker"]["REBAL__TRACKING__LAYOUT_FILE"] = str(EXAMPLES / "futures" / "real.json")
    env["optimizer"]["REBAL__TARGETS__FILES"] = json.dumps({PORTFOLIO: str(tmp_path / "base.json")})
    env["optimizer"]["REBAL__ALLOCATIONS"] = json.dumps(allocation)
    env["planner"] = {**env["planner"], "REBAL__PLANNING__EXECUTE_RECONCILER_TARGETS": "true"}
    yield from running_system(database, tmp_path, env)


async def position(dsn: str) -> Decimal:
    rows = await fetch(
        dsn, "SELECT amount FROM paper.positions WHERE account = $1 AND symbol = $2", FUTURES, BTC_PERP
    )
    return rows[0]["amount"] if rows else Decimal(0)


async def traded(url: str, wanted: Decimal) -> TargetWeightsComputed:
    """The reconciler's target wanting `wanted` of BTC, once its run has finished and a snapshot after it
    is in (the next plan is made from it)."""
    target = await wait_for(
        url,
        TargetWeightsComputed,
        lambda e: e.optimization is not None and (e.optimization.targets or {}).get("BTC") == wanted,
        timeout=60.0,
    )
    finished = await wait_for(
        url, RunFinished, lambda e: e.correlation_id == derive_run_id(target), timeout=60.0
    )
    assert finished.status == "completed", finished
    await wait_for(url, BalanceSnapshotTaken, lambda e: e.occurred_at > finished.occurred_at, timeout=30.0)
    return target


def within_half_a_percent(held: Decimal, wanted: Decimal) -> None:
    """The position's value at the (still) mark price within 0.5% of its target."""
    value = held * PRICES["BTC"]
    assert abs(value - wanted) <= abs(wanted) * Decimal("0.005"), (value, wanted)


async def test_the_managers_long_short_example_trades_on_a_futures_account(
    futures_reconciling: System,
) -> None:
    url, dsn = futures_reconciling.nats_url, futures_reconciling.dsn
    await take_snapshot(url)  # the futures account, seeded with its 10,000 USDT
    await report(url, "btc_ti_24h", 0, "0.001", {"BTC": "1"})
    await report(url, "btc_ti_24h_short", 0, "-0.001", {"BTC": "-1"})

    # 10000 x 2.62 x (0.6 x 1 + 0.4 x -1) = 5240 long: 0.087 BTC at 60000 (5220, 0.38% under).
    first = await traded(url, Decimal(5240))
    assert first.optimization is not None and first.optimization.method == "portfolio_config"
    assert first.optimization.leverage == 2.62 and first.optimization.account_value == Decimal(10000)
    assert await position(dsn) == Decimal("0.087")
    within_half_a_percent(await position(dsn), Decimal(5240))
    settings = await fetch(
        dsn, "SELECT leverage, margin_mode FROM paper.symbol_settings WHERE account = $1", FUTURES
    )
    assert [(r["leverage"], r["margin_mode"]) for r in settings] == [(3, "cross")]

    # The long strategy goes flat: 10000 x 2.62 x 0.4 x -1 = 10480 short, a flip through flat.
    await report(url, "btc_ti_24h", 1, "0.001", {"BTC": "0"})
    await traded(url, Decimal(-10480))
    assert await position(dsn) == Decimal("-0.174")
    within_half_a_percent(await position(dsn), Decimal(-10480))

    # The short strategy goes flat too: the position is closed (reduce-only).
    await report(url, "btc_ti_24h_short", 1, "0.001", {"BTC": "0"})
    await traded(url, Decimal(0))
    assert await position(dsn) == Decimal(0)
    orders = await fetch(
        dsn, "SELECT side, amount, status FROM paper.orders WHERE account = $1 ORDER BY order_id", FUTURES
    )
    assert [(r["side"], r["amount"], r["status"]) for r in orders] == [
        ("buy", Decimal("0.087"), "filled"),
        ("sell", Decimal("0.087"), "filled"),
        ("sell", Decimal("0.174"), "filled"),
        ("buy", Decimal("0.174"), "filled"),
    ]

"""The reconciler on a perpetual futures account: the manager's portfolio_config.json traded as written,
target positions = account_value x leverage x weight x position with shorts, a strategy going flat closing
its part; the pure parts by hand, then the optimizer's allocator on stored positions (real Postgres)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rebal.core.errors import InputError
from rebal.core.reconcile_positions import parse_portfolio_config, target_positions
from rebal.core.strategy_targets import TreeShapeError, futures_positions_tree
from rebal.core.tree import parse_tree
from rebal.events import OptimizationFailed, StrategyReturnReported, TargetWeightsComputed, new_event
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_optimizer.allocator import Allocator, Trigger
from rebal_optimizer.settings import AllocationSettings
from rebal_optimizer.store import PostgresStrategyData
from rebal_tracker.returns import ReturnRow, ReturnsStore
from tests.fakes import FakeHistory, RecordingPublisher
from tests.paper_support import migrated_pool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "demo/paper/futures"
BTC = "BTC/USDT:USDT"
# The workflow's own example (docs/strategies.md).
MANAGER = {
    "account_value": 10000.0,
    "weights": {"btc_ti_24h": 0.6, "btc_ti_24h_short": 0.4},
    "ann_volatility_pct": 11.45,
    "target_vol_pct": 30.0,
    "leverage": 2.62,
}
WEIGHTS = {"btc_ti_24h": D("0.6"), "btc_ti_24h_short": D("0.4")}


def base() -> dict[str, Any]:
    tree = json.loads((EXAMPLES / "futures" / "target.json").read_text())
    del tree["children"][0]["children"][0]["positions"]
    return dict(tree)


def test_futures_targets_keep_shorts_and_leverage() -> None:
    both = target_positions(
        D(10000),
        D("2.62"),
        WEIGHTS,
        {"btc_ti_24h": {"BTC": D(1)}, "btc_ti_24h_short": {"BTC": D(-1)}},
        derivatives=True,
    )
    # 10000 x 2.62 x (0.6 - 0.4) = 5240.
    assert both.targets == {"BTC": D(5240)} and both.notes == ()
    flat = target_positions(
        D(10000),
        D("2.62"),
        WEIGHTS,
        {"btc_ti_24h": {"BTC": D(0)}, "btc_ti_24h_short": {"BTC": D(-1)}},
        derivatives=True,
    )
    assert flat.targets == {"BTC": D(-10480)}
    # Beyond the account: 10000 x 2.62 x 1 = 26200, not scaled down on a futures account.
    levered = target_positions(
        D(10000),
        D("2.62"),
        WEIGHTS,
        {"btc_ti_24h": {"BTC": D(1)}, "btc_ti_24h_short": {"BTC": D(1)}},
        derivatives=True,
    )
    assert levered.targets == {"BTC": D(26200)}


def test_the_targets_become_the_futures_accounts_positions() -> None:
    tree = futures_positions_tree(base(), {"BTC": D(-10480), "ETH/USDT:USDT": D(0)}, ACCOUNT, 3, "cross")
    account = tree["children"][0]["children"][0]
    assert account["positions"] == [
        {"symbol": BTC, "notional": "-10480", "leverage": 3, "margin_mode": "cross"},
        {"symbol": "ETH/USDT:USDT", "notional": "0", "leverage": 3, "margin_mode": "cross"},
    ]
    parse_tree(tree, "target")
    with pytest.raises(TreeShapeError, match="no account of kind 'futures' at demo/paper/spot"):
        futures_positions_tree(base(), {}, "demo/paper/spot", 3, "cross")
    quoteless = base()
    del quoteless["children"][0]["children"][0]["quote"]
    with pytest.raises(TreeShapeError, match="needs its 'quote'"):
        futures_positions_tree(quoteless, {}, ACCOUNT, 3, "cross")


def test_portfolio_config_is_read_as_the_manager_writes_it() -> None:
    config = parse_portfolio_config({**MANAGER, "extra": "keys may follow"})
    assert (config.account_value, config.weights, config.leverage) == (D(10000), WEIGHTS, D("2.62"))
    assert (config.ann_volatility_pct, config.target_vol_pct) == (D("11.45"), D(30))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"leverage": float("nan")}, "leverage: nan is not a positive number"),
        ({"leverage": 0}, "leverage: 0 is not a positive number"),
        ({"account_value": "10000"}, "account_value: '10000' is not a positive number"),
        ({"weights": {"a": -0.5, "b": 1.5}}, "weights.a: -0.5 is not a number >= 0"),
        ({"weights": {}}, "weights: must map each strategy id to its weight"),
        ({"target_vol_pct": True}, "target_vol_pct: True is not a number >= 0"),
    ],
)
def test_bad_portfolio_configs_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_portfolio_config({**MANAGER, **change})
    assert str(caught.value) == message
    with pytest.raises(InputError, match="missing key\\(s\\) leverage"):
        parse_portfolio_config({k: v for k, v in MANAGER.items() if k != "leverage"})


# -- the allocator, on positions stored by the tracker -----------------------------------------------------


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for value in migrated_pool(database.dsn):
        yield value


async def report(pool: asyncpg.Pool, strategy: str, day: int, position: str) -> None:
    event = new_event(
        StrategyReturnReported,
        key=f"{strategy}|{day}",
        now=NOW,
        portfolio_id="demo",
        strategy_id=strategy,
        timestamp=NOW + timedelta(days=day),
        period_return=D("0.001"),
        positions={"BTC": D(position)},
    )
    await ReturnsStore(pool).insert([ReturnRow.of(event)])


def allocator(pool: asyncpg.Pool, tmp_path: Path, publisher: RecordingPublisher) -> Allocator:
    (tmp_path / "base.json").write_text(json.dumps(base()))
    (tmp_path / "portfolio_config.json").write_text(json.dumps(MANAGER))
    settings = AllocationSettings(
        mode="reconciler", futures_account=ACCOUNT, portfolio_config=tmp_path / "portfolio_config.json"
    )
    return Allocator(
        "demo",
        settings,
        tmp_path / "base.json",
        PostgresStrategyData(pool),
        FakeHistory(),
        publisher,
        lambda: NOW,
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_the_allocator_trades_portfolio_config_as_written(pool: asyncpg.Pool, tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    subject = allocator(pool, tmp_path, publisher)
    await report(pool, "btc_ti_24h", 0, "1")
    # The long strategy alone would be 26200 long: nothing until the short one has reported too.
    waiting = await subject.run(Trigger("data", "0"))
    assert isinstance(waiting, OptimizationFailed)
    assert waiting.reason.startswith("no positions reported yet by btc_ti_24h_short: no target until")
    await report(pool, "btc_ti_24h_short", 0, "-1")
    target = await subject.run(Trigger("data", "1"))
    assert isinstance(target, TargetWeightsComputed) and target.optimization is not None
    optimization = target.optimization
    assert (optimization.method, optimization.status, optimization.leverage) == (
        "portfolio_config",
        "as written",
        2.62,
    )
    assert (optimization.realised_volatility, optimization.target_volatility) == (0.1145, 0.3)
    assert optimization.weights == {"btc_ti_24h": 0.6, "btc_ti_24h_short": 0.4}
    assert optimization.targets == {"BTC": D(5240)}
    (position,) = target.tree["children"][0]["children"][0]["positions"]
    # The symbol's leverage: the smallest whole leverage at or above 2.62.
    assert position == {"symbol": BTC, "notional": "5240", "leverage": 3, "margin_mode": "cross"}
    # The long strategy goes flat: its part is closed, the short remains.
    await report(pool, "btc_ti_24h", 1, "0")
    changed = await subject.positions_changed()
    assert changed is not None
    flat = await subject.run(Trigger("positions", "2"))
    assert isinstance(flat, TargetWeightsComputed) and flat.optimization is not None
    assert flat.optimization.targets == {"BTC": D(-10480)}
    # The manager writes a new file: the allocator sees it.
    assert subject.config_changed() is None
    (tmp_path / "portfolio_config.json").write_text(json.dumps({**MANAGER, "leverage": 1.5}))
    assert subject.config_changed() is not None
    # A broken file is reported, the previous target stays.
    (tmp_path / "portfolio_config.json").write_text('{"account_value": 10000}')
    failed = await subject.run(Trigger("config", "3"))
    assert isinstance(failed, OptimizationFailed)
    assert failed.reason.endswith("missing key(s) weights, ann_volatility_pct, target_vol_pct, leverage")

"""The tracker reads futures accounts: collateral at the margin balance, the venue's positions, the
contracts with their mark prices; the planner plans the positions from that snapshot."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rebal.core.contracts import Contracts
from rebal.core.market import Prices
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    RebalancePlanned,
    TakeSnapshot,
    TargetWeightsComputed,
    new_event,
)
from rebal.venue import VenueError
from rebal_planner.planning import parse_snapshot, parse_target, plan_event
from rebal_tracker.tracker import Tracker
from rebal_venues.paper import MovingPrices, PaperVenue
from rebal_venues.paper_futures import PaperFuturesVenue, futures_of
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACCOUNT = "demo/paper/futures"
BTC = "BTC/USDT:USDT"
D = Decimal


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / name).read_text()))


def venue(pool: asyncpg.Pool) -> PaperFuturesVenue:
    spot = PaperVenue.from_documents(
        "paper", pool, example("demo/markets.json"), example("demo/prices.json"), Clock(), **STILL
    )
    futures = futures_of(spot, example("demo/contracts.json"))
    assert isinstance(futures, PaperFuturesVenue)
    return futures


async def test_a_futures_account_is_snapshot_with_its_positions(pool: asyncpg.Pool) -> None:
    paper = venue(pool)
    recorder = RecordingPublisher()
    tracker = Tracker("demo", example("futures/real.json"), "USDT", {"paper": paper}, recorder, Clock())
    assert await tracker.seed() == [ACCOUNT]
    await paper.set_leverage(ACCOUNT, BTC, 3)
    await paper.place_position_order(ACCOUNT, "o-1", BTC, "sell", D("0.1"), False)
    paper.price_model = MovingPrices(
        Prices.parse({"quote": "USDT", "prices": {"BTC": "59000", "ETH": "3000", "SOL": "150"}}), **STILL
    )
    await tracker.on_take_snapshot(new_event(TakeSnapshot, key="c", now=T0, portfolio_id="demo"))
    (snapshot,) = recorder.published
    assert isinstance(snapshot, BalanceSnapshotTaken)
    futures = snapshot.tree["children"][0]["children"][0]
    # 10000 - the 3 fee + 100 unrealized on the short: the margin balance.
    assert futures["children"] == [{"name": "usdt", "asset": "USDT", "amount": "10097"}]
    (position,) = futures["positions"]
    assert position == {
        "symbol": BTC,
        "side": "short",
        "amount": "0.1",
        "entry_price": "60000",
        "mark_price": "59000",
        "leverage": 3,
        "margin_mode": "cross",
        "unrealized_pnl": "100",
        "liquidation_price": "159332.66932271",  # (9997 + 6000) / (0.0004 + 0.1)
    }
    assert snapshot.contracts is not None and snapshot.contracts["paper"][BTC]["mark_price"] == "59000"
    real = parse_tree(snapshot.tree, "real")
    assert [p.amount for held in real.positions.values() for p in held] == [D("-0.1")]
    assert Contracts.parse(snapshot.contracts).get("paper", BTC) is not None

    # The planner: from short 0.1 to long 5240 USDT at 59000 (0.088): a reduce-only close, then an opening.
    target = new_event(
        TargetWeightsComputed, key="t", now=T0, portfolio_id="demo", tree=example("futures/target.json")
    )
    planned = plan_event(
        target,
        snapshot_id=snapshot.event_id,
        target_id=target.event_id,
        snapshot=parse_snapshot(snapshot),
        target=parse_target(target),
        band=D(0),
        dry_run=False,
        now=T0,
    )
    assert isinstance(planned, RebalancePlanned)
    assert planned.orders == ()
    assert [(o.symbol, o.side, o.amount, o.reduce_only, o.phase) for o in planned.position_orders] == [
        (BTC, "buy", D("0.1"), True, 1),
        (BTC, "buy", D("0.088"), False, 2),
    ]
    (setting,) = planned.position_settings
    assert (setting.symbol, setting.leverage, setting.margin_mode) == (BTC, 3, "cross")
    assert RebalancePlanned.model_validate_json(planned.model_dump_json()) == planned


async def test_a_futures_account_on_a_spot_venue_is_an_error(pool: asyncpg.Pool) -> None:
    spot = PaperVenue.from_documents(
        "paper", pool, example("demo/markets.json"), example("demo/prices.json"), Clock(), **STILL
    )
    tracker = Tracker(
        "demo", example("futures/real.json"), "USDT", {"paper": spot}, RecordingPublisher(), Clock()
    )
    with pytest.raises(VenueError, match="demo/paper/futures: venue paper has no perpetual futures accounts"):
        await tracker.read()

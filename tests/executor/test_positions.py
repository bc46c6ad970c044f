"""The executor on the paper exchange's futures accounts: positions opened, flipped and closed through the
journal, reduce-only legs sized from the position held, settings before opening, and the pre-trade checks
(maximum leverage, distance to liquidation) refusing a plan before anything is sent."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rebal.events import (
    OrderFilled,
    OrderPlaced,
    PlannedPositionOrder,
    PlannedPositionSetting,
    RebalancePlanned,
    RunFinished,
    derive_id,
    new_event,
)
from rebal_executor.execution import Executor, Journal, client_order_id
from rebal_executor.execution.positions import POSITION_LEGS
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PaperVenue
from rebal_venues.paper_futures import PaperFuturesVenue, futures_of
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"
FUTURES = "demo/paper/futures"
BTC = "BTC/USDT:USDT"
D = Decimal


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / f"{name}.json").read_text()))


def venue(pool: asyncpg.Pool, contracts: dict[str, Any] | None = None) -> PaperFuturesVenue:
    spot = PaperVenue.from_documents("paper", pool, example("markets"), example("prices"), Clock(), **STILL)
    futures = futures_of(spot, contracts or example("contracts"))
    assert isinstance(futures, PaperFuturesVenue)
    return futures


def order(
    side: str, amount: str, reduce_only: bool = False, account: str = FUTURES, exchange: str = "paper"
) -> PlannedPositionOrder:
    return PlannedPositionOrder(
        account=account,
        exchange=exchange,
        symbol=BTC,
        side=side,  # type: ignore[arg-type]
        amount=D(amount),
        reduce_only=reduce_only,
        est_price=D(60000),
        est_notional=D(amount) * 60000,
        est_fee=D(0),
        phase=1 if reduce_only else 2,
    )


def setting(leverage: int | None = 3, mode: str | None = "cross") -> PlannedPositionSetting:
    return PlannedPositionSetting(
        account=FUTURES,
        exchange="paper",
        symbol=BTC,
        leverage=leverage,
        margin_mode=mode,  # type: ignore[arg-type]
    )


def plan(
    *orders: PlannedPositionOrder, settings: tuple[PlannedPositionSetting, ...] = (), key: str = "run-1"
) -> RebalancePlanned:
    return new_event(
        RebalancePlanned,
        key=key,
        now=T0,
        portfolio_id="demo",
        correlation_id=derive_id("run", key),
        dry_run=False,
        band=D(0),
        snapshot_id=derive_id("snapshot", key),
        target_id=derive_id("target"),
        total_value=D(10000),
        orders=(),
        position_orders=orders,
        position_settings=settings,
    )


async def executor(
    pool: asyncpg.Pool, journal: Journal, paper: PaperFuturesVenue | None = None, **limits: str
) -> tuple[Executor, RecordingPublisher, PaperFuturesVenue]:
    paper = paper or venue(pool)
    await paper.seed(FUTURES, {"USDT": D(10000)})
    settings = ExecutorSettings(live=True, futures=limits)
    recorder = RecordingPublisher()
    return Executor({"paper": paper}, recorder, settings, journal, clock=Clock()), recorder, paper


def finished(recorder: RecordingPublisher) -> RunFinished:
    (done,) = [e for e in recorder.published if isinstance(e, RunFinished)]
    return done


async def held(paper: PaperFuturesVenue) -> dict[str, tuple[Decimal, int, str]]:
    return {p.symbol: (p.amount, p.leverage, p.margin_mode) for p in await paper.positions(FUTURES)}


async def test_a_position_is_opened_after_its_settings(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder, paper = await executor(pool, journal)
    the_plan = plan(order("buy", "0.087"), settings=(setting(3, "isolated"),))
    await run.on_plan(the_plan)
    assert finished(recorder).status == "completed", finished(recorder)
    assert await held(paper) == {BTC: (D("0.087"), 3, "isolated")}
    (placed,) = [e for e in recorder.published if isinstance(e, OrderPlaced)]
    assert placed.client_order_id == client_order_id(the_plan.event_id, POSITION_LEGS)
    (fill,) = [e for e in recorder.published if isinstance(e, OrderFilled)]
    assert (fill.amount, fill.price, fill.fee, fill.fee_asset) == (D("0.087"), D(60000), D("2.61"), "USDT")
    (record,) = await journal.orders(the_plan.event_id)
    assert (record.leg, record.state, record.symbol) == (POSITION_LEGS, "filled", BTC)


async def test_a_flip_closes_reduce_only_then_opens(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder, paper = await executor(pool, journal)
    await paper.set_leverage(FUTURES, BTC, 3)
    await paper.place_position_order(FUTURES, "before", BTC, "buy", D("0.087"), False)
    await run.on_plan(plan(order("sell", "0.087", True), order("sell", "0.174"), settings=(setting(),)))
    assert finished(recorder).status == "completed", finished(recorder)
    assert await held(paper) == {BTC: (D("-0.174"), 3, "cross")}
    sides = [(e.side, e.amount, e.phase) for e in recorder.published if isinstance(e, OrderPlaced)]
    assert sides == [("sell", D("0.087"), 1), ("sell", D("0.174"), 2)]


async def test_a_reduce_only_leg_reduces_what_is_held_now(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder, paper = await executor(pool, journal)
    await paper.place_position_order(FUTURES, "before", BTC, "sell", D("0.1"), False)
    await run.on_plan(plan(order("buy", "0.2", True)))
    done = finished(recorder)
    assert done.status == "completed_with_adjustments"
    assert any("reduced from 0.2 to 0.1: the position held now" in reason for reason in done.reasons)
    assert await held(paper) == {}
    # Nothing left to reduce: the leg is skipped, nothing sent.
    again, recorder, _ = await executor(pool, journal, paper)
    await again.on_plan(plan(order("buy", "0.1", True), key="run-2"))
    assert finished(recorder).reasons == (
        f"leg {POSITION_LEGS} {BTC} reduce-only buy skipped: no {BTC} position to reduce",
    )
    assert not [e for e in recorder.published if isinstance(e, OrderPlaced)]


async def test_the_pre_trade_checks_refuse_leverage_and_liquidation_risk(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    run, recorder, paper = await executor(pool, journal)
    await run.on_plan(plan(order("buy", "0.1"), settings=(setting(5),)))
    done = finished(recorder)
    assert (done.status, done.placed) == ("cancelled", 0)
    assert done.reasons == (
        "pre-trade check: demo/paper/futures BTC/USDT:USDT: leverage 5 is above the maximum 3: not started",
    )
    # 0.6 BTC is 36000 on 10000: 3.6 times the margin balance.
    run, recorder, _ = await executor(pool, journal, paper)
    await run.on_plan(plan(order("buy", "0.6"), settings=(setting(3),), key="run-2"))
    assert "would exceed the maximum leverage 3" in finished(recorder).reasons[0]
    # 0.45 BTC long is 36.7% from its liquidation: refused when 40% is required.
    run, recorder, _ = await executor(pool, journal, paper, min_liquidation_distance="0.4")
    await run.on_plan(plan(order("buy", "0.45"), settings=(setting(3),), key="run-3"))
    assert "% from liquidation" in finished(recorder).reasons[0]
    assert await held(paper) == {}


async def test_a_refused_leverage_fails_the_symbols_opening_leg(pool: asyncpg.Pool, journal: Journal) -> None:
    contracts = example("contracts")
    contracts["paper"][BTC]["max_leverage"] = 2
    run, recorder, paper = await executor(pool, journal, venue(pool, contracts))
    await run.on_plan(plan(order("buy", "0.05"), settings=(setting(3),)))
    done = finished(recorder)
    assert (done.status, done.placed, done.failed) == ("completed_with_adjustments", 0, 1)
    assert (
        "not placed: the venue refused its settings" in done.reasons[0]
        and "leverage 3 is not valid" in done.reasons[0]
    )
    assert await held(paper) == {}


async def test_a_spot_venue_cannot_run_position_orders(pool: asyncpg.Pool, journal: Journal) -> None:
    spot = PaperVenue.from_documents("paper", pool, example("markets"), example("prices"), Clock(), **STILL)
    recorder = RecordingPublisher()
    run = Executor({"paper": spot}, recorder, ExecutorSettings(live=True), journal, clock=Clock())
    await run.on_plan(plan(order("buy", "0.05")))
    assert finished(recorder).reasons == (
        f"{FUTURES}: venue paper has no perpetual futures accounts: not started",
    )

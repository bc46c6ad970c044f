"""Routed orders. Sells (XYZ → BTC → USDT): the second leg sells what the first delivered, never the
account's own BTC; a second leg that fails reports the intermediate it strands. Buys (USDT → BTC → XYZ):
a second leg that fails has the BTC the first bought sold back to USDT, or reported stranded."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from rebal.events import PlannedOrder, RunFinished
from rebal.venue import OrderRejected
from rebal_executor.execution import Executor
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PaperVenue
from tests.executor.test_executor import SPOT, plan
from tests.executor.test_safety import FaultyVenue
from tests.fakes import RecordingPublisher
from tests.paper_support import MARKETS, PRICES, STILL, Clock
from tests.support import account, folder, run, wallet

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
ROUTED_MARKETS: dict[str, Any] = {
    "paper": {
        **MARKETS["paper"],
        "XYZ/BTC": {"amount_step": "1", "min_amount": "1", "min_cost": "0.00001", "fee_rate": "0.001"},
    }
}
ROUTED_PRICES: dict[str, Any] = {"quote": "USDT", "prices": {**PRICES["prices"], "XYZ": "0.5"}}


def sell(symbol: str, amount: str, price: str) -> PlannedOrder:
    return PlannedOrder(
        account=SPOT,
        exchange="paper",
        symbol=symbol,
        side="sell",
        amount=D(amount),
        est_price=D(price),
        est_cost=D(0),
        est_fee=D(0),
        phase=1,
    )


# The planner's route: sell 100 XYZ for BTC, then the BTC it yields (0.00083) for USDT.
ROUTE = (sell("XYZ/BTC", "100", "0.0000083333"), sell("BTC/USDT", "0.00083", "60000"))


async def setup(pool: asyncpg.Pool) -> tuple[Executor, RecordingPublisher, FaultyVenue]:
    paper = PaperVenue.from_documents("paper", pool, ROUTED_MARKETS, ROUTED_PRICES, Clock(), **STILL)
    # Only 50 XYZ are left (the snapshot said 100), and the account holds 1 BTC of its own.
    await paper.seed(SPOT, {"XYZ": D(50), "BTC": D(1)})
    venue = FaultyVenue(paper)
    recorder = RecordingPublisher()
    return (
        Executor(
            {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
        ),
        recorder,
        venue,
    )


async def test_the_second_leg_sells_what_the_first_delivered(pool: asyncpg.Pool) -> None:
    executor, recorder, venue = await setup(pool)
    await executor.on_plan(plan(*ROUTE))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    # 50 XYZ at 0.5 / 60000 = 0.000008333333333 BTC: 0.00041666666665 BTC less the 0.1% fee (0.00000042)
    # = 0.00041624 rounded down to 1e-8, truncated to the 0.00001 step: 0.00041 sold, not 0.00083.
    assert finished.reasons == (
        "leg 0 XYZ/BTC sell reduced from 100 to 50: 50 XYZ free",
        "leg 1 BTC/USDT sell reduced from 0.00083 to 0.00041: route leg 0 delivered 0.00041624 BTC",
    )
    assert (finished.placed, finished.filled) == (2, 2)
    free = (await venue.inner.balances(SPOT)).free
    # The venue credited 0.00041667 - 0.00000042 = 0.00041625 (its own rounding); the account's 1 BTC stays.
    assert free["BTC"] == D(1) + D("0.00041625") - D("0.00041")
    assert "XYZ" not in free or free["XYZ"] == 0


async def test_a_failed_second_leg_reports_the_stranded_intermediate(pool: asyncpg.Pool) -> None:
    executor, recorder, venue = await setup(pool)
    venue.faults = {1: (OrderRejected("x", "invalid_order: market closed"), False)}
    await executor.on_plan(plan(*ROUTE))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert finished.reasons[-2:] == (
        "leg 1 BTC/USDT sell rejected: invalid_order: market closed",
        "route legs 0-1: 0.00041624 BTC delivered by leg 0 stays in demo/paper/spot (stranded, not unwound)",
    )


def buy(symbol: str, amount: str, price: str) -> PlannedOrder:
    return sell(symbol, amount, price).model_copy(update={"side": "buy", "phase": 2})


# The planner's routed buy: USDT → BTC (enough for the XYZ, rounded up to the step), then BTC → XYZ.
ROUTED_BUY = (buy("BTC/USDT", "0.001", "60000"), buy("XYZ/BTC", "100", "0.0000083333"))


async def bought_through(pool: asyncpg.Pool, fault: object) -> tuple[RunFinished, dict[str, Decimal]]:
    paper = PaperVenue.from_documents("paper", pool, ROUTED_MARKETS, ROUTED_PRICES, Clock(), **STILL)
    await paper.seed(SPOT, {"USDT": D(1000)})
    venue = FaultyVenue(paper, faults={1: (fault, False)})  # the XYZ leg is refused
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
    )
    await executor.on_plan(plan(*ROUTED_BUY))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return finished, dict((await paper.balances(SPOT)).free)


async def test_a_failed_second_leg_of_a_routed_buy_sells_the_intermediate_back(pool: asyncpg.Pool) -> None:
    finished, free = await bought_through(pool, OrderRejected("x", "invalid_order: market closed"))
    # 0.001 BTC bought for 60 + 0.06; the XYZ leg refused; the 0.001 BTC sold back for 60 - 0.06.
    assert finished.reasons == (
        "leg 1 XYZ/BTC buy rejected: invalid_order: market closed",
        "route legs 0-1: 0.001 BTC delivered by leg 0 sold back to USDT (0.001, leg 3)",
    )
    assert free == {"USDT": D(1000) - D("60.06") + D("59.94")}
    assert (finished.placed, finished.filled) == (2, 2)


async def test_an_intermediate_that_cannot_be_sold_back_is_reported_stranded(pool: asyncpg.Pool) -> None:
    labels = {"exchange": "paper", "asset": "BTC"}
    before = REGISTRY.get_sample_value("rebal_stranded_assets_total", labels) or 0
    paper = PaperVenue.from_documents("paper", pool, ROUTED_MARKETS, ROUTED_PRICES, Clock(), **STILL)
    await paper.seed(SPOT, {"USDT": D(1000)})
    refused = OrderRejected("x", "invalid_order: market closed")
    venue = FaultyVenue(paper, faults={1: (refused, False), 2: (refused, False)})  # the sale back too
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
    )
    await executor.on_plan(plan(*ROUTED_BUY))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert finished.reasons[-1] == (
        "route legs 0-1: 0.001 BTC delivered by leg 0 stays in demo/paper/spot (stranded: selling it back "
        "failed)"
    )
    assert REGISTRY.get_sample_value("rebal_stranded_assets_total", labels) == before + 1
    assert (await paper.balances(SPOT)).free["BTC"] == D("0.001")


# A where-mode plan's cheapest route may take three markets (ABC → ETH → BTC → USDT): each leg sells
# what the one before delivered.
THREE_MARKETS: dict[str, Any] = {
    "paper": {
        "BTC/USDT": MARKETS["paper"]["BTC/USDT"],
        "ETH/BTC": {
            "amount_step": "0.0001",
            "min_amount": "0.0001",
            "min_cost": "0.00001",
            "fee_rate": "0.001",
        },
        "ABC/ETH": {"amount_step": "1", "min_amount": "1", "min_cost": "0.0001", "fee_rate": "0.001"},
    }
}
THREE_PRICES: dict[str, Any] = {"quote": "USDT", "prices": {"BTC": "60000", "ETH": "3000", "ABC": "0.5"}}


def three_market_sells() -> tuple[PlannedOrder, ...]:
    """What the planner emits for selling 1000 ABC on the paper exchange with venue prices (where mode)."""
    real = folder("demo", folder("paper", account("spot", wallet("abc", "ABC", "1000"), exchange="paper")))
    target = folder(
        "demo",
        folder(
            "paper",
            folder(
                "spot", wallet("abc", "ABC", weight="0%"), wallet("usdt", "USDT", weight="100%"), weight=1
            ),
            weight=1,
        ),
    )
    price_doc = {**THREE_PRICES, "venues": {"paper": {"ABC": {"bid": "0.5", "ask": "0.5"}}}}
    _, made, _ = run(real, target, price_doc, THREE_MARKETS)
    return PlannedOrder.trusted(made.orders())


async def test_a_route_of_three_markets_from_the_planner_sells_leg_by_leg_what_each_delivered(
    pool: asyncpg.Pool,
) -> None:
    orders = three_market_sells()
    assert [(o.symbol, o.side, o.phase) for o in orders] == [
        ("ABC/ETH", "sell", 1),
        ("ETH/BTC", "sell", 1),
        ("BTC/USDT", "sell", 1),
    ]
    paper = PaperVenue.from_documents("paper", pool, THREE_MARKETS, THREE_PRICES, Clock(), **STILL)
    await paper.seed(SPOT, {"ABC": D(1000), "BTC": D(1), "ETH": D(1)})  # its own BTC and ETH stay
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": paper}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
    )
    await executor.on_plan(plan(*orders))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    # The venue credits 0.16649999 ETH (its rounding): leg 1 sells 0.1664 (whole steps of it), leg 2 the
    # BTC that brought. The account's own 1 BTC and 1 ETH are never sold; under a step of each stays.
    assert finished.reasons == (
        "leg 1 ETH/BTC sell reduced from 0.1665 to 0.1664: route leg 0 delivered 0.16649999 ETH",
    )
    assert (finished.placed, finished.filled) == (3, 3)
    assert (await paper.balances(SPOT)).free == {
        "BTC": D("1.00000168"),
        "ETH": D("1.0001"),
        "USDT": D("498.1014"),
    }

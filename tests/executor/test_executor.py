"""The executor on the paper exchange: exact balances, sizing from facts, no double placement."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from rebal import bus, service
from rebal.events import (
    Event,
    HaltTrading,
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    PlannedTransfer,
    RebalancePlanned,
    ResumeTrading,
    RunFinished,
    RunStarted,
    SkippedOrder,
    TakeSnapshot,
    derive_id,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.app import Runtime
from rebal_executor.execution import Executor, Journal, client_order_id
from rebal_executor.handlers import register
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PaperVenue
from tests.fakes import RecordingPublisher
from tests.messaging import eventually, started
from tests.paper_support import STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
SPOT = "demo/paper/spot"
D = Decimal
DEMO_BALANCES = {"BTC": D("0.8"), "ETH": D("5"), "SOL": D("100"), "USDT": D("22000")}


def demo(name: str) -> dict[str, Any]:
    return dict(json.loads((DEMO / f"{name}.json").read_text()))


def order(symbol: str, side: str, amount: str, phase: int) -> PlannedOrder:
    return PlannedOrder(
        account=SPOT,
        exchange="paper",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        amount=D(amount),
        est_price=D(0),
        est_cost=D(0),
        est_fee=D(0),
        phase=phase,
    )


# The demo plan: `rebal plan` on examples/demo.
DEMO_ORDERS = (
    order("BTC/USDT", "sell", "0.21666", 1),
    order("SOL/USDT", "sell", "6.66", 1),
    order("ETH/USDT", "buy", "2", 2),
)


def plan(*orders: PlannedOrder, dry_run: bool = False, key: str = "run-1", **extra: Any) -> RebalancePlanned:
    return new_event(
        RebalancePlanned,
        key=key,
        now=T0,
        portfolio_id="demo",
        correlation_id=derive_id("run", key),
        dry_run=dry_run,
        band=D(0),
        snapshot_id=derive_id("snapshot"),
        target_id=derive_id("target"),
        total_value=D(100000),
        orders=orders,
        **extra,
    )


def paper(pool: asyncpg.Pool) -> PaperVenue:
    return PaperVenue.from_documents("paper", pool, demo("markets"), demo("prices"), Clock(), **STILL)


async def executor(
    pool: asyncpg.Pool, balances: dict[str, Decimal] = DEMO_BALANCES, journal: Journal | None = None
) -> tuple[Executor, Any]:
    venue = paper(pool)
    await venue.seed(SPOT, balances)
    recorder = RecordingPublisher()
    settings = ExecutorSettings(live=True)
    journal = PostgresJournal(pool) if journal is None else journal
    return Executor({"paper": venue}, recorder, settings, journal, clock=Clock()), recorder


async def test_a_plan_is_executed_sells_first_with_exact_balances(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    run, recorder = await executor(pool, journal=journal)
    the_plan = plan(*DEMO_ORDERS)
    await run.on_plan(the_plan)
    assert [type(e).__name__ for e in recorder.published] == [
        "RunStarted",
        *["OrderPlaced", "OrderFilled"] * 3,
        "RunFinished",
        "TakeSnapshot",
    ]
    # BTC: 0.21666 x 60000 = 12999.6 - 12.9996 fee; SOL: 6.66 x 150 = 999 - 0.999; ETH: 2 x 3000 + 6.
    assert (await paper(pool).balances(SPOT)).free == {
        "BTC": D("0.58334"),
        "ETH": D("7"),
        "SOL": D("93.34"),
        "USDT": D("22000") + D("12986.6004") + D("998.001") - D("6006"),
    }
    placed = [e for e in recorder.published if isinstance(e, OrderPlaced)]
    assert [p.client_order_id for p in placed] == [
        client_order_id(the_plan.event_id, leg) for leg in range(3)
    ]
    assert placed[0].client_order_id.startswith("rb-") and placed[0].client_order_id.endswith("-0")
    fills = [e for e in recorder.published if isinstance(e, OrderFilled)]
    assert [(f.amount, f.price, f.fee) for f in fills] == [
        (D("0.21666"), D("60000"), D("12.9996")),
        (D("6.66"), D("150"), D("0.999")),
        (D("2"), D("3000"), D("6")),
    ]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed, finished.filled, finished.failed) == ("completed", 3, 3, 0)
    assert finished.correlation_id == the_plan.correlation_id
    assert all(e.correlation_id == the_plan.correlation_id for e in recorder.published)


async def test_a_redelivered_plan_places_nothing_twice(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder = await executor(pool, journal=journal)
    the_plan = plan(*DEMO_ORDERS)
    await run.on_plan(the_plan)
    balances = (await paper(pool).balances(SPOT)).free
    published = list(recorder.published)
    await run.on_plan(the_plan)
    assert recorder.published == published  # every event id was derived again: all dropped
    assert (await paper(pool).balances(SPOT)).free == balances
    assert await pool.fetchval("SELECT count(*) FROM paper.orders") == 3


async def test_buys_are_scaled_to_the_quote_really_held(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder = await executor(pool, {"USDT": D("1000")}, journal)
    transfer = PlannedTransfer(
        asset="USDT", from_account=SPOT, to_account="demo/other", amount=D(50), est_value=D(50)
    )
    await run.on_plan(
        plan(
            order("SOL/USDT", "sell", "1", 1),  # holds no SOL: rejected
            order("BTC/USDT", "buy", "0.01", 2),
            order("ETH/USDT", "buy", "0.2", 2),
            transfers=(transfer,),
        )
    )
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert finished.status == "completed_with_adjustments"
    assert (finished.placed, finished.filled, finished.failed, finished.skipped) == (2, 2, 0, 2)
    assert finished.reasons[0] == "leg 0 SOL/USDT sell skipped: no SOL free"
    assert "leg 1 BTC/USDT buy scaled from 0.01 to 0.0083: 1000 USDT free after the sells" in finished.reasons
    assert "leg 2 ETH/USDT buy scaled from 0.2 to 0.1661: 1000 USDT free after the sells" in finished.reasons
    assert finished.reasons[1] == (
        "transfer of 50 USDT from demo/paper/spot to demo/other skipped: transfers are off "
        "(transfers = true, REBAL__TRANSFERS=true, to execute them)"
    )
    # 1000 / (1201.2 x 1.002 buffer) = 0.83083...: 0.0083 BTC (498.498) and 0.1661 ETH (498.7983).
    assert (await paper(pool).balances(SPOT)).free == {
        "BTC": D("0.0083"),
        "ETH": D("0.1661"),
        "USDT": D("1000") - D("498.498") - D("498.7983"),
    }


async def test_buys_under_the_minimum_after_scaling_are_skipped(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder = await executor(pool, {"USDT": D("4")}, journal)
    await run.on_plan(plan(order("SOL/USDT", "buy", "1", 2)))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.placed, finished.skipped) == (0, 1)
    assert finished.reasons == ("leg 0 SOL/USDT buy skipped: below_min_cost",)


async def test_the_plans_own_skips_are_in_the_run_report(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder = await executor(pool, journal=journal)
    skip = SkippedOrder(
        path="demo/paper/spot/sol", symbol="SOL/USDT", side="buy", amount=D("0.004"), reason="below_step"
    )
    await run.on_plan(plan(*DEMO_ORDERS, skipped=(skip,)))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed, finished.skipped) == ("completed", 3, 1)
    # Listed once, from the plan (`RebalancePlanned.skipped`), wherever the run is shown: not again here.
    assert finished.reasons == ()


async def test_dry_run_plans_are_not_executed(pool: asyncpg.Pool, journal: Journal) -> None:
    run, recorder = await executor(pool, journal=journal)
    await run.on_plan(plan(*DEMO_ORDERS, dry_run=True))
    assert recorder.published == []
    assert await pool.fetchval("SELECT count(*) FROM paper.orders") == 0


async def test_on_the_in_memory_broker_a_plan_is_executed(pool: asyncpg.Pool, journal: Journal) -> None:
    broker = NatsBroker()
    run, recorder = await executor(pool, journal=journal)
    register(broker, bus.Publisher(broker), run.on_plan)
    async with TestNatsBroker(broker) as test_broker:
        the_plan = plan(*DEMO_ORDERS)
        await test_broker.publish(the_plan.model_dump_json().encode(), subject=the_plan.subject)
    assert [type(e) for e in recorder.published][-2:] == [RunFinished, TakeSnapshot]


async def test_on_a_real_server_a_redelivered_plan_places_nothing_twice(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = ExecutorSettings(
        live=True,
        nats={"url": nats_url},
        database={"url": database.dsn},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json", **STILL},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 5))
    register(broker, publisher, runtime.on_plan)
    seen: list[Event] = []

    # What the stream kept (a core subscription would also see the publishes the stream dropped).
    @broker.subscriber("rebal.evt.*.*.v1.demo", stream=bus.EVENTS.jstream())
    async def keep(body: dict[str, Any]) -> None:
        kinds = {"RunStarted": RunStarted, "RunFinished": RunFinished, "OrderFilled": OrderFilled}
        if body["type"] in kinds:
            seen.append(kinds[body["type"]].model_validate(body))

    await runtime.start()
    try:
        pool = runtime.database.pool
        assert pool is not None
        await paper(pool).seed(SPOT, DEMO_BALANCES)
        async with started(broker):
            the_plan = plan(*DEMO_ORDERS, occurred_at=datetime.now(UTC))  # the service's clock is real
            await publisher.publish(the_plan)
            await eventually(lambda: any(isinstance(e, RunFinished) for e in seen))
            balances = (await paper(pool).balances(SPOT)).free
            assert balances["ETH"] == D("7")
            # The same plan delivered again (as after a crash before the ack): a new message id.
            await broker.publish(
                the_plan.model_dump_json().encode(),
                subject=the_plan.subject,
                headers={"Nats-Msg-Id": "redelivery"},
                stream=bus.EVENTS.name,
            )
            await _consumer_idle(broker, "executor-plans")
            await asyncio.sleep(0.2)
            assert (await paper(pool).balances(SPOT)).free == balances
            assert await pool.fetchval("SELECT count(*) FROM paper.orders") == 3
            assert [type(e).__name__ for e in seen].count("RunFinished") == 1
            assert [type(e).__name__ for e in seen].count("OrderFilled") == 3
    finally:
        await runtime.stop()


async def _consumer_idle(broker: NatsBroker, durable: str, timeout: float = 10.0) -> None:
    js = broker.config.connection_state.stream
    for _ in range(int(timeout / 0.05)):
        info = await js.consumer_info(bus.EVENTS.name, durable)
        if info.delivered.consumer_seq >= 2 and not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{durable} still busy after {timeout} s")


async def test_on_a_real_server_halt_and_resume_commands_reach_the_executor(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = ExecutorSettings(
        live=True,
        nats={"url": nats_url},
        database={"url": database.dsn},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json", **STILL},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 5))
    register(broker, publisher, runtime.on_plan, runtime.on_halt, runtime.on_resume)
    finished: list[RunFinished] = []

    @broker.subscriber(RunFinished.topic.subject("demo"), stream=bus.EVENTS.jstream())
    async def keep(body: dict[str, Any]) -> None:
        finished.append(RunFinished.model_validate(body))

    await runtime.start()
    try:
        pool = runtime.database.pool
        assert pool is not None
        await paper(pool).seed(SPOT, DEMO_BALANCES)
        async with started(broker):
            now = datetime.now(UTC)
            await publisher.publish(
                new_event(HaltTrading, key="h", now=now, portfolio_id="demo", reason="test")
            )
            journal = PostgresJournal(pool)
            for _ in range(100):
                if await journal.halted("demo"):
                    break
                await asyncio.sleep(0.05)
            assert await journal.halted("demo")
            await publisher.publish(plan(*DEMO_ORDERS, key="halted", occurred_at=now))
            await eventually(lambda: len(finished) == 1)
            assert (finished[0].status, finished[0].placed) == ("cancelled", 0)
            later = now + timedelta(seconds=1)
            await publisher.publish(new_event(ResumeTrading, key="r", now=later, portfolio_id="demo"))
            for _ in range(100):
                if not await journal.halted("demo"):
                    break
                await asyncio.sleep(0.05)
            await publisher.publish(plan(*DEMO_ORDERS, key="resumed", occurred_at=later))
            await eventually(lambda: len(finished) == 2)
            assert (finished[1].status, finished[1].placed) == ("completed", 3)
    finally:
        await runtime.stop()

"""The monitor journals every event exactly once, with runs, orders and fills, on real NATS and Postgres."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from faststream.nats import NatsBroker

from rebal import bus, db, subjects
from rebal.events import (
    Event,
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    RunStarted,
    StartRebalance,
    new_event,
)
from rebal.service import Database
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.handlers import register
from rebal_monitor.journal import record
from rebal_monitor.monitor import Monitor
from tests.messaging import collecting, started

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def a_run() -> list[Event]:
    """A command, its plan, and the execution of one sell order filled in two parts."""
    command = new_event(StartRebalance, key="op-1", now=NOW, portfolio_id="demo", dry_run=False)
    order = PlannedOrder(
        account="me/paper/spot",
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=Decimal("0.5"),
        est_price=Decimal("60000"),
        est_cost=Decimal("30000"),
        est_fee=Decimal("30"),
        phase=1,
    )
    plan = command.caused(
        RebalancePlanned,
        now=NOW,
        correlation_id=command.event_id,
        dry_run=False,
        band=Decimal(0),
        snapshot_id=command.event_id,
        target_id=command.event_id,
        total_value=Decimal("100000"),
        orders=(order,),
    )
    started_run = plan.caused(RunStarted, now=NOW, plan_id=plan.event_id, orders=1)
    placed = plan.caused(
        OrderPlaced,
        now=NOW,
        key="leg-0",
        client_order_id="rb-1-0",
        account=order.account,
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=Decimal("0.5"),
        phase=1,
    )
    fills = [
        placed.caused(
            OrderFilled,
            now=NOW,
            key=trade,
            client_order_id="rb-1-0",
            trade_id=trade,
            symbol="BTC/USDT",
            side="sell",
            amount=amount,
            price=Decimal("60010"),
            fee=Decimal("12"),
            fee_asset="USDT",
        )
        for trade, amount in (("t-1", Decimal("0.2")), ("t-2", Decimal("0.3")))
    ]
    finished = plan.caused(
        RunFinished,
        now=NOW,
        plan_id=plan.event_id,
        status="completed",
        placed=1,
        filled=1,
        skipped=0,
        failed=0,
    )
    return [command, plan, started_run, placed, *fills, finished]


async def open_monitor(dsn: str) -> Monitor:
    monitor = Monitor(Database(dsn))
    await monitor.start()
    return monitor


async def test_every_event_is_journaled_once_and_projected(database: FreshDatabase) -> None:
    monitor = await open_monitor(database.dsn)
    pool = monitor.database.pool
    assert pool is not None
    events = a_run()
    try:
        assert [await record(pool, e) for e in events] == [True] * len(events)
        assert [await record(pool, e) for e in events] == [False] * len(events)  # redelivered: no effect
        async with pool.acquire() as connection:
            assert await connection.fetchval("SELECT count(*) FROM events") == len(events)
            run = await connection.fetchrow("SELECT * FROM runs")
            order = await connection.fetchrow("SELECT * FROM orders")
            fills = await connection.fetchval("SELECT count(*) FROM fills")
        assert (run["status"], run["placed"], run["filled"], run["dry_run"]) == ("completed", 1, 1, False)
        assert run["finished_at"] is not None
        assert (order["client_order_id"], order["filled"]) == ("rb-1-0", Decimal("0.5"))
        assert fills == 2
    finally:
        await monitor.database.close()


async def test_migrations_apply_once(database: FreshDatabase) -> None:
    connection = await asyncpg.connect(database.dsn)
    try:
        first = await db.migrate(connection)
        assert first == [m.name for m in db.migrations()]
        assert await db.migrate(connection) == []
        assert await db.pending(connection) == []
    finally:
        await connection.close()


async def test_over_the_bus_duplicates_and_bad_messages_change_nothing(
    nats_url: str, database: FreshDatabase
) -> None:
    monitor = await open_monitor(database.dsn)
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    register(broker, publisher, monitor)
    events = a_run()
    pool = monitor.database.pool
    assert pool is not None

    async def stored() -> int:
        async with pool.acquire() as connection:
            return int(await connection.fetchval("SELECT count(*) FROM events"))

    try:
        async with collecting(nats_url) as letters, started(broker):
            for event in events:
                await publisher.publish(event)
            # The same events again under new message ids (a republish after the duplicate window).
            for event in events:
                await broker.publish(
                    event.model_dump_json().encode(),
                    subject=event.subject,
                    stream=bus.stream_of(event.subject).name,
                )
            await broker.publish(
                b"not json", subject=subjects.ORDER_FILLED.subject("demo"), stream=subjects.EVENTS_STREAM
            )
            count = 0

            async def settled() -> bool:
                nonlocal count
                count = await stored()
                return count == len(events) and len(letters) == 1

            for _ in range(200):
                if await settled():
                    break
                await asyncio.sleep(0.05)
        assert count == len(events)
        assert letters[0]["service"] == "monitor" and "invalid OrderFilled" in letters[0]["error"]
    finally:
        await monitor.database.close()


async def test_projections_do_not_depend_on_arrival_order(database: FreshDatabase) -> None:
    monitor = await open_monitor(database.dsn)
    pool = monitor.database.pool
    assert pool is not None
    try:
        for event in reversed(a_run()):  # a fill before its order, the run's end before its plan
            await record(pool, event)
        async with pool.acquire() as connection:
            run = await connection.fetchrow("SELECT * FROM runs")
            order = await connection.fetchrow("SELECT * FROM orders")
        assert (run["status"], run["placed"], run["filled"], run["orders"]) == ("completed", 1, 1, 1)
        assert order["filled"] == Decimal("0.5")
    finally:
        await monitor.database.close()

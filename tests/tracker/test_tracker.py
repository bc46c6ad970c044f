"""The tracker: paper balances assembled into the layout, and strategy returns stored once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from rebal import bus, metrics, service
from rebal.core.tree import parse_tree
from rebal.events import BalanceSnapshotTaken, StrategyReturnReported, TakeSnapshot, new_event
from rebal.venue import Balances
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.app import Runtime
from rebal_tracker.handlers import register
from rebal_tracker.returns import ReturnRow, ReturnsIngest, ReturnsStore
from rebal_tracker.settings import TrackerSettings
from rebal_tracker.tracker import Tracker, venue_quotes
from rebal_venues.paper import PaperVenue
from tests.fakes import RecordingPublisher
from tests.messaging import eventually, started
from tests.paper_support import STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
SPOT = "demo/paper/spot"
BOTS = ("bot-0", "bot-1", "bot-2", "bot-3")
D = Decimal


def demo(name: str) -> dict[str, Any]:
    return dict(json.loads((DEMO / f"{name}.json").read_text()))


@dataclass
class ListStore:
    rows: list[ReturnRow] = field(default_factory=list)

    async def insert(self, rows: Sequence[ReturnRow]) -> int:
        self.rows.extend(rows)
        return len(rows)


def paper(pool: asyncpg.Pool) -> PaperVenue:
    return PaperVenue.from_documents("paper", pool, demo("markets"), demo("prices"), Clock(), **STILL)


def tracker(pool: asyncpg.Pool, publisher: RecordingPublisher | None = None) -> Tracker:
    return Tracker(
        "demo", demo("real"), "USDT", {"paper": paper(pool)}, publisher or RecordingPublisher(), Clock()
    )


def wallet_amounts(tree: dict[str, Any]) -> dict[str, str]:
    """Every wallet's amount by asset, at any depth."""
    if "asset" in tree:
        return {tree["asset"]: tree["amount"]}
    return {
        asset: amount for child in tree.get("children", []) for asset, amount in wallet_amounts(child).items()
    }


def take(key: str = "cmd-1", portfolio: str = "demo") -> TakeSnapshot:
    return new_event(TakeSnapshot, key=key, now=T0, portfolio_id=portfolio)


async def test_a_command_snapshots_the_seeded_layout(pool: asyncpg.Pool) -> None:
    recorder = RecordingPublisher()
    service = tracker(pool, recorder)
    assert await service.seed() == [SPOT]
    command = take()
    await service.on_take_snapshot(command)
    [snapshot] = recorder.published
    assert isinstance(snapshot, BalanceSnapshotTaken)
    assert snapshot.causation_id == command.event_id
    assert wallet_amounts(snapshot.tree) == {"BTC": "0.8", "ETH": "5", "SOL": "100", "USDT": "22000"}
    # The venue's own bid and ask too (the paper exchange's default: no spread, at the mid).
    assert snapshot.prices == {
        "quote": "USDT",
        "prices": {"BTC": "60000", "ETH": "3000", "SOL": "150"},
        "venues": {
            "paper": {
                "BTC": {"bid": "60000", "ask": "60000"},
                "ETH": {"bid": "3000", "ask": "3000"},
                "SOL": {"bid": "150", "ask": "150"},
            }
        },
    }
    assert snapshot.markets is not None
    assert snapshot.markets["paper"]["BTC/USDT"] == {
        "amount_step": "0.00001",
        "min_amount": "0.00001",
        "min_cost": "5",
        "fee_rate": "0.001",
    }
    parse_tree(snapshot.tree, "real")
    # A redelivered command derives the same id: the bus drops it.
    await service.on_take_snapshot(command)
    assert len(recorder.published) == 1


async def test_each_venue_prices_its_assets_with_its_own_bid_and_ask(pool: asyncpg.Pool) -> None:
    """A venue 1% above the reference with a 10 bp spread: the snapshot values at its mid and shows its
    bid and ask (`prices.venues`), which the planner trades at; `venue_prices` off shows none."""
    dear = PaperVenue.from_documents(
        "paper",
        pool,
        demo("markets"),
        demo("prices"),
        Clock(),
        price_factor=D("1.01"),
        spread_bps=D(10),
        **STILL,
    )
    recorder = RecordingPublisher()
    service = Tracker("demo", demo("real"), "USDT", {"paper": dear}, recorder, Clock())
    await service.seed()
    await service.on_take_snapshot(take())
    [snapshot] = recorder.published
    assert isinstance(snapshot, BalanceSnapshotTaken)
    assert snapshot.prices == {
        "quote": "USDT",
        "prices": {"BTC": "60600", "ETH": "3030", "SOL": "151.5"},
        "venues": {
            "paper": {
                "BTC": {"bid": "60569.7", "ask": "60630.3"},
                "ETH": {"bid": "3028.485", "ask": "3031.515"},
                "SOL": {"bid": "151.42425", "ask": "151.57575"},
            }
        },
    }
    plain = replace(service, venue_prices=False, publisher=RecordingPublisher())
    assert "venues" not in (await plain.read())["prices"]


async def test_a_venue_quote_far_from_the_reference_price_or_without_one_is_left_out(
    pool: asyncpg.Pool,
) -> None:
    """The prices document refuses a bid or ask outside [1/2, 2] x the reference, and a venue's asset
    without a reference price (docs/formats.md): the tracker leaves such a side (BTC, quoted at 60000
    against 20000) or asset (SOL, no reference) out rather than publish a snapshot no plan can be made
    from."""
    venue = PaperVenue.from_documents(
        "paper", pool, demo("markets"), demo("prices"), Clock(), spread_bps=D(10), **STILL
    )
    quoted = await venue_quotes(venue, ["BTC", "ETH", "SOL"], "USDT", {"BTC": "20000", "ETH": "3000"})
    assert quoted == {"ETH": {"bid": "2998.5", "ask": "3001.5"}}


async def test_snapshots_show_traded_balances_and_a_restart_keeps_them(pool: asyncpg.Pool) -> None:
    first = tracker(pool)
    await first.seed()
    await paper(pool).place_order(SPOT, "t-1", "BTC/USDT", "sell", D("0.3"))
    restarted = tracker(pool)
    assert await restarted.seed() == []
    facts = await restarted.read()
    # 0.3 x 60000 = 18000, fee 18: 22000 + 17982.
    assert wallet_amounts(facts["tree"])["BTC"] == "0.5"
    assert wallet_amounts(facts["tree"])["USDT"] == "39982"


@dataclass
class OrdersOpen:
    """The paper venue, with 0.2 of its BTC locked in an open order (someone's limit sell)."""

    inner: PaperVenue

    async def balances(self, account: str) -> Balances:
        held = (await self.inner.balances(account)).free
        return Balances({**held, "BTC": held["BTC"] - D("0.2")}, {"BTC": D("0.2")})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_what_open_orders_lock_is_never_planned_as_spendable(pool: asyncpg.Pool) -> None:
    service = Tracker(
        "demo", demo("real"), "USDT", {"paper": OrdersOpen(paper(pool))}, RecordingPublisher(), Clock()
    )
    await service.seed()
    facts = await service.read()
    tree = parse_tree(facts["tree"], "real")
    [btc] = [i for i in range(len(tree)) if tree.path(i).endswith("/btc")]
    # 0.8 BTC held: 0.6 free, 0.2 in the open order (a lock of its own), so 0.6 may be planned.
    assert (tree.exact_amount(btc), tree.exact_locked(btc)) == (D("0.8"), D("0.2"))


async def test_scheduled_snapshot_ids_come_from_the_tick(pool: asyncpg.Pool) -> None:
    recorder = RecordingPublisher()
    service = tracker(pool, recorder)
    await service.seed()
    tick = T0 + timedelta(seconds=30)
    assert await service.on_tick(tick) is True
    assert await tracker(pool, recorder).on_tick(tick) is False  # a second replica: same id
    assert await service.on_tick(tick + timedelta(seconds=10)) is True
    assert [e.portfolio_id for e in recorder.published] == ["demo", "demo"]


async def test_commands_for_other_portfolios_are_ignored(pool: asyncpg.Pool) -> None:
    recorder = RecordingPublisher()
    await tracker(pool, recorder).on_take_snapshot(take(portfolio="other"))
    assert recorder.published == []


async def test_on_the_in_memory_broker_a_command_becomes_a_snapshot(pool: asyncpg.Pool) -> None:
    broker = NatsBroker()
    recorder = RecordingPublisher()
    service = tracker(pool, recorder)
    await service.seed()
    store = ListStore()
    register(broker, bus.Publisher(broker), service.on_take_snapshot, ReturnsIngest(store).on_returns)
    async with TestNatsBroker(broker) as test_broker:
        command = take()
        await test_broker.publish(command.model_dump_json().encode(), subject=command.subject)
    [snapshot] = recorder.published
    assert snapshot.causation_id == command.event_id
    # Returns go through bus.consume_batch, a nats-py fetch loop: the tests on a real server cover them.


def strategy_return(strategy: str, minute: int, key: str = "") -> StrategyReturnReported:
    ts = T0 + timedelta(minutes=minute)
    return new_event(
        StrategyReturnReported,
        key=f"{strategy}|{ts.isoformat()}|{key}",
        now=ts,
        portfolio_id="demo",
        strategy_id=strategy,
        timestamp=ts,
        period_return=Decimal(minute % 7) / 1000,
        equity=Decimal(1000 + minute),
        positions={"BTC": Decimal("0.1")} if minute % 2 else None,
    )


async def test_returns_store_inserts_each_strategy_and_timestamp_once(pool: asyncpg.Pool) -> None:
    store = ReturnsStore(pool)
    rows = [ReturnRow.of(strategy_return("s", minute)) for minute in range(4)]
    assert await store.insert(rows[:3]) == 3
    assert await store.insert(list(reversed(rows))) == 1
    stored = await pool.fetch("SELECT ts, period_return, equity, positions FROM strategy_returns ORDER BY ts")
    assert [row["equity"] for row in stored] == [D(1000), D(1001), D(1002), D(1003)]
    assert json.loads(stored[1]["positions"]) == {"BTC": "0.1"}


async def test_on_a_real_server_snapshots_and_returns_flow(nats_url: str, database: FreshDatabase) -> None:
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": database.dsn},
        tracking={"layout_file": DEMO / "real.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json"},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, _database(settings))
    register(
        broker,
        publisher,
        runtime.on_take_snapshot,
        runtime.on_returns,
        on_transfer_confirmed=runtime.on_transfer_confirmed,
    )
    snapshots: list[BalanceSnapshotTaken] = []

    @broker.subscriber(BalanceSnapshotTaken.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        snapshots.append(BalanceSnapshotTaken.model_validate(body))

    def received(*bots: str) -> float:
        return sum(metrics.STRATEGY_RETURNS.labels(strategy=b)._value.get() for b in bots or BOTS)

    before, before_all = received("bot-0"), received()
    await runtime.start()
    try:
        async with started(broker):
            command = take()
            await publisher.publish(command)
            await eventually(lambda: snapshots)
            assert snapshots[0].causation_id == command.event_id
            assert wallet_amounts(snapshots[0].tree)["USDT"] == "22000"

            # 1000 returns from 4 bots, each also sent a second time under another event id, shuffled.
            reports = [strategy_return(f"bot-{i % 4}", i) for i in range(1000)]
            again = [strategy_return(f"bot-{i % 4}", i, key="again") for i in range(0, 1000, 5)]
            for chunk in _chunks([*again[::2], *reports, *again[1::2]], 200):
                await asyncio.gather(*(publisher.publish(report) for report in chunk))
            pool = runtime.database.pool
            assert pool is not None

            await eventually(lambda: received() - before_all >= 1200)
            assert await pool.fetchval("SELECT count(*) FROM strategy_returns") == 1000
            # bot-0 sent minutes 0, 4, ..., 996 (250) plus 50 again: every message counted, each row once.
            assert received("bot-0") - before == 300
            last = metrics.STRATEGY_LAST_RETURN.labels(strategy="bot-3")._value.get()
            assert last == (T0 + timedelta(minutes=999)).timestamp()
    finally:
        await runtime.stop()


def _database(settings: TrackerSettings) -> service.Database:
    return service.Database(settings.database.url.get_secret_value(), 5)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def test_the_tracker_default_settings_are_the_demo() -> None:
    settings = TrackerSettings()
    assert settings.tracking.portfolio_id == "demo"
    assert settings.tracking.snapshot_interval_seconds == 10
    assert settings.http.port == 8101


async def test_the_table_refuses_a_return_out_of_bounds_whoever_writes_it(pool: asyncpg.Pool) -> None:
    """The events refuse them first; the table holds the same bounds for any other writer."""
    good = ReturnRow.of(strategy_return("s", 1))
    for bad in (
        replace(good, period_return=D(-5)),
        replace(good, period_return=D("1e400")),
        replace(good, equity=D("-1e31")),
        replace(good, ts=datetime(2200, 1, 1, tzinfo=UTC)),
        replace(good, ts=datetime(1, 1, 1, tzinfo=UTC)),
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await ReturnsStore(pool).insert([bad])
    assert await ReturnsStore(pool).insert([good]) == 1

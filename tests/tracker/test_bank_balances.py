"""A bank account's balance (`"kind": "bank"`: no venue to ask) as the tracker keeps it, with worked numbers:
the layout states 1000 USD, a plan moves 700 to the broker; once the operator confirms the transfer the
next snapshot shows the bank's 300 and the broker's 700 (from the venue), and the next plan does not move
them again. A redelivered confirmation changes nothing; a transfer into the bank credits what arrived;
a balance restated in the layout stands, moved only by the transfers confirmed after it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker

from rebal import bus, service
from rebal.core.assemble import bank_accounts, bank_holdings
from rebal.events import BalanceSnapshotTaken, TakeSnapshot, TransferConfirmed, new_event
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.app import Runtime
from rebal_tracker.banks import BankBook
from rebal_tracker.handlers import register
from rebal_tracker.settings import TrackerSettings
from rebal_tracker.tracker import Tracker
from rebal_venues.paper import PaperVenue
from tests.fakes import RecordingPublisher
from tests.messaging import eventually, started
from tests.monitor.test_api import until
from tests.paper_support import STILL, T0, Clock
from tests.support import folder, run, wallet

aio = pytest.mark.asyncio(loop_scope="session")
D = Decimal
Doc = dict[str, Any]
BANK = "demo/bank"
BROKER = "demo/broker"
MARKETS = {"paper": {"SPY/USD": {"amount_step": "1", "min_amount": "1", "min_cost": "0", "fee_rate": "0"}}}
PRICES = {"quote": "USD", "prices": {"SPY": "350", "USD": "1"}}


def layout(bank_usd: str = "1000") -> Doc:
    return {
        "name": "demo",
        "children": [
            {"name": "bank", "kind": "bank", "quote": "USD", "children": [wallet("usd", "USD", bank_usd)]},
            {
                "name": "broker",
                "kind": "account",
                "exchange": "paper",
                "quote": "USD",
                "children": [wallet("usd", "USD", "0"), wallet("spy", "SPY", "0")],
            },
        ],
    }


# The bank keeps 30%, the broker holds SPY with the rest.
TARGET = folder(
    "demo",
    folder("bank", wallet("usd", "USD", weight=1), weight="30%"),
    folder("broker", wallet("spy", "SPY", weight=1), weight="70%"),
)


def confirmed(
    task: str,
    source: str,
    dest: str,
    amount: str,
    received: str | None = None,
    minutes: int = 0,
    start: datetime = T0,
) -> TransferConfirmed:
    when = start + timedelta(minutes=minutes)
    return new_event(
        TransferConfirmed,
        key=f"{task}|{minutes}",
        now=when,
        portfolio_id="demo",
        task_id=task,
        plan_id=new_event(TakeSnapshot, key=task, now=T0, portfolio_id="demo").event_id,
        received=D(received or amount),
        confirmed_at=when,
        requested_by="alice",
        asset="USD",
        from_account=source,
        to_account=dest,
        amount=D(amount),
    )


def amounts(tree: Doc, path: str) -> dict[str, str]:
    """The wallets' amounts by asset of the account at `path` ("demo/bank")."""
    node = tree
    for name in path.split("/")[1:]:
        node = next(child for child in node["children"] if child["name"] == name)
    return {child["asset"]: child["amount"] for child in node["children"]}


def moves(plan_out: Doc) -> list[tuple[str, str, str, str]]:
    return [(t["asset"], t["from"], t["to"], t["amount"]) for t in plan_out["transfers"]]


# -- the pure core --------------------------------------------------------------------------------------


def test_the_stated_balance_moves_by_what_the_confirmed_transfers_moved() -> None:
    [bank] = bank_accounts(layout())
    assert (bank.path, dict(bank.amounts)) == (BANK, {"USD": D(1000)})
    assert bank_holdings([bank], {(BANK, "USD"): D(-700)}).holdings == {BANK: {"USD": D(300)}}
    # An asset the layout does not name is held; a path that is no bank account is not.
    moved = {(BANK, "USD"): D(-505), (BANK, "EUR"): D(50), (BROKER, "USD"): D(700)}
    assert bank_holdings([bank], moved).holdings == {BANK: {"USD": D(495), "EUR": D(50)}}


def test_a_bank_the_confirmed_transfers_overdraw_shows_zero_and_says_by_how_much() -> None:
    [bank] = bank_accounts(layout("500"))
    balances = bank_holdings([bank], {(BANK, "USD"): D(-700)})
    assert balances.holdings == {BANK: {"USD": D(0)}}
    assert balances.overdrawn == ((BANK, "USD", D(200)),)


# -- the tracker, on Postgres and the paper exchange ----------------------------------------------------


async def tracked(pool: asyncpg.Pool, doc: Doc | None = None) -> tuple[Tracker, BankBook]:
    doc = doc or layout()
    book = BankBook("demo", bank_accounts(doc), pool)
    await book.open(T0)
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, Clock(), **STILL)
    tracker = Tracker("demo", doc, "USD", {"paper": paper}, RecordingPublisher(), Clock(), banks=book)
    await tracker.seed()
    return tracker, book


async def wire(pool: asyncpg.Pool, account: str, amount: str) -> None:
    """The operator's wire lands at (or, negative, leaves) the broker: the test plays the bank."""
    await pool.execute(
        "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ('paper', $1, 'USD', 0)"
        " ON CONFLICT (exchange, account, asset) DO NOTHING",
        account,
    )
    await pool.execute(
        "UPDATE paper.balances SET amount = amount + $2"
        " WHERE (exchange, account, asset) = ('paper', $1, 'USD')",
        account,
        D(amount),
    )


@aio
async def test_a_confirmed_transfer_leaves_the_bank_once_and_is_not_planned_again(pool: asyncpg.Pool) -> None:
    tracker, book = await tracked(pool)
    before = await tracker.read()
    assert amounts(before["tree"], BANK) == {"USD": "1000"}
    _, _, out = run(before["tree"], TARGET, before["prices"], before["markets"])
    assert moves(out) == [("USD", BANK, BROKER, "700")]

    # The operator wires the 700 and confirms it: the bank holds 300, the broker (its venue) 700.
    await wire(pool, BROKER, "700")
    assert await book.record(confirmed("bt-000000000001", BANK, BROKER, "700")) is True
    after = await tracker.read()
    assert amounts(after["tree"], BANK) == {"USD": "300"}
    assert amounts(after["tree"], BROKER) == {"USD": "700", "SPY": "0"}
    # The same target again: nothing moves; the broker buys its SPY (2 at 350).
    _, _, out = run(after["tree"], TARGET, after["prices"], after["markets"])
    assert moves(out) == []
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [(BROKER, "buy", "2")]

    # Redelivered, or confirmed a second time (the executor answers again with the same task): nothing.
    assert await book.record(confirmed("bt-000000000001", BANK, BROKER, "700")) is False
    assert await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", minutes=5)) is False
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}


@aio
async def test_a_transfer_into_the_bank_credits_what_arrived(pool: asyncpg.Pool) -> None:
    tracker, book = await tracked(pool)
    await wire(pool, BROKER, "700")
    await book.record(confirmed("bt-000000000001", BANK, BROKER, "700"))
    # The broker's sale sends 200 back; a wire fee leaves 195 in the bank.
    await wire(pool, BROKER, "-200")
    await book.record(confirmed("bt-000000000002", BROKER, BANK, "200", received="195", minutes=1))
    tree = (await tracker.read())["tree"]
    assert amounts(tree, BANK) == {"USD": "495"}
    assert amounts(tree, BROKER) == {"USD": "500", "SPY": "0"}


@aio
async def test_the_bank_pays_what_the_task_asked_to_move_when_less_arrived(pool: asyncpg.Pool) -> None:
    tracker, book = await tracked(pool)
    await wire(pool, BROKER, "690")  # a wire fee of 10 on the way
    await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", received="690"))
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "300"}, {"USD": "690", "SPY": "0"})


@aio
async def test_a_confirmation_without_its_transfer_moves_nothing(pool: asyncpg.Pool) -> None:
    """An executor from before the fields: the event still parses, and no balance moves."""
    tracker, book = await tracked(pool)
    old = confirmed("bt-000000000001", BANK, BROKER, "700").model_dump(mode="json")
    for key in ("asset", "from_account", "to_account", "amount"):
        del old[key]
    assert await book.record(TransferConfirmed.model_validate(old)) is False
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "1000"}


@aio
async def test_a_balance_restated_in_the_layout_stands_from_the_restart_on(pool: asyncpg.Pool) -> None:
    tracker, book = await tracked(pool)
    await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", minutes=1))
    # A restart with the layout unchanged restates nothing: the bank still holds 300.
    assert await book.open(T0 + timedelta(minutes=2)) == []
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}
    # The operator writes the statement's 280 in the layout (a fee the bank took) and restarts at T0+3:
    # the 700 confirmed before is in it; a transfer of 100 confirmed after it moves it.
    restated, book = await tracked_again(pool, "280", T0 + timedelta(minutes=3))
    assert await book.open(T0 + timedelta(minutes=3)) == []
    assert amounts((await restated.read())["tree"], BANK) == {"USD": "280"}
    await book.record(confirmed("bt-000000000003", BANK, BROKER, "100", minutes=4))
    assert amounts((await restated.read())["tree"], BANK) == {"USD": "180"}


async def tracked_again(pool: asyncpg.Pool, bank_usd: str, now: Any) -> tuple[Tracker, BankBook]:
    doc = layout(bank_usd)
    book = BankBook("demo", bank_accounts(doc), pool)
    assert await book.open(now) == [f"{BANK} USD"]
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, Clock(), **STILL)
    return Tracker("demo", doc, "USD", {"paper": paper}, RecordingPublisher(), Clock(), banks=book), book


# -- through a real NATS server -------------------------------------------------------------------------


@aio
async def test_on_a_real_server_a_confirmed_transfer_moves_the_bank_once(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    for name, doc in (("layout", layout()), ("markets", MARKETS), ("prices", PRICES)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": database.dsn},
        tracking={"layout_file": tmp_path / "layout.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": tmp_path / "markets.json", "prices_file": tmp_path / "prices.json"},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 3))
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

    await runtime.start()
    try:
        async with started(broker):
            pool = runtime.database.pool
            assert pool is not None
            await wire(pool, BROKER, "700")
            # Confirmed after the tracker started (its layout's balance stands from its first start).
            now = datetime.now(UTC)
            await publisher.publish(confirmed("bt-000000000001", BANK, BROKER, "700", start=now))
            # Confirmed a second time (the executor answers again, another event): the ledger keeps it once.
            await publisher.publish(confirmed("bt-000000000001", BANK, BROKER, "700", minutes=5, start=now))
            await until(lambda: _consumed(broker), 30)
            await publisher.publish(new_event(TakeSnapshot, key="after", now=T0, portfolio_id="demo"))
            await eventually(lambda: snapshots)
            assert amounts(snapshots[0].tree, BANK) == {"USD": "300"}
            assert amounts(snapshots[0].tree, BROKER) == {"USD": "700", "SPY": "0"}
            assert await pool.fetchval("SELECT count(*) FROM bank_ledger") == 1
    finally:
        await runtime.stop()


async def _consumed(broker: NatsBroker) -> bool | None:
    """True once the ledger's consumer has taken and acknowledged both confirmations."""
    js = broker.config.connection_state.stream
    info = await js.consumer_info("REBAL_EVENTS", "tracker-bank-ledger")
    done = info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.consumer_seq >= 2
    return True if done else None

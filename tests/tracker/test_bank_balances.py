"""A bank account's balance (`"kind": "bank"`: no venue to ask) as the tracker keeps it, with worked numbers:
the layout states 1000 USD, a plan moves 700 to the broker; once the operator confirms the transfer the
next snapshot shows the bank's 300 and the broker's 700 (from the venue), and the next plan does not move
them again. A redelivered confirmation changes nothing; a transfer into the bank credits what arrived;
a balance restated in the layout stands, moved only by the transfers confirmed after it. And between the
moment the wire lands at the broker and the operator's confirmation, the money counts once: off the bank
as it shows at the broker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal import bus, service
from rebal.core.assemble import OpenBankTask, after_confirmation, bank_accounts, bank_holdings, landed
from rebal.events import (
    BalanceSnapshotTaken,
    TakeSnapshot,
    TransferConfirmed,
    TransferTaskExpired,
    TransferTaskOpened,
    new_event,
)
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


def opened(task: str, source: str, dest: str, amount: str, start: datetime = T0) -> TransferTaskOpened:
    return new_event(
        TransferTaskOpened,
        key=task,
        now=start,
        portfolio_id="demo",
        task_id=task,
        plan_id=new_event(TakeSnapshot, key=task, now=T0, portfolio_id="demo").event_id,
        transfer=0,
        asset="USD",
        from_account=source,
        to_account=dest,
        amount=D(amount),
        expires_at=start + timedelta(days=7),
    )


def expired(task: str) -> TransferTaskExpired:
    return new_event(
        TransferTaskExpired,
        key=task,
        now=T0 + timedelta(days=7),
        portfolio_id="demo",
        task_id=task,
        plan_id=new_event(TakeSnapshot, key=task, now=T0, portfolio_id="demo").event_id,
        reason="not confirmed in time",
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


def task(amount: str, baseline: str | None, dest: str = BROKER, source: str = BANK) -> OpenBankTask:
    return OpenBankTask("USD", source, dest, D(amount), None if baseline is None else D(baseline))


def test_an_open_task_takes_off_its_bank_what_grew_at_the_receiving_account_at_most_its_amount() -> None:
    # The broker held 50 USD when the task of 700 opened: nothing landed, 400 landed, all (and more).
    assert landed([task("700", "50")], {BROKER: {"USD": D(50)}}).moves == {}
    assert landed([task("700", "50")], {BROKER: {"USD": D(450)}}).moves == {(BANK, "USD"): D(-400)}
    assert landed([task("700", "50")], {BROKER: {"USD": D(900)}}).moves == {(BANK, "USD"): D(-700)}
    # Less than it held then (a fee taken meanwhile): nothing landed; no baseline or no holding: nothing.
    assert landed([task("700", "50")], {BROKER: {"USD": D(40)}}).moves == {}
    assert landed([task("700", None)], {BROKER: {"USD": D(900)}}).moves == {}
    assert landed([task("700", "50")], {}).moves == {}


def test_two_tasks_into_one_account_share_its_growth_in_the_order_they_opened() -> None:
    # 700 from the bank, then 300 from a second bank, opened after the first 700 had landed (baseline 700):
    # the growth since the first opened (900) is the first's 700 and 200 of the second.
    tasks = [task("700", "0"), task("300", "700", source="demo/bank2")]
    shares = {(BANK, "USD"): D(-700), ("demo/bank2", "USD"): D(-200)}
    assert landed(tasks, {BROKER: {"USD": D(900)}}).moves == shares


def test_a_confirmed_task_takes_its_money_along_not_credited_to_the_task_still_open() -> None:
    # 700 from the bank and 300 from a second bank, opened together (baseline 0). The 700 lands and is
    # confirmed: the ledger counts it from then on, and the 300 has not landed (review: it was taken for
    # the 300's, so 700 of 1000 counted for days).
    tasks = [task("700", "0"), task("300", "0", source="demo/bank2")]
    tasks = landed(tasks, {BROKER: {"USD": D(700)}}).tasks
    tasks = after_confirmation(tasks, 0, D(700))
    assert landed(tasks, {BROKER: {"USD": D(700)}}).moves == {}
    # A conversion spends the 700 before the 300 lands; then it lands.
    tasks = landed(tasks, {BROKER: {"USD": D(0)}}).tasks
    assert landed(tasks, {BROKER: {"USD": D(300)}}).moves == {("demo/bank2", "USD"): D(-300)}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), start=st.integers(0, 1000))
def test_money_counts_once_at_every_step_whatever_lands_is_confirmed_or_spent(
    data: st.DataObject, start: int
) -> None:
    """Tasks out of two banks into one account, opened at any moment: they land fully or partly in any
    order, fully landed ones are confirmed in any order, confirmed money is spent by a conversion; after
    every step the snapshot's total (the banks less the ledger and the open tasks' landed money, plus the
    account) is the money that exists (the banks less what arrived, plus the account)."""
    held = D(start)
    open_tasks: list[OpenBankTask] = []
    arrived: list[D] = []  # per open task
    confirmed_money = D(0)  # confirmed, still at the account (a conversion may spend it)
    for _ in range(data.draw(st.integers(1, 14))):
        step = data.draw(st.sampled_from(["open", "land", "confirm", "spend"]))
        if step == "open" or not open_tasks:
            bank = data.draw(st.sampled_from([BANK, "demo/bank2"]))
            amount = D(data.draw(st.integers(1, 1000)))
            open_tasks.append(OpenBankTask("USD", bank, BROKER, amount, held))
            arrived.append(D(0))
        elif step == "land":
            i = data.draw(st.integers(0, len(open_tasks) - 1))
            part = min(D(data.draw(st.integers(1, 1000))), open_tasks[i].amount - arrived[i])
            arrived[i] += part
            held += part
        elif step == "confirm":
            done = [i for i, task in enumerate(open_tasks) if arrived[i] == task.amount]
            if not done:
                continue
            i = data.draw(st.sampled_from(done))
            open_tasks = after_confirmation(open_tasks, i, arrived[i])
            confirmed_money += arrived.pop(i)
        else:
            spent = min(D(data.draw(st.integers(1, 1000))), confirmed_money)
            confirmed_money -= spent
            held -= spent
        landing = landed(open_tasks, {BROKER: {"USD": held}})
        open_tasks = landing.tasks
        assert -sum(landing.moves.values(), D(0)) == sum(arrived, D(0))


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(st.integers(1, 10**6), min_size=1, max_size=4),
    baseline=st.integers(0, 10**6),
    growth=st.integers(-1000, 5 * 10**6),
)
def test_open_tasks_never_count_money_twice_nor_lose_what_landed(
    amounts: list[int], baseline: int, growth: int
) -> None:
    """Tasks into one account from two banks: what leaves the banks is what the account grew by (all of
    its growth up to the tasks' total, nothing of a fall), each task at most its amount."""
    banks = [BANK if i % 2 == 0 else "demo/bank2" for i in range(len(amounts))]
    tasks = [
        OpenBankTask("USD", bank, BROKER, D(amount), D(baseline))
        for bank, amount in zip(banks, amounts, strict=True)
    ]
    moved = landed(tasks, {BROKER: {"USD": D(baseline + growth)}}).moves
    assert -sum(moved.values(), D(0)) == min(max(D(growth), D(0)), D(sum(amounts)))
    for bank in set(banks):
        assert (
            D(0)
            <= -moved.get((bank, "USD"), D(0))
            <= sum(D(a) for b, a in zip(banks, amounts, strict=True) if b == bank)
        )


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


@aio
async def test_the_money_counts_once_between_its_landing_and_the_confirmation(pool: asyncpg.Pool) -> None:
    """The double-count window: the wire is at the broker (its venue shows it) and the operator has not
    confirmed yet. The bank holds 1000 USD; a plan moves 700 to the broker."""
    tracker, book = await tracked(pool)
    assert await tracker.on_task_opened(opened("bt-000000000001", BANK, BROKER, "700")) is True
    before = (await tracker.read())["tree"]  # not sent yet: all at the bank
    assert (amounts(before, BANK), amounts(before, BROKER)) == ({"USD": "1000"}, {"USD": "0", "SPY": "0"})

    await wire(pool, BROKER, "700")  # landed, not confirmed: once, at the broker
    window = await tracker.read()
    assert (amounts(window["tree"], BANK), amounts(window["tree"], BROKER)) == (
        {"USD": "300"},
        {"USD": "700", "SPY": "0"},
    )
    # A plan in the window sees 1000 in all: it moves nothing more and buys 2 SPY with the broker's 700.
    _, _, out = run(window["tree"], TARGET, window["prices"], window["markets"])
    assert moves(out) == []
    assert [(o["account"], o["side"], o["amount"]) for o in out["orders"]] == [(BROKER, "buy", "2")]

    # Confirmed: the ledger takes it over; nothing changes.
    await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", minutes=1))
    after = (await tracker.read())["tree"]
    assert (amounts(after, BANK), amounts(after, BROKER)) == ({"USD": "300"}, {"USD": "700", "SPY": "0"})
    # Announced again (a restart of the executor): the first baseline stands.
    assert await tracker.on_task_opened(opened("bt-000000000001", BANK, BROKER, "700")) is False


@aio
async def test_a_wire_landing_short_counts_what_arrived_until_the_confirmation_says_what_left(
    pool: asyncpg.Pool,
) -> None:
    tracker, book = await tracked(pool)
    await wire(pool, BROKER, "50")  # the broker held 50 before
    await tracker.on_task_opened(opened("bt-000000000001", BANK, BROKER, "700"))
    await wire(pool, BROKER, "690")  # a fee of 10 on the way
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "310"}, {"USD": "740", "SPY": "0"})
    await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", received="690"))
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "300"}, {"USD": "740", "SPY": "0"})


@aio
async def test_two_wires_opened_together_count_once_as_they_land_are_confirmed_and_spent(
    pool: asyncpg.Pool,
) -> None:
    """Review case: the executor opens 700 and 300 at once; the 700 lands and is confirmed, the 300 has not
    left. The bank keeps the 300 (it counted 0 before: the 700 was taken for the 300's), also after a
    tracker restart and after a conversion spends the 700; the 300 leaves the bank as it lands."""
    tracker, book = await tracked(pool)
    await tracker.on_task_opened(opened("bt-000000000001", BANK, BROKER, "700"))
    await tracker.on_task_opened(opened("bt-000000000002", BANK, BROKER, "300"))
    await wire(pool, BROKER, "700")
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}
    assert await book.record(confirmed("bt-000000000001", BANK, BROKER, "700", minutes=1)) is True
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}
    tracker, book = await tracked(pool)  # restarted: the raised baseline is in bank_tasks
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}
    await wire(pool, BROKER, "-700")  # a conversion spends the confirmed 700
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "300"}
    await wire(pool, BROKER, "300")
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "0"}, {"USD": "300", "SPY": "0"})


@aio
async def test_an_expired_task_leaves_its_bank_whole(pool: asyncpg.Pool) -> None:
    tracker, book = await tracked(pool)
    await tracker.on_task_opened(opened("bt-000000000001", BANK, BROKER, "700"))
    await wire(pool, BROKER, "200")  # another deposit (not the wire) while it waits
    assert await book.expire_task(expired("bt-000000000001")) is True
    assert await book.expire_task(expired("bt-000000000001")) is False
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "1000"}


@aio
async def test_a_task_of_another_portfolio_is_not_recorded_and_one_into_the_bank_has_no_baseline(
    pool: asyncpg.Pool,
) -> None:
    tracker, _ = await tracked(pool)
    other = opened("bt-000000000003", BANK, BROKER, "700").model_copy(update={"portfolio_id": "other"})
    assert await tracker.on_task_opened(other) is False
    assert await pool.fetchval("SELECT count(*) FROM bank_tasks") == 0
    # Into the bank: recorded (its money is followed in transit: test_bank_withdrawals.py), no baseline.
    assert await tracker.on_task_opened(opened("bt-000000000002", BROKER, BANK, "200")) is True
    assert await tracker.on_task_opened(opened("bt-000000000002", BROKER, BANK, "200")) is False
    assert await pool.fetchval("SELECT baseline FROM bank_tasks") is None


async def tracked_again(pool: asyncpg.Pool, bank_usd: str, now: Any) -> tuple[Tracker, BankBook]:
    doc = layout(bank_usd)
    book = BankBook("demo", bank_accounts(doc), pool)
    assert await book.open(now) == [f"{BANK} USD"]
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, Clock(), **STILL)
    return Tracker("demo", doc, "USD", {"paper": paper}, RecordingPublisher(), Clock(), banks=book), book


# -- through a real NATS server -------------------------------------------------------------------------


@dataclass
class Served:
    """The tracker's runtime on a real NATS server and Postgres, its published snapshots kept."""

    broker: NatsBroker
    publisher: bus.Publisher
    pool: asyncpg.Pool
    snapshots: list[BalanceSnapshotTaken]

    async def snapshot(self, key: str) -> BalanceSnapshotTaken:
        count = len(self.snapshots)
        await self.publisher.publish(new_event(TakeSnapshot, key=key, now=T0, portfolio_id="demo"))
        await eventually(lambda: len(self.snapshots) > count)
        return self.snapshots[count]


@asynccontextmanager
async def served(nats_url: str, database: FreshDatabase, tmp_path: Path) -> AsyncIterator[Served]:
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
        on_task_opened=runtime.on_task_opened,
        on_task_expired=runtime.on_task_expired,
    )
    snapshots: list[BalanceSnapshotTaken] = []

    @broker.subscriber(BalanceSnapshotTaken.topic.subject("demo"))
    async def keep(body: dict[str, Any]) -> None:
        snapshots.append(BalanceSnapshotTaken.model_validate(body))

    await runtime.start()
    try:
        async with started(broker):
            assert runtime.database.pool is not None
            yield Served(broker, publisher, runtime.database.pool, snapshots)
    finally:
        await runtime.stop()


@aio
async def test_on_a_real_server_a_confirmed_transfer_moves_the_bank_once(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    async with served(nats_url, database, tmp_path) as tracker:
        await wire(tracker.pool, BROKER, "700")
        # Confirmed after the tracker started (its layout's balance stands from its first start).
        now = datetime.now(UTC)
        await tracker.publisher.publish(confirmed("bt-000000000001", BANK, BROKER, "700", start=now))
        # Confirmed a second time (the executor answers again, another event): the ledger keeps it once.
        await tracker.publisher.publish(
            confirmed("bt-000000000001", BANK, BROKER, "700", minutes=5, start=now)
        )
        await until(lambda: _consumed(tracker.broker, "tracker-bank-ledger", 2), 30)
        snapshot = await tracker.snapshot("after")
        assert amounts(snapshot.tree, BANK) == {"USD": "300"}
        assert amounts(snapshot.tree, BROKER) == {"USD": "700", "SPY": "0"}
        assert await tracker.pool.fetchval("SELECT count(*) FROM bank_ledger") == 1


@aio
async def test_on_a_real_server_a_landed_unconfirmed_transfer_counts_once(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    """The executor opens the task, the wire lands at the broker, the operator has not confirmed yet: the
    snapshot holds the 1000 USD once (the bank's 300 and the broker's 700), not 1700."""
    async with served(nats_url, database, tmp_path) as tracker:
        await tracker.publisher.publish(opened("bt-000000000001", BANK, BROKER, "700", datetime.now(UTC)))
        await until(lambda: _consumed(tracker.broker, "tracker-bank-tasks", 1), 30)
        await wire(tracker.pool, BROKER, "700")
        snapshot = await tracker.snapshot("landed")
        assert amounts(snapshot.tree, BANK) == {"USD": "300"}
        assert amounts(snapshot.tree, BROKER) == {"USD": "700", "SPY": "0"}
        # Expired unconfirmed (the operator never said): the bank is whole again, as the ledger knows it.
        await tracker.publisher.publish(expired("bt-000000000001"))
        await until(lambda: _consumed(tracker.broker, "tracker-bank-expiries", 1), 30)
        assert amounts((await tracker.snapshot("expired")).tree, BANK) == {"USD": "1000"}


async def _consumed(broker: NatsBroker, durable: str, count: int) -> bool | None:
    """True once the consumer `durable` has taken and acknowledged `count` messages."""
    js = broker.config.connection_state.stream
    info = await js.consumer_info("REBAL_EVENTS", durable)
    done = info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.consumer_seq >= count
    return True if done else None

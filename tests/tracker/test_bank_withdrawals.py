"""Money on its way from an exchange account to a bank (`"kind": "bank"`), with worked numbers: the
operator's task moves 500 USD from the broker (the paper exchange) to the bank; the exchange debits the
withdrawal when it takes it, and the bank's ledger counts it only when the operator confirms. In between,
the tracker lists the broker's withdrawals (the venue port's `withdrawals`, ccxt's fetchWithdrawals) and
counts the task's at the bank, less the exchange's fee: in transit. At the confirmation the ledger's
`received` takes over, exactly once: the money counts once at every snapshot of withdraw-sent → snapshot
→ confirm → snapshot (the property test plays random sequences of them)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.core.assemble import OutboundTask, Withdrawn, bank_accounts, in_transit
from rebal.venue import DepositAddress
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.banks import BankBook
from rebal_tracker.tracker import Tracker
from rebal_venues.ccxt_venue import open_ccxt_venue
from rebal_venues.paper import PAPER_NETWORK, PaperVenue
from tests.fake_exchange import serving
from tests.fakes import RecordingPublisher
from tests.monitor.test_api import until
from tests.paper_support import STILL, T0, Clock
from tests.support import folder, run, wallet
from tests.tracker.test_bank_balances import (
    BANK,
    BROKER,
    MARKETS,
    PRICES,
    _consumed,
    amounts,
    confirmed,
    expired,
    moves,
    opened,
    served,
    wire,
)
from tests.venues.support import ACCOUNT, KEY, fake_book
from tests.venues.support import settings as ccxt_settings

aio = pytest.mark.asyncio(loop_scope="session")
D = Decimal
TO_BANK = DepositAddress("USD", PAPER_NETWORK, "outside:bank-DE89")
# The bank holds 1000 USD, the broker 700 USD; the target keeps 70% at the bank.
TARGET = folder(
    "demo",
    folder("bank", wallet("usd", "USD", weight=1), weight="70%"),
    folder("broker", wallet("spy", "SPY", weight=1), weight="30%"),
)


def layout() -> dict[str, object]:
    return {
        "name": "demo",
        "children": [
            {"name": "bank", "kind": "bank", "quote": "USD", "children": [wallet("usd", "USD", "1000")]},
            {
                "name": "broker",
                "kind": "account",
                "exchange": "paper",
                "quote": "USD",
                "children": [wallet("usd", "USD", "700"), wallet("spy", "SPY", "0")],
            },
        ],
    }


# -- the pure core --------------------------------------------------------------------------------------


def at(minutes: int) -> int:
    """T0 and `minutes` as the core counts moments: whole seconds since the epoch."""
    return int((T0 + timedelta(minutes=minutes)).timestamp())


def task(task_id: str, amount: str, minutes: int = 0, source: str = BROKER) -> OutboundTask:
    return OutboundTask(task_id, "USD", source, BANK, D(amount), at(minutes))


def drawn(wid: str, amount: str, fee: str = "0", minutes: int = 0, failed: bool = False) -> Withdrawn:
    return Withdrawn(wid, D(amount), D(fee), at(minutes), failed)


def test_a_withdrawal_taken_for_an_open_task_counts_at_the_bank_less_its_fee() -> None:
    found = in_transit([task("t1", "500")], {(BROKER, "USD"): [drawn("w1", "500", "5")]}, {})
    assert (found.moves, found.claims) == ({(BANK, "USD"): D(495)}, ((BROKER, "w1", "t1"),))
    # Taken before: counted, not claimed again; once the task is no longer open, counted nowhere.
    again = in_transit(
        [task("t1", "500")], {(BROKER, "USD"): [drawn("w1", "500", "5")]}, {(BROKER, "w1"): "t1"}
    )
    assert (again.moves, again.claims) == ({(BANK, "USD"): D(495)}, ())
    assert in_transit([], {(BROKER, "USD"): [drawn("w1", "500", "5")]}, {(BROKER, "w1"): "t1"}).moves == {}


def test_a_withdrawal_goes_to_the_first_task_with_room_opened_before_it_and_never_to_a_confirmed_one() -> (
    None
):
    tasks = [task("t1", "500"), task("t2", "300", minutes=5)]
    listed = {
        (BROKER, "USD"): [
            drawn("w0", "100", minutes=-1),  # asked before any task opened: not theirs
            drawn("w1", "400", minutes=1),  # t1 (t2 was not open yet)
            drawn("w2", "100", minutes=6),  # t1 has room for 100 more
            drawn("w3", "300", minutes=7, failed=True),  # failed: the exchange gave it back
            drawn("w4", "300", minutes=8),  # t1 is full: t2
            drawn("w5", "50", minutes=9),  # both full: nobody's
        ]
    }
    found = in_transit(tasks, listed, {})
    assert found.claims == ((BROKER, "w1", "t1"), (BROKER, "w2", "t1"), (BROKER, "w4", "t2"))
    assert found.moves == {(BANK, "USD"): D(800)}
    # t1 confirmed: its withdrawals stay its own, so t2 keeps w4 only (not w1, not w2).
    after = in_transit([tasks[1]], listed, {(a, w): t for a, w, t in found.claims})
    assert (after.moves, after.claims) == ({(BANK, "USD"): D(300)}, ())
    # A withdrawal of another account or asset is not the task's.
    other = in_transit(tasks, {("demo/other", "USD"): [drawn("w9", "500", minutes=6)]}, {})
    assert (other.moves, other.claims) == ({}, ())


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_money_sent_to_the_bank_counts_once_at_every_snapshot(data: st.DataObject) -> None:
    """Random sequences of: a task opens; the operator withdraws (for an open task, in one or several
    pieces, the exchange taking a fee; or a withdrawal fails and is given back); a snapshot (not after
    every step: a withdrawal may be confirmed before any snapshot saw it); a task whose withdrawals are all
    out is confirmed (received: what they carried, or less: the bank's fee); a task expires. At every
    snapshot the total (the exchange, the bank's stated balance with the ledger's confirmed `received`,
    the money in transit) equals the money that exists while the operator sends each task's money in the
    order the tasks opened and none expired; sent out of order it may fall short, and is never above it by
    more than the banks' fees on the confirmed transfers (the ledger has what arrived, the tracker cannot
    tell which withdrawal it was), never twice."""
    exchange = D(10_000)
    bank = D(1000)  # stated + the ledger's confirmed received
    arrived = D(0)  # an expired task's money: at the bank, never confirmed
    tasks: list[OutboundTask] = []
    sent: dict[str, Decimal] = {}  # per open task: what its withdrawals took out (not failed)
    carried: dict[str, Decimal] = {}
    received: dict[str, Decimal] = {}  # per confirmed task
    listed: list[Withdrawn] = []
    claimed: dict[tuple[str, str], str] = {}
    bank_fees = D(0)
    in_order, expired_any = True, False
    minute = 0
    for step in range(data.draw(st.integers(1, 25))):
        minute += 1
        action = data.draw(st.sampled_from(["open", "withdraw", "fail", "snapshot", "confirm", "expire"]))
        open_tasks = [t for t in tasks if t.task_id in sent]
        if action == "open" or not open_tasks:
            tid = f"t{step}"
            tasks.append(task(tid, str(data.draw(st.integers(1, 1000))), minute))
            sent[tid], carried[tid] = D(0), D(0)
        elif action in ("withdraw", "fail"):
            room = [t for t in open_tasks if sent[t.task_id] < t.amount]
            if not room:
                continue
            target = data.draw(st.sampled_from(room))
            in_order = in_order and target is room[0]
            amount = min(D(data.draw(st.integers(1, 1000))), target.amount - sent[target.task_id])
            fee = min(D(data.draw(st.integers(0, 5))), amount)
            failed = action == "fail"
            listed.append(Withdrawn(f"w{step}", amount, fee, at(minute), failed))
            if not failed:
                exchange -= amount
                sent[target.task_id] += amount
                carried[target.task_id] += amount - fee
        elif action == "confirm":
            done = [t for t in open_tasks if sent[t.task_id] == t.amount]
            if not done:
                continue
            target = data.draw(st.sampled_from(done))
            bank_fee = min(D(data.draw(st.integers(0, 3))), carried[target.task_id])
            received[target.task_id] = carried[target.task_id] - bank_fee
            bank += received[target.task_id]
            bank_fees += bank_fee
            del sent[target.task_id]
        elif action == "expire":
            target = data.draw(st.sampled_from(open_tasks))
            arrived += carried[target.task_id]
            expired_any = True
            del sent[target.task_id]
        if not (action == "snapshot" or data.draw(st.booleans())):
            continue
        given_tasks = [
            t if t.task_id in sent else replace(t, received=received[t.task_id])
            for t in tasks
            if t.task_id in sent or t.task_id in received
        ]
        transit = in_transit(given_tasks, {(BROKER, "USD"): listed}, claimed)
        claimed.update({(a, w): t for a, w, t in transit.claims})
        counted = exchange + bank + sum(transit.moves.values(), D(0))
        exists = exchange + bank + arrived + sum((carried[t] for t in sent), D(0))
        if in_order and not expired_any:
            assert counted == exists
        else:
            assert counted <= exists + bank_fees


# -- the tracker, on Postgres and the paper exchange ----------------------------------------------------


async def tracked(pool: asyncpg.Pool, clock: Clock | None = None) -> tuple[Tracker, BankBook, PaperVenue]:
    doc = layout()
    book = BankBook("demo", bank_accounts(doc), pool)
    await book.open(T0)
    paper = PaperVenue.from_documents(
        "paper", pool, MARKETS, PRICES, clock or Clock(), timedelta(minutes=30), {"USD": D(5)}, **STILL
    )
    tracker = Tracker("demo", doc, "USD", {"paper": paper}, RecordingPublisher(), Clock(), banks=book)
    await tracker.seed()
    return tracker, book, paper


@aio
async def test_money_withdrawn_toward_the_bank_counts_in_transit_until_the_confirmation(
    pool: asyncpg.Pool,
) -> None:
    """The operator's task sends 500 of the broker's 700 USD to the bank. The exchange takes the
    withdrawal and its 5 USD fee: the broker shows 200, the bank 1495 (1000 and 495 on the way), 1695 in
    all, where the count without it fell to 1200 until the confirmation."""
    clock = Clock()
    tracker, book, paper = await tracked(pool, clock)
    before = await tracker.read()
    assert (amounts(before["tree"], BANK), amounts(before["tree"], BROKER)) == (
        {"USD": "1000"},
        {"USD": "700", "SPY": "0"},
    )
    assert await tracker.on_task_opened(opened("bt-000000000001", BROKER, BANK, "500")) is True

    await paper.withdraw(BROKER, "venue:w-1", "USD", D(500), TO_BANK)  # the operator, by hand
    window = await tracker.read()
    assert (amounts(window["tree"], BANK), amounts(window["tree"], BROKER)) == (
        {"USD": "1495"},
        {"USD": "200", "SPY": "0"},
    )
    # A plan in the window sees 1695 in all, as after the confirmation: 70% is 1186.5 and the bank has
    # 1495, so 308.5 go to the broker (the count without the money on its way saw 1200 and moved 160).
    _, _, out = run(window["tree"], TARGET, window["prices"], window["markets"])
    assert moves(out) == [("USD", BANK, BROKER, "308.5")]

    clock.now += timedelta(minutes=30)  # sent: the same
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "1495"}
    # Confirmed with the 495 that reached the bank: the ledger takes it over, nothing moves.
    assert await book.record(confirmed("bt-000000000001", BROKER, BANK, "500", received="495", minutes=40))
    after = await tracker.read()
    assert (amounts(after["tree"], BANK), amounts(after["tree"], BROKER)) == (
        {"USD": "1495"},
        {"USD": "200", "SPY": "0"},
    )
    # Confirmed again, redelivered: nothing; the withdrawal stays the confirmed task's.
    assert not await book.record(
        confirmed("bt-000000000001", BROKER, BANK, "500", received="495", minutes=41)
    )
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "1495"}
    assert await pool.fetchval("SELECT task_id FROM bank_withdrawals") == "bt-000000000001"


@aio
async def test_a_confirmed_task_s_withdrawal_is_never_taken_for_the_next_task(pool: asyncpg.Pool) -> None:
    """Two tasks from the broker to the bank, 300 then 200, opened together. The 300 is withdrawn and
    confirmed; the 200 not yet: the bank counts the 300 once (the ledger), not again for the 200's task.
    The executor's own transfer legs (`rt-` ids) are no task's."""
    tracker, book, paper = await tracked(pool)
    await tracker.on_task_opened(opened("bt-000000000001", BROKER, BANK, "300"))
    await tracker.on_task_opened(opened("bt-000000000002", BROKER, BANK, "200"))
    elsewhere = DepositAddress("USD", PAPER_NETWORK, "paper:paper:demo/other")
    await paper.withdraw(BROKER, "rt-0123456789ab-0", "USD", D(100), elsewhere)
    await paper.withdraw(BROKER, "venue:w-1", "USD", D(300), TO_BANK)
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "1295"}, {"USD": "300", "SPY": "0"})
    await book.record(confirmed("bt-000000000001", BROKER, BANK, "300", received="295", minutes=1))
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "1295"}, {"USD": "300", "SPY": "0"})
    await paper.withdraw(BROKER, "venue:w-2", "USD", D(200), TO_BANK)
    tree = (await tracker.read())["tree"]
    assert (amounts(tree, BANK), amounts(tree, BROKER)) == ({"USD": "1490"}, {"USD": "100", "SPY": "0"})
    # Expired unconfirmed: its money counts nowhere again (the operator never said it arrived).
    await book.expire_task(expired("bt-000000000002"))
    assert amounts((await tracker.read())["tree"], BANK) == {"USD": "1295"}


@aio
async def test_on_a_real_server_money_on_its_way_to_the_bank_counts_once(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    """The executor's task (NATS), the operator's withdrawal at the paper exchange, a snapshot (in transit),
    the confirmation (NATS), a snapshot (the ledger): the bank and the broker add up to the same at both."""
    async with served(nats_url, database, tmp_path) as tracker:
        now = datetime.now(UTC)
        await wire(tracker.pool, BROKER, "700")
        await tracker.publisher.publish(opened("bt-000000000001", BROKER, BANK, "500", now))
        await until(lambda: _consumed(tracker.broker, "tracker-bank-tasks", 1), 30)
        paper = PaperVenue.from_documents(
            "paper", tracker.pool, MARKETS, PRICES, withdraw_fees={"USD": D(5)}, **STILL
        )
        await paper.withdraw(BROKER, "venue:w-1", "USD", D(500), TO_BANK)
        sent = await tracker.snapshot("sent")
        assert (amounts(sent.tree, BANK), amounts(sent.tree, BROKER)) == (
            {"USD": "1495"},
            {"USD": "200", "SPY": "0"},
        )
        later = now + timedelta(seconds=1)
        await tracker.publisher.publish(confirmed("bt-000000000001", BROKER, BANK, "500", "495", start=later))
        await until(lambda: _consumed(tracker.broker, "tracker-bank-ledger", 1), 30)
        done = await tracker.snapshot("confirmed")
        assert (amounts(done.tree, BANK), amounts(done.tree, BROKER)) == (
            {"USD": "1495"},
            {"USD": "200", "SPY": "0"},
        )


# -- through ccxt, on the fake Binance --------------------------------------------------------------------

# A broker without an API (`"kind": "bank"`) that takes USDT, and a Binance spot account.
BINANCE_LAYOUT = {
    "name": "demo",
    "children": [
        {"name": "broker", "kind": "bank", "quote": "USDT", "children": [wallet("usdt", "USDT", "1000")]},
        {"name": "binance", "kind": "exchange", "children": [
            {"name": "spot", "kind": "account", "quote": "USDT", "children": [wallet("usdt", "USDT", "0")]}]},
    ],
}  # fmt: skip
NO_API = "demo/broker"


@aio
async def test_through_ccxt_binance_s_withdrawal_history_carries_the_money_to_the_bank(
    pool: asyncpg.Pool,
) -> None:
    """The operator withdraws 300 USDT at Binance by hand (no withdrawOrderId; a fee of 1 on TRC20): the
    tracker reads ``GET /sapi/v1/capital/withdraw/history`` through an unmodified ccxt and counts the 299
    at the broker until the confirmation; the executor's own withdrawal (``rt-``) is no task's. A history
    that fails to answer counts nothing in transit (a warning), never twice."""
    fake = fake_book()
    fake.accounts[KEY].update(USDT=D("500"))
    fake.outside.add("TBrokerDepositAddress")
    book = BankBook("demo", bank_accounts(BINANCE_LAYOUT), pool)
    await book.open(T0)
    async with serving(fake) as origin, open_ccxt_venue(ccxt_settings(origin)) as binance:
        tracker = Tracker(
            "demo", BINANCE_LAYOUT, "USDT", {"binance": binance}, RecordingPublisher(), banks=book
        )
        now = datetime.now(UTC)
        task_opened = opened("bt-000000000001", ACCOUNT, NO_API, "300", now).model_copy(
            update={"asset": "USDT"}
        )
        assert await tracker.on_task_opened(task_opened) is True
        fake.withdraw(
            KEY, "USDT", "TRX", "TBrokerDepositAddress", D(100), "rt-0123456789ab-0"
        )  # a transfer leg
        fake.withdraw(KEY, "USDT", "TRX", "TBrokerDepositAddress", D(300), "")  # the operator, by hand
        tree = (await tracker.read())["tree"]
        assert (amounts(tree, NO_API), amounts(tree, ACCOUNT)) == ({"USDT": "1299"}, {"USDT": "100"})
        [claim] = await pool.fetch("SELECT withdrawal_id, task_id FROM bank_withdrawals")
        assert (claim["withdrawal_id"].startswith("venue:"), claim["task_id"]) == (True, "bt-000000000001")

        fake.faults.rate_limited["withdrawals"] = 10  # the history answers 429 for a while
        tree = (await tracker.read())["tree"]
        assert (amounts(tree, NO_API), amounts(tree, ACCOUNT)) == ({"USDT": "1000"}, {"USDT": "100"})
        assert fake.faults.rate_limited["withdrawals"] < 10  # it was asked, and refused
        fake.faults.rate_limited["withdrawals"] = 0

        later = now + timedelta(seconds=1)
        confirmation = confirmed("bt-000000000001", ACCOUNT, NO_API, "300", "299", start=later)
        assert await book.record(confirmation.model_copy(update={"asset": "USDT"}))
        tree = (await tracker.read())["tree"]
        assert (amounts(tree, NO_API), amounts(tree, ACCOUNT)) == ({"USDT": "1299"}, {"USDT": "100"})

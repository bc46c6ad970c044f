"""Transfers from a bank account (no API) are operators' tasks: the run sells, places the buys that need no
bank money, opens the task and waits in the journal (no worker held); the operator's confirmation resumes
it, and the buys spend at most what the operator says arrived. A restart neither opens a task twice nor
loses it; a second confirmation credits nothing; a task never confirmed ends the run partial (an alert)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.events import (
    ConfirmTransfer,
    Event,
    PlannedBudget,
    PlannedOrder,
    PlannedTransfer,
    RebalancePlanned,
    RunFinished,
    RunStarted,
    TransferTaskExpired,
    TransferTaskOpened,
    new_event,
)
from rebal_executor.execution import Executor, Journal
from rebal_executor.execution.bank import task_id
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PaperVenue
from tests.executor.test_executor import order as executor_order
from tests.executor.test_executor import plan
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
SPOT = "demo/paper/spot"
OTHER = "demo/paper/other"
BANK = "demo/bank"
MARKETS = {
    "paper": {
        "BTC/USD": {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"},
        "ETH/USD": {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"},
    }
}
PRICES = {"quote": "USD", "prices": {"BTC": "60000", "ETH": "3000", "USD": "1"}}
DAY = timedelta(days=1)


def order(account: str, symbol: str, side: str, amount: str, phase: int) -> PlannedOrder:
    return executor_order(symbol, side, amount, phase).model_copy(update={"account": account})


def bank_plan(amount: str = "1000") -> RebalancePlanned:
    """Spot sells 0.01 BTC (599.4 USD net) and buys 0.5 ETH (1500 + 1.5 fee): it needs the bank's 1000 USD.
    Other buys 0.01 BTC with its own 1000 USD: it needs nothing from the bank."""
    transfer = PlannedTransfer(
        asset="USD", from_account=BANK, to_account=SPOT, amount=D(amount), est_value=D(amount), manual=True
    )
    return plan(
        order(SPOT, "BTC/USD", "sell", "0.01", 1),
        order(OTHER, "BTC/USD", "buy", "0.01", 2),
        order(SPOT, "ETH/USD", "buy", "0.5", 2),
        transfers=(transfer,),
        budgets=(
            PlannedBudget(exchange="paper", account=SPOT, asset="USD", amount=D(amount)),
            PlannedBudget(exchange="paper", account=OTHER, asset="USD", amount=D(1000)),
        ),
    )


async def setup(
    pool: asyncpg.Pool, journal: Journal, clock: Clock | None = None, **settings: object
) -> tuple[Executor, RecordingPublisher, PaperVenue]:
    clock = clock or Clock()
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, clock, **STILL)
    await paper.seed(SPOT, {"BTC": D("0.1")})
    await paper.seed(OTHER, {"USD": D(1000)})
    recorder = RecordingPublisher()
    configured = ExecutorSettings.model_validate({"live": True, **settings})
    executor = Executor({"paper": paper}, recorder, configured, journal, clock=clock)
    return executor, recorder, paper


def of(kind: type[Event], recorder: RecordingPublisher) -> list[Event]:
    return [e for e in recorder.published if isinstance(e, kind)]


def confirm(task: str, received: str | None = None, key: object = None) -> ConfirmTransfer:
    return new_event(
        ConfirmTransfer,
        key=key or uuid.uuid4(),
        now=T0,
        portfolio_id="demo",
        task_id=task,
        received=None if received is None else D(received),
        requested_by="alice",
    )


async def wire(pool: asyncpg.Pool, account: str, amount: str) -> None:
    """The operator's wire lands at the exchange (the test plays the bank)."""
    await pool.execute(
        "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ('paper', $1, 'USD', $2)"
        " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $2",
        account,
        D(amount),
    )


async def test_a_bank_transfer_is_an_operator_task_and_the_buys_it_funds_wait_for_the_confirmation(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    executor, recorder, paper = await setup(pool, journal, clock)
    the_plan = bank_plan()
    tid = task_id(the_plan.event_id, 0)
    await executor.on_plan(the_plan)
    # Sold, other's buy placed, the task announced; no end: the run waits in the journal.
    [opened] = of(TransferTaskOpened, recorder)
    assert isinstance(opened, TransferTaskOpened)
    assert (opened.task_id, opened.asset, opened.amount, opened.from_account, opened.to_account) == (
        tid,
        "USD",
        D(1000),
        BANK,
        SPOT,
    )
    assert opened.expires_at == T0 + 7 * DAY
    assert of(RunFinished, recorder) == []
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "buys_in_progress"
    assert [o.leg for o in await journal.orders(the_plan.event_id)] == [0, 1]
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.09"), "USD": D("599.4")}
    assert (await paper.balances(OTHER)).free["BTC"] == D("0.01")
    # Passes over the waiting run change nothing (no second task, no buy).
    await executor.drain()
    assert len(of(TransferTaskOpened, recorder)) == 1
    assert len(await journal.orders(the_plan.event_id)) == 2

    # Two days later the wire lands and the operator confirms: the buy goes (its timeout counts from the
    # confirmation, not from the plan).
    clock.now += 2 * DAY
    await wire(pool, SPOT, "1000")
    answer = await executor.confirm_transfer(confirm(tid))
    assert answer is not None and (answer.received, answer.already_confirmed) == (D(1000), False)
    # The transfer itself, for the tracker's ledger of the bank's balance.
    transfer = (answer.asset, answer.from_account, answer.to_account, answer.amount)
    assert transfer == ("USD", BANK, SPOT, D(1000))
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.placed, finished.filled, finished.reasons) == ("completed", 4, 4, ())
    # 599.4 + 1000 - 1500 - 1.5 fee
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.09"), "ETH": D("0.5"), "USD": D("97.9")}

    # A second confirmation credits nothing and says the first stands.
    again = await executor.confirm_transfer(confirm(tid, "10"))
    assert again is not None and (again.received, again.already_confirmed) == (D(1000), True)
    await executor.drain()
    assert len(of(RunFinished, recorder)) == 1
    assert (await paper.balances(SPOT)).free["USD"] == D("97.9")


async def test_the_buys_spend_at_most_the_confirmed_amount_even_when_the_venue_shows_more(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, paper = await setup(pool, journal)
    the_plan = bank_plan()
    await executor.on_plan(the_plan)
    await wire(pool, SPOT, "1000")  # 1000 shows free, but the operator says 600 of the bank's arrived
    await executor.confirm_transfer(confirm(task_id(the_plan.event_id, 0), "600"))
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    assert finished.status == "completed_with_adjustments"
    # The budget: 600 confirmed + 599.4 from the sale = 1199.4 USD (the venue shows 1599.4), the buy sized
    # in it at the price raised by the 0.2% buffer, with the 0.1% fee: 0.3986 x 3000 x 1.002 x 1.001 =
    # 1199.39.
    assert finished.reasons == (
        f"bank transfer of 1000 USD from {BANK} to {SPOT} (task {task_id(the_plan.event_id, 0)}) confirmed "
        "with 600 USD received: the buys it funds spend at most that",
        "leg 2 ETH/USD buy scaled from 0.5 to 0.3986: 1199.4 USD of the plan's budget left",
    )
    assert (await paper.balances(SPOT)).free["ETH"] == D("0.3986")


async def test_a_restart_while_waiting_opens_nothing_twice_and_a_confirmation_resumes_the_run(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    executor, recorder, _ = await setup(pool, PostgresJournal(pool), clock)
    the_plan = bank_plan()
    await executor.on_plan(the_plan)
    assert len(of(TransferTaskOpened, recorder)) == 1
    # A new process: its drain finds the run waiting, announces nothing again, places nothing.
    restarted, after, paper = await setup(pool, PostgresJournal(pool), clock)
    await restarted.drain()
    assert of(TransferTaskOpened, after) == of(RunStarted, after) == []
    assert len(await restarted.journal.orders(the_plan.event_id)) == 2
    await wire(pool, SPOT, "1000")
    await restarted.confirm_transfer(confirm(task_id(the_plan.event_id, 0)))
    await restarted.drain()
    [finished] = of(RunFinished, after)
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.filled) == ("completed", 4)
    assert (await paper.balances(SPOT)).free["ETH"] == D("0.5")


async def test_a_task_never_confirmed_expires_and_the_run_ends_partial_with_an_alert(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    executor, recorder, paper = await setup(pool, PostgresJournal(pool), clock)
    the_plan = bank_plan()
    tid = task_id(the_plan.event_id, 0)
    await executor.on_plan(the_plan)
    clock.now += 7 * DAY
    await executor.drain()
    [expired] = of(TransferTaskExpired, recorder)
    [finished] = of(RunFinished, recorder)
    assert isinstance(expired, TransferTaskExpired) and isinstance(finished, RunFinished)
    reason = (
        f"bank transfer of 1000 USD from {BANK} to {SPOT} (task {tid}) was not confirmed within 604800 s: "
        "the buys it funds were not placed (alert)"
    )
    assert expired.reason == reason
    assert (finished.status, finished.placed, finished.filled, finished.failed) == ("timed_out", 2, 2, 1)
    assert reason in finished.reasons
    assert f"ALERT {reason}" in caplog.text
    assert "ETH" not in (await paper.balances(SPOT)).free
    # A confirmation that comes too late is not answered: the task stays expired, nothing is bought.
    assert await executor.confirm_transfer(confirm(tid)) is None
    task = await executor.journal.task(tid)
    assert task is not None and task.state == "expired"


async def test_a_halt_ends_a_waiting_run_and_newer_plans_wait_behind_it(pool: asyncpg.Pool) -> None:
    executor, recorder, _ = await setup(pool, PostgresJournal(pool))
    the_plan = bank_plan()
    await executor.on_plan(the_plan)
    # A newer plan of the portfolio stays queued while the run waits for the operator.
    newer = plan(order(OTHER, "BTC/USD", "buy", "0.001", 2), key="run-2")
    await executor.on_plan(newer)
    queued = await executor.journal.run(newer.event_id)
    assert queued is not None and queued.state == "queued"
    await executor.journal.set_halted("demo", True, "maintenance", "alice", T0)
    await executor.drain()
    [finished] = [e for e in of(RunFinished, recorder) if e.correlation_id == the_plan.correlation_id]
    assert isinstance(finished, RunFinished)
    assert finished.status == "cancelled_mid_run"
    assert of(TransferTaskExpired, recorder) != []
    # The newer plan is refused now (halted), not run behind the old one's back.
    refused = await executor.journal.run(newer.event_id)
    assert refused is not None and refused.state == "cancelled"


async def test_a_plan_made_before_the_manual_field_reads_as_an_automatic_transfer() -> None:
    old = {"asset": "USD", "from_account": BANK, "to_account": SPOT, "amount": "5", "est_value": "5"}
    assert PlannedTransfer.model_validate(old).manual is False


async def test_money_sent_to_the_bank_waits_for_the_operator_and_holds_up_no_buy(
    journal: Journal, pool: asyncpg.Pool
) -> None:
    executor, recorder, paper = await setup(pool, journal)
    # Spot sells 0.01 BTC (599.4 USD net) and the operator is to wire 500 USD of it to the bank; other's
    # buy needs nothing from it.
    transfer = PlannedTransfer(
        asset="USD", from_account=SPOT, to_account=BANK, amount=D(500), est_value=D(500), manual=True
    )
    the_plan = plan(
        order(SPOT, "BTC/USD", "sell", "0.01", 1),
        order(OTHER, "BTC/USD", "buy", "0.01", 2),
        transfers=(transfer,),
        key="to-bank",
    )
    await executor.on_plan(the_plan)
    [opened] = of(TransferTaskOpened, recorder)
    assert isinstance(opened, TransferTaskOpened) and (opened.from_account, opened.to_account) == (SPOT, BANK)
    assert of(RunFinished, recorder) == []  # the run's report waits for the operator's word
    assert (await paper.balances(OTHER)).free["BTC"] == D("0.01")
    await executor.confirm_transfer(confirm(opened.task_id, "500"))
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.placed, finished.filled) == ("completed", 3, 3)


async def test_a_crash_after_the_expiry_was_journaled_still_leaves_the_buys_unplaced(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    executor, _, paper = await setup(pool, PostgresJournal(pool), clock)
    the_plan = bank_plan()
    tid = task_id(the_plan.event_id, 0)
    await executor.on_plan(the_plan)
    # The process expired the task and died before the run ended; the wire lands afterwards anyway.
    assert await executor.journal.expire_task(tid, "not confirmed in time")
    await wire(pool, SPOT, "1000")
    restarted, after, _ = await setup(pool, PostgresJournal(pool), clock)
    await restarted.drain()
    [finished] = of(RunFinished, after)
    assert isinstance(finished, RunFinished)
    assert finished.status == "timed_out" and "not confirmed in time" in finished.reasons
    assert "ETH" not in (await paper.balances(SPOT)).free


async def test_with_venue_transfers_on_a_bank_transfer_is_still_an_operator_s_task_not_a_pre_check(
    pool: asyncpg.Pool,
) -> None:
    # The exchange-to-exchange pre-check would refuse the run: a bank is no venue that can move assets.
    executor, recorder, _ = await setup(pool, PostgresJournal(pool), transfers=True)
    await executor.on_plan(bank_plan())
    assert len(of(TransferTaskOpened, recorder)) == 1
    assert of(RunFinished, recorder) == []

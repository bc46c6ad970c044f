"""Conversions (docs/formats.md, "Conversions"): money a transfer brings in another asset than the account's
quote, converted there before the buys. A bank's USD into an exchange account trading against USDT (the
founding example: "withdraw dollars from the bank to the exchange to buy stocks"): the transfer of USD is
an operator's task, the conversion order (USDT/USD bought, or USD/USDT sold) waits for its confirmation
with the buys, spends at most what the operator says arrived, and the buys spend what the conversion
yielded. And USDT withdrawn to an account trading against USDC: the conversion waits for the credit.
Run exactly once: a pass after the run ended, a second confirmation, a redelivered plan change nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.events import PlannedBudget, PlannedOrder, PlannedTransfer, RebalancePlanned, RunFinished
from rebal_executor.execution import Executor, Journal
from rebal_executor.execution.bank import task_id
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PaperVenue
from tests.executor.test_bank_transfers import BANK, SPOT, confirm, of
from tests.executor.test_executor import order as executor_order
from tests.executor.test_executor import plan
from tests.executor.test_transfers import OTHER, allowed
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
FEE = {"min_amount": "0", "min_cost": "0", "fee_rate": "0.001"}
MARKETS = {
    "paper": {
        "BTC/USDT": {"amount_step": "0.00001", **FEE},
        "USDT/USD": {"amount_step": "0.01", **FEE},
        "USD/USDT": {"amount_step": "0.01", **FEE},
    }
}
PRICES = {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1", "USD": "1"}}


def order(symbol: str, side: str, amount: str, phase: int, price: str) -> PlannedOrder:
    """An order of the plan, as the planner estimates it (0.1% fee), waiting for transfer 0."""
    cost = D(amount) * D(price)
    estimates = {"est_price": D(price), "est_cost": cost, "est_fee": cost * D("0.001"), "after_transfer": 0}
    return executor_order(symbol, side, amount, phase).model_copy(update=estimates)


def converting(conversion: PlannedOrder, btc: str) -> RebalancePlanned:
    """The plan of tests/core/test_where_conversion.py: 1000 USD wired (10 of fee: 990 arrive), converted,
    then BTC bought with the USDT."""
    transfer = PlannedTransfer(
        asset="USD",
        from_account=BANK,
        to_account=SPOT,
        amount=D(1000),
        est_value=D(1000),
        network="default",
        fee=D(10),
        manual=True,
    )
    return plan(
        conversion,
        order("BTC/USDT", "buy", btc, 2, "50000"),
        transfers=(transfer,),
        budgets=(
            PlannedBudget(exchange="paper", account=SPOT, asset="USD", amount=D(990)),
            PlannedBudget(exchange="paper", account=SPOT, asset="USDT", amount=D(0)),
        ),
    )


async def setup(
    pool: asyncpg.Pool, journal: Journal, clock: Clock | None = None
) -> tuple[Executor, RecordingPublisher, PaperVenue]:
    clock = clock or Clock()
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, clock, **STILL)
    await paper.seed(SPOT, {"USDT": D(0)})
    recorder = RecordingPublisher()
    executor = Executor({"paper": paper}, recorder, ExecutorSettings(live=True), journal, clock=clock)
    return executor, recorder, paper


async def wire(pool: asyncpg.Pool, amount: str) -> None:
    await pool.execute(
        "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ('paper', $1, 'USD', $2)"
        " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $2",
        SPOT,
        D(amount),
    )


async def run_once(
    pool: asyncpg.Pool, journal: Journal, the_plan: RebalancePlanned, received: str, extra: str = "0"
) -> tuple[RunFinished, dict[str, Decimal]]:
    """Plan, wait (nothing placed before the confirmation), wire `received` (+ `extra` the venue shows but
    no one confirmed), confirm, finish; then a second confirmation and a pass: nothing more."""
    executor, recorder, paper = await setup(pool, journal)
    await executor.on_plan(the_plan)
    await executor.drain()
    assert await journal.orders(the_plan.event_id) == []  # the conversion waits with the buys
    await wire(pool, str(D(received) + D(extra)))
    tid = task_id(the_plan.event_id, 0)
    await executor.confirm_transfer(confirm(tid, received))
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    balances = dict((await paper.balances(SPOT)).free)
    placed = len(await journal.orders(the_plan.event_id))
    await executor.confirm_transfer(confirm(tid, received))
    await executor.drain()
    assert len(of(RunFinished, recorder)) == 1
    assert len(await journal.orders(the_plan.event_id)) == placed
    assert (await paper.balances(SPOT)).free == balances
    return finished, balances


async def test_usdt_bought_with_what_arrived_then_btc_with_the_usdt(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    the_plan = converting(order("USDT/USD", "buy", "989.01", 2, "1"), "0.01976")
    finished, balances = await run_once(pool, journal, the_plan, "990", extra="500")
    assert (finished.status, finished.placed, finished.filled) == ("completed_with_adjustments", 3, 3)
    # The 990 confirmed (what the plan counted on: 1000 less the wire's 10) is the conversion's budget,
    # whatever the venue shows free (1490): at the price raised by the 0.2% buffer and the 0.1% fee,
    # 990 / (1.002 x 1.001) = 987.036... -> 987.03 USDT; the BTC buy fits in those 987.03 USDT the same way:
    # 987.03 / (50000 x 1.002 x 1.001) = 0.019682... -> 0.01968.
    assert finished.reasons == (
        "leg 0 USDT/USD buy scaled from 989.01 to 987.03: 990 USD of the plan's budget left",
        "leg 1 BTC/USDT buy scaled from 0.01976 to 0.01968: 987.03 USDT free after the sells",
    )
    # 1490 - 987.03 - 0.98703 fee; 987.03 - 984 - 0.984 fee.
    assert balances == {"BTC": D("0.01968"), "USD": D("501.98297"), "USDT": D("2.046")}


async def test_usd_sold_for_usdt_after_the_confirmation_at_most_what_arrived(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    the_plan = converting(order("USD/USDT", "sell", "990", 1, "1"), "0.01976")
    finished, balances = await run_once(pool, journal, the_plan, "900", extra="500")
    assert (finished.placed, finished.filled) == (3, 3)
    # 900 confirmed: 900 USD sold (not the plan's 990, nor the 1400 the venue shows) for 899.1 USDT net;
    # the BTC buy fits in them: 899.1 / (50000 x 1.002 x 1.001) = 0.017928... -> 0.01792.
    assert finished.reasons == (
        "leg 0 USD/USDT sell reduced from 990 to 900: at most 900 USD to sell (the account's own part and "
        "what transfer 0 brought)",
        f"bank transfer of 1000 USD from {BANK} to {SPOT} (task {task_id(the_plan.event_id, 0)}) confirmed "
        "with 900 USD received: the buys it funds spend at most that",
        "leg 1 BTC/USDT buy scaled from 0.01976 to 0.01792: 899.1 USDT free after the sells",
    )
    assert balances == {"BTC": D("0.01792"), "USD": D("500"), "USDT": D("2.204")}


async def test_a_conversion_waiting_for_a_task_that_expires_is_never_placed(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    executor, recorder, paper = await setup(pool, journal, clock)
    the_plan = converting(order("USD/USDT", "sell", "990", 1, "1"), "0.01976")
    await executor.on_plan(the_plan)
    await wire(pool, "990")  # landed, never confirmed
    clock.now += timedelta(days=8)
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.placed) == ("timed_out", 0)
    assert await journal.orders(the_plan.event_id) == []
    assert (await paper.balances(SPOT)).free["USD"] == D(990)


# -- after a withdrawal between exchanges ----------------------------------------------------------------

OTHER_MARKETS = {
    "paper": {
        "BTC/USDC": {"amount_step": "0.00001", **FEE},
        "USDC/USDT": {"amount_step": "0.01", **FEE},
    }
}
OTHER_PRICES = {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1", "USDC": "1"}}


async def test_after_a_credited_withdrawal_usdc_is_bought_with_what_arrived_once(pool: asyncpg.Pool) -> None:
    """SPOT (USDT) funds OTHER, which trades against USDC: 1000 USDT withdrawn (a fee of 1), credited 60 s
    later, then USDC/USDT bought with the 999 that arrived and BTC/USDC with the USDC; the run again (a
    redelivered plan) moves and places nothing more."""
    clock = Clock()
    paper = PaperVenue.from_documents(
        "paper",
        pool,
        OTHER_MARKETS,
        OTHER_PRICES,
        clock,
        transfer_delay=timedelta(seconds=60),
        withdraw_fees={"USDT": D(1)},
        **STILL,
    )
    await paper.seed(SPOT, {"USDT": D(1000)})
    recorder = RecordingPublisher()
    settings = {"live": True, "transfers": True, "withdrawal_allowlist": [allowed("USDT")]}
    executor = Executor(
        {"paper": paper},
        recorder,
        ExecutorSettings.model_validate(settings),
        PostgresJournal(pool),
        clock=clock,
    )

    async def sleep(seconds: float) -> None:  # waiting moves the venue's clock: the credit comes due
        clock.now += timedelta(seconds=seconds)

    executor.sleep = sleep
    transfer = PlannedTransfer(
        asset="USDT", from_account=SPOT, to_account=OTHER, amount=D(1000), est_value=D(1000), fee=D(1)
    )
    conversion = order("USDC/USDT", "buy", "998", 2, "1").model_copy(update={"account": OTHER})
    btc = order("BTC/USDC", "buy", "0.01994", 2, "50000").model_copy(update={"account": OTHER})
    the_plan = plan(
        conversion,
        btc,
        transfers=(transfer,),
        budgets=(
            PlannedBudget(exchange="paper", account=SPOT, asset="USDT", amount=D(0)),
            PlannedBudget(exchange="paper", account=OTHER, asset="USDT", amount=D(999)),
            PlannedBudget(exchange="paper", account=OTHER, asset="USDC", amount=D(0)),
        ),
    )
    await executor.on_plan(the_plan)
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    # The 999 USDT credited are the conversion's budget: 999 / (1.002 x 1.001) = 996.009... -> 996.00
    # USDC; the BTC buy fits in them: 996 / (50000 x 1.002 x 1.001) = 0.019860... -> 0.01986.
    assert (finished.placed, finished.filled) == (3, 3)
    assert finished.reasons == (
        "leg 0 USDC/USDT buy scaled from 998 to 996: 999 USDT free after the sells",
        "leg 1 BTC/USDC buy scaled from 0.01994 to 0.01986: 996 USDC free after the sells",
    )
    # 999 - 996 - 0.996 fee; 996 - 993 - 0.993 fee.
    held = {"BTC": D("0.01986"), "USDC": D("2.007"), "USDT": D("2.004")}
    assert (await paper.balances(OTHER)).free == held
    await executor.on_plan(the_plan)
    await executor.drain()
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 1
    assert await pool.fetchval("SELECT count(*) FROM paper.orders WHERE account = $1", OTHER) == 2
    assert (await paper.balances(OTHER)).free == held

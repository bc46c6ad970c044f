"""USD held in an account trading against USDT, sold on the inverse market `USDT/USD` (docs/formats.md, "How
the plan is made", 5; tests/core/test_inverse_markets.py): the plan's order is a buy of USDT spending the
USD, with the buys, and the plan's budget of USD on the account is what it holds. On the paper exchange:
the buy is sized within that budget (the run's price buffer and the fee included), spends USD, delivers
USDT, and the BTC buy after it spends that USDT; a second pass places nothing more."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from rebal.core.plan import Budget, Order
from rebal.events import PlannedBudget, PlannedOrder, RunFinished
from rebal_executor.execution import Executor, Journal
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.ccxt_venue import open_ccxt_venue
from rebal_venues.paper import PaperVenue
from tests.core.test_inverse_markets import holding_usd
from tests.core.test_where import market
from tests.executor.test_bank_transfers import SPOT, of
from tests.executor.test_executor import plan
from tests.fake_exchange import serving
from tests.fake_exchange.state import FakeMarket
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, T0, Clock
from tests.venues.support import ACCOUNT, KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
MARKETS = {"paper": {"BTC/USDT": market("0.00001"), "USDT/USD": market("0.01")}}
PRICES = {"quote": "USD", "prices": {"BTC": "50000", "USDT": "1", "USD": "1"}}


def on_paper(order: Order) -> PlannedOrder:
    """The core's order, placed on the paper venue's account SPOT."""
    return PlannedOrder.model_validate({**order._asdict(), "account": SPOT, "exchange": "paper"})


def budget_on_paper(budget: Budget) -> PlannedBudget:
    return PlannedBudget(exchange="paper", account=SPOT, asset=budget.asset, amount=budget.amount)


async def test_the_held_usd_buys_usdt_within_its_budget_and_the_usdt_buys_btc(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    core, _ = holding_usd({"USDT/USD": market("0.01")})
    the_plan = plan(*map(on_paper, core.orders()), budgets=tuple(map(budget_on_paper, core.budgets())))
    assert [(o.symbol, o.side, o.amount, o.phase) for o in the_plan.orders] == [
        ("USDT/USD", "buy", D("499.5"), 2),
        ("BTC/USDT", "buy", D("0.00998"), 2),
    ]
    clock = Clock()
    paper = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, clock, **STILL)
    # 200 more USD on the venue than the snapshot showed (a deposit mid-run): not the plan's to spend.
    await paper.seed(SPOT, {"USD": D(700), "USDT": D(0)})
    recorder = RecordingPublisher()
    executor = Executor({"paper": paper}, recorder, ExecutorSettings(live=True), journal, clock=clock)
    await executor.on_plan(the_plan)
    await executor.drain()
    [finished] = of(RunFinished, recorder)
    assert isinstance(finished, RunFinished)
    assert (finished.placed, finished.filled) == (2, 2)
    # The plan's 500 USD, at the price raised by the 0.2% buffer and the 0.1% fee: 500 / (1.002 x 1.001)
    # = 498.50... -> 498.50 USDT; the BTC buy in those: 498.5 / (50000 x 1.002 x 1.001) = 0.0099402...
    # -> 0.00994 BTC.
    assert finished.reasons == (
        "leg 0 USDT/USD buy scaled from 499.5 to 498.5: 500 USD of the plan's budget left",
        "leg 1 BTC/USDT buy scaled from 0.00998 to 0.00994: 498.5 USDT free after the sells",
    )
    # USD: 700 - 498.5 - 0.4985 fee; USDT: 498.5 - 497 - 0.497 fee.
    held = {"BTC": D("0.00994"), "USD": D("201.0015"), "USDT": D("1.003")}
    assert (await paper.balances(SPOT)).free == held
    await executor.on_plan(the_plan)
    await executor.drain()
    assert len(await journal.orders(the_plan.event_id)) == 2
    assert (await paper.balances(SPOT)).free == held


async def test_through_ccxt_the_usdt_usd_buy_spends_the_budgets_usd_and_its_fee_comes_out_of_the_usdt(
    pool: asyncpg.Pool,
) -> None:
    """The same two buys sent by an unmodified ccxt client to the fake Binance (fees taken from the coin
    received, as Binance does): an ordinary market buy of USDT/USD, amount in USDT."""
    book = fake_book()
    book.markets["USDTUSD"] = FakeMarket("USDT", "USD", D("0.01"), D("0.01"), D("5"))
    book.prices.update({"USDTUSD": D(1), "BTCUSDT": D(50000)})  # as planned
    book.accounts[KEY].update({"USD": D(500)})
    core, _ = holding_usd({"USDT/USD": market("0.01")})
    orders = [
        o.model_copy(update={"account": ACCOUNT, "exchange": "binance"}) for o in map(on_paper, core.orders())
    ]
    budgets = tuple(
        PlannedBudget(exchange="binance", account=ACCOUNT, asset=b.asset, amount=b.amount)
        for b in core.budgets()
    )
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        recorder = RecordingPublisher()
        executor = Executor(
            {"binance": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock(T0)
        )
        await executor.on_plan(plan(*orders, budgets=budgets))
        [finished] = of(RunFinished, recorder)
        assert isinstance(finished, RunFinished)
        assert (finished.placed, finished.filled) == (2, 2)
        assert finished.reasons == (
            "leg 0 USDT/USD buy scaled from 499.5 to 498.5: 500 USD free after the sells",
            "leg 1 BTC/USDT buy scaled from 0.00998 to 0.00993: 498.0015 USDT free after the sells",
        )
    # 500 / (1.002 x 1.001) = 498.50 USDT bought for 498.5 USD, 0.4985 USDT of fee out of it: 498.0015
    # USDT; the BTC in those: 498.0015 / (50000 x 1.002 x 1.001) = 0.0099305... -> 0.00993 BTC for 496.5
    # USDT, its fee (0.00000993) out of the BTC.
    assert book.accounts[KEY] == {"USD": D("1.5"), "USDT": D("1.5015"), "BTC": D("0.00992007")}

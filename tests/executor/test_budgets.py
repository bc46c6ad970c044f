"""A run spends at most its plan's budget per account: the free, unlocked quote the snapshot showed (with
the planned transfers) plus what the run's own sells really yield — never a bot's locked quote, never a
deposit that lands while the run is under way, whatever the venue shows free."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from rebal.events import PlannedBudget, RunFinished
from rebal_executor.execution import Executor, Journal
from rebal_executor.settings import ExecutorSettings
from tests.executor.test_executor import SPOT, order, paper, plan
from tests.executor.test_reconcile import Outsider
from tests.fakes import RecordingPublisher
from tests.paper_support import Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


def budget(amount: str) -> PlannedBudget:
    return PlannedBudget(exchange="paper", account=SPOT, asset="USDT", amount=D(amount))


async def run(pool: asyncpg.Pool, journal: Journal, venue: Outsider, the_plan: object) -> RunFinished:
    recorder = RecordingPublisher()
    executor = Executor({"paper": venue}, recorder, ExecutorSettings(live=True), journal, clock=Clock())
    await executor.on_plan(the_plan)  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return finished


async def test_a_buy_never_spends_the_quote_a_bot_holds(pool: asyncpg.Pool, journal: Journal) -> None:
    # The account holds 1000 USDT, all of it locked by a bot (the plan's budget for it is 0). The sell that
    # was to fund the buy finds nothing to sell: the buy must not spend the bot's USDT.
    venue = Outsider(paper(pool))
    await venue.inner.seed(SPOT, {"USDT": D("1000")})
    the_plan = plan(
        order("SOL/USDT", "sell", "4", 1), order("ETH/USDT", "buy", "0.2", 2), budgets=(budget("0"),)
    )
    finished = await run(pool, journal, venue, the_plan)
    assert (finished.placed, finished.skipped) == (0, 2)
    assert finished.reasons == (
        "leg 0 SOL/USDT sell skipped: no SOL free",
        "leg 1 ETH/USDT buy skipped: below_step",
    )
    assert (await venue.inner.balances(SPOT)).free == {"USDT": D("1000")}


async def test_a_deposit_landing_mid_run_is_never_spent(pool: asyncpg.Pool, journal: Journal) -> None:
    # Budget: the 4995 USDT free at the snapshot, plus the sell's 149.85. The buy was planned at 2950 and
    # ETH is now 3000 (within the 2% tolerance): it no longer fits and must shrink, although a 1000 USDT
    # deposit that arrived after the sell makes the venue show enough free.
    venue = Outsider(paper(pool), deposit={"USDT": D("1000")})
    await venue.inner.seed(SPOT, {"USDT": D("4995"), "SOL": D("1")})
    eth = order("ETH/USDT", "buy", "1.7423", 2).model_copy(update={"est_price": D("2950")})
    the_plan = plan(order("SOL/USDT", "sell", "1", 1), eth, budgets=(budget("4995"),))
    finished = await run(pool, journal, venue, the_plan)
    # 5144.85 / (3000 x 1.002 buffer x 1.001 fee) = 1.70981...: the factor truncated to 1e-12 and the
    # amount to the 0.0001 step give 1.7098 ETH, for 5129.4 + 5.1294 fee.
    assert "leg 1 ETH/USDT buy scaled from 1.7423 to 1.7098: 5144.85 USDT of the plan's budget left" in (
        finished.reasons
    )
    free = (await venue.inner.balances(SPOT)).free
    spent = D("4995") + D("149.85") + D("1000") - free["USDT"]
    assert spent == D("5134.5294") <= D("4995") + D("149.85")
    assert free["ETH"] == D("1.7098")

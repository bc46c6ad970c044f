"""Reconciliation with the venue on the paper exchange: open orders that are not ours are classified
external (recorded once, never cancelled), and balances that moved during a run by more than the run's fills
explain are reported (a deposit, someone else's trade)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import REGISTRY

from rebal.events import HaltTrading, RunFinished, new_event
from rebal.venue import OrderState, Side
from rebal_executor.execution import Executor
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from tests.executor.test_executor import DEMO_BALANCES, DEMO_ORDERS, SPOT, paper, plan
from tests.executor.wrapped import Wrapped
from tests.fakes import RecordingPublisher
from tests.paper_support import T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
# What the demo plan's fills move (test_executor.py): BTC 0.21666 sold for 12999.6 - 12.9996, SOL 6.66 for
# 999 - 0.999, 2 ETH bought for 6000 + 6.
DEMO_USDT_CHANGE = D("12986.6004") + D("998.001") - D("6006")


@dataclass
class Outsider(Wrapped):
    """The paper venue, with someone else acting on the account right after our first placement: `deposit`
    is credited, `trade` is an order they place (under their own id)."""

    deposit: Mapping[str, Decimal] = field(default_factory=dict)
    trade: tuple[str, Side, Decimal] | None = None
    acted: bool = False

    async def place_order(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        *,
        price: Decimal | None = None,
        post_only: bool = False,
    ) -> OrderState:
        placed = await self.inner.place_order(
            account, client_order_id, symbol, side, amount, price=price, post_only=post_only
        )
        if not self.acted:
            self.acted = True
            for asset, credit in self.deposit.items():
                await self.inner.pool.execute(
                    "UPDATE paper.balances SET amount = amount + $3 WHERE account = $1 AND asset = $2",
                    account,
                    asset,
                    credit,
                )
            if self.trade is not None:
                await self.inner.place_order(account, "by-hand-1", *self.trade)
        return placed


async def run_with(pool: asyncpg.Pool, venue: Outsider) -> RunFinished:
    await venue.inner.seed(SPOT, DEMO_BALANCES)
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
    )
    await executor.on_plan(plan(*DEMO_ORDERS))
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return finished


def discrepancies() -> float:
    return REGISTRY.get_sample_value("rebal_balance_discrepancies_total", {"exchange": "paper"}) or 0.0


async def recorded_totals(pool: asyncpg.Pool, moment: str) -> dict[str, Decimal]:
    raw = await pool.fetchval("SELECT balances FROM execution.run_balances WHERE moment = $1", moment)
    return {asset: D(values["total"]) for asset, values in json.loads(raw).items()}


async def test_a_clean_run_records_its_balances_and_reports_nothing(pool: asyncpg.Pool) -> None:
    before = discrepancies()
    finished = await run_with(pool, Outsider(paper(pool)))
    assert (finished.status, finished.reasons) == ("completed", ())
    assert await recorded_totals(pool, "start") == DEMO_BALANCES
    assert await recorded_totals(pool, "end") == {
        "BTC": D("0.58334"),
        "ETH": D("7"),
        "SOL": D("93.34"),
        "USDT": D("22000") + DEMO_USDT_CHANGE,
    }
    assert discrepancies() == before


async def test_a_deposit_during_the_run_is_reported_as_external_activity(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    before = discrepancies()
    with caplog.at_level(logging.WARNING, logger="rebal.executor"):
        finished = await run_with(pool, Outsider(paper(pool), deposit={"USDT": D("1000")}))
    # USDT moved by 7978.6014 + 1000; the fills explain 7978.6014.
    line = (
        "balance of USDT on demo/paper/spot (paper) moved by 1000 more than the fills explain "
        "(8978.6014 against 7978.6014): external activity"
    )
    assert D("7978.6014") == DEMO_USDT_CHANGE
    assert (finished.status, finished.reasons) == ("completed", (line,))
    assert discrepancies() == before + 1
    assert [r.getMessage() for r in caplog.records if "external activity" in r.getMessage()] == [
        f"run {finished.correlation_id}: {line}"
    ]


async def test_someone_elses_trade_during_the_run_is_reported_per_asset(pool: asyncpg.Pool) -> None:
    before = discrepancies()
    outsider = Outsider(paper(pool), trade=("SOL/USDT", "sell", D("10")))
    finished = await run_with(pool, outsider)
    # They sold 10 SOL for 1500 - 1.5 fee: SOL moved -16.66 (the run's -6.66), USDT +1498.5 more.
    assert finished.reasons == (
        "balance of SOL on demo/paper/spot (paper) moved by 10 less than the fills explain "
        "(-16.66 against -6.66): external activity",
        "balance of USDT on demo/paper/spot (paper) moved by 1498.5 more than the fills explain "
        "(9477.1014 against 7978.6014): external activity",
    )
    assert discrepancies() == before + 2
    # Their order filled at once: never open, so never classified (nothing to leave alone).
    assert await pool.fetchval("SELECT count(*) FROM execution.external_orders") == 0


async def test_open_orders_not_in_the_journal_are_external_and_survive_a_halt(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    venue = Outsider(paper(pool))
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock(T0)
    )
    await venue.inner.seed(SPOT, DEMO_BALANCES)
    await executor.on_plan(plan(*DEMO_ORDERS))  # the account is now one the executor trades on
    for cid in ("web-7", "rb-0123456789ab-0-0"):  # someone's, and one that merely looks like ours
        await pool.execute(
            "INSERT INTO paper.orders (exchange, client_order_id, account, symbol, side, amount, status,"
            " created_at) VALUES ('paper', $1, $2, 'BTC/USDT', 'buy', 0.01, 'open', $3)",
            cid,
            SPOT,
            T0,
        )
    with caplog.at_level(logging.INFO, logger="rebal.executor"):
        assert await executor.classify_external() == {"paper": 2}
        await executor.reconcile_orders()  # the next cycle: seen again, logged no more
    rows = await pool.fetch(
        "SELECT client_order_id, symbol, side, amount, looks_ours, first_seen, last_seen"
        " FROM execution.external_orders ORDER BY client_order_id"
    )
    assert [tuple(r) for r in rows] == [
        ("rb-0123456789ab-0-0", "BTC/USDT", "buy", D("0.01"), True, T0, T0),
        ("web-7", "BTC/USDT", "buy", D("0.01"), False, T0, T0),
    ]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if "open order" in r.getMessage()]
    assert messages == [
        (
            "WARNING",
            "open order rb-0123456789ab-0-0 buy 0.01 BTC/USDT on demo/paper/spot (paper) looks like ours but "
            "is not in the journal: external, left alone",
        ),
        (
            "INFO",
            "open order web-7 buy 0.01 BTC/USDT on demo/paper/spot (paper) is not ours: external, never "
            "cancelled",
        ),
    ]
    assert REGISTRY.get_sample_value("rebal_external_orders", {"exchange": "paper"}) == 2
    await executor.halt(new_event(HaltTrading, key="h", now=T0, portfolio_id="demo", reason="incident"))
    statuses = await pool.fetch(
        "SELECT client_order_id, status FROM paper.orders WHERE status = 'open' ORDER BY client_order_id"
    )
    assert [tuple(r) for r in statuses] == [("rb-0123456789ab-0-0", "open"), ("web-7", "open")]

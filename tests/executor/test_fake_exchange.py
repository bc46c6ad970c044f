"""The executor through an unmodified ccxt client against the fake Binance: the reconciliation classifies an
order someone placed by hand as external (never cancelled, not even by a halt), and a run whose buy fees are
taken from the coins received (as Binance does) is explained exactly by its fills."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import REGISTRY

from rebal.events import HaltTrading, PlannedOrder, RunFinished, new_event
from rebal_executor.handlers import Executor
from rebal_executor.journal import Journal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.ccxt_venue import open_ccxt_venue
from tests.executor.test_executor import plan
from tests.fake_exchange import serving
from tests.fakes import RecordingPublisher
from tests.paper_support import T0, Clock
from tests.venues.support import ACCOUNT, KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


def order(symbol: str, side: str, amount: str, phase: int) -> PlannedOrder:
    return PlannedOrder(
        account=ACCOUNT,
        exchange="binance",
        symbol=symbol,
        side=side,
        amount=D(amount),
        est_price=D(0),
        est_cost=D(0),
        est_fee=D(0),
        phase=phase,
    )


async def test_an_order_placed_by_hand_is_external_and_survives_a_halt(pool: asyncpg.Pool) -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("1000"), "BTC": D("0.05")})
    by_hand = book.rest(KEY, "BTCUSDT", "BUY", D("0.01"))  # a limit order from the web UI: no client id
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        recorder = RecordingPublisher()
        executor = Executor(
            {"binance": venue}, recorder, ExecutorSettings(live=True), Journal(pool), clock=Clock(T0)
        )
        await executor.on_plan(plan(order("BTC/USDT", "sell", "0.01", 1), order("ETH/USDT", "buy", "0.2", 2)))
        [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
        # Sold 0.01 BTC for 600 - 0.6 USDT; bought 0.2 ETH for 600 USDT, the fee (0.0002) out of the ETH:
        # the balances moved exactly as the fills say, so nothing is reported.
        assert (finished.status, finished.reasons) == ("completed", ())
        assert book.accounts[KEY] == {"USDT": D("999.4"), "BTC": D("0.04"), "ETH": D("0.1998")}
        rows = await pool.fetch(
            "SELECT exchange, account, client_order_id, symbol, side, amount, looks_ours"
            " FROM execution.external_orders"
        )
        assert [tuple(r) for r in rows] == [
            ("binance", ACCOUNT, f"venue:{by_hand.order_id}", "BTC/USDT", "buy", D("0.01"), False)
        ]
        assert REGISTRY.get_sample_value("rebal_external_orders", {"exchange": "binance"}) == 1
        await executor.halt(new_event(HaltTrading, key="h", now=T0, portfolio_id="demo", reason="incident"))
        await executor.reconcile_orders()
        assert book.requests_of("cancel") == []
        assert by_hand.status == "NEW"
        assert await pool.fetchval("SELECT count(*) FROM execution.external_orders") == 1

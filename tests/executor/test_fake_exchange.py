"""The executor through an unmodified ccxt client against the fake Binance: the reconciliation classifies an
order someone placed by hand as external (never cancelled, not even by a halt); a run whose buy fees are
taken from the coins received (as Binance does) is explained exactly by its fills; a sell (a buy) first
cancels our own resting order that locks what it needs, and never asks for what an external order locks."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import REGISTRY

from rebal.events import HaltTrading, PlannedOrder, RunFinished, new_event
from rebal.venue import Venue
from rebal_executor.execution import Executor
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.ccxt_venue import open_ccxt_venue
from tests.executor.test_executor import plan
from tests.fake_exchange import serving
from tests.fake_exchange.state import FakeBook, Order
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


def impatient_executor(venue: Venue, recorder: RecordingPublisher, pool: asyncpg.Pool) -> Executor:
    """Live, giving up on an unfilled order after 1 s, without really sleeping."""

    async def no_wait(_: float) -> None:
        return None

    return Executor(
        {"binance": venue},
        recorder,
        ExecutorSettings.model_validate(
            {"live": True, "execution": {"order_timeout_seconds": 1, "poll_interval_seconds": 0.5}}
        ),
        PostgresJournal(pool),
        clock=Clock(T0),
        sleep=no_wait,
    )


async def resting(executor: Executor, book: FakeBook, planned: PlannedOrder) -> Order:
    """An earlier run's order that the book never fills: it rests open, locking what it would trade."""
    book.faults.fill_delay_seconds = 3600
    await executor.on_plan(plan(planned, key="earlier"))
    [ours] = [o for o in book.orders.values() if o.client_order_id.startswith("rb-")]
    ours.resting, book.faults.fill_delay_seconds = True, 0
    return ours


async def test_an_order_placed_by_hand_is_external_and_survives_a_halt(pool: asyncpg.Pool) -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("1000"), "BTC": D("0.05")})
    by_hand = book.rest(KEY, "BTCUSDT", "BUY", D("0.01"))  # a limit order from the web UI: no client id
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        recorder = RecordingPublisher()
        executor = Executor(
            {"binance": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock(T0)
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


async def test_a_sell_first_releases_what_our_own_resting_order_locks_and_never_asks_for_an_external_lock(
    pool: asyncpg.Pool,
) -> None:
    book = fake_book()
    book.locks_open_orders = True
    book.accounts[KEY].update({"BTC": D("0.05")})
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        recorder = RecordingPublisher()
        executor = impatient_executor(venue, recorder, pool)
        # An earlier run's sell of 0.02 BTC never filled: it rests open (an illiquid book), locking 0.02 BTC.
        ours = await resting(executor, book, order("BTC/USDT", "sell", "0.02", 1))
        assert (
            await pool.fetchval(
                "SELECT state FROM execution.orders WHERE client_order_id = $1", ours.client_order_id
            )
            == "accepted"
        )
        # Someone else's limit sell locks 0.01 BTC more: 0.02 BTC of the 0.05 is free.
        external = book.rest(KEY, "BTCUSDT", "SELL", D("0.01"), "bot-7")
        assert (await venue.balances(ACCOUNT)).free["BTC"] == D("0.02")

        # A withdrawal-shaped run wants 0.045 BTC sold: our resting order is cancelled first (0.02 released:
        # 0.04 free), the sell asks for exactly the 0.04 free, and the 0.005 behind the external order is
        # never asked for.
        recorder.published.clear()
        await executor.on_plan(plan(order("BTC/USDT", "sell", "0.045", 1), key="withdrawal"))
        [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
        assert finished.status == "completed_with_adjustments"
        assert finished.reasons == (
            f"released 0.02 BTC locked in our open order {ours.client_order_id} before selling",
            "leg 0 BTC/USDT sell: 0.005 BTC still locked/insufficient, not asked for (0.04 free, 0.01 locked"
            " in orders left open)",
            "leg 0 BTC/USDT sell reduced from 0.045 to 0.04: 0.04 BTC free",
        )
        assert [(r["origClientOrderId"]) for r in book.requests_of("cancel")] == [ours.client_order_id]
        sent = [r for r in book.requests_of("create") if r.get("newClientOrderId") != ours.client_order_id]
        assert [(r["side"], r["quantity"]) for r in sent] == [("SELL", "0.04")]
        assert (ours.status, external.status) == ("CANCELED", "NEW")
        # 0.04 BTC sold at 60000: 2400 USDT less the 0.1% fee; 0.01 BTC left, locked by the external order.
        assert book.accounts[KEY] == {"BTC": D("0.01"), "USDT": D("2397.6")}
        rows = await pool.fetch(
            "SELECT to_state FROM execution.transitions WHERE client_order_id = $1 ORDER BY seq",
            ours.client_order_id,
        )
        assert [r["to_state"] for r in rows] == ["created", "submitted", "accepted", "cancelled"]


async def test_a_buy_first_releases_the_quote_our_own_resting_buy_locks(pool: asyncpg.Pool) -> None:
    book = fake_book()
    book.locks_open_orders = True
    book.accounts[KEY].update({"USDT": D("1000")})
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        recorder = RecordingPublisher()
        executor = impatient_executor(venue, recorder, pool)
        # An earlier run's buy of 0.01 BTC rests open: 0.01 x 60000 = 600 USDT locked, 400 free.
        ours = await resting(executor, book, order("BTC/USDT", "buy", "0.01", 2))
        assert (await venue.balances(ACCOUNT)).free["USDT"] == D("400")
        # A run buying 0.2 ETH (600 USDT and the buffer) releases the 600 first, then buys all 0.2.
        recorder.published.clear()
        await executor.on_plan(plan(order("ETH/USDT", "buy", "0.2", 2), key="buy"))
        [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
        assert (finished.status, finished.reasons) == (
            "completed_with_adjustments",
            (f"released 600 USDT locked in our open order {ours.client_order_id} before buying",),
        )
        assert ours.status == "CANCELED"
        # 0.2 ETH for 600 USDT, its 0.0002 ETH fee taken from the coins (as Binance does).
        assert book.accounts[KEY] == {"USDT": D("400"), "ETH": D("0.1998")}

"""A timeout is not evidence. A submit without an answer, or a look-up that fails, leaves an order's
outcome unknown: it is looked up again over a window, adopted when found, sent again (under the same id)
only when every look-up of the window said "not found", and judged lost when nothing may send it again.
On venues that take a client id again once its order has ended (Binance, and our honest fakes), a blind
resend trades twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from rebal.events import RunFinished
from rebal.venue import VenueError
from rebal_executor.execution import Executor, Journal, client_order_id
from rebal_executor.settings import ExecutorSettings
from rebal_venues.ccxt_venue import open_ccxt_venue
from rebal_venues.paper import PaperVenue
from tests.executor.test_executor import SPOT, demo, order, plan
from tests.executor.test_fake_exchange import order as binance_order
from tests.executor.test_safety import Crash, FaultyVenue
from tests.fake_exchange import serving
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, Clock
from tests.venues.support import KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
SELL = order("BTC/USDT", "sell", "0.21666", 1)


def slow_paper(pool: asyncpg.Pool, clock: Clock, visible_after: float) -> PaperVenue:
    """The paper exchange showing a new order to look-ups only `visible_after` seconds after it took it."""
    return PaperVenue.from_documents(
        "paper",
        pool,
        demo("markets"),
        demo("prices"),
        clock,
        order_visible_after=timedelta(seconds=visible_after),
        **STILL,
    )


def executor_on(
    venue: Any, journal: Journal, clock: Clock, **execution: Any
) -> tuple[Executor, RecordingPublisher]:
    """Live; every wait moves the clock (the venue's too) instead of sleeping."""
    recorder = RecordingPublisher()
    settings = ExecutorSettings.model_validate({"live": True, "execution": execution})
    executor = Executor({"paper": venue}, recorder, settings, journal, clock=clock)

    async def sleep(seconds: float) -> None:
        clock.now += timedelta(seconds=seconds)

    executor.sleep = sleep
    return executor, recorder


def finished_of(recorder: RecordingPublisher) -> RunFinished:
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return finished


async def venue_orders(pool: asyncpg.Pool, cid: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM paper.orders WHERE client_order_id = $1", cid))


async def test_a_lost_answer_is_looked_up_over_the_window_and_never_sent_again(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    inner = slow_paper(pool, clock, visible_after=4)
    await inner.seed(SPOT, {"BTC": D("0.8")})
    venue = FaultyVenue(inner, faults={0: (VenueError, True)})  # the venue takes it; the answer is lost
    executor, recorder = executor_on(venue, journal, clock)
    the_plan = plan(SELL)
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    # Found by the look-ups once the venue showed it (4 s later): sent once, sold once.
    assert venue.placements == [cid]
    assert await venue_orders(pool, cid) == 1
    assert (await inner.balances(SPOT)).free["BTC"] == D("0.8") - D("0.21666")
    assert (finished_of(recorder).status, finished_of(recorder).filled) == ("completed", 1)


async def test_after_a_restart_a_failing_look_up_is_no_proof_of_absence(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    inner = slow_paper(pool, clock, visible_after=0)
    await inner.seed(SPOT, {"BTC": D("0.8")})
    first, _ = executor_on(FaultyVenue(inner, faults={0: (Crash(), True)}), journal, clock)
    the_plan = plan(SELL)
    with pytest.raises(Crash):  # the venue took the order, then the process died
        await first.on_plan(the_plan)
    # A new process: the venue's look-ups fail for a while (they prove nothing), then answer.
    venue = FaultyVenue(inner, lookup_failures=3)
    restarted, recorder = executor_on(venue, journal, clock)
    await restarted.drain()
    cid = client_order_id(the_plan.event_id, 0)
    assert venue.placements == []  # found, never sent again
    assert await venue_orders(pool, cid) == 1
    assert (await inner.balances(SPOT)).free["BTC"] == D("0.8") - D("0.21666")
    assert finished_of(recorder).status == "completed"


async def test_through_ccxt_a_submit_timing_out_after_acceptance_places_one_order(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    book = fake_book()
    book.accounts[KEY].update({"BTC": D("0.05")})
    book.faults.submit_delay_seconds = 0.5  # taken and filled; the answer comes after the client gave up
    book.faults.not_found_seconds = 1.0  # and no read shows it for a second
    async with serving(book) as origin, open_ccxt_venue(settings(origin, timeout_ms=300)) as venue:
        recorder = RecordingPublisher()
        window = {"lookup_window_seconds": 2, "lookup_interval_seconds": 0.25, "race_window_seconds": 0.5}
        executor = Executor(
            {"binance": venue},
            recorder,
            ExecutorSettings.model_validate({"live": True, "execution": window}),
            journal,
        )
        await executor.on_plan(
            plan(binance_order("BTC/USDT", "sell", "0.01", 1), occurred_at=datetime.now(UTC))
        )
    assert len(book.orders) == 1  # Binance would have taken the same id again: sold twice
    assert book.accounts[KEY]["BTC"] == D("0.04")
    assert finished_of(recorder).status == "completed"


async def test_a_duplicate_id_refusal_is_an_order_that_exists_never_a_rejection(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    book = fake_book()
    book.accounts[KEY].update({"BTC": D("0.05")})
    book.faults.submit_delay_seconds = 0.5  # taken; the answer is lost
    book.faults.not_found_seconds = 30  # shown far later than our (short) window
    book.faults.fill_delay_seconds = 30  # and open all that time: its id is in use
    async with serving(book) as origin, open_ccxt_venue(settings(origin, timeout_ms=300)) as venue:
        recorder = RecordingPublisher()
        window = {"lookup_window_seconds": 0.6, "lookup_interval_seconds": 0.2, "race_window_seconds": 0.1}
        executor = Executor(
            {"binance": venue},
            recorder,
            ExecutorSettings.model_validate({"live": True, "execution": window}),
            journal,
        )
        the_plan = plan(binance_order("BTC/USDT", "sell", "0.01", 1), occurred_at=datetime.now(UTC))
        await executor.on_plan(the_plan)
        cid = client_order_id(the_plan.event_id, 0)
        # The window passed without a sign of it, so it was sent again: "Duplicate order sent." means the
        # order exists. The journal never calls it rejected; it is left to reconcile.
        assert [r["newClientOrderId"] for r in book.requests_of("create")] == [cid, cid]
        assert len(book.orders) == 1
        journaled = await journal.order(cid)
        assert journaled is not None and journaled.state == "outcome_unknown"
        finished = finished_of(recorder)
        assert finished.failed == 1 and "rejected" not in finished.reasons[0]
        # Once the venue shows it (filled), reconciliation adopts it.
        book.faults.not_found_seconds = book.faults.fill_delay_seconds = 0
        assert await executor.reconcile_orders() == 1
        journaled = await journal.order(cid)
        assert journaled is not None and (journaled.state, journaled.filled) == ("filled", D("0.01"))


async def test_an_order_a_stale_run_never_sent_is_judged_lost_and_the_run_finishes(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    inner = slow_paper(pool, clock, visible_after=0)
    await inner.seed(SPOT, {"BTC": D("0.8")})
    first, _ = executor_on(FaultyVenue(inner, faults={0: (Crash(), False)}), journal, clock)
    the_plan = plan(SELL)
    with pytest.raises(Crash):  # written as submitted; the process died before the venue saw it
        await first.on_plan(the_plan)
    clock.now += timedelta(seconds=700)  # back after the run's deadline (600 s)
    restarted, recorder = executor_on(FaultyVenue(inner), journal, clock)
    await restarted.drain()
    cid = client_order_id(the_plan.event_id, 0)
    journaled = await journal.order(cid)
    assert journaled is not None and journaled.state == "lost"
    finished = finished_of(recorder)
    assert finished.status == "timed_out"
    assert finished.reasons[0] == (
        f"leg 0 BTC/USDT sell failed: {cid} never reached the venue: judged lost after 6 look-ups over 15 s"
    )
    assert await journal.open_orders() == []
    assert await venue_orders(pool, cid) == 0


async def test_an_order_of_a_finished_run_never_shown_is_judged_lost_by_reconciliation(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    clock = Clock()
    inner = slow_paper(pool, clock, visible_after=0)
    await inner.seed(SPOT, {"BTC": D("0.8")})
    # The submit times out before reaching the venue, and every look-up fails during the run: unknown.
    venue = FaultyVenue(inner, faults={0: (VenueError, False)}, lookups_fail=True)
    executor, recorder = executor_on(venue, journal, clock)
    the_plan = plan(SELL)
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    assert finished_of(recorder).failed == 1
    venue.lookups_fail = False
    judged = []
    for _ in range(6):  # reconciliation cycles, 10 s apart, each one look-up answering "not found"
        clock.now += timedelta(seconds=10)
        judged.append(await executor.reconcile_orders())
    # Judged lost at the 4th answer: `lookup_queries` (4) "not found", spanning more than the window (15 s).
    assert judged == [0, 0, 0, 1, 0, 0]
    journaled = await journal.order(cid)
    assert journaled is not None and journaled.state == "lost"
    assert await venue_orders(pool, cid) == 0

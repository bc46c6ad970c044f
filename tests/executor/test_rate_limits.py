"""A rate limit is a refusal, never a failure: the same client id is sent again after the venue's
Retry-After (else 1 s, doubling, at most 60 s) until the run's deadline; and new orders are paced by the
venue's order-count limits (Binance: 50 per 10 s) beside the request-weight budget."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from rebal.events import RunFinished
from rebal.venue import VenueRateLimited
from rebal_executor.execution import Journal, client_order_id
from rebal_venues.ccxt_venue import OrderRate, open_ccxt_venue
from tests.executor.test_executor import DEMO_ORDERS, plan
from tests.executor.test_safety import setup
from tests.fake_exchange import OrderLimit, serving
from tests.venues.support import ACCOUNT, KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


def finished_of(published: list[object]) -> RunFinished:
    [finished] = [e for e in published if isinstance(e, RunFinished)]
    return finished


async def test_six_429s_in_a_row_are_waited_out_under_the_same_id(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal=journal)
    venue.faults = {n: (VenueRateLimited("slow down"), False) for n in range(5)}
    venue.faults[5] = (VenueRateLimited("slow down", retry_after=90), False)  # longer than the cap
    the_plan = plan(DEMO_ORDERS[0])
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    assert venue.placements == [cid] * 7  # six refusals, then taken: always the same id
    assert venue.sleeps == [1, 2, 4, 8, 16, 60]  # exponential from 1 s; Retry-After capped at 60 s
    finished = finished_of(recorder.published)
    assert (finished.status, finished.filled, finished.failed) == ("completed", 1, 0)


async def test_rate_limited_until_the_deadline_stops_the_run_without_placing(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal=journal, execution={"run_timeout_seconds": 100})
    venue.faults = {n: (VenueRateLimited("slow down", retry_after=30), False) for n in range(10)}
    the_plan = plan(*DEMO_ORDERS)
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    assert venue.sleeps == [30, 30, 30]  # a fourth wait would end after the deadline (100 s)
    finished = finished_of(recorder.published)
    assert (finished.status, finished.placed) == ("timed_out", 0)
    assert finished.reasons[0] == (
        f"leg 0 BTC/USDT sell failed: {cid} was refused by rate limits 4 times until the run's deadline: "
        "not placed"
    )
    journaled = await journal.order(cid)
    assert journaled is not None and (journaled.state, journaled.reason) == ("rejected", "rate_limited")


async def test_new_orders_are_paced_by_the_order_count_limit() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    pace = OrderRate(per_10s=5, per_day=12, clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(12):
        async with pace.sending():
            sent.append(now[0])
    assert sent == [0.0] * 5 + [10.0] * 5 + [20.0] * 2
    assert all(sum(1 for t in sent if start <= t < start + 10) <= 5 for start in sent)
    async with pace.sending():  # the 13th of the day waits for the first to be a day old
        assert now[0] == 86_400.0


async def test_through_ccxt_a_burst_of_orders_never_meets_the_venues_order_limit() -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("10000")})
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    book.order_limit = OrderLimit(per_10s=5, clock=lambda: now[0])
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        venue._order_rate = OrderRate(per_10s=5, clock=lambda: now[0], sleep=sleep)
        for n in range(12):
            await venue.place_order(ACCOUNT, f"c-{n}", "ETH/USDT", "buy", D("0.01"))
    assert len(book.orders) == 12
    assert book.order_limit.refused == 0  # never a 429 from the venue's order-count limit
    assert now[0] == 20.0


async def test_orders_whose_trips_vary_never_arrive_over_the_venues_order_limit() -> None:
    """The venue counts an order when it arrives: a first order on a slow trip (3 s) arrives with four
    quick ones, so a sixth paced from the sends (10 s after the first) arrived 7 s after those five:
    -1015. Counted from the answers, it waits until 10 s after the slow one came back."""
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("10000")})
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    book.clock, book.sleep = (lambda: now[0]), sleep
    book.order_limit = OrderLimit(per_10s=5, clock=lambda: now[0])
    book.faults.order_trips = [3.0, 0, 0, 0, 0] * 3 + [0.5, 2.0, 0.0, 1.0, 0.2] * 3
    async with serving(book) as origin, open_ccxt_venue(settings(origin, rate_limit_retries=0)) as venue:
        venue._order_rate = OrderRate(per_10s=5, clock=lambda: now[0], sleep=sleep)
        for n in range(30):
            await venue.place_order(ACCOUNT, f"c-{n}", "ETH/USDT", "buy", D("0.01"))
    assert (len(book.orders), book.order_limit.refused) == (30, 0)  # not one -1015


async def test_orders_in_flight_hold_their_places_in_the_window() -> None:
    """Placed side by side, five orders still on their way fill the window: a sixth waits for an answer
    (and then 10 s), never sent beside them."""
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("10000")})
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    book.clock, book.sleep = (lambda: now[0]), sleep
    book.order_limit = OrderLimit(per_10s=5, clock=lambda: now[0])
    book.faults.order_trips = [1.0, 4.0, 0.0, 2.0, 3.0, 0.5, 0.0, 1.5, 0.0, 2.5, 0.0, 0.0]
    async with serving(book) as origin, open_ccxt_venue(settings(origin, rate_limit_retries=0)) as venue:
        venue._order_rate = OrderRate(per_10s=5, clock=lambda: now[0], sleep=sleep)
        await asyncio.gather(
            *(venue.place_order(ACCOUNT, f"c-{n}", "ETH/USDT", "buy", D("0.01")) for n in range(12))
        )
    assert (len(book.orders), book.order_limit.refused) == (12, 0)


async def test_the_venues_order_limit_answers_429_with_retry_after() -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("10000")})
    book.order_limit = OrderLimit(per_10s=2)
    async with serving(book) as origin, open_ccxt_venue(settings(origin, rate_limit_retries=0)) as venue:
        venue._order_rate = OrderRate(per_10s=None)  # our pacing off: the venue's limit answers
        await venue.place_order(ACCOUNT, "c-1", "ETH/USDT", "buy", D("0.01"))
        await venue.place_order(ACCOUNT, "c-2", "ETH/USDT", "buy", D("0.01"))
        with pytest.raises(VenueRateLimited) as raised:
            await venue.place_order(ACCOUNT, "c-3", "ETH/USDT", "buy", D("0.01"))
    assert raised.value.retry_after is not None and 9 < raised.value.retry_after <= 10
    assert len(book.orders) == 2

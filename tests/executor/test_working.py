"""Worked legs (`rebal_executor.execution.working`): limit orders at the best bid/ask with an offset that
rest, are re-priced and finally taken; post-only refusals; large orders in slices over time; restarts
mid-slicing and mid-resting; fills that win the race against a cancel. On the fake Binance's book
(`book_venue`, LIMIT and LIMIT_MAKER as Binance documents them) and a virtual clock: the executor's
`sleep` moves the clock, and scripted price moves happen when the clock reaches them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import asyncpg
import pytest

from rebal.core.market import Prices
from rebal.events import (
    HaltTrading,
    OrderFilled,
    PlannedBudget,
    PlannedOrder,
    RebalancePlanned,
    derive_id,
    new_event,
)
from rebal.venue import BookTop, OrderState
from rebal_executor.execution import Executor, Journal, client_order_id
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import MovingPrices, PaperVenue
from tests.executor.book_venue import ACCOUNT, KEY, BookVenue, Crash
from tests.executor.memory_journal import MemoryJournal
from tests.executor.test_executor import SPOT
from tests.executor.test_executor import order as paper_order
from tests.executor.test_executor import plan as paper_plan
from tests.fake_exchange.state import FakeBook, FakeMarket, Order
from tests.fakes import RecordingPublisher
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
T0 = datetime(2026, 12, 7, tzinfo=UTC)
SYMBOL = "ETH/USDT"


def leg(side: str, amount: str) -> PlannedOrder:
    return PlannedOrder(
        account=ACCOUNT,
        exchange="binance",
        symbol=SYMBOL,
        side=side,  # type: ignore[arg-type]
        amount=D(amount),
        est_price=D(3000),
        est_cost=D(0),
        est_fee=D(0),
        phase=1 if side == "sell" else 2,
    )


def plan(*orders: PlannedOrder, budgets: tuple[PlannedBudget, ...] = ()) -> RebalancePlanned:
    return new_event(
        RebalancePlanned,
        key="worked",
        now=T0,
        portfolio_id="demo",
        correlation_id=derive_id("run", "worked"),
        dry_run=False,
        band=D(0),
        snapshot_id=derive_id("snapshot"),
        target_id=derive_id("target"),
        total_value=D(20000),
        orders=orders,
        budgets=budgets,
    )


@dataclass
class World:
    """The book, the venue and a virtual clock (seconds since T0) with price moves scripted at times."""

    spread_bps: str = "10"
    clock: list[float] = field(default_factory=lambda: [0.0])
    moves: dict[float, str] = field(default_factory=dict)  # time → the new ETHUSDT price
    crash_at: float | None = None  # the process dies in the sleep that reaches this time
    journal: Journal = field(default_factory=MemoryJournal)
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)
    book: FakeBook = field(init=False)
    venue: BookVenue = field(init=False)

    def __post_init__(self) -> None:
        self.book = FakeBook(
            markets={"ETHUSDT": FakeMarket("ETH", "USDT", D("0.0001"), D("0.0001"), D("5"))},
            prices={"ETHUSDT": D(3000)},
            accounts={KEY: {"USDT": D(20000), "ETH": D(5)}},
            maker_fee=D("0.0002"),
            spread_bps=D(self.spread_bps),
            clock=lambda: self.clock[0],
        )
        self.venue = BookVenue(self.book)

    def executor(self, **execution: Any) -> Executor:
        settings = ExecutorSettings.model_validate(
            {
                "live": True,
                "execution": {"order_timeout_seconds": 5, "poll_interval_seconds": 1, **execution},
            }
        )
        executor = Executor({"binance": self.venue}, self.publisher, settings, self.journal, clock=self.now)

        async def sleep(seconds: float) -> None:
            before, self.clock[0] = self.clock[0], self.clock[0] + seconds
            for at, price in sorted(self.moves.items()):
                if before < at <= self.clock[0]:
                    self.book.prices["ETHUSDT"] = D(price)
            if self.crash_at is not None and self.clock[0] >= self.crash_at:
                self.crash_at = None
                raise Crash

        executor.sleep = sleep
        return executor

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.clock[0])

    async def run(self, the_plan: RebalancePlanned, **execution: Any) -> None:
        executor = self.executor(**execution)
        await executor.accept(the_plan)
        await executor.drain()

    async def resume(self, **execution: Any) -> None:
        """A new process on the same journal and venue."""
        await self.executor(**execution).drain()

    def orders(self) -> list[Order]:
        return sorted(self.book.orders.values(), key=lambda o: o.order_id)

    async def report(self, the_plan: RebalancePlanned) -> tuple[str, ...]:
        return (await self.journal.report(the_plan.event_id)).reasons


def cid(the_plan: RebalancePlanned, leg_: int, attempt: int) -> str:
    return client_order_id(the_plan.event_id, leg_, attempt)


LIMIT = {"type": "limit", "rest_seconds": 10, "reprices": 2}


# -- limit orders -----------------------------------------------------------------------------------------


async def test_a_limit_buy_rests_at_the_bid_plus_the_offset_and_fills_at_its_own_price() -> None:
    world = World(moves={3.0: "2999"})  # the market comes down to our bid after 3 s
    the_plan = plan(leg("buy", "1"))
    await world.run(the_plan, order_types={"default": {**LIMIT, "offset_bps": 2}})
    (placed,) = world.orders()
    # bid 2998.5 (3000 − 5 bps) + 2 bps = 2999.0997 → 2999.09; filled there as a maker (fee 0.02%).
    assert placed.client_order_id == cid(the_plan, 0, 0)
    assert (placed.limit_price, placed.status, placed.executed) == (D("2999.09"), "FILLED", D(1))
    (trade,) = placed.trades
    assert (trade.price, trade.commission, trade.commission_asset, trade.maker) == (
        D("2999.09"),
        D("0.0002"),
        "ETH",
        True,
    )
    assert world.book.accounts[KEY] == {"USDT": D("17000.91"), "ETH": D("5.9998")}
    filled = [e for e in world.publisher.published if isinstance(e, OrderFilled)]
    assert [(e.client_order_id, e.price, e.fee) for e in filled] == [
        (cid(the_plan, 0, 0), D("2999.09"), D("0.0002"))
    ]
    assert await world.report(the_plan) == ()


async def test_a_resting_limit_order_is_re_priced_at_the_new_best_price_then_taken() -> None:
    # Never reached: the market drifts down, each re-placement at the new bid, then the rest is taken.
    world = World(moves={10.0: "2999", 20.0: "2998"})
    the_plan = plan(leg("buy", "1"))
    await world.run(the_plan, order_types={"default": LIMIT})
    orders = world.orders()
    assert [o.client_order_id for o in orders] == [cid(the_plan, 0, a) for a in (0, 1, 2, 99)]
    # 3000·0.9995 = 2998.5; 2999·0.9995 = 2997.5005 → 2997.50; 2998·0.9995 = 2996.501 → 2996.50.
    assert [o.limit_price for o in orders] == [D("2998.5"), D("2997.50"), D("2996.50"), None]
    assert [o.status for o in orders] == ["CANCELED", "CANCELED", "CANCELED", "FILLED"]
    # Each rested 10 s: placed at 0, 10 and 20 s, taken at 30 s at the ask (2998·1.0005 = 2999.499).
    assert [o.created for o in orders] == [0.0, 10.0, 20.0, 30.0]
    (trade,) = orders[-1].trades
    assert (trade.qty, trade.price, trade.maker) == (D(1), D("2999.499"), False)
    assert await world.report(the_plan) == ()


async def test_a_post_only_order_refused_as_a_taker_is_re_priced_and_rests() -> None:
    world = World(moves={5.0: "2998"})

    class Stale(BookVenue):
        """The first order's book read (it is sized and priced from one read) is stale (the market was
        higher): the post-only buy there would take."""

        tops: ClassVar[list[BookTop]] = [BookTop(D(3005), D(3008))]

        async def book_top(self, symbol: str) -> BookTop:
            return self.tops.pop() if self.tops else await super().book_top(symbol)

    world.venue = Stale(world.book)
    the_plan = plan(leg("buy", "1"))
    await world.run(the_plan, order_types={"default": {**LIMIT, "post_only": True}})
    # -2010 "Order would immediately match and take." for 3005 ≥ the ask 3001.5: never in the book; the
    # re-placement (a new id) rests at the fresh bid 2998.5 and fills there when the market comes down.
    (placed,) = world.orders()
    assert placed.client_order_id == cid(the_plan, 0, 1)
    assert (placed.limit_price, placed.maker_only, placed.status) == (D("2998.5"), True, "FILLED")
    rejected = await world.journal.order(cid(the_plan, 0, 0))
    assert rejected is not None and (rejected.state, rejected.reason) == ("rejected", "post_only_would_take")
    assert await world.report(the_plan) == ()


async def test_what_filled_before_the_cancel_is_counted_and_only_the_rest_is_re_placed() -> None:
    world = World(moves={12.0: "2997"})
    the_plan = plan(leg("buy", "1"))
    executor_settings = {"order_types": {"default": LIMIT}}

    executor = world.executor(**executor_settings)
    inner_sleep = executor.sleep

    async def sleep(seconds: float) -> None:
        await inner_sleep(seconds)
        if world.clock[0] == 4.0:  # someone sells 0.4 into our resting bid
            world.book.trade(world.orders()[0], D("0.4"))

    executor.sleep = sleep
    await executor.accept(the_plan)
    await executor.drain()
    first, second = world.orders()
    assert (first.status, first.executed) == ("CANCELED", D("0.4"))
    # Only the 0.6 left is asked for again, at the bid of 10 s (still 2998.5); reached at 12 s.
    assert (second.client_order_id, second.orig_qty, second.limit_price) == (
        cid(the_plan, 0, 1),
        D("0.6"),
        D("2998.5"),
    )
    assert second.status == "FILLED"
    assert sum((o.executed for o in world.orders()), D(0)) == D(1)
    assert world.book.accounts[KEY]["ETH"] == D(5) + D(1) - D("0.0002")  # maker fees 0.00008 + 0.00012


async def test_a_fill_that_wins_the_race_against_the_cancel_ends_the_leg() -> None:
    world = World()
    cancels: list[str] = []

    class Racing(BookVenue):
        """The market reaches our bid just as the cancel is on its way: the venue fills the order first and
        refuses the cancel (-2011 "Unknown order sent.")."""

        async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
            cancels.append(client_order_id)
            self.book.prices["ETHUSDT"] = D("2998.5")
            return await super().cancel_order(account, client_order_id, symbol)

    world.venue = Racing(world.book)
    the_plan = plan(leg("buy", "1"))
    await world.run(the_plan, order_types={"default": LIMIT})
    (placed,) = world.orders()  # filled: nothing re-placed, nothing bought twice
    assert cancels == [cid(the_plan, 0, 0)]
    assert (placed.status, placed.executed, placed.trades[0].price) == ("FILLED", D(1), D("2998.5"))
    assert world.book.accounts[KEY]["ETH"] == D("5.9998")
    assert await world.report(the_plan) == ()


# -- slices -----------------------------------------------------------------------------------------------


async def test_a_large_sell_is_sent_in_slices_over_time_each_under_its_own_id() -> None:
    world = World(spread_bps="0")
    the_plan = plan(leg("sell", "0.9"))
    await world.run(the_plan, max_order_value={SYMBOL: "900"}, slice_interval_seconds=60)
    orders = world.orders()
    assert [o.client_order_id for o in orders] == [cid(the_plan, 0, a) for a in (0, 100, 200)]
    assert [(o.orig_qty, o.status, o.created) for o in orders] == [
        (D("0.3"), "FILLED", 0.0),
        (D("0.3"), "FILLED", 60.0),
        (D("0.3"), "FILLED", 120.0),
    ]
    # 0.9 sold at 3000 less 0.1% fees: 2700 − 2.7.
    assert world.book.accounts[KEY] == {"USDT": D("22697.3"), "ETH": D("4.1")}
    assert await world.report(the_plan) == ()


async def test_a_sliced_buy_never_spends_more_than_it_was_sized_to_spend() -> None:
    # Sized at 3000: 0.9 ETH may spend 0.9·3000·1.002 (buffer)·1.001 (fee) = 2708.1054 USDT at most. The
    # price rises while it is sliced (3100 at 30 s, 3200 at 90 s): slices of at most 900 USDT (0.3, then
    # 900/3100 = 0.2903, 900/3200 = 0.2812), and the last one only what is left of the 2708.1054:
    # 2708.1054 − 900 − 899.93 − 899.84 = 8.3354 at 3200·1.002·1.001 = 3209.6064 a unit: 0.0025.
    world = World(spread_bps="0", moves={30.0: "3100", 90.0: "3200"})
    the_plan = plan(leg("buy", "0.9"))
    await world.run(the_plan, max_order_value={SYMBOL: "900"}, slice_interval_seconds=60)
    orders = world.orders()
    assert [o.orig_qty for o in orders] == [D("0.3"), D("0.2903"), D("0.2812"), D("0.0025")]
    spent = sum((t.qty * t.price for o in orders for t in o.trades), D(0))
    assert spent == D("2707.77") <= D("2708.1054")
    (reason,) = await world.report(the_plan)
    assert "0.874 of 0.9 ETH filled" in reason and "what the leg may still spend" in reason, reason


async def test_a_restart_mid_slicing_finds_the_slice_it_sent_and_goes_on_with_the_next(
    journal: Journal,
) -> None:
    world = World(spread_bps="0", journal=journal)
    the_plan = plan(leg("sell", "0.9"))
    settings = {"max_order_value": {SYMBOL: "900"}, "slice_interval_seconds": 60}
    world.venue.armed.crash_after = False

    executor = world.executor(**settings)
    await executor.accept(the_plan)
    original = world.venue.place_order
    placed = 0

    async def place(*args: Any, **kwargs: Any) -> Any:
        nonlocal placed
        placed += 1
        if placed == 2:  # the second slice: the venue takes it, the process dies before the answer
            world.venue.armed.crash_after = True
        return await original(*args, **kwargs)

    world.venue.place_order = place  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await executor.drain()
    del world.venue.place_order
    assert len(world.orders()) == 2
    world.publisher = RecordingPublisher()  # what the first process published may have been lost with it
    await world.resume(**settings)
    orders = world.orders()
    assert [o.client_order_id for o in orders] == [cid(the_plan, 0, a) for a in (0, 100, 200)]
    assert [(o.orig_qty, o.status) for o in orders] == [(D("0.3"), "FILLED")] * 3
    assert world.book.accounts[KEY]["ETH"] == D("4.1")
    # Every slice's fill is published by the new process, the one done before the crash too.
    filled = [e.client_order_id for e in world.publisher.published if isinstance(e, OrderFilled)]
    assert filled == [cid(the_plan, 0, a) for a in (0, 100, 200)]
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "completed"


async def test_a_restart_mid_resting_finds_the_resting_order_and_never_places_a_second(
    journal: Journal,
) -> None:
    world = World(journal=journal, crash_at=5.0, moves={8.0: "2998"})
    the_plan = plan(leg("buy", "1"))
    settings = {"order_types": {"default": LIMIT}}
    with pytest.raises(Crash):
        await world.run(the_plan, **settings)
    (resting,) = world.orders()
    assert resting.status == "NEW"
    await world.resume(**settings)
    (placed,) = world.orders()  # found by its id, rested on, filled: still the one order
    assert (placed.client_order_id, placed.status, placed.executed) == (cid(the_plan, 0, 0), "FILLED", D(1))
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "completed"


async def test_market_orders_stay_the_default_one_order_a_leg() -> None:
    world = World(spread_bps="0")
    the_plan = plan(leg("sell", "0.9"))
    await world.run(the_plan)
    (placed,) = world.orders()
    assert (placed.client_order_id, placed.limit_price, placed.status) == (
        cid(the_plan, 0, 0),
        None,
        "FILLED",
    )


async def test_on_the_paper_exchange_a_limit_buy_rests_at_the_bid_and_fills_there(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    """The whole path on the paper exchange and the service's journal: bid 59970 (60000 less 5 bps), the
    market comes down to 59900 after 5 s, the resting buy fills at its own 59970."""
    clock = Clock()
    venue = replace(
        PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, clock, **STILL), spread_bps=D(10)
    )
    await venue.seed(SPOT, {"USDT": D(100000)})
    settings = ExecutorSettings.model_validate(
        {"live": True, "execution": {"poll_interval_seconds": 1, "order_types": {"default": LIMIT}}}
    )
    executor = Executor({EXCHANGE: venue}, RecordingPublisher(), settings, journal, clock=clock)
    start = clock.now

    async def sleep(seconds: float) -> None:
        clock.now += timedelta(seconds=seconds)
        if clock.now - start >= timedelta(seconds=5):
            moved = {"quote": "USDT", "prices": {**PRICES["prices"], "BTC": "59900"}}
            venue.price_model = MovingPrices(Prices.parse(moved), **STILL)

    executor.sleep = sleep
    the_plan = paper_plan(paper_order("BTC/USDT", "buy", "0.5", 2))
    await executor.accept(the_plan)
    await executor.drain()
    state = await venue.order(SPOT, cid(the_plan, 0, 0), "BTC/USDT")
    assert state is not None and state.status == "filled"
    assert [(f.amount, f.price, f.fee) for f in state.fills] == [(D("0.5"), D(59970), D("29.985"))]
    # 100000 − 29985 − 29.985.
    assert (await venue.balances(SPOT)).free == {"BTC": D("0.5"), "USDT": D("69985.015")}
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "completed"


async def test_a_halt_while_a_limit_order_rests_cancels_it_and_stops_the_leg() -> None:
    world = World()
    the_plan = plan(leg("buy", "1"))
    executor = world.executor(order_types={"default": LIMIT})
    inner_sleep = executor.sleep

    async def sleep(seconds: float) -> None:
        await inner_sleep(seconds)
        if world.clock[0] == 4.0:  # the operator halts trading while our bid rests
            world.book.trade(world.orders()[0], D("0.25"))
            await executor.halt(
                new_event(HaltTrading, key="h", now=world.now(), portfolio_id="demo", reason="x")
            )

    executor.sleep = sleep
    await executor.accept(the_plan)
    await executor.drain()
    (placed,) = world.orders()  # cancelled by the halt; nothing re-placed, nothing taken
    assert (placed.status, placed.executed) == ("CANCELED", D("0.25"))
    record = await world.journal.run(the_plan.event_id)
    assert record is not None and record.state == "cancelled_mid_run"
    (reason, *_) = await world.report(the_plan)
    assert "0.25 of 1 ETH filled" in reason, reason


async def test_a_limit_buy_unsent_at_a_crash_is_never_sent_at_a_price_moved_past_its_cap(
    journal: Journal,
) -> None:
    """The process dies at the submit of a 1 ETH limit buy written at 3000 (journaled with its price, the
    bid + 20 bps = 3004.49; the leg's cap 3000 x 1.002 buffer x 1.001 fee = 3009.006); the venue never saw
    it. ETH is at 3300 (+10%) when the executor is back: the order proven never arrived is ended unsent
    (before, it went out under the same id for 1 ETH priced from the new book: 3301.65 spent), and a fresh
    order under the next id buys what the cap still affords: 0.9095 ETH at 3301.65, then 0.0018 more."""
    world = World(journal=journal, moves={200.0: "3298"})
    the_plan = plan(leg("buy", "1"))
    settings = {"order_types": {"default": {**LIMIT, "offset_bps": 20}}}
    world.venue.armed.crash_before = True  # dies at the submit, before the venue sees it
    with pytest.raises(Crash):
        await world.run(the_plan, **settings)
    assert world.orders() == []
    world.book.prices["ETHUSDT"] = D(3300)  # +10% while the process was down
    await world.resume(**settings)
    first = await journal.order(cid(the_plan, 0, 0))
    assert first is not None
    assert (first.state, first.limit_price, first.amount) == ("lost", D("3004.49"), D(1))
    fresh = await journal.order(cid(the_plan, 0, 1))
    assert fresh is not None and (fresh.amount, fresh.limit_price) == (D("0.9095"), D("3304.94"))
    sent = [(o.client_order_id, o.executed) for o in world.orders()]
    assert sent == [(cid(the_plan, 0, 1), D("0.9095")), (cid(the_plan, 0, 100), D("0.0018"))]
    spent = sum((t.qty * t.price for o in world.orders() for t in o.trades), D(0))
    assert spent == D("3008.793645") <= D(1) * 3000 * D("1.002") * D("1.001")


async def test_a_market_slice_unsent_at_a_crash_is_never_sent_at_a_price_moved_past_its_cap(
    journal: Journal,
) -> None:
    """The same for a slice sent as a market order: 1 ETH sliced at 2990 USDT an order, its first slice
    0.9966 ETH written at 3000 (cap 3009.006) when the process dies at its submit. At 3300 the slice proven
    never arrived is ended, not bought for 3290.42; the next slices buy what the cap still affords."""
    world = World(journal=journal)
    the_plan = plan(leg("buy", "1"))
    world.venue.armed.crash_before = True
    with pytest.raises(Crash):
        await world.run(the_plan, max_order_value={SYMBOL: "2990"})
    world.book.prices["ETHUSDT"] = D(3300)
    await world.resume(max_order_value={SYMBOL: "2990"})
    spent = sum((t.qty * t.price for o in world.orders() for t in o.trades), D(0))
    assert spent == D("3008.793645") <= D(1) * 3000 * D("1.002") * D("1.001")  # 0.9113 ETH at 3301.65
    first = await journal.order(cid(the_plan, 0, 0))
    assert first is not None and (first.state, first.amount) == ("lost", D("0.9966"))
    sent = [(o.client_order_id, o.executed) for o in world.orders()]
    assert sent == [(cid(the_plan, 0, 100), D("0.9060")), (cid(the_plan, 0, 200), D("0.0053"))]


async def resumed_after_a_crash_at_submit(
    journal: Journal, side: str, price: Decimal
) -> tuple[World, RebalancePlanned]:
    """A plain market order of 1 ETH written at 3000; the process dies at its submit (the venue never sees
    it) and is back with ETH at `price`."""
    world = World(journal=journal)
    the_plan = plan(leg(side, "1"))
    world.venue.armed.crash_before = True
    with pytest.raises(Crash):
        await world.run(the_plan)
    world.book.prices["ETHUSDT"] = price
    await world.resume()
    return world, the_plan


async def test_a_plain_market_buy_unsent_at_a_crash_is_not_sent_at_a_price_moved_past_the_tolerance(
    journal: Journal,
) -> None:
    """A plain market buy (no order types, no slicing) of 1 ETH written at 3000 when the process dies at
    its submit; the venue never saw it. ETH is at 3300 (+10%) when the executor is back: the order proven
    never arrived is ended unsent and the run ends `replan_needed` (before, it went out under the same id
    and bought 1 ETH at 3301.65, 10% over what the plan budgeted)."""
    world, the_plan = await resumed_after_a_crash_at_submit(journal, "buy", D(3300))
    assert world.orders() == []
    first = await journal.order(cid(the_plan, 0, 0))
    assert first is not None and (first.state, first.amount) == ("lost", D(1))
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "replan_needed", record
    report = await journal.report(the_plan.event_id)
    assert (report.placed, report.skipped) == (0, 1), report
    assert report.reasons == (
        "leg 0 ETH/USDT buy not sent: it never reached the venue before a restart, and was written at 3000, "
        "more than 2% from 3300",
        "re-plan needed: leg 0 ETH/USDT buy was written at 3000, more than 2% from 3300; the run stopped "
        "before sending it",
    ), report.reasons


async def test_a_plain_market_sell_unsent_at_a_crash_is_sent_under_its_id_while_its_price_holds(
    journal: Journal,
) -> None:
    """The same crash for a 1 ETH market sell; ETH moved 1% (within the 2% tolerance): the order proven
    never arrived goes out under its own id, once."""
    world, the_plan = await resumed_after_a_crash_at_submit(journal, "sell", D(2970))
    sent = [(o.client_order_id, o.executed) for o in world.orders()]
    assert sent == [(cid(the_plan, 0, 0), D(1))]
    record = await journal.run(the_plan.event_id)
    assert record is not None and record.state == "completed", record


async def test_a_run_timed_out_on_resume_cancels_its_resting_limit_order(journal: Journal) -> None:
    """A 1 ETH limit sell rests at the venue when the process dies; it is back after the run's 600 s: the
    run times out and its resting order is cancelled at the venue, not left live."""
    world = World(journal=journal, crash_at=5.0)
    the_plan = plan(leg("sell", "1"))
    settings = {"order_types": {"default": LIMIT}}
    with pytest.raises(Crash):
        await world.run(the_plan, **settings)
    (resting,) = world.orders()
    assert resting.status == "NEW"
    world.clock[0] = 700.0  # back after the run's 600 s timeout
    await world.resume(**settings)
    (ended,) = world.orders()
    assert ended.status == "CANCELED"
    order = await journal.order(cid(the_plan, 0, 0))
    assert order is not None and order.state == "cancelled"


async def test_a_limit_order_whose_answer_was_lost_is_found_resting_and_cancelled_when_the_run_times_out(
    journal: Journal,
) -> None:
    """The process dies at the submit of a 1 ETH limit sell, after the venue took it (journaled submitted,
    never answered); back after the run's 600 s, the order is looked up, found resting and cancelled
    rather than adopted and left live."""
    world = World(journal=journal)
    the_plan = plan(leg("sell", "1"))
    settings = {"order_types": {"default": LIMIT}}
    world.venue.armed.crash_after = True
    with pytest.raises(Crash):
        await world.run(the_plan, **settings)
    (resting,) = world.orders()
    assert resting.status == "NEW"
    world.clock[0] = 700.0
    await world.resume(**settings)
    (ended,) = world.orders()
    assert ended.status == "CANCELED"
    order = await journal.order(cid(the_plan, 0, 0))
    assert order is not None and order.state == "cancelled"


async def test_worked_buys_of_one_group_never_spend_more_than_the_plans_budget(journal: Journal) -> None:
    """Two 0.9 ETH buys share a budget of 5416.2108 USDT (1.8 ETH at 3000 with the 0.2% buffer and the
    0.1% fee), sliced at 900 USDT an order; ETH moves +1.8% (to 3055, under the 2% re-plan tolerance) after
    leg 0's first slice. Leg 1 was capped from the price when its own first order was written, and the two
    spent 5457.45 together; now each is capped at its share of the group's sizing, 2708.1054 (kept with
    its orders): leg 0 buys 0.3 at 3000 + 0.5918 at 3055 = 2707.949, leg 1 0.8864 at 3055 = 2707.952."""
    budget = D("5416.2108")
    world = World(journal=journal, spread_bps="0", moves={30.0: "3055"})
    the_plan = plan(
        leg("buy", "0.9"),
        leg("buy", "0.9"),
        budgets=(PlannedBudget(exchange="binance", account=ACCOUNT, asset="USDT", amount=budget),),
    )
    await world.run(the_plan, max_order_value={SYMBOL: "900"}, slice_interval_seconds=60)
    # Fees are taken in ETH here: the quote spent is what the trades cost.
    spent = sum((t.qty * t.price for o in world.orders() for t in o.trades), D(0))
    assert spent == D("5415.901") <= budget
    orders = await journal.orders(the_plan.event_id)
    assert {o.leg_budget for o in orders} == {budget / 2}
    bought = [
        sum((o.executed for o in world.orders() if o.client_order_id.split("-")[2] == n), D(0)) for n in "01"
    ]
    assert bought == [D("0.8918"), D("0.8864")]

"""The executor's safety core on the paper exchange: the journal, guardrails, the kill switch, coalescing,
errors by class and resuming after a crash in the middle of a run. Faults are injected by `FaultyVenue`, a
fake that wraps the real paper venue (so balances, orders and fills stay real)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import REGISTRY

from rebal.events import HaltTrading, OrderFilled, OrderPlaced, ResumeTrading, RunFinished, new_event
from rebal.venue import (
    Balances,
    Fill,
    OrderState,
    Side,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_executor.execution import Executor, Journal, client_order_id
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from tests.executor.test_executor import DEMO_BALANCES, DEMO_ORDERS, SPOT, order, paper, plan
from tests.executor.wrapped import Wrapped
from tests.fakes import RecordingPublisher
from tests.paper_support import T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


class Crash(BaseException):
    """The process dying at this point (nothing below it runs; BaseException: no handler catches it)."""


Fault = tuple[type[BaseException] | BaseException, bool]


@dataclass
class FaultyVenue(Wrapped):
    """The paper venue with scripted faults: `faults[n]` hits the n-th placement (0-based) with an exception,
    after the venue took the order or before; `stale_free` is what `balances` reports (once each) instead of
    the truth; `lookups_fail` makes every look-up time out."""

    faults: dict[int, Fault] = field(default_factory=dict)
    stale_free: list[Mapping[str, Decimal]] = field(default_factory=list)
    lookups_fail: bool = False
    # The next this many look-ups fail (a look-up that fails proves nothing).
    lookup_failures: int = 0
    # Each placement moves this clock on by this much (a slow venue, for the run deadline).
    clock: Clock | None = None
    per_placement: timedelta = timedelta(0)
    placements: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    async def balances(self, account: str) -> Balances:
        if self.stale_free:
            return Balances(self.stale_free.pop(0))
        return await self.inner.balances(account)

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
        fault = self.faults.get(len(self.placements))
        self.placements.append(client_order_id)
        if self.clock is not None:
            self.clock.now += self.per_placement
        if fault is None:
            return await self.inner.place_order(
                account, client_order_id, symbol, side, amount, price=price, post_only=post_only
            )
        error, taken = fault
        if taken:
            await self.inner.place_order(
                account, client_order_id, symbol, side, amount, price=price, post_only=post_only
            )
        raise error if isinstance(error, BaseException) else error("scripted fault")

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        if self.lookups_fail or self.lookup_failures > 0:
            self.lookup_failures -= 1
            raise VenueError("look-up timed out")
        return await self.inner.order(account, client_order_id, symbol=symbol)


async def setup(
    pool: asyncpg.Pool,
    balances: Mapping[str, Decimal] = DEMO_BALANCES,
    journal: Journal | None = None,
    **settings: object,
) -> tuple[Executor, RecordingPublisher, FaultyVenue]:
    inner = paper(pool)
    await inner.seed(SPOT, dict(balances))
    venue = FaultyVenue(inner)
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue},
        recorder,
        ExecutorSettings.model_validate({"live": True, **settings}),
        PostgresJournal(pool) if journal is None else journal,
        clock=Clock(),
    )

    async def sleep(seconds: float) -> None:
        venue.sleeps.append(seconds)

    executor.sleep = sleep
    return executor, recorder, venue


def finished_of(recorder: RecordingPublisher) -> RunFinished:
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return finished


async def paper_orders(pool: asyncpg.Pool) -> list[str]:
    return [
        r["client_order_id"] for r in await pool.fetch("SELECT client_order_id FROM paper.orders ORDER BY 1")
    ]


async def test_live_trading_is_off_by_default_and_refuses_with_the_reason(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, _ = await setup(pool, journal=journal, live=False)
    assert ExecutorSettings().live is False
    await executor.on_plan(plan(*DEMO_ORDERS))
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.reasons) == (
        "cancelled",
        0,
        (
            "live trading is disabled: nothing was sent (set live = true, REBAL__LIVE=true, in the "
            "executor's configuration to execute plans)",
        ),
    )
    assert await paper_orders(pool) == []


async def test_every_order_is_journaled_before_it_is_sent_and_every_change_recorded(
    pool: asyncpg.Pool,
) -> None:
    executor, recorder, _ = await setup(pool)
    the_plan = plan(*DEMO_ORDERS)
    await executor.on_plan(the_plan)
    cids = [client_order_id(the_plan.event_id, leg) for leg in range(3)]
    rows = await pool.fetch("SELECT client_order_id, state, filled FROM execution.orders ORDER BY leg")
    assert [(r["client_order_id"], r["state"], r["filled"]) for r in rows] == [
        (cids[0], "filled", D("0.21666")),
        (cids[1], "filled", D("6.66")),
        (cids[2], "filled", D("2")),
    ]
    moves = await pool.fetch(
        "SELECT client_order_id, from_state, to_state FROM execution.transitions WHERE client_order_id = $1"
        " ORDER BY seq",
        cids[0],
    )
    assert [(r["from_state"], r["to_state"]) for r in moves] == [
        (None, "created"),
        ("created", "submitted"),
        ("submitted", "filled"),
    ]
    runs = await pool.fetch(
        "SELECT from_state, to_state FROM execution.transitions WHERE client_order_id IS NULL ORDER BY seq"
    )
    assert [r["to_state"] for r in runs] == ["queued", "sells_in_progress", "buys_in_progress", "completed"]
    assert await pool.fetchval("SELECT count(*) FROM execution.fills") == 3
    assert await pool.fetchval("SELECT state FROM execution.runs") == "completed"
    assert finished_of(recorder).status == "completed"


async def test_orders_above_the_notional_limits_are_skipped_with_the_reason(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    # BTC 0.21666 x 60000 = 12999.6 > 10000 per order; SOL 6.66 x 150 = 999 passes; ETH 2 x 3000 = 6000
    # would take the run to 6999 > 6998.
    executor, recorder, _ = await setup(
        pool, journal=journal, execution={"max_order_notional": "10000", "max_run_notional": "6998"}
    )
    await executor.on_plan(plan(*DEMO_ORDERS))
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled, finished.skipped) == (
        "completed_with_adjustments",
        1,
        1,
        2,
    )
    assert finished.reasons == (
        "leg 0 BTC/USDT sell skipped: above_max_order_notional (0.21666 x 60000 = 12999.6, limit 10000)",
        "leg 2 ETH/USDT buy skipped: above_max_run_notional (2 x 3000 = 6000, limit 6998)",
    )
    assert (await paper(pool).balances(SPOT)).free == {
        "BTC": D("0.8"),
        "ETH": D("5"),
        "SOL": D("93.34"),
        "USDT": D("22000") + D("998.001"),
    }


async def test_halt_refuses_runs_across_restarts_until_resumed(pool: asyncpg.Pool, journal: Journal) -> None:
    executor, recorder, _ = await setup(pool, journal=journal)
    halt = new_event(HaltTrading, key="h1", now=T0, portfolio_id="demo", reason="exchange incident")
    await executor.halt(halt)
    assert REGISTRY.get_sample_value("rebal_trading_halted", {"portfolio": "demo"}) == 1
    # A restarted executor (a new instance on the same journal) is still halted.
    restarted = Executor(executor.venues, recorder, executor.settings, executor.journal, clock=Clock())
    await restarted.restore_halts(["demo"])
    await restarted.on_plan(plan(*DEMO_ORDERS, key="during-halt"))
    finished = finished_of(recorder)
    assert (finished.status, finished.reasons) == (
        "cancelled",
        ("trading is halted for portfolio demo: the run was not started",),
    )
    assert await paper_orders(pool) == []
    # An older resume than the halt changes nothing; a newer one lifts it.
    stale = new_event(ResumeTrading, key="r0", now=T0.replace(year=2024), portfolio_id="demo")
    await restarted.resume(stale)
    assert await restarted.journal.halted("demo")
    await restarted.resume(new_event(ResumeTrading, key="r1", now=T0.replace(hour=1), portfolio_id="demo"))
    assert REGISTRY.get_sample_value("rebal_trading_halted", {"portfolio": "demo"}) == 0
    recorder.published.clear()
    await restarted.on_plan(plan(*DEMO_ORDERS, key="after-resume"))
    assert finished_of(recorder).status == "completed"
    assert len(await paper_orders(pool)) == 3


async def test_older_queued_plans_are_superseded_by_the_newest(pool: asyncpg.Pool, journal: Journal) -> None:
    executor, recorder, _ = await setup(pool, journal=journal)
    plans = [plan(*DEMO_ORDERS, key=f"p{i}", occurred_at=T0.replace(minute=i)) for i in range(3)]
    for each in plans:
        assert await executor.accept(each)
    assert not await executor.accept(plans[0])  # a redelivery queues nothing
    await executor.drain()
    ends = {e.plan_id: e for e in recorder.published if isinstance(e, RunFinished)}
    assert [ends[p.event_id].status for p in plans] == ["cancelled", "cancelled", "completed"]
    assert ends[plans[0].event_id].reasons == (
        f"superseded by the newer plan {plans[2].event_id}: not started",
    )
    assert len(await paper_orders(pool)) == 3  # only the newest plan traded


async def test_a_crash_after_the_venue_took_the_order_resumes_without_placing_it_twice(
    pool: asyncpg.Pool,
) -> None:
    executor, _, venue = await setup(pool)
    the_plan = plan(*DEMO_ORDERS)
    venue.faults = {1: (Crash(), True)}  # leg 1 reaches the venue, then the process dies
    with pytest.raises(Crash):
        await executor.on_plan(the_plan)
    assert await pool.fetchval("SELECT state FROM execution.runs") == "sells_in_progress"
    assert await pool.fetchval("SELECT state FROM execution.orders WHERE leg = 1") == "submitted"
    # A new process: the journal says leg 1 was submitted; the venue has it: adopted, not sent again.
    restarted, recorder, resumed_venue = await setup_again(pool)
    await restarted.drain()
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled) == ("completed", 3, 3)
    assert resumed_venue.placements == [client_order_id(the_plan.event_id, 2)]
    assert len(await paper_orders(pool)) == 3
    assert await pool.fetchval("SELECT count(*) FROM execution.fills") == 3
    assert (await paper(pool).balances(SPOT)).free["ETH"] == D("7")


async def setup_again(pool: asyncpg.Pool) -> tuple[Executor, RecordingPublisher, FaultyVenue]:
    """A fresh executor on the same database (the paper balances are already seeded)."""
    venue = FaultyVenue(paper(pool))
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": venue}, recorder, ExecutorSettings(live=True), PostgresJournal(pool), clock=Clock()
    )
    return executor, recorder, venue


async def test_a_submit_without_an_answer_is_looked_up_and_never_sent_under_a_new_id(
    pool: asyncpg.Pool,
) -> None:
    executor, recorder, venue = await setup(pool)
    # Leg 0: the venue takes the order but the answer is lost; then a 429 with Retry-After on leg 1, twice.
    venue.faults = {
        0: (VenueError, True),
        1: (VenueRateLimited("slow down", retry_after=1.5), False),
        2: (VenueRateLimited("slow down", retry_after=None), False),
    }
    the_plan = plan(*DEMO_ORDERS)
    await executor.on_plan(the_plan)
    cids = [client_order_id(the_plan.event_id, leg) for leg in range(3)]
    assert venue.placements == [cids[0], cids[1], cids[1], cids[1], cids[2]]  # the same id each time
    # Leg 0 is found by the first look-up (no blind wait, no resend); leg 1 waits the venue's Retry-After,
    # then 1 s x 2 (the second refusal in a row, no Retry-After).
    assert venue.sleeps == [1.5, 2.0]
    assert finished_of(recorder).status == "completed"
    assert await paper_orders(pool) == sorted(cids)
    moves = await pool.fetch(
        "SELECT from_state, to_state FROM execution.transitions WHERE client_order_id = $1 ORDER BY seq",
        cids[0],
    )
    assert [r["to_state"] for r in moves] == ["created", "submitted", "outcome_unknown", "filled"]


async def test_insufficient_funds_refreshes_the_balance_and_resizes_once(pool: asyncpg.Pool) -> None:
    executor, recorder, venue = await setup(pool, {"USDT": D("1000")})
    # The sizing sees a stale 2000 USDT: 0.5 ETH costs 0.5 x 3000 x 1.002 (buffer) x 1.001 (fee) = 1504.503,
    # which fits; the venue holds 1000 USDT and refuses (1501.5 with its fee).
    # (The first balances read, the run's starting balances, is the truth.)
    venue.stale_free = [{"USDT": D("1000")}, {"USDT": D("2000")}]
    the_plan = plan(order("ETH/USDT", "buy", "0.5", 2))
    await executor.on_plan(the_plan)
    finished = finished_of(recorder)
    # Refreshed: 1000 / 1504.503 = 0.664671...: 0.33233... truncated to the step: 0.3323 ETH.
    assert finished.reasons == ("leg 0 ETH/USDT buy resized from 0.5 to 0.3323 after insufficient funds",)
    assert (finished.status, finished.placed, finished.filled, finished.failed) == (
        "completed_with_adjustments",
        1,
        1,
        0,
    )
    assert venue.placements == [
        client_order_id(the_plan.event_id, 0, 0),
        client_order_id(the_plan.event_id, 0, 1),
    ]
    rows = await pool.fetch("SELECT attempt, state, amount, reason FROM execution.orders ORDER BY attempt")
    assert [(r["attempt"], r["state"], r["amount"], r["reason"]) for r in rows] == [
        (0, "rejected", D("0.5"), "insufficient_funds"),
        (1, "filled", D("0.3323"), ""),
    ]
    # 0.3323 x 3000 = 996.9, fee 0.9969.
    assert (await paper(pool).balances(SPOT)).free == {"ETH": D("0.3323"), "USDT": D("1000") - D("997.8969")}


async def test_an_authentication_error_stops_the_run_with_an_error(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal=journal)
    venue.faults = {0: (VenueAuthError("API key rejected"), False)}
    await executor.on_plan(plan(*DEMO_ORDERS))
    finished = finished_of(recorder)
    reason = "authentication refused by paper: API key rejected; trading stopped"
    assert (finished.status, finished.placed, finished.failed, finished.skipped) == ("error", 0, 1, 2)
    assert finished.reasons == (f"leg 0 BTC/USDT sell failed: {reason}", reason)
    assert await paper_orders(pool) == []
    assert [type(e).__name__ for e in recorder.published if isinstance(e, OrderPlaced)] == []


async def test_a_price_move_beyond_the_tolerance_stops_before_the_buys(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, _ = await setup(pool, journal=journal)
    eth = order("ETH/USDT", "buy", "2", 2).model_copy(update={"est_price": D(2900)})  # now 3000: +3.4%
    await executor.on_plan(plan(DEMO_ORDERS[0], DEMO_ORDERS[1], eth))
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled, finished.skipped) == (
        "replan_needed",
        2,
        2,
        1,
    )
    assert finished.reasons == (
        "re-plan needed: ETH/USDT is at 3000.00, planned at 2900.00 (3.45% away, more than 2%);"
        " the buys were not placed",
    )
    assert (await paper(pool).balances(SPOT)).free["ETH"] == D("5")


async def test_reconciliation_adopts_what_the_venue_shows_for_our_ids(pool: asyncpg.Pool) -> None:
    executor, recorder, venue = await setup(pool)
    # The venue takes leg 0, but no answer comes back to any placement or look-up: it stays unknown...
    venue.faults = {0: (VenueError, True), **dict.fromkeys(range(1, 5), (VenueError, False))}
    venue.lookups_fail = True
    the_plan = plan(DEMO_ORDERS[0])
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    finished = finished_of(recorder)
    assert finished.reasons == (
        f"leg 0 BTC/USDT sell failed: {cid} outcome unknown (look-ups failed: VenueError): left to reconcile",
    )
    assert await pool.fetchval("SELECT state FROM execution.orders") == "outcome_unknown"
    # ...then the venue answers again: reconciliation finds it filled, records its fill once.
    venue.lookups_fail = False
    recorder.published.clear()
    assert await executor.reconcile_orders() == 1
    assert await executor.reconcile_orders() == 0
    [late] = [e for e in recorder.published if isinstance(e, OrderFilled)]
    assert (late.client_order_id, late.amount, late.price) == (cid, D("0.21666"), D(60000))
    assert await pool.fetchval("SELECT state FROM execution.orders") == "filled"
    assert await pool.fetchval("SELECT count(*) FROM execution.fills") == 1
    assert await paper_orders(pool) == [cid]


async def test_a_stale_plan_is_not_started_and_a_slow_run_times_out_before_its_next_leg(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal=journal)
    await executor.on_plan(plan(*DEMO_ORDERS, key="stale", occurred_at=T0 - timedelta(seconds=601)))
    assert finished_of(recorder).reasons == (
        "the plan is more than 600 s old: not started (re-plan with fresh prices)",
    )
    assert await paper_orders(pool) == []
    recorder.published.clear()
    # 350 s per placement: the sells start at 0 s and 350 s; the buy would start at 700 s > 600 s.
    clock = Clock()
    executor.clock = venue.clock = clock
    venue.per_placement = timedelta(seconds=350)
    await executor.on_plan(plan(*DEMO_ORDERS, key="slow"))
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled, finished.skipped) == ("timed_out", 2, 2, 1)
    assert finished.reasons == ("the run did not end within 600 s of its plan: stopped before its next leg",)
    assert len(await paper_orders(pool)) == 2


@dataclass
class RestingVenue(Wrapped):
    """A venue whose orders rest open until cancelled (a limit-order book that never crosses), in memory;
    it also holds an order placed by someone else (`external`)."""

    orders: dict[str, OrderState] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)

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
        state = OrderState(client_order_id, account, symbol, side, amount, "open")
        return self.orders.setdefault(client_order_id, state)

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        return self.orders.get(client_order_id)

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        return [s for s in self.orders.values() if s.status == "open" and s.account == account]

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        self.cancelled.append(client_order_id)
        state = self.orders[client_order_id]
        self.orders[client_order_id] = OrderState(
            client_order_id, account, symbol, state.side, state.amount, "cancelled", reason="cancelled by us"
        )
        return self.orders[client_order_id]


async def test_halt_cancels_our_open_orders_and_never_touches_external_ones(pool: asyncpg.Pool) -> None:
    executor, recorder, _ = await setup(
        pool, execution={"order_timeout_seconds": 1, "poll_interval_seconds": 0.5}
    )
    venue = RestingVenue(paper(pool))
    external = OrderState("someone-elses", SPOT, "BTC/USDT", "buy", D("0.1"), "open")
    venue.orders["someone-elses"] = external
    executor.venues = {"paper": venue}
    the_plan = plan(DEMO_ORDERS[0])
    await executor.on_plan(the_plan)
    cid = client_order_id(the_plan.event_id, 0)
    assert finished_of(recorder).reasons == ("leg 0 BTC/USDT sell still open after 1 s: left to reconcile",)
    assert await pool.fetchval("SELECT state FROM execution.orders") == "accepted"
    # The reconciliation after the run listed the account's open orders: ours is adopted, the other one
    # is classified external (recorded once, counted), never ours to cancel.
    assert await external_orders(pool) == [
        ("paper", SPOT, "someone-elses", "BTC/USDT", "buy", D("0.1"), False)
    ]
    assert REGISTRY.get_sample_value("rebal_external_orders", {"exchange": "paper"}) == 1
    await executor.halt(new_event(HaltTrading, key="h", now=T0, portfolio_id="demo", reason="incident"))
    assert venue.cancelled == [cid]
    assert await pool.fetchval("SELECT state FROM execution.orders") == "cancelled"
    assert venue.orders["someone-elses"] == external
    # Seen again by the next cycle: still one row, still external, still open; ours no longer is.
    await executor.reconcile_orders()
    assert await external_orders(pool) == [
        ("paper", SPOT, "someone-elses", "BTC/USDT", "buy", D("0.1"), False)
    ]
    assert venue.orders["someone-elses"] == external and venue.cancelled == [cid]


async def external_orders(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    rows = await pool.fetch(
        "SELECT exchange, account, client_order_id, symbol, side, amount, looks_ours"
        " FROM execution.external_orders ORDER BY client_order_id"
    )
    return [tuple(row) for row in rows]


async def test_a_sell_of_less_than_planned_scales_the_buys_down(pool: asyncpg.Pool, journal: Journal) -> None:
    # The plan sells 0.2 BTC to fund 3.9 ETH; only 0.1 BTC is there now.
    executor, recorder, _ = await setup(pool, {"BTC": D("0.1")}, journal)
    await executor.on_plan(plan(order("BTC/USDT", "sell", "0.2", 1), order("ETH/USDT", "buy", "3.9", 2)))
    finished = finished_of(recorder)
    # Sold 0.1: 6000 - 6 = 5994 USDT. 3.9 ETH would cost 3.9 x 3000 x 1.002 x 1.001 = 11735.1234:
    # factor 5994 / 11735.1234 = 0.510774..., 3.9 x factor = 1.99202...: 1.992 ETH (5976 + 5.976 fee).
    assert finished.reasons == (
        "leg 0 BTC/USDT sell reduced from 0.2 to 0.1: 0.1 BTC free",
        "leg 1 ETH/USDT buy scaled from 3.9 to 1.992: 5994 USDT free after the sells",
    )
    assert (await paper(pool).balances(SPOT)).free == {"ETH": D("1.992"), "USDT": D("12.024")}


@dataclass
class FillsWhileCancelled(RestingVenue):
    """Its orders rest until cancelled, and a cancel loses the race: the order fills just before."""

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        self.cancelled.append(client_order_id)
        state = self.orders[client_order_id]
        fill = Fill(f"t-{client_order_id}", state.amount, D(60000), D("0.5"), "USDT")
        self.orders[client_order_id] = OrderState(
            client_order_id, account, symbol, state.side, state.amount, "filled", state.amount, (fill,)
        )
        return self.orders[client_order_id]


async def test_a_fill_that_races_a_halts_cancel_is_published(pool: asyncpg.Pool, journal: Journal) -> None:
    executor, recorder, _ = await setup(
        pool, journal=journal, execution={"order_timeout_seconds": 1, "poll_interval_seconds": 0.5}
    )
    executor.venues = {"paper": FillsWhileCancelled(paper(pool))}
    the_plan = plan(DEMO_ORDERS[0])
    await executor.on_plan(the_plan)  # the sell rests open
    cid = client_order_id(the_plan.event_id, 0)
    await executor.halt(new_event(HaltTrading, key="h", now=T0, portfolio_id="demo", reason="incident"))
    [filled] = [e for e in recorder.published if isinstance(e, OrderFilled)]
    assert (filled.client_order_id, filled.trade_id, filled.amount) == (cid, f"t-{cid}", D("0.21666"))
    journaled = await journal.order(cid)
    assert journaled is not None and journaled.state == "filled"


async def test_a_second_plan_made_from_the_same_snapshot_is_refused(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, _ = await setup(pool, journal=journal)
    taken = T0 - timedelta(seconds=5)
    first = plan(*DEMO_ORDERS, key="first", snapshot_taken_at=taken)
    await executor.on_plan(first)
    # A second trigger planned on the same snapshot after the first run started: it would trade again.
    second = plan(*DEMO_ORDERS, key="second", snapshot_taken_at=taken, occurred_at=T0 + timedelta(seconds=1))
    await executor.on_plan(second)
    ends = {e.plan_id: e for e in recorder.published if isinstance(e, RunFinished)}
    assert ends[first.event_id].status == "completed"
    refused = ends[second.event_id]
    assert (refused.status, refused.placed) == ("cancelled", 0)
    assert refused.reasons == (
        f"the plan was made from snapshot {second.snapshot_id} taken at {taken.isoformat()}, not after the "
        f"end of portfolio demo's last run ({T0.isoformat()}): not started (re-plan from a newer snapshot)",
    )
    assert len(await paper_orders(pool)) == 3  # only the first run traded
    # A plan made from a snapshot taken after the first run ended runs.
    third = plan(*DEMO_ORDERS[1:], key="third", snapshot_taken_at=T0 + timedelta(seconds=1))
    await executor.on_plan(third)
    assert {e.plan_id: e for e in recorder.published if isinstance(e, RunFinished)}[
        third.event_id
    ].status == ("completed")

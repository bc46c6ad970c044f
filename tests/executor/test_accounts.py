"""A plan over several accounts: each account's legs in order (sells before buys), the accounts side by side
(`rebal_executor.execution.accounts`); a stop or a crash in one account ends them all cleanly.

The venue here holds an account's order until another account has got somewhere (`Accounts.before` /
`after`): run one account after the other, the executor would wait those holds out (`waited_out`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import pytest

from rebal.events import PlannedBudget, PlannedOrder, RebalancePlanned
from rebal.settings import DatabaseSettings
from rebal.venue import Balances, OrderState, Side, VenueAuthError
from rebal_executor.execution import Executor, Journal
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import CONCURRENT_ACCOUNTS, ExecutorSettings
from tests.executor.test_executor import SPOT, order, paper, plan
from tests.executor.test_safety import Crash, finished_of
from tests.executor.wrapped import Wrapped
from tests.fakes import RecordingPublisher
from tests.paper_support import Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
OTHER = "demo/paper/other"
# How long a hold waits for the other account before giving up (counted in `waited_out`).
HOLD_SECONDS = 3.0
Key = tuple[str, int]  # (account, its n-th placement, 0-based)
Ready = Callable[[], bool | Awaitable[bool]]


def on(account: str, symbol: str, side: str, amount: str, phase: int) -> PlannedOrder:
    return order(symbol, side, amount, phase).model_copy(update={"account": account})


@dataclass
class Accounts(Wrapped):
    """The paper venue, with an account's n-th placement held `before` it is sent (or `after` the venue took
    it, its answer not yet returned) until a condition on the other accounts holds, and scripted `faults`
    (raised before the venue takes the order, or after when the flag is set)."""

    before: dict[Key, Ready] = field(default_factory=dict)
    after: dict[Key, Ready] = field(default_factory=dict)
    faults: dict[Key, tuple[BaseException, bool]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    # Orders the venue took, per account (answered or not).
    taken: Counter[str] = field(default_factory=Counter)
    # (account, side) of each order the venue took and answered, in the order it answered.
    placed: list[tuple[str, str]] = field(default_factory=list)
    raised: list[Key] = field(default_factory=list)
    waited_out: int = 0

    def count(self, account: str) -> int:
        return sum(1 for who, _ in self.placed if who == account)

    async def _until(self, ready: Ready) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_SECONDS
        while not await _value(ready()):
            if loop.time() > deadline:
                self.waited_out += 1
                return
            await asyncio.sleep(0.005)

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
        key = (account, self.attempts[account])
        self.attempts[account] += 1
        if key in self.before:
            await self._until(self.before[key])
        fault = self.faults.get(key)
        if fault is not None and not fault[1]:
            self.raised.append(key)
            raise fault[0]
        state = await self.inner.place_order(
            account, client_order_id, symbol, side, amount, price=price, post_only=post_only
        )
        self.taken[account] += 1
        if fault is not None:
            self.raised.append(key)
            raise fault[0]
        if key in self.after:
            await self._until(self.after[key])
        self.placed.append((account, side))
        return state


async def _value(answer: bool | Awaitable[bool]) -> bool:
    return answer if isinstance(answer, bool) else await answer


async def setup(
    pool: asyncpg.Pool, journal: Journal | None = None, other_usdt: str = "0"
) -> tuple[Executor, RecordingPublisher, Accounts]:
    """The executor on the paper venue, its two accounts seeded (once: a restart finds them)."""
    inner = paper(pool)
    await inner.seed(SPOT, {"BTC": D("1"), "SOL": D("100"), "USDT": D("0")})
    await inner.seed(OTHER, {"ETH": D("5"), "SOL": D("100"), "USDT": D(other_usdt)})
    venue = Accounts(inner)
    recorder = RecordingPublisher()
    journal = PostgresJournal(pool) if journal is None else journal
    executor = Executor({"paper": venue}, recorder, ExecutorSettings(live=True), journal, clock=Clock())
    return executor, recorder, venue


def two_accounts(sells: int = 2, buys: int = 1) -> RebalancePlanned:
    """`sells` sells then `buys` buys on each account, the planner's order (every sell, then every buy)."""
    return plan(
        *(on(SPOT, "SOL/USDT", "sell", "1", 1) for _ in range(sells)),
        *(on(OTHER, "SOL/USDT", "sell", "1", 1) for _ in range(sells)),
        *(on(SPOT, "ETH/USDT", "buy", "0.01", 2) for _ in range(buys)),
        *(on(OTHER, "BTC/USDT", "buy", "0.001", 2) for _ in range(buys)),
    )


async def test_two_accounts_legs_interleave_each_in_its_order_sells_before_buys(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal)
    # SPOT's first sell goes only once OTHER placed one, OTHER's second only once SPOT placed two.
    venue.before = {(SPOT, 0): lambda: venue.count(OTHER) >= 1, (OTHER, 1): lambda: venue.count(SPOT) >= 2}
    await executor.on_plan(two_accounts())
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled) == ("completed", 6, 6)
    assert venue.waited_out == 0
    assert venue.placed[:4] == [(OTHER, "sell"), (SPOT, "sell"), (SPOT, "sell"), (OTHER, "sell")]
    for account in (SPOT, OTHER):
        assert [side for who, side in venue.placed if who == account] == ["sell", "sell", "buy"]


async def test_a_stop_in_one_account_stops_the_others_and_leaves_no_leg_unresolved(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    executor, recorder, venue = await setup(pool, journal)
    the_plan = two_accounts(sells=3)
    # SPOT's second order (leg 1) is refused (authentication: the run stops) while OTHER's second is in
    # flight, taken by the venue: that one ends as it would alone, and OTHER places nothing after it.
    venue.faults = {(SPOT, 1): (VenueAuthError("API key rejected"), False)}
    venue.before = {(SPOT, 1): lambda: venue.attempts[OTHER] >= 2}
    venue.after = {(OTHER, 1): lambda: journal.leg_done(the_plan.event_id, 1)}
    await executor.on_plan(the_plan)
    finished = finished_of(recorder)
    assert venue.waited_out == 0
    assert finished.status == "error"
    assert [side for who, side in venue.placed if who == OTHER] == ["sell", "sell"]
    assert [side for who, side in venue.placed if who == SPOT] == ["sell"]
    assert (finished.placed, finished.filled, finished.failed) == (3, 3, 1)
    assert finished.skipped == len(the_plan.orders) - 4
    for leg in range(len(the_plan.orders)):
        assert await journal.leg_done(the_plan.event_id, leg), leg
    assert all(o.state in ("filled", "rejected") for o in await journal.orders(the_plan.event_id))


async def test_a_crash_with_both_accounts_in_flight_resumes_with_no_order_placed_twice(
    pool: asyncpg.Pool,
) -> None:
    executor, _, venue = await setup(pool)
    the_plan = two_accounts(sells=3)
    # OTHER's second order is taken by the venue, its answer not yet back, when the process dies in
    # SPOT's second (also taken by the venue): both accounts have an order in flight.
    venue.faults = {(SPOT, 1): (Crash(), True)}
    venue.before = {(SPOT, 1): lambda: venue.taken[OTHER] >= 2}
    venue.after = {(OTHER, 1): lambda: bool(venue.raised)}
    with pytest.raises(Crash):
        await executor.on_plan(the_plan)
    assert venue.waited_out == 0
    states = Counter(r["state"] for r in await pool.fetch("SELECT state FROM execution.orders"))
    assert states == {"filled": 2, "submitted": 2}
    # A new process resumes both accounts from the journal: what the venue took is adopted, not resent.
    restarted, recorder, resumed = await setup(pool)
    await restarted.drain()
    finished = finished_of(recorder)
    assert (finished.status, finished.placed, finished.filled) == ("completed", 8, 8)
    assert len(resumed.placed) == 4  # the two legs never sent, and the two buys
    ids = [r["client_order_id"] for r in await pool.fetch("SELECT client_order_id FROM paper.orders")]
    assert len(ids) == len(set(ids)) == len(the_plan.orders)
    assert await pool.fetchval("SELECT count(*) FROM execution.fills") == len(the_plan.orders)


async def test_a_buy_never_spends_more_than_its_own_accounts_fills_produced(
    pool: asyncpg.Pool, journal: Journal
) -> None:
    # OTHER holds quote a bot keeps (not in the plan's budget); SPOT's sell brings much more than OTHER's.
    executor, recorder, venue = await setup(pool, journal, other_usdt="10000")
    inner = paper(pool)
    budgets = tuple(
        PlannedBudget(exchange="paper", account=a, asset="USDT", amount=D(0)) for a in (SPOT, OTHER)
    )
    the_plan = plan(
        on(SPOT, "BTC/USDT", "sell", "0.5", 1),
        on(OTHER, "SOL/USDT", "sell", "2", 1),
        on(SPOT, "ETH/USDT", "buy", "1", 2),
        on(OTHER, "ETH/USDT", "buy", "1", 2),
        budgets=budgets,
    )
    # The buys run side by side too: OTHER's goes only once SPOT's is placed.
    venue.before = {(OTHER, 1): lambda: venue.count(SPOT) >= 2}
    await executor.on_plan(the_plan)
    finished = finished_of(recorder)
    assert venue.waited_out == 0
    assert finished.status == "completed_with_adjustments"
    spot, other = (await inner.balances(SPOT)).free, (await inner.balances(OTHER)).free
    assert spot["ETH"] == D("1")  # SPOT's ~30,000 USDT of proceeds pay for its whole buy
    # OTHER's buy is scaled to what its own sell brought (2 SOL: ~300 USDT), not SPOT's proceeds nor the bot's
    assert D(0) < other["ETH"] - D(5) < D("0.1")
    assert other["USDT"] >= D("10000")
    assert any("buy scaled" in reason for reason in finished.reasons)


@dataclass
class Reads(Wrapped):
    """The paper venue, counting balance reads."""

    reads: int = 0

    async def balances(self, account: str) -> Balances:
        self.reads += 1
        return await self.inner.balances(account)


@pytest.mark.parametrize(("max_age", "reads"), [(0.0, 3), (10.0, 2)])
async def test_a_sell_reuses_its_accounts_balance_read_only_for_an_asset_no_order_of_ours_touched(
    pool: asyncpg.Pool, max_age: float, reads: int
) -> None:
    venue = Reads(paper(pool))
    await venue.inner.seed(SPOT, {"BTC": D("1"), "SOL": D("100"), "USDT": D("0")})
    settings = ExecutorSettings.model_validate(
        {"live": True, "execution": {"balances_max_age_seconds": max_age}}
    )
    executor = Executor(
        {"paper": venue}, RecordingPublisher(), settings, PostgresJournal(pool), clock=Clock()
    )
    # BTC (read), SOL (the same read, when reads may be reused), BTC again (touched by the first: read).
    the_plan = plan(
        on(SPOT, "BTC/USDT", "sell", "0.1", 1),
        on(SPOT, "SOL/USDT", "sell", "1", 1),
        on(SPOT, "BTC/USDT", "sell", "0.1", 1),
    )
    audit = 2  # the run's balances recorded at its start and checked at its end
    await executor.on_plan(the_plan)
    assert venue.reads - audit == reads
    assert (await venue.inner.balances(SPOT)).free["BTC"] == D("0.8")


async def test_the_executors_pool_fits_accounts_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each account of a run writes its journal while the others do: the executor's default pool holds a
    connection for each of 20 accounts plus the worker's and the health check's (the services' default, 5,
    made the fifth account's writes wait); an operator's `database.pool_size` still wins."""
    assert CONCURRENT_ACCOUNTS == 20
    assert ExecutorSettings().database.pool_size == CONCURRENT_ACCOUNTS + 2
    assert DatabaseSettings().pool_size == 5  # the other services' journals write one at a time
    monkeypatch.setenv("REBAL__DATABASE__POOL_SIZE", "8")
    assert ExecutorSettings().database.pool_size == 8

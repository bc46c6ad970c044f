"""Sells that wait for a transfer's arrival (`after_transfer`): the coin moved to the venue that buys it
better is sold there once credited, at most the account's own part and what arrived; phases are sells →
transfers → the waiting sells → buys, and a run stopped between the credit and the sell resumes without
sending anything twice."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pydantic
import pytest

from rebal.events import PlannedTransfer, RebalancePlanned, RunFinished
from rebal.venue import OrderState, Side
from rebal_executor.execution import Executor
from rebal_executor.journal import PostgresJournal
from tests.executor.test_executor import SPOT, order, plan
from tests.executor.test_transfers import OTHER, setup

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


def moving_plan(key: str = "run-1") -> RebalancePlanned:
    """SPOT sells 0.06 BTC at once and sends 0.05 to OTHER, which sells 0.07 once it arrives (0.02 of its
    own 0.03 and the 0.05 planned to arrive)."""
    move = PlannedTransfer(
        asset="BTC", from_account=SPOT, to_account=OTHER, amount=D("0.05"), est_value=D(3000)
    )
    waiting = order("BTC/USDT", "sell", "0.07", 1).model_copy(update={"account": OTHER, "after_transfer": 0})
    return plan(order("BTC/USDT", "sell", "0.06", 1), waiting, transfers=(move,), key=key)


async def sells_of(pool: asyncpg.Pool, account: str) -> list[Decimal]:
    rows = await pool.fetch(
        "SELECT amount FROM paper.orders WHERE account = $1 AND side = 'sell' ORDER BY created_at", account
    )
    return [row["amount"] for row in rows]


async def test_a_sell_after_a_transfer_sells_at_most_its_own_part_and_what_arrived(
    pool: asyncpg.Pool,
) -> None:
    executor, recorder, paper = await setup(pool)
    await paper.seed(OTHER, {"BTC": D("0.03")})
    await executor.on_plan(moving_plan())
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    # The first sell left SPOT 0.04 BTC: 0.04 was withdrawn and credited (no BTC fee), so OTHER, which
    # holds 0.07 then, sells its own 0.02 and the 0.04 that arrived, not the 0.07 planned.
    assert finished.reasons == (
        "leg 1 BTC/USDT sell reduced from 0.07 to 0.06: at most 0.06 BTC to sell (the account's own part "
        "and what transfer 0 brought)",
    )
    assert (finished.status, finished.placed, finished.filled) == ("completed_with_adjustments", 3, 3)
    assert await sells_of(pool, SPOT) == [D("0.06")]
    assert await sells_of(pool, OTHER) == [D("0.06")]
    assert (await paper.balances(OTHER)).free["BTC"] == D("0.01")
    # The waiting sell was placed after the credit (the credit is due 60 s after the withdrawal).
    credit_at = await pool.fetchval("SELECT credit_at FROM paper.transfers")
    sold_at = await pool.fetchval("SELECT created_at FROM paper.orders WHERE account = $1", OTHER)
    assert sold_at >= credit_at


async def test_a_transfer_not_credited_in_time_leaves_the_waiting_sell_its_own_part(
    pool: asyncpg.Pool,
) -> None:
    executor, recorder, paper = await setup(pool, execution={"transfer_timeout_seconds": 10})
    await paper.seed(OTHER, {"BTC": D("0.03")})
    await executor.on_plan(moving_plan())
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    # Sized from what is free (0.03: nothing arrived), then to its own part.
    assert finished.reasons[-2:] == (
        "leg 1 BTC/USDT sell reduced from 0.07 to 0.03: 0.03 BTC free",
        "leg 1 BTC/USDT sell reduced from 0.03 to 0.02: at most 0.02 BTC to sell (the account's own part "
        "and what transfer 0 brought)",
    )
    assert await sells_of(pool, OTHER) == [D("0.02")]


async def test_with_transfers_off_the_waiting_sell_sells_only_what_the_account_had(
    pool: asyncpg.Pool,
) -> None:
    executor, _, paper = await setup(pool, transfers=False)
    await paper.seed(OTHER, {"BTC": D("0.03")})
    await executor.on_plan(moving_plan())
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 0
    assert await sells_of(pool, OTHER) == [D("0.02")]


@dataclass
class Crash(Exception):
    """The process dies (not a venue error: nothing in the engine catches it)."""

    where: str


async def test_a_run_stopped_after_the_credit_resumes_and_sells_once_without_a_second_withdrawal(
    pool: asyncpg.Pool,
) -> None:
    executor, recorder, paper = await setup(pool)
    await paper.seed(OTHER, {"BTC": D("0.03")})
    place = paper.place_order

    async def dies_before_the_waiting_sell(
        account: str, client_order_id: str, symbol: str, side: Side, amount: Decimal
    ) -> OrderState:
        if account == OTHER:
            raise Crash("before the waiting sell is sent")
        return await place(account, client_order_id, symbol, side, amount)

    paper.place_order = dies_before_the_waiting_sell  # type: ignore[method-assign]
    the_plan = moving_plan()
    with pytest.raises(Crash):
        await executor.on_plan(the_plan)
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers WHERE credited") == 1
    assert await sells_of(pool, OTHER) == []

    paper.place_order = place  # type: ignore[method-assign]
    restarted = Executor(
        executor.venues, recorder, executor.settings, PostgresJournal(pool), clock=executor.clock
    )
    restarted.sleep = executor.sleep
    await restarted.drain()
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert finished.status == "completed_with_adjustments"
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 1
    assert await sells_of(pool, SPOT) == [D("0.06")]
    assert await sells_of(pool, OTHER) == [D("0.06")]


async def test_a_plan_whose_order_waits_for_a_transfer_it_does_not_have_is_refused() -> None:
    waiting = order("BTC/USDT", "sell", "0.07", 1).model_copy(update={"after_transfer": 0})
    with pytest.raises(pydantic.ValidationError, match=r"orders\[0\]\.after_transfer: 0 names no transfer"):
        RebalancePlanned.model_validate(plan(waiting).model_dump())

"""Transfer legs on the paper exchange (off by default): pre-check, withdraw, wait for the credit, then the
receiving side's buys sized from what arrived; a transfer not credited in time is reported, never repeated."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.events import PlannedTransfer, RunFinished
from rebal_executor.execution import Executor
from rebal_executor.execution.transfers import Transfers, transfer_id
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_venues.paper import PAPER_NETWORK, PaperVenue
from tests.executor.test_executor import SPOT, demo, order, plan
from tests.fakes import RecordingPublisher
from tests.paper_support import STILL, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
OTHER = "demo/paper/other"


def venue(pool: asyncpg.Pool, clock: Clock) -> PaperVenue:
    return PaperVenue.from_documents(
        "paper",
        pool,
        demo("markets"),
        demo("prices"),
        clock,
        transfer_delay=timedelta(seconds=60),
        withdraw_fees={"USDT": D(1)},
        **STILL,
    )


def allowed(asset: str, account: str = OTHER, network: str = PAPER_NETWORK) -> dict[str, str]:
    """An allowlist entry for the paper exchange's deposit address of `account`."""
    return {"exchange": "paper", "asset": asset, "network": network, "address": f"paper:paper:{account}"}


ALLOWLIST = [allowed("USDT"), allowed("BTC")]


async def setup(pool: asyncpg.Pool, **settings: object) -> tuple[Executor, RecordingPublisher, PaperVenue]:
    clock = Clock()
    paper = venue(pool, clock)
    await paper.seed(SPOT, {"BTC": D("0.1"), "USDT": D(500)})
    recorder = RecordingPublisher()
    executor = Executor(
        {"paper": paper},
        recorder,
        ExecutorSettings.model_validate(
            {"live": True, "transfers": True, "withdrawal_allowlist": ALLOWLIST, **settings}
        ),
        PostgresJournal(pool),
        clock=clock,
    )

    async def sleep(seconds: float) -> None:  # waiting moves the venue's clock: the credit comes due
        clock.now += timedelta(seconds=seconds)

    executor.sleep = sleep
    return executor, recorder, paper


def funding_plan(asset: str = "USDT", amount: str = "1000") -> object:
    transfer = PlannedTransfer(
        asset=asset, from_account=SPOT, to_account=OTHER, amount=D(amount), est_value=D(amount)
    )
    buy = order("ETH/USDT", "buy", "0.3", 2).model_copy(update={"account": OTHER})
    return plan(order("BTC/USDT", "sell", "0.01", 1), buy, transfers=(transfer,))


async def test_a_where_mode_buy_that_waits_for_the_money_is_bought_not_sold(pool: asyncpg.Pool) -> None:
    """A where-mode plan says which transfer a buy's money comes by (`after_transfer`): the buy is one of
    the buys, placed after the credit, never taken for a sell waiting for a transfer (it was: `leg 1
    ETH/USDT sell skipped: no ETH free`, and nothing bought)."""
    executor, recorder, paper = await setup(pool)
    the_plan = funding_plan()
    waits = the_plan.orders[1].model_copy(update={"after_transfer": 0})  # type: ignore[attr-defined]
    the_plan = the_plan.model_copy(update={"orders": (the_plan.orders[0], waits)})  # type: ignore[attr-defined]
    await executor.on_plan(the_plan)
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed, finished.filled, finished.reasons) == ("completed", 3, 3, ())
    assert (await paper.balances(OTHER)).free == {"ETH": D("0.3"), "USDT": D("98.1")}


async def test_the_buys_wait_for_the_credit_and_are_sized_from_what_arrived(pool: asyncpg.Pool) -> None:
    executor, recorder, paper = await setup(pool)
    the_plan = funding_plan()
    await executor.on_plan(the_plan)  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed, finished.filled, finished.reasons) == ("completed", 3, 3, ())
    # Sold 0.01 BTC: 500 + 600 - 0.6 = 1099.4; 1000 withdrawn; 999 credited (fee 1); 0.3 ETH bought with it
    # (900 + 0.9 fee).
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.09"), "USDT": D("99.4")}
    assert (await paper.balances(OTHER)).free == {"ETH": D("0.3"), "USDT": D("98.1")}
    tid = transfer_id(the_plan.event_id, 0)  # type: ignore[attr-defined]
    moves = await pool.fetch(
        "SELECT to_state, reason FROM execution.transitions WHERE client_order_id = $1 ORDER BY seq", tid
    )
    assert [(r["to_state"], r["reason"]) for r in moves] == [
        ("withdrawn", "1000 USDT"),
        ("credited", "999 USDT"),
    ]
    # The same transfer asked again (as after a restart) finds its withdrawal: nothing moves twice.
    mover = Transfers(
        executor.venues,
        executor.sleep,
        600,
        2,
        lambda *_: _nothing(),
        frozenset({("paper", "USDT", PAPER_NETWORK, f"paper:paper:{OTHER}", "")}),
    )
    again = await mover.run(the_plan, 0, the_plan.transfers[0])  # type: ignore[attr-defined]
    assert (again.outcome, again.moved) == ("filled", True)
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 1
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.09"), "USDT": D("99.4")}


async def _nothing() -> None:
    return None


async def test_a_transfer_not_credited_in_time_is_reported_and_the_buys_shrink(pool: asyncpg.Pool) -> None:
    executor, recorder, paper = await setup(pool, execution={"transfer_timeout_seconds": 10})
    await executor.on_plan(funding_plan())  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert finished.status == "completed_with_adjustments"
    assert finished.reasons == (
        "transfer of 1000 USDT from demo/paper/spot to demo/paper/other not credited after 10 s: "
        "left pending (alert)",
        "leg 1 ETH/USDT buy skipped: below_step",
    )
    assert (finished.placed, finished.filled, finished.failed, finished.skipped) == (2, 1, 1, 1)
    assert (await paper.balances(OTHER)).free == {}


async def test_transfers_are_off_by_default_and_a_failing_pre_check_stops_the_run_before_any_leg(
    pool: asyncpg.Pool,
) -> None:
    assert ExecutorSettings().transfers is False
    executor, recorder, _ = await setup(pool)
    # DOGE moves on no network: the pre-check fails before the run's sell would raise money for nothing.
    await executor.on_plan(funding_plan("DOGE", "5"))  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed) == ("cancelled", 0)
    assert finished.reasons == (
        "transfer of 5 DOGE from demo/paper/spot to demo/paper/other pre-check failed (no network): the run "
        "was not started (no leg was placed)",
    )
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 0
    assert await pool.fetchval("SELECT count(*) FROM paper.orders") == 0


@pytest.mark.parametrize(
    "allowlist",
    [
        [],  # the default: nowhere
        [allowed("USDT", account=SPOT)],  # another account's address
        [allowed("BTC")],  # another asset
        [allowed("USDT", network="TRC20")],  # another network
        [{**allowed("USDT"), "exchange": "binance"}],  # another exchange
    ],
)
async def test_a_withdrawal_to_an_address_off_the_allowlist_refuses_the_run_before_any_leg(
    pool: asyncpg.Pool, allowlist: list[dict[str, str]]
) -> None:
    executor, recorder, paper = await setup(pool, withdrawal_allowlist=allowlist)
    await executor.on_plan(funding_plan())  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed) == ("cancelled", 0)
    assert finished.reasons == (
        "transfer of 1000 USDT from demo/paper/spot to demo/paper/other pre-check failed (not on the "
        f"withdrawal allowlist: paper USDT {PAPER_NETWORK} paper:paper:{OTHER}): the run was not started "
        "(no leg was placed)",
    )
    assert await pool.fetchval("SELECT count(*) FROM paper.transfers") == 0
    assert await pool.fetchval("SELECT count(*) FROM paper.orders") == 0
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.1"), "USDT": D(500)}


async def test_a_coin_moves_between_accounts_when_its_address_is_allowlisted(pool: asyncpg.Pool) -> None:
    """A where-mode move (rebal plan --network): BTC sent to the other account and credited less the fee."""
    executor, recorder, paper = await setup(pool)
    transfer = PlannedTransfer(
        asset="BTC", from_account=SPOT, to_account=OTHER, amount=D("0.05"), est_value=D(3000)
    )
    await executor.on_plan(plan(transfers=(transfer,)))  # type: ignore[arg-type]
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (finished.status, finished.placed, finished.filled) == ("completed", 1, 1)
    assert (await paper.balances(SPOT)).free == {"BTC": D("0.05"), "USDT": D(500)}
    assert (await paper.balances(OTHER)).free == {"BTC": D("0.05")}

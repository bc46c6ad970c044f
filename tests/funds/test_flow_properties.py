"""The ledgers-equal-venue invariant on the paper exchange: under hypothesis-generated sequences of
deposits, withdrawals and rebalances, run through the fund part and the real executor, the users' ledgers
add up exactly to the paper account after every cycle, nothing is negative, and every withdrawal that
was not rejected is paid what it asked (or everything, for a full one). Each example is a fresh fund."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal import db, service
from rebal.events import DefineFund, FundCommandRejected, RequestWithdrawal
from rebal_devstack.pytest_plugin import FreshDatabase
from tests.funds.test_flow import FUND, Rig

D = Decimal
USERS = ("u0", "u1", "u2")
COUNTER = itertools.count()
money = st.decimals(D("5"), D("3000"), places=2, allow_nan=False, allow_infinity=False)
Step = tuple[dict[str, Decimal], dict[str, int | None], bool]


@st.composite
def steps(draw: st.DrawFn) -> Step:
    deposits = draw(st.dictionaries(st.sampled_from(USERS), money, max_size=3))
    percent = st.one_of(st.none(), st.integers(5, 80))
    withdrawals = draw(st.dictionaries(st.sampled_from(USERS), percent, max_size=2))
    return deposits, withdrawals, draw(st.booleans())


async def run(dsn: str, sequence: list[Step]) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    database = service.Database(dsn, 2)
    await database.open()
    try:
        async with pool.acquire() as connection:
            await db.migrate(connection)
        rig = Rig(pool, database, fund=f"prop{next(COUNTER)}")
        await rig.funds.on_define(
            rig.command(
                DefineFund,
                exchange="paper",
                account=rig.account,
                quote="USDT",
                weights={"BTC": D("0.5"), "ETH": D("0.3"), "USDT": D("0.2")},
                prices_from=FUND,
            )
        )
        for deposits, withdrawals, rebalance in sequence:
            for user, amount in sorted(deposits.items()):
                await rig.deposit(user, str(amount))
            ledger = await rig.ledger()
            asked: dict[str, Decimal | None] = {}
            for user, percent in sorted(withdrawals.items()):
                held = ledger.get(user, {})
                if not any(held.values()):
                    continue
                worth = sum(
                    amount * {"USDT": D(1), "BTC": D(60000), "ETH": D(3000)}[a] for a, amount in held.items()
                )
                amount = None if percent is None else (worth * percent / 100).quantize(D("0.01"))
                asked[user] = amount
                await rig.funds.on_withdraw(
                    rig.command(RequestWithdrawal, user_id=user, amount=amount, reference=f"w{rig.n}")
                )
            before = len(rig.funds_out.published)
            settled = await rig.cycle(rebalance=rebalance)
            rejected = {
                e.user_id for e in rig.funds_out.published[before:] if isinstance(e, FundCommandRejected)
            }
            await rig.book("USDT", -sum(settled.paid.values(), D(0)))  # payouts leave the account
            await rig.consistent()
            assert await pool.fetchval("SELECT count(*) FROM fund_ledger WHERE amount < 0") == 0
            for user, amount in asked.items():
                if user in rejected:
                    continue
                if amount is None:
                    assert (await rig.ledger())[user]["USDT"] == 0
                elif user not in settled.short:
                    assert settled.paid[user] == amount
                else:  # a sell under a market minimum: what there was, the rest reported short
                    assert settled.paid[user] + settled.short[user] == amount
    finally:
        await database.close()
        await pool.close()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(steps(), min_size=1, max_size=3))
def test_ledgers_equal_the_paper_account_under_any_sequence(
    database: FreshDatabase, sequence: list[Step]
) -> None:
    asyncio.run(run(database.dsn, sequence))

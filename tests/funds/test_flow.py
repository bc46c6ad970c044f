"""The fund flow on the paper exchange: the planner's fund part (Postgres ledgers) and the real executor.

The fund part's plans go to the executor and the executor's fills and run ends come back, as the bus would
carry them (in-process here; `test_bus.py` runs the same over a real nats-server). The paper exchange and
both services' tables are in a real Postgres. Money that arrives on or leaves the account (a deposit's
transfer, a withdrawal's payout) is booked on the paper account by the test, as the transfer would.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from rebal import service
from rebal.events import (
    BalanceSnapshotTaken,
    DefineFund,
    Event,
    FundCommandRejected,
    FundCyclePlanned,
    FundCycleSettled,
    FundNeedsAdjustment,
    OrderFilled,
    RebalancePlanned,
    RecordDeposit,
    RequestWithdrawal,
    RunFinished,
    RunFundCycle,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.execution import Executor
from rebal_executor.journal import PostgresJournal
from rebal_executor.settings import ExecutorSettings
from rebal_planner.funds import FundService
from rebal_venues.paper import PaperVenue
from tests.fakes import FakeHistory, RecordingPublisher
from tests.paper_support import MARKETS, PRICES, STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
FUND = "fund1"
ACCOUNT = "fund1/paper/main"
TREE = {
    "name": "fund1",
    "kind": "user",
    "children": [
        {
            "name": "paper",
            "kind": "exchange",
            "children": [
                {
                    "name": "main",
                    "kind": "account",
                    "quote": "USDT",
                    "children": [{"name": "usdt", "asset": "USDT", "amount": "0"}],
                }
            ],
        }
    ],
}


def snapshot(markets: dict[str, Any] = MARKETS) -> BalanceSnapshotTaken:
    return new_event(
        BalanceSnapshotTaken, key="s1", now=T0, portfolio_id=FUND, tree=TREE, prices=PRICES, markets=markets
    )


class Rig:
    """The fund part, the executor and the paper account, wired as the bus would."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database: service.Database,
        markets: dict[str, Any] = MARKETS,
        fund: str = FUND,
    ) -> None:
        self.pool = pool
        self.fund = fund
        self.account = f"{fund}/paper/main"
        self.venue = PaperVenue.from_documents("paper", pool, MARKETS, PRICES, Clock(), **STILL)
        self.funds_out = RecordingPublisher()
        self.executor_out = RecordingPublisher()
        self.funds = FundService(database, FakeHistory([snapshot(markets)]), self.funds_out, clock=Clock())
        settings = ExecutorSettings(live=True)
        self.executor = Executor(
            {"paper": self.venue}, self.executor_out, settings, PostgresJournal(pool), clock=Clock()
        )
        self.delivered = 0
        self.n = 0

    def command(self, kind: type[Event], **fields: Any) -> Any:
        self.n += 1
        return new_event(kind, key=f"c{self.n}", now=T0, portfolio_id=self.fund, **fields)

    async def book(self, asset: str, amount: Decimal) -> None:
        """Money arriving on (or leaving) the paper account, as a transfer would."""
        await self.pool.execute(
            "INSERT INTO paper.balances (exchange, account, asset, amount) VALUES ('paper', $1, $2, $3)"
            " ON CONFLICT (exchange, account, asset) DO UPDATE SET amount = paper.balances.amount + $3"
            if amount > 0
            else "UPDATE paper.balances SET amount = amount + $3"
            " WHERE exchange = 'paper' AND account = $1 AND asset = $2",
            self.account,
            asset,
            amount,
        )

    async def deposit(self, user: str, amount: str) -> None:
        await self.book("USDT", D(amount))
        await self.funds.on_deposit(
            self.command(RecordDeposit, user_id=user, amount=D(amount), reference=f"t{self.n}")
        )

    async def pending_plans(self) -> list[RebalancePlanned]:
        plans = [e for e in self.funds_out.published if isinstance(e, RebalancePlanned)]
        new, self.delivered = plans[self.delivered :], len(plans)
        return new

    async def execute(self, plan: RebalancePlanned) -> None:
        """The executor runs the plan; its fills and the run's end go back to the fund part."""
        before = len(self.executor_out.published)
        await self.executor.on_plan(plan)
        for event in self.executor_out.published[before:]:
            if isinstance(event, OrderFilled):
                await self.funds.on_fill(event)
        for event in self.executor_out.published[before:]:
            if isinstance(event, RunFinished):
                await self.funds.on_run_finished(event)

    async def cycle(self, rebalance: bool = False) -> FundCycleSettled:
        await self.funds.on_cycle(self.command(RunFundCycle, rebalance=rebalance))
        while plans := await self.pending_plans():
            for plan in plans:
                await self.execute(plan)
        settled = [e for e in self.funds_out.published if isinstance(e, FundCycleSettled)]
        assert settled, [e.type for e in self.funds_out.published]
        return settled[-1]

    async def ledger(self) -> dict[str, dict[str, Decimal]]:
        rows = await self.pool.fetch(
            "SELECT user_id, asset, amount FROM fund_ledger WHERE fund_id = $1 ORDER BY 1, 2", self.fund
        )
        found: dict[str, dict[str, Decimal]] = {}
        for row in rows:
            found.setdefault(row["user_id"], {})[row["asset"]] = row["amount"]
        return found

    async def consistent(self) -> dict[str, Decimal]:
        """The users' ledgers add up to the paper account, exactly; returns the account's balances."""
        venue = dict((await self.venue.balances(self.account)).free)
        totals: dict[str, Decimal] = {}
        for amounts in (await self.ledger()).values():
            for asset, amount in amounts.items():
                totals[asset] = totals.get(asset, D(0)) + amount
        assert {a: v for a, v in totals.items() if v} == {a: v for a, v in venue.items() if v}
        return venue

    def fills(self) -> list[tuple[str, str, Decimal, Decimal]]:
        return [
            (f.symbol, f.side, f.amount, f.fee)
            for f in self.executor_out.published
            if isinstance(f, OrderFilled)
        ]


@pytest.fixture
async def rig(pool: asyncpg.Pool, database: FreshDatabase) -> Any:
    db = service.Database(database.dsn, 3)
    await db.open()
    rig = Rig(pool, db)
    await rig.funds.on_define(
        rig.command(
            DefineFund,
            exchange="paper",
            account=ACCOUNT,
            quote="USDT",
            weights={"BTC": D("0.5"), "ETH": D("0.3"), "USDT": D("0.2")},
            prices_from=FUND,
        )
    )
    yield rig
    await db.close()


async def test_deposits_are_netted_and_fees_shared_pro_rata(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    await rig.deposit("bob", "3000")
    settled = await rig.cycle()
    # One buy per asset for both users: 4000 x 0.5 at 60000 (x1.001 x1.005, to the step), 4000 x 0.3 at 3000.
    assert rig.fills() == [
        ("BTC/USDT", "buy", D("0.03313"), D("1.9878")),
        ("ETH/USDT", "buy", D("0.3976"), D("1.1928")),
    ]
    assert settled.fees == D("3.1806") and settled.paid == {}
    ledger = await rig.ledger()
    # Alice's budgets were a quarter of the total: a quarter of every fill, cost and fee (0.79515 of 3.1806).
    assert ledger["alice"] == {
        "BTC": D("0.0082825"),
        "ETH": D("0.0994"),
        "USDT": D(1000) - (D("1987.8") + D("1.9878")) / 4 - (D("1192.8") + D("1.1928")) / 4,
    }
    assert ledger["bob"] == {"BTC": D("0.0248475"), "ETH": D("0.2982"), "USDT": D("612.16455")}
    await rig.consistent()


async def test_a_withdrawal_receives_what_was_asked_and_crosses_a_deposit(rig: Rig) -> None:
    await rig.deposit("alice", "2000")
    await rig.cycle()
    await rig.deposit("bob", "300")
    await rig.funds.on_withdraw(
        rig.command(RequestWithdrawal, user_id="alice", amount=D("500"), reference="w1")
    )
    before = len(rig.fills())
    settled = await rig.cycle()
    assert settled.paid == {"alice": D("500")} and settled.short == {}
    # Bob's buys crossed part of Alice's sells: the venue saw only the net, two sells instead of four orders.
    assert rig.fills()[before:] == [
        ("BTC/USDT", "sell", D("0.00166"), D("0.0996")),
        ("ETH/USDT", "sell", D("0.0199"), D("0.0597")),
    ]
    planned = [e for e in rig.funds_out.published if isinstance(e, FundCyclePlanned)][-2:]
    assert [(p.phase, p.orders, p.user_orders) for p in planned] == [(1, 2, 4), (2, 0, 4)]
    ledger = await rig.ledger()
    # Bob bought 150 of BTC and 90 of ETH from Alice at the reference prices, with no fee; 60 stays cash.
    assert ledger["bob"] == {"BTC": D("0.0025"), "ETH": D("0.03"), "USDT": D("60")}
    # Alice sold 0.00416 BTC and 0.0499 ETH (the venue's part paid its fee) and received exactly 500.
    assert (ledger["alice"]["BTC"], ledger["alice"]["ETH"]) == (D("0.0124"), D("0.1489"))
    await rig.book("USDT", -settled.paid["alice"])  # the payout leaves the account
    await rig.consistent()


async def test_a_deposit_during_a_run_is_credited_and_not_spent(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    await rig.funds.on_cycle(rig.command(RunFundCycle))
    plans = await rig.pending_plans()
    assert [p.orders[0].phase for p in plans] == [2]
    # Carol's deposit arrives while the run is under way (planned, not yet executed).
    await rig.deposit("carol", "700")
    for plan in plans:
        await rig.execute(plan)
    ledger = await rig.ledger()
    assert ledger["carol"] == {"USDT": D("700")}
    await rig.consistent()
    # The next cycle invests it.
    await rig.cycle()
    assert (await rig.ledger())["carol"]["BTC"] > 0


async def test_an_inactive_market_needs_adjustment_and_sends_nothing(
    pool: asyncpg.Pool, database: FreshDatabase
) -> None:
    db = service.Database(database.dsn, 3)
    await db.open()
    try:
        delisted = {"paper": {k: v for k, v in MARKETS["paper"].items() if k != "ETH/USDT"}}
        rig = Rig(pool, db, markets=delisted)
        await rig.funds.on_define(
            rig.command(
                DefineFund,
                exchange="paper",
                account=ACCOUNT,
                quote="USDT",
                weights={"BTC": D("0.5"), "ETH": D("0.5")},
                prices_from=FUND,
            )
        )
        await rig.deposit("alice", "100")
        await rig.funds.on_cycle(rig.command(RunFundCycle))
        [adjust] = [e for e in rig.funds_out.published if isinstance(e, FundNeedsAdjustment)]
        assert adjust.reasons == ("ETH: market ETH/USDT is inactive",)
        assert await rig.pending_plans() == []
        assert await pool.fetchval("SELECT status FROM funds") == "needs_adjustment"
        assert await pool.fetchval("SELECT status FROM fund_flows") == "pending"
        await rig.funds.on_cycle(rig.command(RunFundCycle))
        [rejected] = [e for e in rig.funds_out.published if isinstance(e, FundCommandRejected)]
        assert rejected.reason.startswith("the fund needs adjustment: ETH")
    finally:
        await db.close()


async def test_redelivered_commands_and_run_ends_change_nothing(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    command = rig.command(RunFundCycle)
    await rig.funds.on_cycle(command)
    [plan] = await rig.pending_plans()
    await rig.funds.on_cycle(command)  # redelivered before the run: the same plan again, dropped by the bus
    assert await rig.pending_plans() == []
    await rig.execute(plan)
    ledger, published = await rig.ledger(), len(rig.funds_out.published)
    # The run's end and the command delivered again: the same events (dropped), the same ledger.
    for event in rig.executor_out.published:
        if isinstance(event, RunFinished):
            await rig.funds.on_run_finished(event)
        if isinstance(event, OrderFilled):
            await rig.funds.on_fill(event)
    await rig.funds.on_cycle(command)
    assert len(rig.funds_out.published) == published and await rig.ledger() == ledger
    assert [e.type for e in rig.funds_out.published].count("FundCycleSettled") == 1
    await rig.consistent()


def account_snapshot(
    key: str, hours: int, btc: str, eth: str, usdt: str, btc_price: str
) -> BalanceSnapshotTaken:
    """The tracker's snapshot of the fund's account, `hours` after T0 (after the earlier cycles ended)."""
    leaves = [
        {"name": "btc", "asset": "BTC", "amount": btc},
        {"name": "eth", "asset": "ETH", "amount": eth},
        {"name": "usdt", "asset": "USDT", "amount": usdt},
    ]
    account = {"name": "main", "kind": "account", "quote": "USDT", "children": leaves}
    tree = {
        "name": FUND,
        "kind": "user",
        "children": [{"name": "paper", "kind": "exchange", "children": [account]}],
    }
    prices = {"quote": "USDT", "prices": {"BTC": btc_price, "ETH": "3000", "SOL": "150"}}
    return new_event(
        BalanceSnapshotTaken,
        key=key,
        now=T0 + timedelta(hours=hours),
        portfolio_id=FUND,
        tree=tree,
        prices=prices,
        markets=MARKETS,
    )


async def test_a_split_freezes_the_asset_until_the_positions_reflect_it(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    await rig.deposit("bob", "3000")
    await rig.cycle()
    held = await rig.consistent()
    btc, eth, usdt = (str(held[a]) for a in ("BTC", "ETH", "USDT"))
    history = rig.funds.history
    assert isinstance(history, FakeHistory)
    # BTC's price halves but the account still shows the old quantity: BTC is frozen, ETH still trades.
    history.events.append(account_snapshot("s2", 1, btc, eth, usdt, "30000"))
    await rig.deposit("carol", "500")
    before = len(rig.fills())
    await rig.cycle()
    assert [(symbol, side) for symbol, side, _, _ in rig.fills()[before:]] == [("ETH/USDT", "buy")]
    planned = [e for e in rig.funds_out.published if isinstance(e, FundCyclePlanned)][-2:]
    assert planned[0].skipped == ("BTC buy 0: frozen",)
    assert (await rig.ledger())["carol"].get("BTC", D(0)) == 0  # BTC's share of her deposit stays cash
    alice_btc = (await rig.ledger())["alice"]["BTC"]
    # The account now shows twice the BTC at the halved price: the split is applied to every user, exactly.
    history.events.append(account_snapshot("s3", 2, str(D(btc) * 2), eth, usdt, "30000"))
    await rig.cycle()
    after = await rig.ledger()
    assert after["alice"]["BTC"] == alice_btc * 2 == D("0.016565")
    assert after["bob"]["BTC"] == D("0.049695")
    assert sum(user.get("BTC", D(0)) for user in after.values()) == D(btc) * 2


async def test_a_net_sell_never_asks_for_more_than_the_account_holds(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    await rig.deposit("bob", "3000")
    await rig.cycle()
    held = await rig.consistent()
    # Someone took 10% of the BTC off the account: the snapshot after the cycle shows 0.029817 of 0.03313.
    btc = (held["BTC"] * D("0.9")).quantize(D("0.00001"))
    history = rig.funds.history
    assert isinstance(history, FakeHistory)
    history.events.append(account_snapshot("s2", 1, str(btc), str(held["ETH"]), str(held["USDT"]), "60000"))
    for user in ("alice", "bob"):
        await rig.funds.on_withdraw(rig.command(RequestWithdrawal, user_id=user, amount=None, reference=user))
    before = len(rig.fills())
    settled = await rig.cycle()
    sold = [(symbol, side, amount) for symbol, side, amount, _ in rig.fills()[before:]]
    assert sold == [("BTC/USDT", "sell", btc), ("ETH/USDT", "sell", held["ETH"])]
    planned = [e for e in rig.funds_out.published if isinstance(e, FundCyclePlanned)][-2]
    assert planned.skipped == ("BTC sell 0.00331: exceeds_free_balance",)
    # What could not be sold stays on the users' ledgers (their part of the missing BTC), never paid out.
    after = await rig.ledger()
    assert sum(user["BTC"] for user in after.values()) == held["BTC"] - btc
    assert set(settled.paid) == {"alice", "bob"}


async def test_a_withdrawal_pays_what_the_executor_really_sold_and_the_cycle_reports_why(rig: Rig) -> None:
    await rig.deposit("alice", "1000")
    await rig.cycle()
    held = await rig.consistent()
    # After the last snapshot, half of the BTC leaves the account: the planner still plans to sell all of it,
    # the executor sells only what is free.
    await rig.book("BTC", -held["BTC"] / 2)
    await rig.funds.on_withdraw(rig.command(RequestWithdrawal, user_id="alice", amount=None, reference="all"))
    before = len(rig.fills())
    settled = await rig.cycle()
    # 0.00414 BTC at 60000 and 0.0994 ETH at 3000, less the 0.1% fees, plus the 204.205 cash: 750.2584 is
    # paid, exactly what was sold; the BTC the planner counted on but the executor could not sell stays on
    # Alice's ledger, not paid.
    assert rig.fills()[before:] == [
        ("BTC/USDT", "sell", D("0.00414"), D("0.2484")),
        ("ETH/USDT", "sell", D("0.0994"), D("0.2982")),
    ]
    assert (settled.paid, settled.short) == ({"alice": D("750.2584")}, {})
    assert await rig.ledger() == {"alice": {"BTC": D("0.00414"), "ETH": D(0), "USDT": D(0)}}
    # The executor's reason is in the fund cycle's report (GET /funds/{fund} shows it).
    report = json.loads(
        await rig.pool.fetchval("SELECT report FROM fund_cycles WHERE cycle_id = $1", settled.cycle_id)
    )
    assert report["paid"] == {"alice": "750.25840000"}
    assert report["reasons"] == ["leg 0 BTC/USDT sell reduced from 0.00828 to 0.00414: 0.00414 BTC free"]

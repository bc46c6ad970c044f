"""A fund cycle over a real nats-server: the planner's fund part and the executor as they run in their
services (durable consumers, the executor's journal and worker), the paper exchange in Postgres. Two
deposits are netted into one buy per asset; the settled cycle leaves the users' ledgers equal to the paper
account."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker

from rebal import bus, service
from rebal.events import (
    DefineFund,
    FundCycleSettled,
    FundDeposited,
    RecordDeposit,
    RunFundCycle,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_executor.app import Runtime
from rebal_executor.handlers import register as register_executor
from rebal_executor.settings import ExecutorSettings
from rebal_planner import funds
from tests.funds.test_flow import ACCOUNT, FUND, snapshot
from tests.messaging import eventually, started
from tests.paper_support import MARKETS, PRICES, STILL, T0

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
D = Decimal


async def test_a_cycle_over_the_bus_nets_two_deposits_and_settles_exactly(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    (tmp_path / "markets.json").write_text(json.dumps(MARKETS))
    (tmp_path / "prices.json").write_text(json.dumps(PRICES))
    settings = ExecutorSettings(
        live=True,
        nats={"url": nats_url},
        database={"url": database.dsn},
        paper={"markets_file": tmp_path / "markets.json", "prices_file": tmp_path / "prices.json", **STILL},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 3))
    register_executor(broker, publisher, runtime.on_plan)
    fund_part = funds.FundService(service.Database(database.dsn, 3), bus.StreamHistory(broker), publisher)
    funds.register(broker, publisher, fund_part)
    seen: list[dict[str, Any]] = []

    @broker.subscriber(f"rebal.evt.*.*.v1.{FUND}", stream=bus.EVENTS.jstream())
    async def keep(body: dict[str, Any]) -> None:
        seen.append(body)

    def of(kind: str) -> list[dict[str, Any]]:
        return [e for e in seen if e["type"] == kind]

    await fund_part.start()
    await runtime.start()
    pool = fund_part.pool
    try:
        async with started(broker):
            await publisher.publish(snapshot())
            await publisher.publish(
                new_event(
                    DefineFund,
                    key="d",
                    now=T0,
                    portfolio_id=FUND,
                    exchange="paper",
                    account=ACCOUNT,
                    quote="USDT",
                    weights={"BTC": D("0.5"), "ETH": D("0.3"), "USDT": D("0.2")},
                    prices_from=FUND,
                )
            )
            await eventually(lambda: of("FundDefined"))
            await pool.execute(
                "INSERT INTO paper.balances (exchange, account, asset, amount)"
                " VALUES ('paper', $1, 'USDT', 4000)",
                ACCOUNT,
            )
            for user, amount in (("alice", D(1000)), ("bob", D(3000))):
                await publisher.publish(
                    new_event(
                        RecordDeposit,
                        key=user,
                        now=T0,
                        portfolio_id=FUND,
                        user_id=user,
                        amount=amount,
                        reference=user,
                    )
                )
            await eventually(lambda: len(of(FundDeposited.__name__)) == 2)
            await publisher.publish(new_event(RunFundCycle, key="c1", now=T0, portfolio_id=FUND))
            settled = await eventually(lambda: of(FundCycleSettled.__name__), timeout=60)
        assert D(settled[0]["fees"]) == D("3.1806") and settled[0]["paid"] == {}
        fills = [(e["symbol"], e["side"], D(e["amount"])) for e in of("OrderFilled")]
        assert fills == [("BTC/USDT", "buy", D("0.03313")), ("ETH/USDT", "buy", D("0.3976"))]
        rows = await pool.fetch("SELECT asset, sum(amount) AS total FROM fund_ledger GROUP BY asset")
        venue = await pool.fetch("SELECT asset, amount FROM paper.balances WHERE account = $1", ACCOUNT)
        assert {r["asset"]: r["total"] for r in rows} == {r["asset"]: r["amount"] for r in venue}
        alice = await pool.fetchval(
            "SELECT amount FROM fund_ledger WHERE user_id = 'alice' AND asset = 'BTC'"
        )
        assert alice == D("0.0082825")
    finally:
        await runtime.stop()
        await fund_part.database.close()

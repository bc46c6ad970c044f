"""`rebal fund ...` as an operator runs it, against the fund endpoints (`rebal_monitor.api.funds`) served by
uvicorn, with the planner's fund part recording the commands in a real Postgres. The commands reach the
fund part in-process (`Commands`, standing in for the bus); exact amounts, exit codes and messages."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from rebal import service
from rebal.events import DefineFund, Event, RecordDeposit, RequestWithdrawal, RunFundCycle
from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.api import Deps, create_api
from rebal_monitor.settings import ApiSettings
from rebal_planner.funds import FundService
from tests.fakes import FakeHistory, RecordingPublisher
from tests.funds.test_flow import snapshot
from tests.monitor.running import TOKEN, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")
REBAL = Path(sys.executable).parent / "rebal"
D = Decimal


@dataclass
class Commands:
    """The bus as far as the fund part is concerned: each command is handled as the planner would."""

    funds: FundService

    async def publish(self, event: Event) -> bool:
        handlers: dict[type[Event], Any] = {
            DefineFund: self.funds.on_define,
            RecordDeposit: self.funds.on_deposit,
            RequestWithdrawal: self.funds.on_withdraw,
            RunFundCycle: self.funds.on_cycle,
        }
        await handlers[type(event)](event)
        return True


@dataclass
class Served:
    url: str
    pool: asyncpg.Pool
    out: RecordingPublisher


@pytest.fixture
async def served(pool: asyncpg.Pool, database: FreshDatabase) -> AsyncIterator[Served]:
    db = service.Database(database.dsn, 3)
    await db.open()
    out = RecordingPublisher()
    funds = FundService(db, FakeHistory([snapshot()]), out)
    deps = Deps(
        pool=lambda: pool,
        publisher=Commands(funds),
        settings=ApiSettings(token=TOKEN),
        portfolios=("demo",),
        checks={},
    )
    api = create_api(deps)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", pool, out)
    finally:
        server.should_exit = True
        await task
        await db.close()


async def rebal(served: Served, *args: str) -> tuple[int, str, str]:
    """`rebal ARGS` in this process (a thread, so the API keeps serving): exit code, stdout, stderr."""
    env = {"REBAL__API__URL": served.url, "REBAL__API__TOKEN": TOKEN, "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


async def installed_rebal(served: Served, *args: str) -> tuple[int, str, str]:
    """The installed `rebal` as a process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBAL")} | {"REBAL_CONTEXT": "none"}
    env.update({"REBAL__API__URL": served.url, "REBAL__API__TOKEN": TOKEN, "COLUMNS": "200"})
    process = await asyncio.create_subprocess_exec(
        str(REBAL), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_deposit_withdraw_and_show_from_the_command_line(served: Served) -> None:
    code, _, err = await rebal(
        served, "fund", "define", "fund1", "--exchange", "paper", "--account", "fund1/paper/main",
        "--quote", "USDT", "--weights", "BTC=0.5,ETH=0.3,USDT=0.2", "--prices-from", "fund1",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await rebal(
        served, "fund", "deposit", "fund1", "alice", "1000.5", "--reference", "t-1", "--json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert (
        answer["recorded"] and answer["flow"]["status"] == "pending" and answer["flow"]["amount"] == "1000.5"
    )
    # The same transfer recorded again is credited once.
    code, _, _ = await rebal(served, "fund", "deposit", "fund1", "alice", "1000.5", "--reference", "t-1")
    assert code == 0
    # The same arguments as options.
    code, _, err = await rebal(
        served, "fund", "deposit", "--fund", "fund1", "--user", "bob", "--amount", "250", "--reference", "t-2"
    )
    assert code == 0, err
    code, out, err = await rebal(
        served, "fund", "withdraw", "fund1", "--user", "bob", "--amount", "100", "--json"
    )
    assert code == 0 and json.loads(out)["flow"]["kind"] == "withdrawal", err
    # The tracker's latest snapshot of the account holds 0.3 ETH no user owns (a manual trade, say).
    tree = {
        "name": "fund1",
        "children": [
            {
                "name": "paper",
                "children": [
                    {
                        "name": "main",
                        "children": [
                            {"name": "usdt", "asset": "USDT", "amount": "1250.5"},
                            {"name": "eth", "asset": "ETH", "amount": "0.3"},
                        ],
                    }
                ],
            }
        ],
    }
    await served.pool.execute(
        "INSERT INTO events (event_id, type, subject, portfolio_id, occurred_at, emitted_at, payload)"
        " VALUES (gen_random_uuid(), 'BalanceSnapshotTaken', 's', 'fund1', now(), now(), $1::jsonb)",
        json.dumps({
            "tree": tree,
            "prices": {"quote": "USDT", "prices": {"BTC": "60000", "ETH": "3000"}},
            "markets": {"paper": {"ETH/USDT": {"amount_step": "0.0001"}, "BTC/USDT": {}}},
        }),
    )  # fmt: skip
    code, out, _ = await rebal(served, "fund", "show", "--fund", "fund1", "--json")
    shown = json.loads(out)
    check = shown["reconciliation"]
    assert check["venue"] == {"ETH": "0.3", "USDT": "1250.5"}
    assert check["unattributed"] == {"ETH": "0.3"} and check["missing"] == {}
    # All cash so far: 80% above the cash weight, BTC and ETH all of theirs below; nobody holds dust.
    assert shown["drift"] == {"USDT": "0.8", "BTC": "-0.5", "ETH": "-0.3"} and shown["dust"] == {}
    assert shown["users"] == {"alice": {"USDT": "1000.5"}, "bob": {"USDT": "250"}}
    assert shown["totals"] == {"USDT": "1250.5"} and shown["status"] == "active"
    assert [(f["user_id"], f["kind"], f["amount"]) for f in shown["flows"]] == [
        ("alice", "deposit", "1000.5"),
        ("bob", "deposit", "250"),
        ("bob", "withdrawal", "100"),
    ]
    code, out, _ = await rebal(served, "fund", "show", "fund1", "--user", "bob")
    assert code == 0 and "bob" in out and "alice" not in out and "total" in out


async def test_bad_input_and_unknown_names_exit_2_with_one_line(served: Served) -> None:
    await rebal(
        served, "fund", "define", "fund1", "--exchange", "paper", "--account", "a", "--quote", "USDT",
        "--weights", "BTC=1", "--prices-from", "fund1",
    )  # fmt: skip
    cases = [
        (("fund", "deposit", "fund1", "alice", "ten"), "AMOUNT: 'ten' is not a decimal amount > 0"),
        (("fund", "deposit", "fund1", "alice", "0.000000001"), "'0.000000001' has more than 8 decimal"),
        (("fund", "deposit", "no fund", "alice", "1"), "FUND: 'no fund' must be 1-64 letters"),
        (("fund", "deposit", "fund2", "alice", "1"), "no fund 'fund2'"),
        (("fund", "withdraw", "fund1", "carol", "5"), "'carol' holds nothing in fund 'fund1'"),
        (("fund", "withdraw", "fund1", "carol"), "AMOUNT: give an amount or --all (not both)"),
        (("fund", "show", "fund2"), "no fund 'fund2'"),
        (("fund", "deposit", "--fund", "fund1", "--user", "alice"), "AMOUNT: missing (give it as AMOUNT or"),
        (("fund", "deposit", "fund1", "alice", "1", "--amount", "2"), "AMOUNT: given as '1' and as --amount"),
        (("fund", "show"), "FUND: missing"),
        (("fund", "define", "f", "--exchange", "x", "--account", "a", "--quote", "USDT",
          "--weights", "BTC=0.5", "--prices-from", "demo"), "--weights: they sum to 0.5, not 1"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = await rebal(served, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    # The API names the field of a bad body.
    async with httpx.AsyncClient(base_url=served.url, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        bad = await client.post("/funds/fund1/deposits", json={"user_id": "alice", "amount": "abc"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("body.amount:")
        refused = await client.get("/funds/fund1", headers={"authorization": "Bearer wrong"})
        assert refused.status_code == 401
    assert await served.pool.fetchval("SELECT count(*) FROM fund_flows") == 0


async def test_the_monitor_serves_the_fund_endpoints(nats_url: str, database: FreshDatabase) -> None:
    from tests.monitor.running import monitor_settings, running_monitor

    async with running_monitor(monitor_settings(nats_url, database.dsn)) as monitor:
        unknown = await monitor.client.get("/funds/nope")
        assert unknown.status_code == 404 and unknown.json() == {"detail": "no fund 'nope'"}
        anonymous = await monitor.client.get("/funds/nope", headers={"authorization": ""})
        assert anonymous.status_code == 401


async def test_a_withdrawal_beyond_what_the_user_holds_is_refused_up_front(served: Served) -> None:
    """It was accepted, then dropped at the next cycle with the reason only in the planner's log."""
    await rebal(
        served, "fund", "define", "fund1", "--exchange", "paper", "--account", "fund1/paper/main",
        "--quote", "USDT", "--weights", "BTC=0.5,USDT=0.5", "--prices-from", "fund1",
    )  # fmt: skip
    await rebal(served, "fund", "deposit", "fund1", "alice", "250")
    await served.pool.execute(
        "INSERT INTO events (event_id, type, subject, portfolio_id, occurred_at, emitted_at, payload)"
        " VALUES (gen_random_uuid(), 'BalanceSnapshotTaken', 's', 'fund1', now(), now(), $1::jsonb)",
        json.dumps({"tree": {"name": "fund1"}, "prices": {"quote": "USDT", "prices": {"BTC": "60000"}}}),
    )
    code, _, err = await rebal(served, "fund", "withdraw", "fund1", "alice", "100000")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert (
        "'alice' holds 250.00 USDT in fund 'fund1' at the latest prices;"
        " a withdrawal of 100000 USDT cannot be paid" in lines[0]
    )
    code, _, err = await rebal(served, "fund", "withdraw", "fund1", "alice", "100")
    assert code == 0, err
    kinds = await served.pool.fetch("SELECT kind, amount FROM fund_flows ORDER BY created_at")
    assert [(r["kind"], r["amount"]) for r in kinds] == [("deposit", D(250)), ("withdrawal", D(100))]

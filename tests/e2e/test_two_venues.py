"""Where to trade, end to end: two paper venues with their own prices, the five services as processes on a
real NATS and Postgres. The target holds half of the BTC anywhere (a pool); coinbase bids 0.5% above
binance, so the planner (with its network file) moves binance's BTC to coinbase and sells it there after
the transfer. The executor withdraws once and sells once, even when it is killed while the transfer is on
its way; a destination off the withdrawal allowlist refuses the run before any leg.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from rebal.events import RebalancePlanned, RunFinished
from rebal_cli import commands
from rebal_devstack.pytest_plugin import FreshDatabase
from tests.e2e.conftest import TEST_SETTINGS, System, running_system
from tests.e2e.flow import PORTFOLIO, fetch, ready_for_commands, take_snapshot

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
D = Decimal
BINANCE, COINBASE = "demo/binance/spot", "demo/coinbase/spot"


def account(exchange: str, btc: str) -> dict[str, object]:
    return {
        "name": exchange,
        "kind": "exchange",
        "children": [
            {
                "name": "spot",
                "kind": "account",
                "quote": "USDT",
                "children": [{"name": "btc", "asset": "BTC", "amount": btc}],
            }
        ],
    }


LAYOUT = {
    "name": PORTFOLIO,
    "kind": "user",
    "children": [account("binance", "1.5"), account("coinbase", "0.5")],
}
TARGET = {"name": PORTFOLIO, "pool": {"BTC": "50%", "USDT": "50%"}}
MARKET = {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"}
MARKETS = {"binance": {"BTC/USDT": MARKET}, "coinbase": {"BTC/USDT": MARKET}}
PRICES = {"quote": "USDT", "prices": {"BTC": "60000", "USDT": "1"}}
# binance at the reference, coinbase 0.5% dearer; 4 bp spreads: bids 59988 and 60287.94.
VENUES = {"binance": {"spread_bps": "4"}, "coinbase": {"price_factor": "1.005", "spread_bps": "4"}}
NETWORK = {
    "withdrawals": {"binance": {"BTC": {"fee": "0.0002", "min_amount": "0.001"}}},
    "deposits": {"coinbase": {"BTC": {"enabled": True}}},
}


def allowlisted(to_account: str) -> str:
    entry = {
        "exchange": "coinbase",
        "asset": "BTC",
        "network": "internal",
        "address": f"paper:coinbase:{to_account}",
    }
    return json.dumps([entry])


@pytest.fixture
def two_venues(database: FreshDatabase, tmp_path: Path) -> Iterator[System]:
    files = {"real": LAYOUT, "target": TARGET, "markets": MARKETS, "prices": PRICES, "network": NETWORK}
    for name, document in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    paper = {
        "REBAL__PAPER__MARKETS_FILE": str(tmp_path / "markets.json"),
        "REBAL__PAPER__PRICES_FILE": str(tmp_path / "prices.json"),
        "REBAL__PAPER__VENUES": json.dumps(VENUES),
        "REBAL__PAPER__WITHDRAW_FEES": json.dumps({"BTC": "0.0002"}),
        "REBAL__PAPER__TRANSFER_DELAY_SECONDS": "4",
    }
    env = {name: dict(values) for name, values in TEST_SETTINGS.items()}
    env["tracker"].update(paper, REBAL__TRACKING__LAYOUT_FILE=str(tmp_path / "real.json"))
    env["optimizer"]["REBAL__TARGETS__FILES"] = json.dumps({PORTFOLIO: str(tmp_path / "target.json")})
    env["planner"] = {**env["planner"], "REBAL__PLANNING__NETWORK_FILE": str(tmp_path / "network.json")}
    # Another account's deposit address is the only one allowed at first.
    env["executor"].update(
        paper,
        REBAL__TRANSFERS="true",
        REBAL__WITHDRAWAL_ALLOWLIST=allowlisted("demo/coinbase/savings"),
        REBAL__EXECUTION__TRANSFER_POLL_SECONDS="0.5",
    )
    yield from running_system(database, tmp_path, env)


async def live_run(system: System) -> tuple[RebalancePlanned, RunFinished]:
    outcome = await commands.rebalance(
        system.nats_url, PORTFOLIO, dry_run=False, band=D(0), wait=True, timeout=90.0
    )
    assert isinstance(outcome.plan, RebalancePlanned), outcome
    assert outcome.finished is not None, outcome
    return outcome.plan, outcome.finished


async def withdrawn(system: System, timeout: float = 60.0) -> None:
    """Wait until the withdrawal is written at the paper exchange (it is credited 4 s later)."""
    async with asyncio.timeout(timeout):
        while await count(system, "transfers") == 0:
            await asyncio.sleep(0.05)


async def count(system: System, table: str) -> int:
    [row] = await fetch(system.dsn, f"SELECT count(*) AS n FROM paper.{table}")
    return int(row["n"])


async def test_btc_is_moved_to_the_better_venue_and_sold_there_once(two_venues: System) -> None:
    system = two_venues
    _, snapshot = await ready_for_commands(system.nats_url)
    # The tracker shows each venue's own bid and ask.
    assert snapshot.prices["venues"] == {
        "binance": {"BTC": {"bid": "59988", "ask": "60012"}},
        "coinbase": {"BTC": {"bid": "60287.94", "ask": "60312.06"}},
    }

    # Off the allowlist: refused before any leg, nothing sold, nothing withdrawn.
    plan, refused = await live_run(system)
    assert (refused.status, refused.placed) == ("cancelled", 0)
    assert refused.reasons == (
        "transfer of 0.5 BTC from demo/binance/spot to demo/coinbase/spot pre-check failed (not on the "
        "withdrawal allowlist: coinbase BTC internal paper:coinbase:demo/coinbase/spot): the run was not "
        "started (no leg was placed)",
    )
    assert (await count(system, "orders"), await count(system, "transfers")) == (0, 0)

    # The planner's plan: coinbase's bid net of fees beats binance's, and moving 0.5 BTC (fee 0.0002)
    # costs less than selling it at binance: the 0.9998 BTC coinbase then holds is sold there, after it.
    [sell] = plan.orders
    assert (sell.account, sell.exchange, sell.side, sell.amount, sell.est_price, sell.after_transfer) == (
        COINBASE,
        "coinbase",
        "sell",
        D("0.9998"),
        D("60287.94"),
        0,
    )
    [move] = plan.transfers
    assert (move.asset, move.from_account, move.to_account, move.amount, move.fee) == (
        "BTC",
        BINANCE,
        COINBASE,
        D("0.5"),
        D("0.0002"),
    )

    # The destination allowlisted: the executor restarted with it, a fresh snapshot, a live run. The
    # executor is killed while the withdrawal is on its way and restarted: it resumes from its journal.
    executor = system.services["executor"]
    executor.stop()
    executor.env = {**executor.env, "REBAL__WITHDRAWAL_ALLOWLIST": allowlisted(COINBASE)}
    executor.start()
    await asyncio.to_thread(executor.wait_ready)
    await take_snapshot(system.nats_url)
    run = asyncio.create_task(live_run(system))
    await withdrawn(system)
    executor.kill()
    executor.start()
    await asyncio.to_thread(executor.wait_ready)
    plan, finished = await run

    assert (finished.status, finished.placed, finished.filled, finished.failed) == ("completed", 2, 2, 0)
    assert [o.after_transfer for o in plan.orders] == [0]
    # Exactly once: one withdrawal, one sell, at coinbase's bid.
    transfers = await fetch(
        system.dsn,
        "SELECT exchange, account, to_exchange, to_account, asset, amount, fee FROM paper.transfers",
    )
    assert [tuple(row.values()) for row in transfers] == [
        ("binance", BINANCE, "coinbase", COINBASE, "BTC", D("0.5"), D("0.0002"))
    ]
    orders = await fetch(
        system.dsn, "SELECT exchange, account, symbol, side, amount, status FROM paper.orders"
    )
    assert [tuple(row.values()) for row in orders] == [
        ("coinbase", COINBASE, "BTC/USDT", "sell", D("0.9998"), "filled")
    ]
    [fill] = await fetch(system.dsn, "SELECT price FROM paper.fills")
    assert fill["price"] == D("60287.94")
    balances = await fetch(
        system.dsn, "SELECT exchange, asset, amount FROM paper.balances WHERE amount <> 0 ORDER BY 1, 2"
    )
    # 0.9998 x 60287.94 = 60275.882412, less the 0.1% fee (60.27588242, rounded up to 1e-8).
    assert [tuple(row.values()) for row in balances] == [
        ("binance", "BTC", D("1.0")),
        ("coinbase", "USDT", D("60215.60652958")),
    ]

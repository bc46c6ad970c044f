"""The operators' REST API on the real monitor (uvicorn, real NATS and Postgres) with the real planner."""

from __future__ import annotations

import asyncio
import csv
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from faststream.nats import NatsBroker
from pydantic import ValidationError

from rebal import bus
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    Optimization,
    OrderFilled,
    OrderPlaced,
    PlannedOrder,
    RebalancePlanned,
    RunFinished,
    TargetWeightsComputed,
    derive_id,
    new_event,
)
from rebal.service import Database
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.journal import record_many
from rebal_monitor.monitor import Monitor
from rebal_monitor.settings import MonitorSettings, token_problem
from tests.messaging import eventually
from tests.monitor.running import TOKEN, free_port, monitor_settings, running_monitor, running_planner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / f"{name}.json").read_text()))


def snapshot(
    key: str, prices: dict[str, str] | None = None, when: datetime = NOW, venues: dict[str, Any] | None = None
) -> BalanceSnapshotTaken:
    price_doc = load("prices")
    price_doc["prices"].update(prices or {})
    if venues is not None:
        price_doc["venues"] = venues
    return new_event(
        BalanceSnapshotTaken,
        key=key,
        now=when,
        portfolio_id="demo",
        tree=load("real"),
        prices=price_doc,
        markets=load("markets"),
    )


def target(key: str = "v1") -> TargetWeightsComputed:
    return new_event(TargetWeightsComputed, key=key, now=NOW, portfolio_id="demo", tree=load("target"))


async def publish(nats_url: str, *events: Event) -> None:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        await bus.declare_streams(broker)
        publisher = bus.Publisher(broker)
        for event in events:
            await publisher.publish(event)
    finally:
        await broker.stop()


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T:
    """Await `check()` until it gives something (the journal catches up with the bus)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing after {timeout} s: {check}")
        await asyncio.sleep(0.05)


async def journaled(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET until it is no longer a 404."""

    async def ready() -> httpx.Response | None:
        response = await client.get(path)
        return None if response.status_code == 404 else response

    return await until(ready)


async def test_preview_then_approve_runs_exactly_that_plan_once(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn)
    async with running_planner(nats_url, database.dsn), running_monitor(settings) as monitor:
        client = monitor.client
        await publish(nats_url, snapshot("tick-1"), target())
        weights = (await journaled(client, "/portfolio/weights")).json()
        nodes = {node["path"]: node for node in weights["nodes"]}
        # 0.8 BTC at 60000 + 5 ETH at 3000 + 100 SOL at 150 = 78000 crypto, 22000 USDT cash.
        assert weights["total_value"] == "100000"
        assert (nodes["demo/paper"]["actual_weight"], nodes["demo/paper"]["target_weight"]) == ("1", "1")
        assert (
            nodes["demo/paper/spot/crypto"]["actual_share"],
            nodes["demo/paper/spot/crypto"]["target_share"],
        ) == (
            "0.78",
            "0.7",
        )
        assert nodes["demo/paper/spot/cash"]["actual_weight"] == "0.22"

        response = await client.post("/portfolio/rebalance", json={"band": "0.001"})
        assert response.status_code == 201, response.text
        plan = response.json()
        assert plan["status"] == "preview" and plan["dry_run"] is True and plan["approved_at"] is None
        assert plan["inputs"]["prices"]["prices"]["BTC"] == "60000"
        # BTC 48000 -> 35000 and SOL 15000 -> 14000 are sold, ETH 15000 -> 21000 bought.
        sides = [(o["symbol"], o["side"], o["phase"]) for o in plan["orders"]]
        assert sorted(sides) == [("BTC/USDT", "sell", 1), ("ETH/USDT", "buy", 2), ("SOL/USDT", "sell", 1)]
        sold = sum(Decimal(o["est_cost"]) for o in plan["orders"] if o["side"] == "sell")
        bought = sum(Decimal(o["est_cost"]) for o in plan["orders"] if o["side"] == "buy")
        assert abs((sold - bought) - Decimal(8000)) < Decimal(10)  # crypto shrinks by 8000 USDT
        projected = {row["path"]: row for row in plan["projected_weights"]}
        assert projected["demo/paper/spot/crypto"]["projected_weight"] == "0.7"
        created = datetime.fromisoformat(plan["created_at"])
        assert datetime.fromisoformat(plan["expires_at"]) - created == timedelta(seconds=300)

        assert plan["costs"] is None  # one price per asset: not a where-mode plan
        assert (await client.get(f"/portfolio/plans/{plan['plan_id']}")).json() == plan
        listed = (await client.get("/portfolio/plans")).json()
        assert [p["plan_id"] for p in listed["plans"]] == [plan["plan_id"]] and listed["next_cursor"] is None

        first = await client.post(f"/portfolio/plans/{plan['plan_id']}/approve")
        second = await client.post(f"/portfolio/plans/{plan['plan_id']}/approve")
        assert first.status_code == second.status_code == 200, first.text
        assert first.json()["status"] == "approved" and first.json() == second.json()
        approval_run = first.json()["approval_run_id"]

        async def approved_runs() -> list[dict[str, Any]] | None:
            page = (await client.get("/portfolio/history", params={"include_previews": "false"})).json()
            return [run for run in page["runs"] if run["run_id"] == approval_run] or None

        runs = await until(approved_runs)
        assert len(runs) == 1 and runs[0]["dry_run"] is False
        assert runs[0]["counts"]["orders"] == len(plan["orders"])
        assert runs[0]["plan_id"] == str(derive_id("RebalancePlanned", "approved", plan["plan_id"]))

        status = (await client.get("/status")).json()
        assert status["halted"] is False and status["mode"] == "dry-run" and status["live"] is False
        assert status["nats"] == "ok" and status["postgres"] == "ok"

        exported = await client.get("/export/plans", params={"format": "csv"})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert exported.headers["content-type"].startswith("text/csv")
        assert [(r["plan_id"], r["symbol"], r["amount"]) for r in rows] == [
            (plan["plan_id"], o["symbol"], o["amount"]) for o in plan["orders"]
        ]
        assert rows[0]["status"] == "approved"


async def test_a_plan_priced_per_venue_is_stored_with_its_estimated_costs(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn)
    quotes = {"BTC": ("59970", "60030"), "ETH": ("2998.5", "3001.5"), "SOL": ("149.925", "150.075")}
    venues = {"paper": {asset: {"bid": bid, "ask": ask} for asset, (bid, ask) in quotes.items()}}
    priced = snapshot("tick-venues", venues=venues)
    async with running_planner(nats_url, database.dsn), running_monitor(settings) as monitor:
        client = monitor.client
        await publish(nats_url, priced, target())
        await journaled(client, "/portfolio/weights")
        response = await client.post("/portfolio/rebalance", json={"band": "0.001"})
        assert response.status_code == 201, response.text
        plan = response.json()
        costs = plan["costs"]
        assert list(costs) == ["fees", "spread", "withdrawal_fees", "total"]
        # Every order 5 bps from the reference price: the spread is 0.0005 of what is traded.
        traded = sum(Decimal(o["est_cost"]) for o in plan["orders"])
        assert abs(Decimal(costs["spread"]) - traded * Decimal("0.0005")) < Decimal("0.5"), (costs, traded)
        fees = sum(Decimal(o["est_fee"]) for o in plan["orders"])
        assert abs(Decimal(costs["fees"]) - fees) < Decimal("0.01"), (costs, fees)
        assert costs["withdrawal_fees"] == "0"
        assert Decimal(costs["total"]) == Decimal(costs["fees"]) + Decimal(costs["spread"])
        assert (await client.get(f"/portfolio/plans/{plan['plan_id']}")).json() == plan


async def test_approval_is_refused_when_prices_moved_or_the_plan_expired(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, plan_ttl_seconds=0.5)
    async with running_planner(nats_url, database.dsn), running_monitor(settings) as monitor:
        client = monitor.client
        await publish(nats_url, snapshot("tick-1"), target())
        await journaled(client, "/portfolio/weights")
        # No body at all: every field has a default (a dry-run preview of the first portfolio).
        no_body = await client.post("/portfolio/rebalance")
        assert no_body.status_code == 201, no_body.text
        stale = no_body.json()
        assert stale["dry_run"] is True and stale["status"] == "preview"
        # BTC falls 5% (beyond the 1% tolerance) in the next snapshot.
        await publish(nats_url, snapshot("tick-2", {"BTC": "57000"}, NOW + timedelta(seconds=10)))

        async def moved() -> bool | None:
            return (await client.get("/portfolio/weights")).json()["total_value"] != "100000" or None

        await until(moved)
        refused = await client.post(f"/portfolio/plans/{stale['plan_id']}/approve")
        assert refused.status_code == 409
        assert "stale plan: prices moved more than 1.00%" in refused.json()["detail"]
        assert "BTC 60000 -> 57000 (5.00%)" in refused.json()["detail"]
        assert (await client.get(f"/portfolio/plans/{stale['plan_id']}")).json()["status"] == "preview"

        fresh = (await client.post("/portfolio/rebalance", json={})).json()
        await eventually(lambda: datetime.now(UTC) > datetime.fromisoformat(fresh["expires_at"]))
        expired = await client.post(f"/portfolio/plans/{fresh['plan_id']}/approve")
        assert expired.status_code == 409 and "expired" in expired.json()["detail"]
        assert "make a new plan" in expired.json()["detail"]


async def test_bad_requests_get_a_clear_4xx(nats_url: str, database: FreshDatabase) -> None:
    settings = monitor_settings(nats_url, database.dsn)
    async with running_monitor(settings) as monitor:
        client = monitor.client
        bare = httpx.AsyncClient(base_url=monitor.url)
        async with bare:
            assert (await bare.get("/livez")).status_code == 200
            assert (await bare.get("/readyz")).status_code == 200
            assert (await bare.get("/metrics")).status_code == 200
            missing = await bare.get("/portfolio/history")
            assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
            wrong = await bare.get("/status", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong bearer token"
            spec = await bare.get("/openapi.json")
            assert spec.status_code == 200
            # Every endpoint of the API refuses a request without the token.
            for path, operations in spec.json()["paths"].items():
                concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
                for method in operations:
                    refused = await bare.request(method.upper(), concrete)
                    assert refused.status_code == 401, (method, path, refused.status_code)

        malformed = await client.post(
            "/portfolio/rebalance", content=b'{"dry_run": tru', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422 and "malformed JSON" in malformed.json()["detail"]
        wrong_type = await client.post("/portfolio/rebalance", json={"dry_run": "yes", "band": -1})
        assert wrong_type.status_code == 422
        fields = {error["field"] for error in wrong_type.json()["errors"]}
        assert fields == {"body.dry_run", "body.band"}
        unknown_field = await client.post("/halt", json={"reason": "x", "why": "y"})
        assert unknown_field.status_code == 422 and "body.why" in unknown_field.json()["detail"]
        no_reason = await client.post("/halt", json={})
        assert no_reason.status_code == 422 and "body.reason" in no_reason.json()["detail"]

        unknown = uuid.uuid4()
        assert (await client.get(f"/portfolio/plans/{unknown}")).json() == {"detail": f"no plan {unknown}"}
        assert (await client.post(f"/portfolio/plans/{unknown}/approve")).status_code == 404
        not_uuid = await client.get("/portfolio/plans/not-a-plan")
        assert not_uuid.status_code == 422 and "path.plan_id" in not_uuid.json()["detail"]
        cursor = await client.get("/portfolio/history", params={"cursor": "garbage!"})
        assert cursor.status_code == 422 and "query.cursor" in cursor.json()["detail"]
        limit = await client.get("/portfolio/history", params={"limit": "0"})
        assert limit.status_code == 422 and "query.limit" in limit.json()["detail"]
        fmt = await client.get("/export/trades", params={"format": "xml"})
        assert fmt.status_code == 422 and "query.format" in fmt.json()["detail"]
        portfolio = await client.get("/portfolio/weights", params={"portfolio_id": "a.b"})
        assert portfolio.status_code == 422 and "query.portfolio_id" in portfolio.json()["detail"]

        nothing = await client.get("/portfolio/weights")
        assert nothing.status_code == 404 and "no balance snapshot yet" in nothing.json()["detail"]
        assert (await client.get("/portfolio/optimization")).status_code == 404
        live = await client.post("/portfolio/rebalance", json={"dry_run": False})
        assert live.status_code == 409 and "not live" in live.json()["detail"]


async def test_halt_resume_and_a_live_plan(nats_url: str, database: FreshDatabase) -> None:
    settings = monitor_settings(nats_url, database.dsn, live=True)
    async with running_planner(nats_url, database.dsn), running_monitor(settings) as monitor:
        client = monitor.client
        await publish(nats_url, snapshot("tick-1"), target())
        halted = await client.post("/halt", json={"reason": "exchange looks wrong"})
        assert halted.status_code == 202 and halted.json()["subject"] == "rebal.cmd.trading.halt.v1.demo"

        async def status(halted: bool) -> dict[str, Any] | None:
            body = dict((await client.get("/status")).json())
            return body if body["halted"] is halted else None

        shown = await until(lambda: status(True))
        assert shown["halt_reason"] == "exchange looks wrong" and shown["mode"] == "live"
        refused = await client.post("/portfolio/rebalance", json={"dry_run": False})
        assert refused.status_code == 409 and "halted" in refused.json()["detail"]
        assert (await client.post("/resume", json={})).status_code == 202
        shown = await until(lambda: status(False))
        assert shown["halt_reason"] is None
        # Live and resumed: a plan made with dry_run false executes at once; it is not approved again.
        live = await client.post("/portfolio/rebalance", json={"dry_run": False})
        assert live.status_code == 201, live.text
        assert (live.json()["status"], live.json()["dry_run"]) == ("executing", False)
        again = await client.post(f"/portfolio/plans/{live.json()['plan_id']}/approve")
        assert again.status_code == 409 and "executes already" in again.json()["detail"]


async def test_optimization_shows_the_latest_result_and_the_page_is_served(
    nats_url: str, database: FreshDatabase
) -> None:
    optimization = Optimization(
        method="risk_parity",
        parameters={"lookback_days": 90.0},
        weights={"trend": 0.25, "meanrev": 0.35, "arb": 0.4},
        realised_volatility=0.12,
        target_volatility=0.1,
        leverage=0.8333,
        account_value=Decimal("100000"),
        status="optimal",
        observations=90,
        trigger="schedule",
    )
    with_result = new_event(
        TargetWeightsComputed,
        key="v2",
        now=NOW + timedelta(minutes=1),
        portfolio_id="demo",
        tree=load("target"),
        source="optimizer",
        optimization=optimization,
    )
    settings = monitor_settings(nats_url, database.dsn)
    async with running_monitor(settings) as monitor:
        # A later target without a result (the operator's file) does not hide the optimizer's.
        file_target = new_event(
            TargetWeightsComputed, key="v3", now=NOW + timedelta(minutes=2), portfolio_id="demo",
            tree=load("target"),
        )  # fmt: skip
        await publish(nats_url, with_result, file_target)
        shown = (await journaled(monitor.client, "/portfolio/optimization")).json()
        assert shown["target_id"] == str(with_result.event_id)
        assert (shown["method"], shown["leverage"], shown["account_value"]) == (
            "risk_parity",
            0.8333,
            "100000",
        )
        assert shown["weights"] == {"trend": 0.25, "meanrev": 0.35, "arb": 0.4}
        assert (shown["realised_volatility"], shown["target_volatility"]) == (0.12, 0.1)
        async with httpx.AsyncClient(base_url=monitor.url) as bare:
            page = await bare.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def a_run(index: int, at: datetime) -> list[Event]:
    """A finished run with one order filled in one trade."""
    order = PlannedOrder(
        account="demo/paper/spot",
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=Decimal("0.01"),
        est_price=Decimal("60000"),
        est_cost=Decimal("600"),
        est_fee=Decimal("0.6"),
        phase=1,
    )
    run = derive_id("run", index)
    plan = new_event(
        RebalancePlanned,
        key=index,
        now=at,
        portfolio_id="demo",
        correlation_id=run,
        dry_run=False,
        band=Decimal(0),
        snapshot_id=run,
        target_id=run,
        total_value=Decimal(100000),
        orders=(order,),
    )
    placed = plan.caused(
        OrderPlaced,
        now=at,
        client_order_id=f"rb-{index}-0",
        account=order.account,
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=order.amount,
        phase=1,
    )
    filled = placed.caused(
        OrderFilled,
        now=at,
        client_order_id=f"rb-{index}-0",
        trade_id=f"t-{index}",
        symbol="BTC/USDT",
        side="sell",
        amount=order.amount,
        price=Decimal("60010"),
        fee=Decimal("0.6"),
        fee_asset="USDT",
    )
    finished = plan.caused(
        RunFinished,
        now=at,
        plan_id=plan.event_id,
        status="completed",
        placed=1,
        filled=1,
        skipped=0,
        failed=0,
    )
    return [plan, placed, filled, finished]


async def test_history_pages_through_every_run_once_newest_first(
    nats_url: str, database: FreshDatabase
) -> None:
    monitor = Monitor(Database(database.dsn))
    await monitor.start()
    assert monitor.database.pool is not None
    # Three runs share one planned_at: the run id breaks the tie.
    times = [NOW + timedelta(seconds=i // 3) for i in range(25)]
    await record_many(monitor.database.pool, [e for i, at in enumerate(times) for e in a_run(i, at)])
    # What the tracker stores from the bots' StrategyReturnReported events.
    await monitor.database.pool.executemany(
        "INSERT INTO strategy_returns (strategy_id, ts, period_return, portfolio_id)"
        " VALUES ($1, $2, $3, 'demo')",
        [
            (name, NOW + timedelta(days=day), Decimal(value))
            for name, values in (("trend", ["0.01", "-0.02", "0.03"]), ("arb", ["0.001", "0.002", "0.001"]))
            for day, value in enumerate(values)
        ],
    )
    await monitor.database.close()
    settings = monitor_settings(nats_url, database.dsn)
    async with running_monitor(settings) as running:
        client = running.client
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/portfolio/history", params=params)).json()
            seen += [run["run_id"] for run in page["runs"]]
            pages += 1
            for run in page["runs"]:
                assert run["status"] == "completed" and len(run["orders"]) == 1
                assert run["orders"][0]["fills"][0]["price"] == "60010"
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = sorted(((at, derive_id("run", i)) for i, at in enumerate(times)), reverse=True)
        assert pages == 3 and seen == [str(run) for _, run in expected]

        trades = await client.get("/export/trades", params={"format": "json"})
        assert len(trades.json()) == 25 and trades.json()[0]["account"] == "demo/paper/spot"

        stats = (await client.get("/portfolio/performance")).json()
        assert [s["observations"] for s in stats["strategies"]] == [3, 3]
        assert {s["source"] for s in stats["strategies"]} == {"strategy_returns"}
        by_name = {s["strategy_id"]: s for s in stats["strategies"]}
        # (1.01 * 0.98 * 1.03) - 1 = 0.019494; the fall from 1.01 to 0.9898 is a 2% drawdown.
        assert abs(by_name["trend"]["cumulative_return"] - 0.019494) < 1e-12
        assert abs(by_name["trend"]["max_drawdown"] - 0.02) < 1e-12
        assert by_name["arb"]["max_drawdown"] == 0.0 and by_name["arb"]["sortino"] is None
        # Combined: equal weights, (1.0055 * 0.991 * 1.0155) - 1.
        assert abs(stats["combined"]["cumulative_return"] - (1.0055 * 0.991 * 1.0155 - 1)) < 1e-12

        # Once the tracker has computed a strategy's statistics, they are what the API shows.
        connection = await asyncpg.connect(database.dsn)
        try:
            await connection.execute(
                "INSERT INTO strategy_stats (portfolio_id, strategy_id, window_label, computed_at,"
                " observations,"
                " cumulative_return, sharpe) VALUES ('demo', 'trend', 'inception', $1, 3, 0.0195, 1.5),"
                " ('demo', 'trend', '90d', $1, 3, 0.0195, 1.5)",
                NOW,
            )
        finally:
            await connection.close()
        stats = (await client.get("/portfolio/performance")).json()
        trend = next(s for s in stats["strategies"] if s["strategy_id"] == "trend")
        assert (trend["source"], trend["sharpe"], trend["sortino"]) == ("strategy_stats", 1.5, None)
        windowed = (await client.get("/portfolio/performance", params={"window": "90d"})).json()
        assert [s["strategy_id"] for s in windowed["strategies"]] == ["trend"]
        bad_window = await client.get("/portfolio/performance", params={"window": "forever"})
        assert bad_window.status_code == 422 and "query.window" in bad_window.json()["detail"]


def test_live_mode_refuses_to_start_without_a_long_token() -> None:
    env = {**os.environ, "REBAL__API__LIVE": "true", "REBAL__API__TOKEN": "short"}
    done = subprocess.run(
        [sys.executable, "-m", "rebal_monitor"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4
    assert (
        "api.token: live mode needs a bearer token of at least 32 characters (only 5 characters)"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert TOKEN not in done.stderr


def test_the_token_comes_from_a_secret_file_and_a_missing_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "api_token.txt"
    secret.write_text(TOKEN + "\n")
    settings = MonitorSettings(api={"token_file": str(secret), "live": True})
    assert settings.api.token is not None and settings.api.token.get_secret_value() == TOKEN
    assert token_problem(settings) is None
    assert TOKEN not in json.dumps(settings.public())
    try:
        MonitorSettings(api={"token_file": str(tmp_path / "missing.txt")})
    except ValidationError as exc:
        assert f"api.token_file {tmp_path / 'missing.txt'}: No such file or directory" in str(exc)
    else:
        raise AssertionError("a missing token file was accepted")


async def test_status_reports_each_peer_services_readiness(nats_url: str, database: FreshDatabase) -> None:
    """Real HTTP servers stand for the other services: one ready, one not, one gone."""

    class Readyz(http.server.BaseHTTPRequestHandler):
        code = 200

        def do_GET(self) -> None:
            self.send_response(self.code if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class NotReady(Readyz):
        code = 503

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), kind) for kind in (Readyz, NotReady)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ready, not_ready = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    peers = {"planner": ready, "executor": not_ready, "tracker": f"http://127.0.0.1:{free_port()}"}
    try:
        settings = monitor_settings(nats_url, database.dsn, peers=peers)
        async with running_monitor(settings) as monitor:
            status = (await monitor.client.get("/status")).json()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert status["services"] == {
        "executor": "not ready (HTTP 503)",
        "planner": "ok",
        "tracker": "unreachable (ConnectError)",
    }
    assert status["nats"] == "ok" and status["postgres"] == "ok"


async def test_without_peers_status_reports_the_monitor_alone(nats_url: str, database: FreshDatabase) -> None:
    async with running_monitor(monitor_settings(nats_url, database.dsn)) as monitor:
        status = (await monitor.client.get("/status")).json()
    assert "services" not in status

"""GET/PUT /portfolio/policy and /funds/{fund}/policy on the API (in process, real Postgres): checked,
versioned with who, when and what changed, the drift against each band and the last decision shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from rebal import db
from rebal.events import BalanceSnapshotTaken, TargetWeightsComputed, new_event
from rebal.settings import ApiSettings
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.api import Deps, create_api
from rebal_monitor.journal import record_many
from tests.autopilot import PRICES, TARGET, real
from tests.fakes import RecordingPublisher

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
TOKEN = "t" * 40


@pytest.fixture
async def api(database: FreshDatabase) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    deps = Deps(
        pool=lambda: pool,
        publisher=RecordingPublisher(),
        settings=ApiSettings(token=TOKEN),
        portfolios=("demo",),
        checks={},
        clock=lambda: NOW,
    )
    transport = httpx.ASGITransport(app=create_api(deps))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client:
        yield client, pool
    await pool.close()


async def test_a_bad_policy_is_refused_naming_the_key(api: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, _ = api
    bad = await client.put("/portfolio/policy", json={"policy": {"bands": {"a/b": {"drift_absolute": -1}}}})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "policy.bands.a/b.drift_absolute: a band cannot be negative, got -1"
    unknown = await client.put("/portfolio/policy", json={"policy": {"drift": "5%"}})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("policy.drift: unknown key")
    assert (await client.get("/portfolio/policy")).json()["version"] is None


async def test_policies_are_versioned_with_who_when_and_what_changed(
    api: tuple[httpx.AsyncClient, asyncpg.Pool],
) -> None:
    client, pool = api
    first = await client.put(
        "/portfolio/policy", json={"policy": {"drift_absolute": "5%", "mode": "auto"}, "author": "alice"}
    )
    assert first.status_code == 201
    assert (first.json()["version"], first.json()["author"]) == (1, "alice")
    second = await client.put(
        "/portfolio/policy",
        json={"policy": {"drift_absolute": 0.02, "schedule": "0 * * * *", "mode": "auto"}, "note": "tighter"},
    )
    assert second.json()["version"] == 2
    assert second.json()["changes"] == [
        {"key": "drift_absolute", "from": 0.05, "to": 0.02},
        {"key": "schedule", "from": None, "to": "0 * * * *"},
    ]
    history = (await client.get("/portfolio/policy/history")).json()["versions"]
    assert [(v["version"], v["author"], v["note"]) for v in history] == [
        (2, "operator", "tighter"),
        (1, "alice", ""),
    ]
    # With a snapshot and a target journaled: the drift against each band, nearest to its limit first.
    snapshot = new_event(
        BalanceSnapshotTaken,
        key="s",
        now=NOW,
        portfolio_id="demo",
        tree=real("0.0898", "1", "7.55", "1000"),
        prices=PRICES,
    )
    target = new_event(TargetWeightsComputed, key="t", now=NOW, portfolio_id="demo", tree=TARGET)
    await record_many(pool, [snapshot, target])
    shown = (await client.get("/portfolio/policy")).json()
    assert shown["policy"] == {"drift_absolute": 0.02, "schedule": "0 * * * *", "mode": "auto"}
    assert shown["status"]["next_scheduled"] == "2024-06-05T13:00:00Z"
    top = shown["status"]["drift"][0]
    assert (top["path"], top["band"], top["drift"], top["limit"], top["breach"]) == (
        "alice/spot/btc",
        "absolute",
        "0.049",
        "0.02",
        True,
    )
    assert shown["last_decision"] is None


async def test_a_bare_policy_document_is_a_new_version_by_the_operator(
    api: tuple[httpx.AsyncClient, asyncpg.Pool],
) -> None:
    """A policy file's JSON PUT as it is (`curl -X PUT --json @policy.json`) sets the policy; its bad key
    is still named."""
    client, _ = api
    stored = await client.put("/portfolio/policy", json={"drift_absolute": "2%", "mode": "auto"})
    assert stored.status_code == 201, stored.text
    assert (stored.json()["version"], stored.json()["author"]) == (1, "operator")
    assert (await client.get("/portfolio/policy")).json()["policy"] == {
        "drift_absolute": 0.02,
        "mode": "auto",
    }
    bad = await client.put("/portfolio/policy", json={"drift_absolute": "2%", "author": "alice"})
    assert (bad.status_code, bad.json()["detail"]) == (
        422,
        "policy.author: unknown key (the keys are "
        "schedule, timezone, drift_absolute, drift_relative, bands, scope, cooldown, invest_cash_above, "
        "min_trade_value, mode, replan_on_price_move)",
    )
    fund = await client.put("/funds/f1/policy", json={"schedule": "0 0 * * MON"})
    assert fund.status_code == 201 and fund.json()["policy"] == {"schedule": "0 0 * * MON"}


async def test_a_funds_cycle_schedule(api: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, _ = api
    missing = await client.put("/funds/f1/policy", json={"policy": {"rebalance": True}})
    assert (
        missing.status_code == 422 and missing.json()["detail"] == "policy.schedule: missing (a required key)"
    )
    stored = await client.put(
        "/funds/f1/policy", json={"policy": {"schedule": "0 0 * * MON", "rebalance": True}}
    )
    assert stored.status_code == 201 and stored.json()["fund_id"] == "f1"
    shown = (await client.get("/funds/f1/policy")).json()
    assert (shown["version"], shown["next_scheduled"]) == (1, "2024-06-10T00:00:00Z")


async def test_an_approve_mode_preview_is_stored_for_approval_until_it_expires(
    api: tuple[httpx.AsyncClient, asyncpg.Pool],
) -> None:
    from rebal.core.autopilot import Memory
    from rebal.policy import parse_policy
    from rebal_planner.autopilot.decide import Inputs, Settings, decide
    from rebal_planner.planning import parse_snapshot, parse_target

    client, pool = api
    snapshot = new_event(
        BalanceSnapshotTaken,
        key="s",
        now=NOW,
        portfolio_id="demo",
        tree=real("0.0902", "1", "7.45", "1000"),
        prices=PRICES,
    )
    target = new_event(TargetWeightsComputed, key="t", now=NOW, portfolio_id="demo", tree=TARGET)
    policy = parse_policy({"drift_absolute": "5%", "mode": "approve"}).to_policy()
    inputs = Inputs(
        "demo",
        "snapshot",
        snapshot.event_id,
        parse_snapshot(snapshot),
        target.event_id,
        parse_target(target),
        policy,
        1,
        Memory(),
        None,
        NOW,
    )
    outcome = decide(inputs, Settings(approval_ttl=600, active_timeout=900, retry_base=60, retry_max=600))
    assert outcome.trigger is not None and outcome.plan is not None
    await record_many(pool, [snapshot, target, outcome.trigger, outcome.plan])
    stored = (await client.get(f"/portfolio/plans/{outcome.plan.event_id}")).json()
    assert (stored["status"], stored["dry_run"], stored["run_id"]) == (
        "preview",
        True,
        str(outcome.trigger.correlation_id),
    )
    assert stored["expires_at"] == "2024-06-05T12:10:00+00:00"
    assert stored["inputs"]["prices"] == PRICES
    assert [o["symbol"] for o in stored["orders"]] == ["BTC/USDT", "SOL/USDT"]

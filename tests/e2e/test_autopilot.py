"""The autopilot end to end: the five services as processes, real NATS and Postgres, the paper exchange's
prices moving. An operator sets a policy whose band the portfolio is inside; prices move until the band
breaks; exactly one run trades; the same facts again (the triggering snapshot sent again, a new target)
start nothing; and a webhook receiver gets the notifications, signed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    RebalancePlanned,
    RebalanceTriggered,
    RunFinished,
    TargetWeightsComputed,
    new_event,
)
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_venues.paper import MovingPrices
from tests.e2e.conftest import TEST_SETTINGS, System, running_system
from tests.e2e.flow import PORTFOLIO, fetch, publish_raw, stored, wait_for
from tests.webhooks import Receiver, receiving

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
SECRET = "e2e-shared-secret"
TOKEN = "e" * 40
# Prices that move fast enough to break a band within seconds: 30% around their base, a minute a cycle.
MOVING = {"REBAL__PAPER__AMPLITUDE": "0.3", "REBAL__PAPER__PERIOD_SECONDS": "60", "REBAL__PAPER__NOISE": "0"}
MOVEMENT = MovingPrices(Prices.parse(json.loads((DEMO / "prices.json").read_text())), 0.3, 60.0, 0.0)
# The band sits this far above the drift of the coming seconds, and is crossed by at least as much later.
MARGIN = 0.003
SOON, LATER = 6, 25  # seconds
WAIT_AT_MOST = 40  # seconds until the drift rises (prices move in cycles)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as kept:
        yield kept


@pytest.fixture
def moving_system(database: FreshDatabase, tmp_path: Path, receiver: Receiver) -> Iterator[System]:
    env = {name: dict(values) for name, values in TEST_SETTINGS.items()}
    env["tracker"].update(MOVING, REBAL__TRACKING__SNAPSHOT_INTERVAL_SECONDS="1")
    # Prices move up to ~1.6%/s: the buys may follow the sells at a price further from the plan's.
    env["executor"].update(MOVING, REBAL__EXECUTION__MAX_PRICE_MOVE="0.2")
    env["planner"].update(REBAL__AUTOPILOT__TICK_SECONDS="1", REBAL__PLANNING__PREVIEW_ON_NEW_DATA="false")
    env["monitor"].update(
        REBAL__API__TOKEN=TOKEN,
        REBAL__NOTIFY__WEBHOOK_URL=receiver.url,
        REBAL__NOTIFY__WEBHOOK_SECRET=SECRET,
        REBAL__NOTIFY__POLL_SECONDS="0.2",
    )
    yield from running_system(database, tmp_path, env)


def drift(at: datetime) -> float:
    """The demo portfolio's largest node drift (weights of the parent) at the paper prices of `at`."""
    prices = {
        "quote": "USDT",
        "prices": {a: str(MOVEMENT.asset_price(a, at)) for a in ("BTC", "ETH", "SOL", "USDT")},
    }
    diff = diff_trees(
        parse_tree(json.loads((DEMO / "real.json").read_text()), "real"),
        parse_tree(json.loads((DEMO / "target.json").read_text()), "target"),
        Prices.parse(prices),
    )
    return float(np.max(np.abs(diff.current_weight - diff.desired_weight)[1:]))


def band_to_break(now: datetime) -> tuple[datetime, float]:
    """When to set the policy (within WAIT_AT_MOST s: the drift must be rising) and a band the portfolio
    stays inside for SOON seconds after it and leaves within LATER seconds."""
    for wait in range(WAIT_AT_MOST):
        start = now + timedelta(seconds=wait)
        ahead = [drift(start + timedelta(seconds=s / 2)) for s in range(2 * LATER)]
        inside = max(ahead[: 2 * SOON]) + MARGIN
        if max(ahead[2 * SOON :]) > inside + MARGIN:
            return start, round(inside, 4)
    raise AssertionError("the paper prices do not move the drift enough")


def snapshot_drift(snapshot: BalanceSnapshotTaken, target: TargetWeightsComputed) -> float:
    diff = diff_trees(
        parse_tree(snapshot.tree, "real"), parse_tree(target.tree, "target"), Prices.parse(snapshot.prices)
    )
    return float(np.max(np.abs(diff.current_weight - diff.desired_weight)[1:]))


async def test_prices_move_until_the_band_breaks_and_exactly_one_run_trades(
    moving_system: System, receiver: Receiver
) -> None:
    url, dsn = moving_system.nats_url, moving_system.dsn
    target = await wait_for(url, TargetWeightsComputed)
    await wait_for(url, BalanceSnapshotTaken)
    set_at, band = band_to_break(datetime.now(UTC) + timedelta(seconds=1))
    await asyncio.sleep((set_at - datetime.now(UTC)).total_seconds())
    policy = {"drift_absolute": band, "mode": "auto", "cooldown": "1h"}
    async with httpx.AsyncClient(
        base_url=moving_system.services["monitor"].url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as api:
        answer = await api.put("/portfolio/policy", json={"policy": policy, "author": "e2e"})
        assert answer.status_code == 201, answer.text
        trigger = await wait_for(url, RebalanceTriggered, timeout=LATER + 20)
        finished = await wait_for(url, RunFinished, lambda e: e.correlation_id == trigger.correlation_id)
        assert finished.status in ("completed", "completed_with_adjustments"), finished
        assert finished.placed >= 1 and finished.filled == finished.placed
        # The band broke on the trigger's snapshot, not before.
        snapshots = {s.event_id: s for s in await stored(url, BalanceSnapshotTaken)}
        breaking = snapshots[trigger.snapshot_id]
        assert snapshot_drift(breaking, target) > band
        assert trigger.reasons[0].startswith("drift: ") and trigger.breaches
        inside = [
            s
            for s in snapshots.values()
            if set_at + timedelta(seconds=2) < s.occurred_at < breaking.occurred_at
        ]
        assert inside and all(snapshot_drift(s, target) <= band for s in inside)
        # The same facts again: the triggering snapshot sent again (as a new message), a new target.
        again = new_event(
            BalanceSnapshotTaken,
            key="again",
            now=breaking.occurred_at,
            portfolio_id=PORTFOLIO,
            tree=breaking.tree,
            prices=breaking.prices,
            markets=breaking.markets,
        )
        await publish_raw(url, again.subject, again.model_dump_json().encode(), str(again.event_id))
        retarget = new_event(
            TargetWeightsComputed,
            key="again",
            now=datetime.now(UTC),
            portfolio_id=PORTFOLIO,
            tree=target.tree,
        )
        await publish_raw(url, retarget.subject, retarget.model_dump_json().encode(), str(retarget.event_id))
        await asyncio.sleep(4)  # four snapshots and clock ticks: prices keep moving, the cooldown holds
        shown = (await api.get("/portfolio/policy")).json()
    triggers = await stored(url, RebalanceTriggered)
    live = [p for p in await stored(url, RebalancePlanned) if not p.dry_run]
    assert [t.event_id for t in triggers] == [trigger.event_id]
    assert [p.correlation_id for p in live] == [trigger.correlation_id]
    runs = await fetch(
        dsn, "SELECT DISTINCT r.run_id FROM execution.orders o JOIN execution.runs r USING (plan_id)"
    )
    assert [row["run_id"] for row in runs] == [trigger.correlation_id]
    assert shown["last_decision"]["rebalance"] is False
    assert shown["last_decision"]["summary"].startswith("no rebalance: ")
    # The webhook: the breach, the trigger and the run's end, each signed.
    deadline = asyncio.get_running_loop().time() + 15
    while not {"breach", "rebalance_triggered", "run_finished"} <= set(receiver.kinds()):
        assert asyncio.get_running_loop().time() < deadline, receiver.kinds()
        await asyncio.sleep(0.2)
    for headers, body in receiver.received:
        assert (
            headers["X-Rebal-Signature-256"]
            == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
    ended = [body for body in receiver.bodies() if body["kind"] == "run_finished"]
    assert [n["data"]["run_id"] for n in ended] == [str(trigger.correlation_id)]
    assert receiver.kinds().count("rebalance_triggered") == 1

"""Rebal's alerts reach someone: a real Prometheus (Debian's) evaluating deploy/prometheus/alerts.yml sends
what fires to a real Alertmanager (Debian's `prometheus-alertmanager`) configured by
deploy/alertmanager/alertmanager.yml, which posts it, with the API token, to a webhook receiver; the body
it posted, given to the monitor's POST /alerts, becomes an operators' notification."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from rebal import db
from rebal.settings import ApiSettings
from rebal_devstack import _proc
from rebal_devstack._proc import LOOPBACK
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.api import Deps, create_api
from tests.fakes import RecordingPublisher
from tests.observability.conftest import DEPLOY, PROMETHEUS, start_prometheus, start_ready
from tests.webhooks import Receiver, receiving

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        shutil.which("prometheus-alertmanager") is None or not Path(PROMETHEUS).exists(),
        reason="Debian's prometheus and prometheus-alertmanager are needed (make sysdeps)",
    ),
]
ALERTMANAGER = "prometheus-alertmanager"
TOKEN = "a" * 40


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as kept:
        yield kept


def start_alertmanager(config: Path, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _proc.free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={directory / 'am'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    return start_ready("alertmanager", argv, f"http://{LOOPBACK}:{port}/-/ready", directory), port


@pytest.fixture
def alerting(tmp_path: Path, receiver: Receiver) -> Iterator[None]:
    """Alertmanager as deploy/ configures it (its receiver here, quick grouping) and Prometheus with
    Rebal's rules (RebalTargetDown without its minute's wait) scraping a service that is not there."""
    token = tmp_path / "api_token"
    token.write_text(TOKEN)
    manager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    manager["route"].update(group_wait="0s", group_interval="1s")
    [hook] = manager["receivers"][0]["webhook_configs"]
    hook["url"] = receiver.url
    hook["http_config"]["authorization"]["credentials_file"] = str(token)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(manager))
    am, am_port = start_alertmanager(tmp_path / "alertmanager.yml", tmp_path)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == "RebalTargetDown":
            rule["for"] = "0s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"{LOOPBACK}:{am_port}"]}]
    [job] = config["scrape_configs"]
    job["static_configs"] = [
        {"targets": [f"{LOOPBACK}:{_proc.free_port()}"], "labels": {"service": "planner"}}
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus, _ = start_prometheus(tmp_path / "prometheus.yml", tmp_path)
    try:
        yield
    finally:
        for proc in (prometheus, am):
            proc.terminate()
            proc.wait(timeout=10)


async def test_a_firing_alert_reaches_the_webhook_and_becomes_a_notification(
    alerting: None, receiver: Receiver, database: FreshDatabase
) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while not any(
        a["labels"]["alertname"] == "RebalTargetDown" for b in receiver.bodies() for a in b["alerts"]
    ):
        assert asyncio.get_running_loop().time() < deadline, "no alert reached the receiver in 60 s"
        await asyncio.sleep(0.2)
    headers, _ = receiver.received[0]
    body = receiver.bodies()[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body["receiver"] == "rebal" and body["status"] == "firing"
    [alert] = body["alerts"]
    assert (alert["labels"]["service"], alert["labels"]["severity"]) == ("planner", "critical")
    assert alert["annotations"]["summary"] == "planner is down"
    # What Alertmanager posted, given to the monitor: one notification, however often it is repeated.
    pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=2)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    deps = Deps(
        lambda: pool, RecordingPublisher(), ApiSettings(token=TOKEN), ("demo",), {}, lambda: datetime.now(UTC)
    )
    transport = httpx.ASGITransport(app=create_api(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        for _ in range(2):
            answer = await api.post("/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 202
        refused = await api.post("/alerts", json=body)
    assert refused.status_code == 401
    rows = await pool.fetch("SELECT kind, portfolio_id, payload::text FROM notifications")
    await pool.close()
    assert [(r["kind"], r["portfolio_id"]) for r in rows] == [("alert", "planner")]
    assert json.loads(rows[0]["payload"])["title"] == "[firing] RebalTargetDown: planner is down"

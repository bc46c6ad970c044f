"""The answers of /status and /portfolio/history are kept for a moment and shared by a crowd (issue 19.8:
under 200 clients each read the same from Postgres), and are never out of date where it matters: a halt
and a resume show at once, each token's scope and each portfolio gets its own answer, a wrong token is
still refused and the rate limit still counts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.app import build
from tests.monitor.running import TOKEN, monitor_settings, running_monitor, serving
from tests.monitor.test_halt_ack import running_executor

VIEWER = "v" * 40


async def test_a_halt_and_a_resume_show_at_once_in_a_kept_status(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    settings = monitor_settings(nats_url, database.dsn, halt_ack_timeout_seconds=10.0, cache_seconds=1.0)
    async with running_executor(nats_url, database.dsn, tmp_path), running_monitor(settings) as monitor:
        before = await monitor.client.get("/status")  # kept from here on
        assert before.status_code == 200 and before.json()["halted"] is False
        assert before.headers["content-type"] == "application/json"
        answer = await monitor.client.post("/halt", json={"reason": "venue looks wrong"})
        assert answer.json()["halt_state"] == "in_force", answer.text
        status = (await monitor.client.get("/status")).json()
        assert (status["halted"], status["halt_state"]) == (True, "in_force")
        assert status["halt_reason"] == "venue looks wrong"

        assert (await monitor.client.post("/resume", json={})).status_code == 202
        for _ in range(200):  # the resume is journaled when the monitor's consumer takes it
            if not (await monitor.client.get("/status")).json()["halted"]:
                break
            await asyncio.sleep(0.05)
        assert (await monitor.client.get("/status")).json()["halted"] is False


async def test_scopes_portfolios_and_pages_each_get_their_own_answer(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(
        nats_url, database.dsn, viewer_token=VIEWER, cache_seconds=1.0, rate_limit_per_second=5
    )
    async with running_monitor(settings) as monitor:
        viewer = httpx.AsyncClient(base_url=monitor.url, headers={"authorization": f"Bearer {VIEWER}"})
        stranger = httpx.AsyncClient(base_url=monitor.url, headers={"authorization": "Bearer " + "w" * 40})
        async with viewer, stranger:
            assert (await monitor.client.get("/status")).json()["portfolio_id"] == "demo"
            other = await monitor.client.get("/status", params={"portfolio_id": "other"})
            assert other.json()["portfolio_id"] == "other"
            # A kept answer is never a way around the token or its rate.
            assert (await stranger.get("/status")).status_code == 401
            assert (await stranger.get("/portfolio/history")).status_code == 401
            assert (await viewer.get("/status")).json()["portfolio_id"] == "demo"
            page = await viewer.get("/portfolio/history", params={"limit": 1})
            assert page.status_code == 200 and page.json() == {"runs": [], "next_cursor": None}
            bad = await viewer.get("/portfolio/history", params={"limit": 0})
            assert bad.status_code == 422
            statuses = [(await viewer.get("/status")).status_code for _ in range(6)]
            assert 429 in statuses
        assert TOKEN not in str(statuses)


def _served(metrics: str, route: str) -> float:
    line = f'rebal_api_requests_total{{method="GET",route="{route}",status="200"}} '
    return sum(float(row.removeprefix(line)) for row in metrics.splitlines() if row.startswith(line))


async def test_a_kept_answer_is_the_answer_fastapi_made_and_is_counted_by_its_route(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, cache_seconds=1.0)
    async with running_monitor(settings) as monitor:
        async with httpx.AsyncClient(base_url=monitor.url) as bare:
            before = _served((await bare.get("/metrics")).text, "/portfolio/history")
            first = await monitor.client.get("/portfolio/history", params={"limit": 2})
            again = [await monitor.client.get("/portfolio/history", params={"limit": 2}) for _ in range(3)]
            assert all(a.content == first.content and a.headers["content-type"] == "application/json"
                       for a in again)  # fmt: skip
            assert json.loads(first.content) == {"runs": [], "next_cursor": None}
            # The same path with another query is another answer, checked by FastAPI as ever.
            assert (await monitor.client.get("/portfolio/history", params={"limit": "x"})).status_code == 422
            wrong = await bare.get("/portfolio/history?limit=2", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await bare.get("/portfolio/history?limit=2")).status_code == 401
            after = _served((await bare.get("/metrics")).text, "/portfolio/history")
        assert after - before == 4


async def test_a_kept_answer_is_served_before_routing(nats_url: str, database: FreshDatabase) -> None:
    settings = monitor_settings(nats_url, database.dsn, cache_seconds=1.0)
    app = build(settings)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        serving(app, settings.http.port) as url,
        httpx.AsyncClient(base_url=url, headers=headers) as client,
    ):
        first = await client.get("/status")
        app.api.state.deps.pool = lambda: None  # through FastAPI, now a 503 (no pool) ...
        assert (await client.get("/status", params={"portfolio_id": "demo"})).status_code == 503
        again = await client.get("/status")  # ... but the kept answer comes first
        assert again.status_code == 200 and again.content == first.content

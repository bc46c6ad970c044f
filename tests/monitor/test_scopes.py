"""Two scopes of API token: the operator's may do everything, a viewer's may only read. Checked on every
endpoint of the OpenAPI document (a new route that forgets its scope fails here)."""

from __future__ import annotations

import re
import uuid

import httpx

from rebal_devstack.pytest_plugin import FreshDatabase
from tests.monitor.running import monitor_settings, running_monitor

VIEWER = "v" * 40


async def test_a_viewer_token_reads_everything_and_changes_nothing(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, viewer_token=VIEWER, plan_timeout_seconds=0.2)
    async with running_monitor(settings) as monitor:
        viewer = httpx.AsyncClient(base_url=monitor.url, headers={"authorization": f"Bearer {VIEWER}"})
        async with viewer:
            assert (await viewer.get("/session")).json() == {"scope": "viewer", "may_change": False}
            assert (await monitor.client.get("/session")).json() == {"scope": "operator", "may_change": True}
            spec = (await viewer.get("/openapi.json")).json()
            writes = 0
            for path, operations in spec["paths"].items():
                concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path.replace("{fund}", "f1"))
                for method in operations:
                    as_viewer = await viewer.request(method.upper(), concrete, json={})
                    if method == "get":
                        assert as_viewer.status_code not in (401, 403), (path, as_viewer.text)
                        continue
                    writes += 1
                    assert as_viewer.status_code == 403, (method, path, as_viewer.status_code)
                    assert "may only read" in as_viewer.json()["detail"]
                    as_operator = await monitor.client.request(method.upper(), concrete, json={})
                    assert as_operator.status_code not in (401, 403), (method, path, as_operator.text)
            assert (
                writes >= 8
            )  # rebalance, approve, halt, resume, targets, fund define/deposit/withdraw/cycle
        wrong = await monitor.client.get("/status", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401

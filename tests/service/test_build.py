"""Every service's `build(settings)` (what `python -m rebal_<name>` serves) starts on real NATS and
Postgres, answers ready on its own port, and stops cleanly: nothing is wired at import time."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rebal.settings import ServiceSettings
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.settings import MonitorSettings
from rebal_optimizer.settings import OptimizerSettings
from rebal_planner.settings import PlannerSettings
from rebal_tracker.settings import TrackerSettings
from tests.monitor.running import TOKEN, free_port, serving

SETTINGS: dict[str, type[ServiceSettings]] = {
    "tracker": TrackerSettings,
    "optimizer": OptimizerSettings,
    "planner": PlannerSettings,
    "monitor": MonitorSettings,
}
READY_TRIES = 300


@pytest.mark.parametrize("name", sorted(SETTINGS))
async def test_a_service_built_from_its_settings_starts_and_is_ready(
    name: str, nats_url: str, database: FreshDatabase
) -> None:
    extra: dict[str, Any] = {"api": {"token": TOKEN}} if name == "monitor" else {}
    settings = SETTINGS[name](
        nats={"url": nats_url}, database={"url": database.dsn}, http={"port": free_port()}, **extra
    )
    build: Callable[[Any], Any] = importlib.import_module(f"rebal_{name}.app").build
    async with serving(build(settings), settings.http.port) as url, httpx.AsyncClient(base_url=url) as client:
        answers = [await client.get("/readyz")]
        while answers[-1].status_code != 200 and len(answers) < READY_TRIES:  # the tracker's first snapshot
            await asyncio.sleep(0.1)
            answers.append(await client.get("/readyz"))
    assert answers[-1].json() == {"status": "ok", "failed": {}, "service": name}, answers[-1].text

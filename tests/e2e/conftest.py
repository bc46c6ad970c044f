"""The five services as real processes against a NATS and a Postgres of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rebal_devstack import _proc
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import Services
from tests.messaging import fresh_nats

ROOT = Path(__file__).resolve().parents[2]
# Prices that do not move, so that amounts are exact; no scheduled snapshots or target republishing:
# the tests ask for what they need, and the streams hold only what the flow under test produced.
STILL_PRICES = {"REBAL__PAPER__AMPLITUDE": "0", "REBAL__PAPER__NOISE": "0"}
# A killed consumer's messages come back after the ack wait: 5 s here rather than 30.
FAST_REDELIVERY = {"REBAL__NATS__ACK_WAIT_SECONDS": "5"}
TEST_SETTINGS = {
    "tracker": {**STILL_PRICES, **FAST_REDELIVERY, "REBAL__TRACKING__SNAPSHOT_INTERVAL_SECONDS": "3600"},
    "executor": {**STILL_PRICES, **FAST_REDELIVERY},
    "optimizer": {**FAST_REDELIVERY, "REBAL__TARGETS__INTERVAL_SECONDS": "3600"},
    "planner": FAST_REDELIVERY,
    "monitor": FAST_REDELIVERY,
}


@dataclass(frozen=True)
class System:
    nats_url: str
    dsn: str
    services: Services


def running_system(
    database: FreshDatabase, tmp_path: Path, service_env: dict[str, dict[str, str]] | None = None
) -> Iterator[System]:
    """NATS (fresh, 1 MB payloads), an empty database, and the five services started and ready (with
    `service_env`, TEST_SETTINGS by default); every service process gone at the end."""
    for nats in fresh_nats(tmp_path):
        services = Services(
            nats_url=nats.url,
            database_url=database.dsn,
            root=ROOT,
            log_dir=tmp_path / "logs",
            service_env=service_env or TEST_SETTINGS,
        )
        try:
            services.start()
            yield System(nats.url, database.dsn, services)
        finally:
            services.kill()
            left = _proc.wait_gone(services.pids, timeout=10.0)
        assert left == [], f"service processes left behind: {left}"


@pytest.fixture
def system(database: FreshDatabase, tmp_path: Path) -> Iterator[System]:
    """NATS (fresh, 1 MB payloads), an empty database, and the five services started and ready."""
    yield from running_system(database, tmp_path)

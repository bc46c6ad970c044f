"""Issue 19, point 4: a Postgres outage longer than the old retry window loses nothing.

Before, a handler failing because Postgres was away was retried like a bad message: 5 deliveries with
backoffs of 0.2, 1, 5 and 15 s (21.2 s), then dead-lettered; in a 47 s outage 75 of 120 returns were
never stored. Now the consumers hold their messages until Postgres is back.

The outage is 60 s with the production timings scaled by `SCALE` (0.1 by default: a 6 s outage against
a 2.12 s retry window and a 1 s ack wait, the same ratios as 60 s against 21.2 s and 10 s).
``REBAL_TEST_OUTAGE_SCALE=1`` runs it with the production timings and a 60 s outage.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebal import bus, metrics
from rebal_devstack.postgres import PostgresServer, create_database, dsn_with_database
from rebal_devstack.pytest_plugin import TEST_POSTGRES_SETTINGS
from tests.integrity.storing import report, send, storing
from tests.messaging import collecting, eventually

SCALE = float(os.environ.get("REBAL_TEST_OUTAGE_SCALE", "0.1"))
OUTAGE_SECONDS = 60.0 * SCALE
RETURNS = 120


def retries() -> float:
    """Handler failures counted against a message, in every service of this process."""
    samples = [s for m in metrics.HANDLER_RETRIES.collect() for s in m.samples if s.name.endswith("_total")]
    return sum(sample.value for sample in samples)


@pytest.fixture
def postgres(postgres_tmp_path: Path) -> Iterator[PostgresServer]:
    """A Postgres of this test's own: it is killed and started again."""
    with PostgresServer(postgres_tmp_path / "data", settings=TEST_POSTGRES_SETTINGS) as server:
        yield server


async def test_returns_sent_before_during_and_after_a_postgres_outage_are_each_stored_once(
    nats_url: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if SCALE != 1:
        monkeypatch.setattr(bus, "BACKOFF_SECONDS", tuple(s * SCALE for s in bus.BACKOFF_SECONDS))
        monkeypatch.setattr(bus, "ACK_WAIT_SECONDS", bus.ACK_WAIT_SECONDS * SCALE)
        monkeypatch.setattr(bus, "HOLD_RETRY_SECONDS", tuple(s * SCALE for s in bus.HOLD_RETRY_SECONDS))
    dsn = dsn_with_database(postgres.dsn, "rebal")
    create_database(postgres.dsn, "rebal")
    reports = [report(i) for i in range(RETURNS)]
    third = RETURNS // 3
    retried = retries()
    async with collecting(nats_url) as letters, storing(nats_url, dsn) as stored:
        await send(nats_url, reports[:third])
        await asyncio.sleep(0.5)
        postgres.kill()  # as a crash: SIGKILL, nothing flushed
        down_since = time.monotonic()
        await send(nats_url, reports[third : 2 * third])
        await eventually(lambda: bus.waiting(stored.tracker) and bus.waiting(stored.monitor))
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
        await asyncio.to_thread(postgres.start)  # recovers from the crash, on the same port
        await send(nats_url, reports[2 * third :])
        figures: dict[str, int] = {}

        async def all_stored() -> bool:
            figures.update(tracker=await stored.returns(), monitor=await stored.journaled())
            return figures["tracker"] >= RETURNS and figures["monitor"] >= RETURNS

        for _ in range(int(120 / 0.2)):
            try:
                if await all_stored():
                    break
            except OSError:
                pass  # the test's own pool reconnects too
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # nothing more comes: no duplicate, no late dead letter
        await all_stored()
        lost = f"stored {figures}, dead letters {len(letters)}"
        print(f"\n{OUTAGE_SECONDS:.0f} s outage, {RETURNS} returns: {lost}")
        assert figures == {"tracker": RETURNS, "monitor": RETURNS}
        assert bus.waiting(stored.tracker) == {} and bus.waiting(stored.monitor) == {}
    assert letters == []
    assert retries() == retried  # the outage was never counted against a message

"""The optimizer publishes the operator's desired tree: validated, idempotent, and loud when it is bad."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from rebal import bus
from rebal.events import Event, TargetWeightsComputed
from rebal.io import FileError
from rebal_optimizer.settings import OptimizerSettings
from rebal_optimizer.targets import Targets, target_event
from tests.messaging import started

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class NoHistory:
    """The in-memory broker keeps no stream: nothing is ever the latest."""

    async def latest(self, kind: Any, key: str) -> None:
        return None

    async def latest_id(self, kind: Any, key: str) -> None:
        return None


def settings_for(path: Path) -> OptimizerSettings:
    return OptimizerSettings(targets={"files": {"demo": str(path)}})


def test_the_event_id_follows_the_file_content(tmp_path: Path) -> None:
    path = tmp_path / "target.json"
    shutil.copy(EXAMPLES / "target.json", path)
    first = target_event("demo", path, now=NOW)
    assert target_event("demo", path, now=NOW).event_id == first.event_id
    document = json.loads(path.read_text())
    document["children"][0]["weight"] = "45%"
    document["children"][1]["weight"] = "55%"
    path.write_text(json.dumps(document))
    assert target_event("demo", path, now=NOW).event_id != first.event_id


def test_a_bad_target_file_names_the_file_and_node(tmp_path: Path) -> None:
    path = tmp_path / "target.json"
    document = json.loads((EXAMPLES / "target.json").read_text())
    document["children"][0]["weight"] = "10%"
    path.write_text(json.dumps(document))
    with pytest.raises(FileError) as caught:
        target_event("demo", path, now=NOW)
    assert str(caught.value).startswith(f"{path}: alice: weights of the children sum to 70%")


async def test_on_the_in_memory_broker_the_target_is_published_once_and_problems_show_in_readiness(
    tmp_path: Path,
) -> None:
    path = tmp_path / "target.json"
    shutil.copy(EXAMPLES / "target.json", path)
    broker = NatsBroker()
    seen: list[dict[str, Any]] = []

    @broker.subscriber(TargetWeightsComputed.topic.subject("demo"), stream=bus.EVENTS.jstream())
    async def keep(body: dict[str, Any]) -> None:
        seen.append(body)

    targets = Targets(bus.Publisher(broker), NoHistory(), settings_for(path), clock=lambda: NOW)
    async with TestNatsBroker(broker):
        await targets.publish_all()
        assert [s["tree"]["name"] for s in seen] == ["alice"]
        await targets.ready()
        path.write_text("{not json")
        await targets.publish_all()
        with pytest.raises(RuntimeError, match="malformed JSON"):
            await targets.ready()
    assert len(seen) == 1  # the bad file was not published


async def test_an_unchanged_target_is_not_published_again(tmp_path: Path, nats_url: str) -> None:
    # Within the server's duplicate window a republish would be dropped anyway; after it, the same event
    # would be stored twice. So the optimizer must not even try while the stream's latest is the same.
    path = tmp_path / "target.json"
    shutil.copy(EXAMPLES / "target.json", path)
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    attempts: list[Event] = []

    class Counting:
        async def publish(self, event: Event) -> bool:
            attempts.append(event)
            return await publisher.publish(event)

    targets = Targets(Counting(), bus.StreamHistory(broker), settings_for(path), clock=lambda: NOW)
    async with started(broker):
        for _ in range(3):
            await targets.publish_all()
    assert len(attempts) == 1

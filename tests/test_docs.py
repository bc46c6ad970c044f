"""Documents generated from the code stay in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_events_md_is_what_the_models_say() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "events.py")], capture_output=True, text=True, check=True
    ).stdout
    committed = (ROOT / "docs" / "events.md").read_text()
    assert generated == committed, "docs/events.md is stale: run `python docs/events.py > docs/events.md`"


def test_every_topic_is_documented() -> None:
    from rebal import subjects

    text = (ROOT / "docs" / "events.md").read_text()
    for topic in subjects.EVENT_TOPICS + subjects.COMMAND_TOPICS:
        assert f"rebal.{topic.family}.{topic.aggregate}.{topic.action}.v1." in text, topic

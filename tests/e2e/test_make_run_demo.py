"""`make run` as a newcomer runs it, with everything on: the demo bot, the first live paper rebalance and
the demo's autopilot policy (examples/demo/policy.toml). What the summary promises is what the running
system says: the policy in force set by `make run`, its first decision, a completed live run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_first_run import launched, rebal

pytestmark = [pytest.mark.timeout(420)]


def test_make_run_trades_the_demo_live_and_leaves_it_to_its_autopilot(tmp_path: Path) -> None:
    with launched(tmp_path) as run:
        said = run.log.read_text()
        assert "the autopilot rebalances 'demo' by its policy" in said, said
        shown = rebal(run, "policy", "show", "--portfolio", "demo", "--json")
        assert shown.returncode == 0, shown.stderr
        policy = json.loads(shown.stdout)
        assert (policy["version"], policy["author"], policy["policy"]["mode"]) == (1, "make run", "auto")
        assert policy["last_decision"] is not None  # the autopilot decided on the first snapshot
        status = json.loads(rebal(run, "status", "--json").stdout)
        assert status["mode"] == "live"
        assert status["last_run"] is not None and status["last_run"]["status"] == "completed", status

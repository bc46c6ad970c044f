"""`make run` as a newcomer runs it, with everything on: the demo bot, the first live paper rebalance and
the demo's autopilot policy (examples/demo/policy.toml). What the summary promises is what the running
system says: the policy in force set by `make run`, its first decision, a completed live run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rebal_devstack import _proc
from rebal_devstack.stack import SERVICES
from tests.e2e.test_first_run import REBAL, ROOT, START_TIMEOUT_SECONDS, clean_env

pytestmark = [pytest.mark.timeout(420)]


def test_make_run_trades_the_demo_live_and_leaves_it_to_its_autopilot(tmp_path: Path) -> None:
    log = tmp_path / "make-run.log"
    nats, postgres, *service_ports = _proc.free_ports(2 + len(SERVICES))
    argv = [sys.executable, "-m", "rebal_devstack", "run", "--var", str(tmp_path / "var"),
            "--root", str(ROOT), "--nats-port", str(nats), "--postgres-port", str(postgres),
            *(arg for name, port in zip(SERVICES, service_ports, strict=True)
              for arg in (f"--{name}-port", str(port)))]  # fmt: skip
    with log.open("wb") as out:
        launcher = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=clean_env())

    def rebal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REBAL), *args],
            check=False,
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while "Rebal is running." not in log.read_text():
            assert launcher.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        said = log.read_text()
        assert "the autopilot rebalances 'demo' by its policy" in said, said
        shown = rebal("policy", "show", "--portfolio", "demo", "--json")
        assert shown.returncode == 0, shown.stderr
        policy = json.loads(shown.stdout)
        assert (policy["version"], policy["author"], policy["policy"]["mode"]) == (1, "make run", "auto")
        assert policy["last_decision"] is not None  # the autopilot decided on the first snapshot
        status = json.loads(rebal("status", "--json").stdout)
        assert status["mode"] == "live"
        assert status["last_run"] is not None and status["last_run"]["status"] == "completed", status
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(90)
        except subprocess.TimeoutExpired:
            launcher.kill()
            raise
    assert code == 0, log.read_text()[-3000:]

"""Every service's `python -m rebal_<name>` refuses a bad setting with exit 4 and names it: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rebal.settings import EXIT_CONFIGURATION, PORTS


@pytest.mark.parametrize("name", sorted(PORTS))
def test_a_bad_setting_exits_4_naming_it(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBAL")}
    env["REBAL__HTTP__PORT"] = "not-a-port"
    done = subprocess.run(
        [sys.executable, "-m", f"rebal_{name}"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_CONFIGURATION, done.stderr
    assert done.stderr.startswith(f"rebal-{name}: configuration error:")
    assert "http.port" in done.stderr and "Traceback" not in done.stderr

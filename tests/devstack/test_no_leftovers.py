"""A program that starts servers never leaves them running: not at a normal exit, not when killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rebal_devstack import _proc

pytestmark = pytest.mark.timeout(60)

# Starts both servers, prints their pids, then either returns (atexit must stop them) or waits
# to be killed with SIGKILL (atexit cannot run; the parent-death signal must stop them).
_PROGRAM = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from rebal_devstack import NatsServer, PostgresServer

    base = Path(sys.argv[1])
    nats = NatsServer(base / "jetstream").start()
    pg = PostgresServer(base / "data", settings={"fsync": "off"}).start()
    print(json.dumps([nats.pid, pg.pid]), flush=True)
    if sys.argv[2] == "wait":
        time.sleep(60)
    """
)


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _PROGRAM, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    pids: list[int] = json.loads(line)
    return child, pids


def test_servers_stop_when_the_program_exits_without_stopping_them(postgres_tmp_path: Path) -> None:
    child, pids = _run(postgres_tmp_path, "exit")
    assert child.wait(timeout=30) == 0
    assert _proc.wait_gone(pids, timeout=10.0) == []


def test_servers_stop_when_the_program_is_killed(postgres_tmp_path: Path) -> None:
    child, pids = _run(postgres_tmp_path, "wait")
    assert all(_proc.is_alive(pid) for pid in pids)
    backends = _proc.children_of(pids[1])
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    t0 = time.monotonic()
    assert _proc.wait_gone(pids + backends, timeout=15.0) == []
    assert time.monotonic() - t0 < 15.0

"""The launcher's supervisor: a child that dies is reported and restarted after a delay that grows with
quick crashes and starts again from the beginning once the child has stayed up a while; every restart is
counted in a state file that `rebal status` shows (issue 19.14: the delay used to stay at 30 s while
crashes came less than 60 s apart, and nobody saw the restarts).

The state file (``var/supervisor.json``, named in the client context's ``[devstack] supervisor``)::

    {"updated_at": "...", "children": {"executor": {"restarts": 3, "last_exit_code": 1,
     "last_restart_at": "...", "state": "running" | "restarting"}, ...}}
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# The delays before restarting a child that keeps crashing; the last one is the cap (a dev stack should
# come back within seconds once the cause is fixed).
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)
# A child that stayed up this long is healthy: its next crash starts the backoff from the beginning.
HEALTHY_AFTER_SECONDS = 30.0
SUPERVISOR_FILE = "supervisor.json"


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def restart_delay(failures: int, uptime: float) -> tuple[float, int]:
    """The delay before the next restart of a child that died after `uptime` seconds up, having crashed
    `failures` times in a row before; and the new count of crashes in a row."""
    if uptime >= HEALTHY_AFTER_SECONDS:
        failures = 0
    return BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)], failures + 1


@dataclass
class Watched:
    """Something the launcher keeps alive: how to tell it is up and how to start it again."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]
    log_path: Path
    exit_code: Callable[[], int | None] = lambda: None
    failures: int = 0
    since: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_restart_at: datetime | None = None

    def state(self) -> dict[str, object]:
        return {
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_restart_at": None if self.last_restart_at is None else self.last_restart_at.isoformat(),
            "state": "running" if self.restart_at is None else "restarting",
        }


def write_state(path: Path, watched: Sequence[Watched]) -> None:
    """The children's restarts for `rebal status`, replaced whole (a reader never sees half a file)."""
    document = {
        "updated_at": datetime.now(UTC).isoformat(),
        "children": {item.name: item.state() for item in watched},
    }
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def supervise(
    watched: Sequence[Watched],
    interval: float = 0.5,
    *,
    state_file: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Until interrupted (or `until()`): report a dead child and restart it after `restart_delay`."""
    if state_file is not None:
        write_state(state_file, watched)
    try:
        _watch(watched, interval, state_file, clock, sleep, until)
    finally:
        if state_file is not None:
            state_file.unlink(missing_ok=True)  # nothing supervised: `rebal status` shows no restarts


def _watch(
    watched: Sequence[Watched],
    interval: float,
    state_file: Path | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    until: Callable[[], bool],
) -> None:
    while not until():
        now = clock()
        changed = False
        for item in watched:
            if item.restart_at is None:
                if item.alive():
                    continue
                delay, item.failures = restart_delay(item.failures, now - item.since)
                item.restart_at = now + delay
                item.last_exit_code = item.exit_code()
                how = "stopped" if item.last_exit_code is None else f"exited with code {item.last_exit_code}"
                say(f"{item.name} {how}; restarting it in {delay:g} s (log: {item.log_path})")
                changed = True
            elif now >= item.restart_at:
                item.restart_at = None
                item.since = now
                item.restarts += 1
                item.last_restart_at = datetime.now(UTC)
                changed = True
                try:
                    item.restart()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    say(f"{item.name} did not restart: {exc}")
                    continue
                say(f"{item.name} restarted ({item.restarts} restarts so far)")
        if changed and state_file is not None:
            write_state(state_file, watched)
        sleep(interval)

"""The launcher's supervisor (issue 19.14): the restart delay starts again once a child has stayed up a
while, is capped at 10 s, and every restart is counted where `rebal status` shows it (the delay used to
stay at 30 s while crashes came less than 60 s apart, and the restarts were seen nowhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebal_cli import ops
from rebal_cli.context import write
from rebal_devstack.supervisor import BACKOFF_SECONDS, Watched, restart_delay, supervise


class Crashing:
    """A child in simulated time that crashes `lifetime` seconds after each start."""

    def __init__(self, lifetime: float) -> None:
        self.now = 0.0
        self.lifetime = lifetime
        self.dies_at = lifetime
        self.delays: list[float] = []
        self.died_at = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def alive(self) -> bool:
        if self.now >= self.dies_at and self.died_at < self.dies_at:
            self.died_at = self.dies_at
        return self.now < self.dies_at

    def restart(self) -> None:
        self.delays.append(self.now - self.died_at)
        self.dies_at = self.now + self.lifetime


def run(child: Crashing, until: float, state_file: Path, seen: list[dict[str, object]]) -> Watched:
    watched = Watched("executor", child.alive, child.restart, Path("executor.log"), lambda: 1, since=0.0)

    def stop() -> bool:
        if state_file.exists():
            seen.append(json.loads(state_file.read_text()))
        return child.now >= until

    supervise([watched], 0.5, state_file=state_file, clock=child.clock, sleep=child.sleep, until=stop)
    return watched


def test_crashes_50_s_apart_restart_after_1_s_every_time(tmp_path: Path) -> None:
    child = Crashing(lifetime=50.0)
    seen: list[dict[str, object]] = []
    watched = run(child, 600.0, tmp_path / "supervisor.json", seen)
    assert len(child.delays) >= 10
    assert max(child.delays) <= 1.5, child.delays  # was 30 s from the fifth crash on
    assert watched.restarts == len(child.delays)
    last = seen[-1]["children"]["executor"]  # type: ignore[index]
    assert last["restarts"] == watched.restarts and last["last_exit_code"] == 1
    assert not (tmp_path / "supervisor.json").exists()  # removed when supervision ends


def test_quick_crashes_back_off_up_to_10_s(tmp_path: Path) -> None:
    child = Crashing(lifetime=0.5)
    run(child, 300.0, tmp_path / "supervisor.json", [])
    assert max(child.delays) == pytest.approx(10.0, abs=0.6) and BACKOFF_SECONDS[-1] == 10.0
    assert child.delays[:3] == pytest.approx([1.0, 2.0, 5.0], abs=0.6)


def test_the_delay_rule() -> None:
    assert restart_delay(7, uptime=45.0) == (1.0, 1)
    assert restart_delay(0, uptime=1.0) == (1.0, 1)
    assert restart_delay(3, uptime=1.0) == (10.0, 4)
    assert restart_delay(9, uptime=1.0) == (10.0, 10)


def test_rebal_status_shows_the_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "supervisor.json"
    state.write_text(
        json.dumps(
            {
                "updated_at": "2026-12-07T02:00:00+00:00",
                "children": {
                    "executor": {
                        "restarts": 3,
                        "last_exit_code": 1,
                        "last_restart_at": "2026-12-07T01:59:00+00:00",
                        "state": "running",
                    },
                    "planner": {
                        "restarts": 0,
                        "last_exit_code": None,
                        "last_restart_at": None,
                        "state": "running",
                    },
                },
            }
        )
    )
    context = tmp_path / "client.toml"
    write(
        context,
        api_url="http://127.0.0.1:1",
        token_file=tmp_path / "api-token",
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql://postgres@127.0.0.1:1/rebal",
        services={},
        supervisor_file=Path("supervisor.json"),
    )
    monkeypatch.setenv("REBAL_CONTEXT", str(context))
    status = ops.with_restarts({"portfolio_id": "demo", "halted": False})
    assert status["supervisor"]["executor"]["restarts"] == 3
    assert (
        ops.restarts_text(status["supervisor"]) == "executor 3 (last exit code 1 at 2026-12-07 01:59:00 UTC)"
    )
    state.unlink()  # the stack stopped
    assert "supervisor" not in ops.with_restarts({"portfolio_id": "demo"})

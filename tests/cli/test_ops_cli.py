"""The operator commands as an operator runs them: the installed `rebal` against the running system (the
five services, real NATS and Postgres, the monitor's API), checked against what the API and the journal
say. Exit codes: 0 ok, 1 error, 2 bad input / not found, 3 not running, 4 configuration."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebal_cli import context
from rebal_cli.app import app
from rebal_devstack._proc import free_port
from tests.e2e.flow import fetch
from tests.e2e.operators import TOKEN, OperatorSystem, operator_system

pytestmark = [pytest.mark.timeout(240)]
REBAL = Path(sys.executable).parent / "rebal"
UNKNOWN_PLAN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, postgres_admin_dsn: str) -> Iterator[OperatorSystem]:
    with operator_system(tmp_path_factory.mktemp("operators"), postgres_admin_dsn) as running:
        yield running


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def rebal(*args: str | Path, env: dict[str, str] | None = None) -> Ran:
    """`rebal ARGS` in this process (typer's CliRunner: the same app, exit codes and streams as the
    installed command, without a second start-up per call on this shared 2-core machine)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("REBAL__", "REBAL_CONFIG"))}
    result = CliRunner().invoke(app, [str(a) for a in args], env={**unset, "COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def installed(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as a separate process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REBAL")} | {"REBAL_CONTEXT": "none"}
    return subprocess.run(
        [str(REBAL), *args], capture_output=True, text=True, timeout=60, check=False, env={**clean, **env}
    )


def one_line_error(result: Ran | subprocess.CompletedProcess[str]) -> str:
    """The error a bad call prints: exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_preview_approve_and_follow_a_run_then_find_it_in_history_and_exports(
    system: OperatorSystem, tmp_path: Path
) -> None:
    env = system.cli_env
    preview = rebal("plan", "--portfolio", "demo", "--band", "0.01", "--json", env=env)
    assert preview.returncode == 0, preview.stderr
    plan = json.loads(preview.stdout)
    stored = system.get(f"/portfolio/plans/{plan['plan_id']}")
    assert stored["status"] == "preview" and stored["orders"] == plan["orders"] and plan["orders"]

    # The human form of the same preview names the plan and how to approve it.
    shown = rebal("plan", "--portfolio", "demo", "--band", "0.01", env=env)
    assert shown.returncode == 0 and "rebal approve" in shown.stdout and "BTC/USDT" in shown.stdout

    approved = rebal("approve", plan["plan_id"], "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    outcome = json.loads(approved.stdout)
    run = outcome["run"]
    assert outcome["plan"]["status"] == "approved"
    assert run["run_id"] == outcome["plan"]["approval_run_id"] and run["status"] == "completed"
    assert run["counts"]["filled"] == len(plan["orders"])
    # Approving again runs nothing new: the same run is followed and reported, as a person reads it.
    again = rebal("approve", plan["plan_id"], env=env)
    assert again.returncode == 0, again.stderr
    n = len(plan["orders"])
    assert f"run {run['run_id']}: completed: {n} placed, {n} filled, 0 skipped, 0 failed" in again.stdout

    history = rebal("history", "--json", "--no-previews", env=env)
    assert history.returncode == 0, history.stderr
    runs = json.loads(history.stdout)["runs"]
    assert runs == system.get("/portfolio/history", limit=20, include_previews="false")["runs"]
    assert runs[0]["run_id"] == run["run_id"]
    table = rebal("history", "--no-previews", env=env)
    assert table.returncode == 0 and run["run_id"] in table.stdout and "completed" in table.stdout

    # Exports: every fill of the journal, as CSV in a file (with a progress bar on stderr) and as JSON.
    fills = asyncio.run(fetch(system.dsn, "SELECT trade_id, amount FROM fills"))
    out = tmp_path / "trades.csv"
    exported = rebal("export", "trades", "--format", "csv", "--output", out, env=env)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(r["trade_id"] for r in rows) == sorted(str(f["trade_id"]) for f in fills)
    assert f"wrote {out}" in exported.stderr
    as_json = rebal("export", "trades", "--format", "json", env=env)
    assert as_json.returncode == 0
    assert sorted(r["trade_id"] for r in json.loads(as_json.stdout)) == sorted(r["trade_id"] for r in rows)
    plans = rebal("export", "plans", "--format", "json", env=env)
    assert plan["plan_id"] in {p["plan_id"] for p in json.loads(plans.stdout)}


def test_halt_refuses_apply_and_resume_lifts_it_status_says_so(system: OperatorSystem) -> None:
    env = system.cli_env
    halted = rebal("halt", "--reason", "cli test", "--json", env=env)
    assert halted.returncode == 0, halted.stderr
    assert json.loads(halted.stdout)["halt_state"] == "in_force"  # the executor acknowledged it (19.1)
    assert json.loads(halted.stdout)["portfolio_id"] == "demo"
    deadline = time.monotonic() + 20
    while not system.get("/status")["halted"]:  # the monitor journals the command
        assert time.monotonic() < deadline, "the halt did not reach the journal"
        time.sleep(0.1)
    watch = rebal("status", "--watch", "--count", "2", "--interval", "0.2", "--json", env=env)
    assert watch.returncode == 0, watch.stderr
    states = [json.loads(line) for line in watch.stdout.splitlines()]
    assert len(states) == 2 and all(s["halted"] and s["halt_reason"] == "cli test" for s in states)
    preview = rebal("plan", "--portfolio", "demo", "--json", env=env)  # previews are fine while halted
    assert preview.returncode == 0, preview.stderr
    refused = rebal("approve", json.loads(preview.stdout)["plan_id"], env=env)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "trading is halted for demo: cli test" in one_line_error(refused)

    resumed = rebal("resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    status = rebal("status", "--json", env=env)
    assert status.returncode == 0
    now = json.loads(status.stdout)
    api = system.get("/status")
    assert now["halted"] is False and now["last_run"] == api["last_run"] and now["mode"] == api["mode"]
    # The monitor reports the four other services it was started with (their /readyz).
    assert now["services"] == dict.fromkeys(("executor", "optimizer", "planner", "tracker"), "ok")
    shown = rebal("status", env=env)
    assert shown.returncode == 0 and "running" in shown.stdout and "demo" in shown.stdout
    assert all(name in shown.stdout for name in now["services"])


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["approve", UNKNOWN_PLAN], 2, UNKNOWN_PLAN),
        (["approve", "not-a-plan-id"], 2, "plan_id"),
        (["history", "--limit", "0"], 2, "--limit"),
        (["export", "orders"], 2, "'orders' is not one of trades, plans"),
        (["export", "trades", "--format", "xml"], 2, "--format"),
        (["plan", "--portfolio", "demo", "--real", "examples/real.json"], 2, "leave out --real"),
        (["plan", "--portfolio", "no such portfolio"], 2, "portfolio_id"),
        (["status", "--interval", "0"], 2, "--interval"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    system: OperatorSystem, args: list[str], code: int, fragment: str
) -> None:
    result = rebal(*args, env=system.cli_env)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert fragment in one_line_error(result)


def test_api_down_exits_3_and_a_refused_or_missing_token_exits_4(system: OperatorSystem) -> None:
    down = installed("status", env={**system.cli_env, "REBAL__API__URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 3
    assert "does not answer" in one_line_error(down)
    wrong = rebal("history", env={**system.cli_env, "REBAL__API__TOKEN": "wrong"})
    assert wrong.returncode == 4 and "wrong bearer token" in one_line_error(wrong)
    env = {k: v for k, v in system.cli_env.items() if k != "REBAL__API__TOKEN"}
    missing = rebal("status", env=env)
    assert missing.returncode == 4 and "REBAL__API__TOKEN" in one_line_error(missing)


def test_token_from_a_file(system: OperatorSystem, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in system.cli_env.items() if k != "REBAL__API__TOKEN"}
    result = rebal("status", "--json", env={**env, "REBAL__API__TOKEN_FILE": str(token_file)})
    assert result.returncode == 0 and json.loads(result.stdout)["portfolio_id"] == "demo"


def test_doctor_passes_on_the_running_system_and_fails_with_nats_away(system: OperatorSystem) -> None:
    healthy = rebal("doctor", env=system.cli_env)
    assert healthy.returncode == 0, healthy.stdout
    lines = healthy.stdout.strip().splitlines()
    assert all(line.startswith("ok ") for line in lines), lines
    names = [line.split(":")[0].split(None, 1)[1] for line in lines]
    for expected in ("configuration", "nats", "stream REBAL_EVENTS", "postgres", "migrations", "api"):
        assert expected in names, names
    # The server's version as the server says it (15.18 was reported as "15.0").
    version = asyncio.run(fetch(system.dsn, "SHOW server_version"))[0]["server_version"].split()[0]
    assert f"postgres: answers (server {version})" in healthy.stdout and "." in version
    # NATS away, and a ccxt venue configured with a key but no secret: both named, exit 1.
    broken = {
        **system.cli_env,
        "REBAL__NATS__URL": f"nats://127.0.0.1:{free_port()}",
        "REBAL__VENUES__BINANCE__KIND": "ccxt",
        "REBAL__VENUES__BINANCE__API_KEY": "a-key",
    }
    failing = rebal("doctor", "--json", env=broken)
    assert failing.returncode == 1
    checks = {c["name"]: c for c in json.loads(failing.stdout)["checks"]}
    assert not checks["nats"]["ok"] and checks["postgres"]["ok"] and checks["migrations"]["ok"]
    assert checks["keys binance main"] == {
        "name": "keys binance main",
        "ok": False,
        "detail": "missing secret",
    }


def test_config_validate_names_the_key_and_show_masks_secrets(tmp_path: Path) -> None:
    good = tmp_path / "rebal.toml"
    good.write_text('[nats]\nurl = "nats://10.0.0.1:4222"\n[planning]\nband = "0.02"\n[api]\nlive = false\n')
    valid = rebal("config", "validate", good)
    assert (
        valid.returncode == 0 and "valid for tracker, optimizer, planner, executor, monitor" in valid.stdout
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text("nats:\n  stream_replicas: 9\nplaning:\n  band: 1\n")
    invalid = rebal("config", "validate", bad)
    assert invalid.returncode == 4
    errors = invalid.stderr.strip().splitlines()
    assert any(f"{bad}: nats.stream_replicas:" in line for line in errors), errors
    assert any(f"{bad}: planing: not a setting of any service" in line for line in errors), errors
    assert rebal("config", "validate", tmp_path / "absent.toml").returncode == 4

    secret_env = {
        "REBAL_CONFIG": str(good),
        "REBAL__DATABASE__URL": "postgresql://rebal:hunter2-secret@db:5432/rebal",
        "REBAL__API__TOKEN": TOKEN,
        "REBAL__NATS__PASSWORD": "nats-pass-xyz",
    }
    shown = rebal("config", "show", "--local", "--service", "monitor", "--json", env=secret_env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["nats"]["url"] == "nats://10.0.0.1:4222"  # from the file
    assert document["api"]["token"] == "**********" and document["database"]["url"] == "**********"
    text = rebal("config", "show", "--local", env=secret_env)
    for secret in ("hunter2-secret", TOKEN, "nats-pass-xyz"):
        assert secret not in shown.stdout and secret not in text.stdout
    assert "planner" in text.stdout and "planning.band = '0.02'" in text.stdout


def test_config_validate_reports_a_missing_or_malformed_network_file(tmp_path: Path) -> None:
    malformed = tmp_path / "network.json"
    malformed.write_text('{"withdrawals": {')
    for network, problem in ((tmp_path / "absent.json", "file not found"), (malformed, "malformed JSON")):
        config = tmp_path / "rebal.toml"
        config.write_text(f'[planning]\nnetwork_file = "{network}"\n')
        checked = rebal("config", "validate", config)
        assert checked.returncode == 4, checked.stdout
        assert f"{config}: planning.network_file: Value error, {network}: {problem}" in checked.stderr
        assert "(planner)" in checked.stderr


def test_apply_in_one_step_when_within_the_band_sends_nothing(system: OperatorSystem) -> None:
    live_runs = "SELECT count(*) AS n FROM runs WHERE NOT dry_run"
    before = asyncio.run(fetch(system.dsn, live_runs))
    as_json = rebal("apply", "--band", "0.5", "--json", env=system.cli_env)
    assert as_json.returncode == 0, as_json.stderr
    outcome = json.loads(as_json.stdout)
    assert outcome["plan"]["orders"] == [] and outcome["run"] is None
    shown = rebal("apply", "--band", "0.5", env=system.cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "0 orders" in shown.stdout and "nothing to trade" in shown.stdout
    after = asyncio.run(fetch(system.dsn, live_runs))
    assert after[0]["n"] == before[0]["n"]


def test_the_context_alone_reaches_the_system_and_config_show_asks_the_running_services(
    system: OperatorSystem, tmp_path: Path
) -> None:
    """Non-default ports needed three environment variables on every call; `config show` described the
    shell's defaults (live False, allocations {}), not the system that runs."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    path = tmp_path / "var" / "client.toml"
    context.write(
        path,
        api_url=system.api_url,
        token_file=token_file,
        nats_url=system.nats_url,
        database_url=system.dsn,
        services={child.name: child.url for child in system.services},
    )
    env = {"REBAL_CONTEXT": str(path)}
    status = rebal("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["portfolio_id"] == "demo"
    doctor = rebal("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout
    assert f"ok   context: {path}" in doctor.stdout and "ok   api:" in doctor.stdout

    shown = rebal("config", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    running = json.loads(shown.stdout)
    assert sorted(running) == ["executor", "monitor", "optimizer", "planner", "tracker"]
    assert running["tracker"]["settings"]["nats"]["url"] == system.nats_url
    assert running["executor"]["settings"]["live"] is True and running["executor"]["mode"] == "live"
    assert running["planner"]["settings"]["database"]["url"] == "**********"
    assert TOKEN not in shown.stdout and "postgres@" not in shown.stdout
    # These tests switch live on for the executor only: the mode is not one fact, and it says so.
    text = rebal("config", "show", env=env)
    assert "mode: NOT ONE MODE" in text.stdout and "live: executor" in text.stdout
    gone = {**{n: f"http://127.0.0.1:{free_port()}" for n in running}, "monitor": system.api_url}
    context.write(path, api_url=system.api_url, token_file=token_file, nats_url=system.nats_url,
                  database_url=system.dsn, services=gone)  # fmt: skip
    partial = rebal("config", "show", env=env)
    assert partial.returncode == 3 and "error: tracker: not running at" in partial.stderr

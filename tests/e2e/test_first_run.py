"""A first run as a newcomer makes it: `make run`'s launcher on free ports in a fresh directory, then `rebal`
from that directory with no environment variable (it finds var/client.toml), the funds walkthrough of
docs/funds.md line by line, and one mode for the whole system."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest

from rebal_devstack import _proc
from rebal_devstack.stack import SERVICES

pytestmark = [pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[2]
REBAL = Path(sys.executable).parent / "rebal"
START_TIMEOUT_SECONDS = 180.0
WALKTHROUGH = re.compile(r"<!-- walkthrough:[^>]*-->\s*```sh\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class FirstRun:
    home: Path
    log: Path
    urls: dict[str, str]
    nats_port: int
    postgres_port: int


def clean_env() -> dict[str, str]:
    """The newcomer's shell: nothing of Rebal's set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REBAL")} | {"COLUMNS": "100"}


@contextlib.contextmanager
def launched(home: Path, *options: str) -> Iterator[FirstRun]:
    """`make run`'s launcher in `home` on free ports, with `options`, from its summary until Ctrl-C (which
    must stop it cleanly)."""
    log = home / "make-run.log"
    nats, postgres, *service_ports = _proc.free_ports(2 + len(SERVICES))
    ports = dict(zip(SERVICES, service_ports, strict=True))
    argv = [sys.executable, "-m", "rebal_devstack", "run", "--var", str(home / "var"), "--root", str(ROOT),
            *options, "--nats-port", str(nats), "--postgres-port", str(postgres),
            *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port)))]  # fmt: skip
    with log.open("wb") as out:
        launcher = subprocess.Popen(argv, cwd=home, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while "Rebal is running." not in log.read_text():
            assert launcher.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        yield FirstRun(home, log, urls, nats, postgres)
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(90)
        except subprocess.TimeoutExpired:
            launcher.kill()
            raise
    assert code == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    with launched(tmp_path_factory.mktemp("newcomer"), "--no-bot", "--no-rebalance") as run:
        yield run


def rebal(
    run: FirstRun, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed `rebal`, from the newcomer's directory, without any REBAL variable."""
    return subprocess.run(
        [str(REBAL), *args],
        check=False,
        cwd=cwd or run.home,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def walkthrough() -> list[list[str]]:
    found = WALKTHROUGH.search((ROOT / "docs" / "funds.md").read_text())
    assert found, "docs/funds.md has no walkthrough block"
    return [line.split() for line in found.group(1).splitlines() if line.strip()]


def settled(run: FirstRun, fund: str, timeout: float = 90.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        shown = rebal(run, "fund", "show", fund, "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        cycles = data["cycles"]
        if cycles and cycles[0]["status"] != "running":
            return dict(data)
        assert time.monotonic() < deadline, data
        time.sleep(1)


def asked(run: FirstRun, *args: str) -> subprocess.CompletedProcess[str]:
    """`rebal fund cycle ...` as a user retries it while the planner says the fund cannot be priced yet (a
    cycle asked right after `make run`, before the tracker's first snapshot, is refused with that reason)."""
    deadline = time.monotonic() + 60
    while True:
        done = rebal(run, *args)
        if done.returncode == 0 or "no balance snapshot" not in done.stderr:
            return done
        assert time.monotonic() < deadline, done.stderr
        time.sleep(1)


def test_the_funds_walkthrough_works_from_a_fresh_make_run(first_run: FirstRun) -> None:
    lines = walkthrough()
    assert lines[0][:3] == ["rebal", "paper", "deposit"]
    for words in lines:
        done = (
            asked(first_run, *words[1:]) if words[1:3] == ["fund", "cycle"] else rebal(first_run, *words[1:])
        )
        if words[1:3] == ["fund", "withdraw"]:  # more than alice holds: refused up front, with why
            assert done.returncode == 2, done
            assert "'alice' holds 1000.00 USDT in fund 'growth'" in " ".join(done.stderr.split())
            continue
        assert done.returncode == 0, (words, done.stdout, done.stderr)
        if words[1:3] == ["fund", "cycle"]:
            assert re.search(r"^cycle \S+ started: rebal fund show growth$", done.stdout.strip()), done.stdout
            data = settled(first_run, "growth")
    cycle = data["cycles"][0]  # type: ignore[index]
    assert cycle["status"] == "done" and cycle["traded"]["orders"] == 2, cycle
    alice = data["users"]["alice"]  # type: ignore[index]
    assert float(alice["BTC"]) > 0 and float(alice["ETH"]) > 0
    assert 190 < float(alice["USDT"]) < 230  # 20% cash, and what the step left
    shown = rebal(first_run, "fund", "show", "growth")
    assert "2 of 2 orders filled" in " ".join(shown.stdout.split())


def test_a_cycle_on_an_account_without_money_says_it_traded_nothing(first_run: FirstRun) -> None:
    for args in (
        ("fund", "define", "bare", "--exchange", "paper", "--account", "bare/paper/main", "--quote", "USDT",
         "--weights", "BTC=0.5,USDT=0.5", "--prices-from", "demo"),
        ("fund", "deposit", "bare", "bob", "500"),
        ("fund", "cycle", "bare"),
    ):  # fmt: skip
        done = asked(first_run, *args)
        assert done.returncode == 0, (args, done.stderr)
        time.sleep(1)
    data = settled(first_run, "bare")
    assert data["cycles"][0]["traded"] == {"orders": 0, "fills": 0}  # type: ignore[index]
    shown = " ".join(rebal(first_run, "fund", "show", "bare").stdout.split())
    assert "nothing traded: 1 orders planned, none filled" in shown, shown


def test_a_cycle_the_planner_refuses_says_why_and_fails(first_run: FirstRun) -> None:
    """Before, `rebal fund cycle` said "cycle asked" and exited 0 whatever the planner answered; the
    refusal was only in the planner's log, and `rebal fund show` never showed a cycle."""
    define = ("fund", "define", "unpriced", "--exchange", "paper", "--account", "unpriced/paper/main",
              "--quote", "USDT", "--weights", "BTC=0.5,USDT=0.5", "--prices-from", "nowhere")  # fmt: skip
    done = rebal(first_run, *define)
    assert done.returncode == 0, done.stderr
    done = rebal(first_run, "fund", "cycle", "unpriced")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert " ".join(done.stderr.split()) == (
        "error: POST /funds/unpriced/cycles: the planner refused the cycle: no balance snapshot of nowhere "
        "to price the fund (HTTP 409)"
    ), done.stderr


def test_one_mode_and_the_running_configuration_without_any_variable(first_run: FirstRun) -> None:
    for name, url in first_run.urls.items():
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'rebal_build_info{mode="live"' in text, name  # dry_run on three services, live on two
    shown = rebal(first_run, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "mode: live (tracker, optimizer, planner, executor, monitor)" in shown.stdout
    assert f"[tracker] {first_run.urls['tracker']} (live)" in shown.stdout
    assert "database.url = '**********'" in shown.stdout
    # From the checkout (the paper exchange's files are named relative to it), the context named.
    context_file = first_run.home / "var" / "client.toml"
    doctor = rebal(first_run, "doctor", cwd=ROOT, env={"REBAL_CONTEXT": str(context_file)})
    assert doctor.returncode == 0, doctor.stdout
    assert f"ok   context: {context_file}" in doctor.stdout
    status = rebal(first_run, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["mode"] == "live", status.stderr


def test_the_bus_and_the_database_refuse_whoever_has_no_password(first_run: FirstRun) -> None:
    """The dev stack used to take anonymous NATS clients and trust every local Postgres user."""
    secrets = first_run.home / "var" / "secrets"
    files = list(secrets.iterdir())
    assert "postgres-password" in {f.name for f in files} and "nats-api" in {f.name for f in files}
    for path in [*files, first_run.home / "var" / "client.toml"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    async def without_password() -> None:
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(f"nats://127.0.0.1:{first_run.nats_port}", allow_reconnect=False,
                               max_reconnect_attempts=1, connect_timeout=2)  # fmt: skip
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{first_run.postgres_port}/rebal", timeout=10
            )

    asyncio.run(without_password())
    password = (secrets / "postgres-password").read_text().strip()
    shown = first_run.log.read_text()
    assert password not in shown and f"password in {secrets / 'postgres-password'}" in shown, shown
    # `rebal` reaches the bus as the `api` user through var/client.toml, with no variable set.
    preview = rebal(first_run, "rebalance", "--portfolio", "demo", "--dry-run", "--json")
    assert preview.returncode == 0, (preview.stdout, preview.stderr)
    assert json.loads(preview.stdout)["plan"]["type"] == "RebalancePlanned"

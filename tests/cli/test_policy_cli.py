"""`rebal policy show|set|history` as an operator runs it, against the monitor's API served by uvicorn on a
real Postgres: a file is checked before anything is sent, versions say who, when and what changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from typer.testing import CliRunner

from rebal import db
from rebal.settings import ApiSettings
from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_monitor.api import Deps, create_api
from tests.fakes import RecordingPublisher
from tests.monitor.running import TOKEN, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def api_url(database: FreshDatabase) -> AsyncIterator[str]:
    pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=3)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    deps = Deps(
        pool=lambda: pool,
        publisher=RecordingPublisher(),
        settings=ApiSettings(token=TOKEN),
        portfolios=("demo",),
        checks={},
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_api(deps), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await pool.close()


async def rebal(url: str, *args: str) -> tuple[int, str, str]:
    env = {"REBAL__API__URL": url, "REBAL__API__TOKEN": TOKEN, "REBAL_CONTEXT": "none", "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


async def test_set_show_and_history(api_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('drift_absolute = "5%"\nmode = "auto"\n')
    code, out, err = await rebal(
        api_url, "policy", "set", str(policy), "--portfolio", "demo", "--author", "alice"
    )
    assert code == 0, err
    assert out.strip() == "policy version 1 set by alice: drift_absolute = 0.05; mode = auto"
    policy.write_text('drift_absolute = "2%"\nmode = "auto"\nschedule = "0 * * * *"\n')
    code, out, err = await rebal(
        api_url, "policy", "set", str(policy), "--portfolio", "demo", "--author", "bob", "--note", "tighter"
    )
    assert code == 0, err
    assert out.strip() == "policy version 2 set by bob: drift_absolute 0.05 -> 0.02; schedule = 0 * * * *"
    code, out, err = await rebal(api_url, "policy", "show", "--portfolio", "demo", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["version"], shown["author"], shown["policy"]["drift_absolute"]) == (2, "bob", 0.02)
    code, out, _ = await rebal(api_url, "policy", "history", "--portfolio", "demo")
    lines = out.strip().splitlines()
    assert lines[0].startswith("v2  ") and "bob (tighter): drift_absolute 0.05 -> 0.02" in lines[0]
    assert lines[1].startswith("v1  ") and "alice: drift_absolute = 0.05; mode = auto" in lines[1]


async def test_a_bad_file_is_refused_before_anything_is_sent(api_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: sometimes\n")
    code, _, err = await rebal(api_url, "policy", "set", str(policy), "--portfolio", "demo")
    assert code == 2
    assert err.strip().startswith(f"error: {policy}: mode: ")
    code, out, _ = await rebal(api_url, "policy", "show", "--portfolio", "demo")
    assert code == 0 and out.strip() == "demo: no policy set (the autopilot does nothing)"
    code, _, err = await rebal(api_url, "policy", "show")
    assert code == 2 and "--portfolio P or --fund F" in err


async def test_a_funds_cycle_schedule(api_url: str, tmp_path: Path) -> None:
    schedule = tmp_path / "cycle.toml"
    schedule.write_text('schedule = "0 0 * * MON"\nrebalance = true\n')
    code, out, err = await rebal(api_url, "policy", "set", str(schedule), "--fund", "f1")
    assert code == 0, err
    code, out, err = await rebal(api_url, "policy", "show", "--fund", "f1", "--json")
    assert code == 0 and json.loads(out)["policy"] == {"schedule": "0 0 * * MON", "rebalance": True}, err


async def test_policy_show_reads_as_operators_read_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    """Weights in percent to two decimals and times in UTC, not 0.508087840615 and microseconds."""
    from rebal_cli.policy import _print_policy

    _print_policy(
        {
            "portfolio_id": "demo",
            "version": 1,
            "author": "make run",
            "created_at": "2026-12-07T03:47:14.102725+00:00",
            "policy": {"mode": "auto", "drift_absolute": 0.02},
            "status": {
                "next_scheduled": "2026-12-07T04:00:00Z",
                "drift": [
                    {
                        "path": "demo/paper/spot/crypto/arb",
                        "current_weight": "0.508087840615",
                        "desired_weight": "0.507283935681",
                        "drift": "0.000803904934",
                        "limit": "0.02",
                        "band": "absolute",
                    }
                ],
            },
            "last_decision": None,
        }
    )
    out = capsys.readouterr().out
    assert "set by make run at 2026-12-07 03:47:14 UTC" in out
    assert "next scheduled check 2026-12-07 04:00:00 UTC" in out
    assert "drift_absolute = 2.00%" in out and "0.02" not in out  # set as "2%", shown as a percentage
    assert "demo/paper/spot/crypto/arb: weight 50.81% for 50.73%, drift 0.08% of 2.00% (absolute)" in out

"""`rebal backfill` (and `rebal optimize`) as a user calls them: the installed entry point, a real
server, the tracker storing what was published."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from faststream.nats import NatsBroker
from typer.testing import CliRunner

from rebal import bus, service
from rebal_cli.app import app
from rebal_cli.strategies import backfill_events
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_tracker.app import Runtime
from rebal_tracker.handlers import register
from rebal_tracker.settings import TrackerSettings
from tests.e2e.flow import client
from tests.messaging import started

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
REBAL = Path(sys.executable).parent / "rebal"


async def rebal(*args: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(REBAL), *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def tracker(nats_url: str, database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    settings = TrackerSettings(
        nats={"url": nats_url},
        database={"url": database.dsn},
        tracking={"layout_file": DEMO / "real.json", "snapshot_interval_seconds": 3600},
        paper={"markets_file": DEMO / "markets.json", "prices_file": DEMO / "prices.json"},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    runtime = Runtime(settings, publisher, service.Database(database.dsn, 3))
    register(broker, publisher, runtime.on_take_snapshot, runtime.on_returns)
    await runtime.start()
    try:
        async with started(broker):
            assert runtime.database.pool is not None
            yield runtime.database.pool
    finally:
        await runtime.stop()


async def rows(pool: asyncpg.Pool, expected: int) -> list[asyncpg.Record]:
    for _ in range(200):
        found = await pool.fetch("SELECT * FROM strategy_returns ORDER BY ts")
        if len(found) >= expected:
            return list(found)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{expected} returns not stored within 10 s")


def csv_history(path: Path, days: int) -> Path:
    lines = ["date,return"]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines += [f"{(start + timedelta(days=d)).date().isoformat()},{(d % 5 - 2) / 1000}" for d in range(days)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.asyncio(loop_scope="session")
async def test_backfill_publishes_once_and_a_rerun_adds_nothing(
    tracker: asyncpg.Pool, nats_url: str, tmp_path: Path
) -> None:
    history = csv_history(tmp_path / "trend.csv", 30)
    args = ("backfill", history, "--portfolio", "fund", "--strategy", "trend", "--nats-url", nats_url)
    code, out, err = await rebal(*args, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "portfolio_id": "fund",
        "strategy_id": "trend",
        "returns": 30,
        "stored": 30,
        "duplicates": 0,
        "first": "2024-01-01T00:00:00+00:00",
        "last": "2024-01-30T00:00:00+00:00",
    }
    stored = await rows(tracker, 30)
    assert {(r["portfolio_id"], r["strategy_id"]) for r in stored} == {("fund", "trend")}
    assert [r["period_return"] for r in stored[:5]] == [
        Decimal(v) for v in ("-0.002", "-0.001", "0", "0.001", "0.002")
    ]

    code, out, _ = await rebal(*args)
    assert code == 0
    summary = "30 returns from 2024-01-01T00:00:00+00:00 to 2024-01-30T00:00:00+00:00"
    assert f"{summary}: 0 published, 30 already known" in out
    await asyncio.sleep(0.3)
    assert await tracker.fetchval("SELECT count(*) FROM strategy_returns") == 30


@pytest.mark.asyncio(loop_scope="session")
async def test_a_backtest_json_is_backfilled_like_a_csv(
    tracker: asyncpg.Pool, nats_url: str, tmp_path: Path
) -> None:
    stats = tmp_path / "backtest.json"
    stats.write_text(json.dumps({"sharpe": 1.2, "returns": {"1704067200000": 0.01, "2024-01-02": -0.02}}))
    code, _, err = await rebal(
        "backfill", stats, "--portfolio", "fund", "--strategy", "arb", "--nats-url", nats_url
    )
    assert (code, err) == (0, "")
    stored = await rows(tracker, 2)
    assert [(r["ts"], r["period_return"]) for r in stored] == [
        (datetime(2024, 1, 1, tzinfo=UTC), Decimal("0.01")),
        (datetime(2024, 1, 2, tzinfo=UTC), Decimal("-0.02")),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "date,return\n2024-01-01,0.01\n2024-01-02,abc\n",
            "line 3, column return: 'abc' is not a decimal return",
        ),
        ("date,return\n2024-01-01,0.01\n2024-13-02,0.01\n", "line 3, column date: month must be in 1..12"),
        (
            "date,return\n2024-01-01,-1.5\n",
            "line 2, column return: '-1.5' is below -1 (more than everything lost)",
        ),
        (
            "date,return\n2024-01-01,0.01\n2024-01-01,0.02\n",
            "line 3: 2024-01-01T00:00:00+00:00 repeats line 2",
        ),
        ("when,return\n2024-01-01,0.01\n", "line 1: no date column (one of date, timestamp)"),
        (
            "date,return\n2024-01-01T10:00:00,0.01\n",
            "line 2, column date: '2024-01-01T10:00:00' has no time zone",
        ),
        ("date,return\n2024-01-01,0.01,7\n", "line 2: 3 columns, the header has 2"),
        # The bounds the bus applies (rebal.core.bounds), so that the file fails here, named, not on the bus.
        ("date,return\n2030-01-01,1e400\n", "line 2, column return: '1e400' is too large"),
        ("date,return\n2030-01-01,1e-20000\n", "line 2, column return: '1e-20000' has more than 100 decimal"),
        ("date,return\n2200-01-01,0.01\n", "line 2, column date: '2200-01-01' is outside 1970-01-01..2100"),
        ("date,return\n0001-01-01,0.01\n", "line 2, column date: '0001-01-01' is outside 1970-01-01..2100"),
    ],
)
def test_a_bad_row_is_named_and_nothing_is_published(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    # No server at this address: the file is refused before anything is sent (else exit 3).
    result = CliRunner().invoke(
        app,
        ["backfill", str(bad), "--portfolio", "fund", "--strategy", "s", "--nats-url", "nats://127.0.0.1:1"],
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.replace("\n", "").startswith(f"error: {bad}: {message}")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([{"date": "2024-01-01", "return": "x"}], "$[0], return: 'x' is not a decimal return"),
        ({"returns": {"2024-01-01": None}}, "$.returns['2024-01-01'], return: None is not a decimal return"),
        ({"sharpe": 1}, "no 'returns' (or 'daily_returns') in the object"),
        ([{"when": "2024-01-01"}], "$[0]: needs a date and a return"),
    ],
)
def test_a_bad_json_entry_is_named(tmp_path: Path, document: object, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    result = CliRunner().invoke(app, ["backfill", str(bad), "--portfolio", "fund", "--strategy", "s"])
    assert result.exit_code == 2
    assert result.stderr.replace("\n", "").startswith(f"error: {bad}: {message}")


def test_backfill_without_a_server_exits_3(tmp_path: Path) -> None:
    history = csv_history(tmp_path / "h.csv", 3)
    result = CliRunner().invoke(
        app,
        ["backfill", str(history), "--portfolio", "p", "--strategy", "s", "--nats-url", "nats://127.0.0.1:1"],
    )
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach NATS at nats://127.0.0.1:1")


# -- rebal optimize ---------------------------------------------------------------------------------


def two_strategies(path: Path, days: int = 120) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    data = np.round(rng.normal(0.001, [0.02, 0.01], (days, 2)), 8)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines = ["date,trend,arb"] + [
        f"{(start + timedelta(days=d)).date().isoformat()},{float(data[d, 0])!r},{float(data[d, 1])!r}"
        for d in range(days)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path, data


def test_optimize_offline_exports_exactly_portfolio_config(tmp_path: Path) -> None:
    returns, data = two_strategies(tmp_path / "returns.csv")
    export = tmp_path / "portfolio_config.json"
    args = ["optimize", "--returns", str(returns), "--account-value", "100000", "--estimator", "sample"]
    result = CliRunner().invoke(
        app, [*args, "--target-volatility", "0.2", "--max-leverage", "3", "--export", str(export), "--json"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(export.read_text())
    assert list(config) == [
        "account_value",
        "weights",
        "realised_volatility",
        "target_volatility",
        "leverage",
    ]
    inverse = 1 / data.std(axis=0, ddof=1)  # risk parity of two: inverse volatility
    assert config["weights"] == pytest.approx(
        {"trend": inverse[0] / inverse.sum(), "arb": inverse[1] / inverse.sum()}, abs=1e-6
    )
    weights = np.array([config["weights"]["trend"], config["weights"]["arb"]])
    realised = float(np.std(data @ weights, ddof=1) * np.sqrt(365))
    assert config["realised_volatility"] == pytest.approx(realised, rel=1e-9)
    assert config["leverage"] == pytest.approx(min(0.2 / realised, 3.0), rel=1e-9)
    assert (config["account_value"], config["target_volatility"]) == (100000.0, 0.2)
    shown = json.loads(result.stdout)
    assert shown == {
        "method": "risk_parity",
        "status": "optimal",
        "observations": 120,
        "portfolio_config": config,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--account-value: needed with --returns"),
        (["--account-value", "1", "--method", "best"], "--method: 'best' is not one of"),
        (
            ["--account-value", "1", "--param", "risk_aversion"],
            "--param: 'risk_aversion' must be NAME=NUMBER",
        ),
        (
            ["--account-value", "1", "--param", "risk_aversion=2"],
            "the allocation options: Value error, risk_parity takes no parameter risk_aversion",
        ),
        (
            ["--account-value", "1", "--min-weight", "0.6", "--method", "min_variance"],
            "no allocation: infeasible: ",
        ),
    ],
)
def test_optimize_offline_refuses_bad_options_with_a_reason(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    returns, _ = two_strategies(tmp_path / "returns.csv", days=30)
    result = CliRunner().invoke(app, ["optimize", "--returns", str(returns), *extra])
    assert result.exit_code in (1, 2)
    assert result.stderr.replace("\n", "").startswith(f"error: {message}"), result.stderr


def wide(path: Path, strategies: int, dates: int, value: str | None = None) -> Path:
    rng = np.random.default_rng(3)
    rows = [",".join(["date", *(f"s{i}" for i in range(strategies))])]
    for day in range(dates):
        cells = [value or f"{x:.5f}" for x in rng.normal(0.001, 0.02, strategies)]
        rows.append(",".join([f"2024-01-{day + 1:02d}", *cells]))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("strategies", "dates", "value", "message"),
    [
        # Issue 19, point 11: tried to allocate 59.6 GiB (MemoryError), and a traceback for 1e300.
        (2000, 3, None, "2000 strategies: setting up the optimisation problem would take 59.6 GiB"),
        (2, 3, "1e300", "line 2, column s0: '1e300' is too large"),
    ],
)
def test_optimize_offline_refuses_what_it_cannot_compute_in_one_line(
    tmp_path: Path, strategies: int, dates: int, value: str | None, message: str
) -> None:
    returns = wide(tmp_path / "wide.csv", strategies, dates, value)
    result = CliRunner().invoke(app, ["optimize", "--returns", str(returns), "--account-value", "1000"])
    assert result.exit_code == 2, result.output
    assert result.stderr.replace("\n", "").startswith(f"error: {returns}: {message}"), result.stderr
    assert "Traceback" not in result.output


def test_optimize_without_a_running_system_exits_3() -> None:
    result = CliRunner().invoke(app, ["optimize", "--portfolio", "fund", "--nats-url", "nats://127.0.0.1:1"])
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach NATS at nats://127.0.0.1:1")


@pytest.mark.asyncio(loop_scope="session")
async def test_optimize_asks_the_running_optimizer(
    tracker: asyncpg.Pool, nats_url: str, tmp_path: Path
) -> None:
    from rebal_optimizer.handlers import Allocations
    from rebal_optimizer.handlers import register as register_optimizer
    from rebal_optimizer.settings import OptimizerSettings
    from rebal_optimizer.store import PostgresStrategyData
    from tests.optimizer.test_service_targets import BASE

    _, data = two_strategies(tmp_path / "h.csv", days=60)
    base = tmp_path / "base.json"
    base.write_text(json.dumps(BASE))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    async with client(nats_url) as nc:  # the history, as `rebal backfill` publishes it (tested above)
        for column, strategy in enumerate(("trend", "arb")):
            series = [(start + timedelta(days=d), Decimal(repr(float(data[d, column])))) for d in range(60)]
            for event in backfill_events("fund", strategy, series, datetime.now(UTC)):
                await nc.jetstream().publish(event.subject, event.model_dump_json().encode())
    await rows(tracker, 120)

    settings = OptimizerSettings(
        targets={"files": {"fund": base}},
        allocations={"fund": {"method": "min_variance", "account_value": "25000", "interval_seconds": 0}},
    )
    broker = NatsBroker(nats_url)
    publisher = bus.Publisher(broker)
    allocations = Allocations(publisher, bus.StreamHistory(broker), settings, PostgresStrategyData(tracker))
    register_optimizer(broker, publisher, allocations)
    async with started(broker):
        export = tmp_path / "portfolio_config.json"
        code, out, err = await rebal(
            "optimize", "--portfolio", "fund", "--nats-url", nats_url, "--export", export, "--json"
        )
        assert code == 0, err
        answer = json.loads(out)
        # It publishes the portfolio's new target, which the next rebalance trades: it says so.
        said, shown, _ = await rebal("optimize", "--portfolio", "fund", "--nats-url", nats_url)
        assert said == 0 and "published as fund's new target" in " ".join(shown.split())
        assert "rebal plan --portfolio fund" in shown and answer["published_target"]
        code, _, err = await rebal("optimize", "--portfolio", "elsewhere", "--nats-url", nats_url)
    assert answer["method"] == "min_variance" and answer["observations"] == 60
    assert json.loads(export.read_text()) == answer["portfolio_config"]
    assert answer["portfolio_config"]["account_value"] == 25000.0
    assert sum(answer["portfolio_config"]["weights"].values()) == pytest.approx(1.0)
    assert (
        code == 1
        and err.strip() == "error: no allocation for elsewhere: no allocation is configured for elsewhere"
    )

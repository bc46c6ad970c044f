"""`rebal backfill` (and `rebal optimize`) as a user calls them: the installed entry point, a real
server, the tracker storing what was published."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
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
        "frequency": "daily",
    }
    stored = await rows(tracker, 30)
    assert {(r["portfolio_id"], r["strategy_id"]) for r in stored} == {("fund", "trend")}
    assert [r["period_return"] for r in stored[:5]] == [
        Decimal(v) for v in ("-0.002", "-0.001", "0", "0.001", "0.002")
    ]

    code, out, _ = await rebal(*args)
    assert code == 0
    summary = "30 daily returns from 2024-01-01T00:00:00+00:00 to 2024-01-30T00:00:00+00:00"
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
        (
            "date,return\n2024-01-01,0.01\n2024-01-02,0.01\n2024-01-03,0\n2024-01-04T12:00:00Z,0.01\n",
            "irregular dates: 2024-01-03 to 2024-01-04T12:00:00Z is 1.50 days, not a whole number of",
        ),
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
        app,
        [*args, "--method", "risk_parity", "--target-volatility", "0.2", "--max-leverage", "3", *to(export)],
    )
    assert result.exit_code == 0, result.output
    config = json.loads(export.read_text())
    assert list(config) == ["account_value", "weights", "ann_volatility_pct", "target_vol_pct", "leverage"]
    inverse = 1 / data.std(axis=0, ddof=1)  # risk parity of two: inverse volatility
    assert config["weights"] == pytest.approx(
        {"trend": inverse[0] / inverse.sum(), "arb": inverse[1] / inverse.sum()}, abs=1e-6
    )
    weights = np.array([config["weights"]["trend"], config["weights"]["arb"]])
    realised = float(np.std(data @ weights, ddof=1) * np.sqrt(365.25))  # daily dates: 365.25 a year
    assert config["ann_volatility_pct"] == pytest.approx(realised * 100, rel=1e-9)
    assert config["leverage"] == pytest.approx(min(0.2 / realised, 3.0), rel=1e-9)
    assert (config["account_value"], config["target_vol_pct"]) == (100000.0, 20.0)
    shown = json.loads(result.stdout)
    assert shown == {
        "method": "risk_parity",
        "status": "optimal",
        "observations": 120,
        "frequency": "daily",
        "periods_per_year": 365.25,
        "first": "2024-01-01",
        "last": "2024-04-29",
        "portfolio_config": config,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--account-value: needed to solve offline"),
        (["--account-value", "1", "--method", "best"], "--method: 'best' is not one of"),
        (
            ["--account-value", "1", "--param", "risk_aversion"],
            "--param: 'risk_aversion' must be NAME=NUMBER",
        ),
        (
            ["--account-value", "1", "--method", "risk_parity", "--param", "risk_aversion=2"],
            "the allocation options: Value error, risk_parity takes no parameter risk_aversion",
        ),
        (
            ["--account-value", "1", "--min-weight", "0.6", "--method", "min_variance"],
            "no allocation: infeasible: ",
        ),
        (["--account-value", "1", "--method", "mean_variance", "--param", "risk_aversion=nan"], "--param: "),
        (["--account-value", "1", "--method", "max_sharpe", "--param", "risk_free=nan"], "--param: "),
        (["--account-value", "1", "--param", "lookback=inf"], "--param: 'lookback=inf': lookback must be a"),
        (["--account-value", "1", "--method", "mix", "--param", "return_weight=nan"], "--param: "),
        (
            ["--account-value", "1", "--param", "lookback=30.7"],
            "the allocation options: Value error, lookback must be a whole number of periods of at least 3, "
            "not 30.7",
        ),
        (
            ["--account-value", "1", "--target-vol", "30"],
            "--target-volatility: 30 is a fraction (0.30 is 30%)",
        ),
        (["--account-value", "1", "--target-vol", "nan"], "--target-volatility: nan must be a finite number"),
        (["--account-value", "1", "--max-leverage", "inf"], "--max-leverage: inf must be a finite number"),
        (["--account-value", "1", "--equity", "log"], "--equity: 'log' is not compounded or additive"),
        (
            ["--account-value", "1", "--lookback", "30.7"],
            "--lookback: 30.7 must be a whole number of at least 2",
        ),
        (["--account-value", "1", "--window", "0"], "--window: 0 must be a whole number of at least 1"),
    ],
)
def test_optimize_offline_refuses_bad_options_with_a_reason(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    returns, _ = two_strategies(tmp_path / "returns.csv", days=30)
    result = CliRunner().invoke(app, ["optimize", "--returns", str(returns), *extra])
    assert result.exit_code == (1 if "infeasible" in message else 2), result.output
    assert result.stderr.replace("\n", "").startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 or "allocation options" in message


LAST_60 = ("--lookback", "60", "--json")


def to(export: Path) -> list[str]:
    return ["--export", str(export), "--json"]


def write_days(path: Path, header: str, rows: list[tuple[datetime, list[float]]], bom: bool = False) -> Path:
    lines = [header] + [
        f"{ts.date().isoformat()}," + ",".join(repr(v) for v in values) for ts, values in rows
    ]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_spacing_of_the_dates_sets_the_annualisation(tmp_path: Path) -> None:
    # The same returns dated a day apart and a week apart: the weekly volatility is sqrt(7) times smaller
    # per year (it was the same: leverage off by 2.65x).
    _, data = two_strategies(tmp_path / "x.csv", days=60)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    outcomes = {}
    for name, step in (("daily", timedelta(days=1)), ("weekly", timedelta(days=7))):
        rows = [(start + i * step, [float(data[i, 0]), float(data[i, 1])]) for i in range(60)]
        path = write_days(tmp_path / f"{name}.csv", "date,trend,arb", rows)
        result = CliRunner().invoke(
            app,
            [
                "optimize",
                "--returns",
                str(path),
                "--account-value",
                "1000",
                "--method",
                "risk_parity",
                *LAST_60,
            ],
        )
        assert result.exit_code == 0, result.output
        outcomes[name] = json.loads(result.stdout)
    assert outcomes["daily"]["frequency"] == "daily" and outcomes["weekly"]["frequency"] == "weekly"
    assert outcomes["weekly"]["periods_per_year"] == pytest.approx(365.25 / 7)
    daily, weekly = (outcomes[k]["portfolio_config"]["ann_volatility_pct"] for k in ("daily", "weekly"))
    assert daily / weekly == pytest.approx(np.sqrt(7), rel=1e-9)


def test_irregular_dates_are_refused(tmp_path: Path) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    days = [0, 1, 2, 5, 6, 9, 10, 14, 15, 16, 20, *range(21, 60, 3)]
    rows = [(start + timedelta(days=d), [0.01 * ((d % 3) - 1), 0.005 * ((d % 4) - 1.5)]) for d in days]
    path = write_days(tmp_path / "odd.csv", "date,trend,arb", rows)
    result = CliRunner().invoke(app, ["optimize", "--returns", str(path), "--account-value", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: {path}: the dates every strategy has a return for: irregular dates"
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("date,trend,,arb", "line 1: column 3 has no name (each column names a strategy)"),
        ("date,trend,arb,trend", "line 1: column 4 is named 'trend' like column 2"),
    ],
)
def test_an_empty_or_repeated_column_name_is_named(tmp_path: Path, header: str, message: str) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(start + timedelta(days=d), [0.01, -0.01, 0.02]) for d in range(40)]
    path = write_days(tmp_path / "cols.csv", header, rows)
    result = CliRunner().invoke(app, ["optimize", "--returns", str(path), "--account-value", "1"])
    assert result.exit_code == 2
    assert result.stderr.replace("\n", "") == f"error: {path}: {message}"


def test_a_byte_order_mark_is_read_as_utf8(tmp_path: Path) -> None:
    _, data = two_strategies(tmp_path / "x.csv", days=60)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(start + timedelta(days=i), [float(data[i, 0]), float(data[i, 1])]) for i in range(60)]
    path = write_days(tmp_path / "excel.csv", "date,trend,arb", rows, bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    result = CliRunner().invoke(app, ["optimize", "--returns", str(path), "--account-value", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["portfolio_config"]["weights"]) == {"trend", "arb"}


@pytest.mark.parametrize("method", ["risk_parity", "max_sharpe", "slope_std", "min_variance"])
def test_constant_returns_are_refused_not_solved(tmp_path: Path, method: str) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(start + timedelta(days=d), [0.001, 0.002]) for d in range(60)]
    path = write_days(tmp_path / "flat.csv", "date,trend,arb", rows)
    result = CliRunner().invoke(
        app, ["optimize", "--returns", str(path), "--account-value", "1", "--method", method]
    )
    assert result.exit_code == 2
    assert result.stderr.replace("\n", "").startswith(
        f"error: {path}: arb, trend: constant returns over the last 60 periods: no variance to weigh by"
    )
    assert "optimal" not in result.stdout and "Warning" not in result.stderr


def stats_folder(directory: Path, data: np.ndarray) -> Path:
    """The manager's layout: one folder per strategy with its backtest's stats.json (two shapes), and a
    folder whose backtest has not run yet."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    dates = [(start + timedelta(days=d)).date().isoformat() for d in range(data.shape[0])]
    long_ = directory / "btc_ti_24h"
    short = directory / "btc_ti_24h_short"
    for folder in (long_, short, directory / "eth_new"):
        folder.mkdir(parents=True)
    (long_ / "stats.json").write_text(
        json.dumps({"sharpe": 1.2, "daily_returns": dict(zip(dates, data[:, 0].tolist(), strict=True))})
    )
    (short / "stats.json").write_text(
        json.dumps(
            {"returns": [{"date": d, "return": r} for d, r in zip(dates, data[:, 1].tolist(), strict=True)]}
        )
    )
    return directory


def test_optimize_reads_a_folder_of_strategies_stats_as_the_manager_does(tmp_path: Path) -> None:
    _, data = two_strategies(tmp_path / "x.csv", days=400)
    folder = stats_folder(tmp_path / "strategies", data)
    export = tmp_path / "portfolio_config.json"
    result = CliRunner().invoke(
        app,
        [
            "optimize",
            "--stats-dir",
            str(folder),
            "--account-value",
            "10000",
            "--target-vol",
            "0.30",
            *to(export),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    # The manager's defaults: slope/std of the compounded curve over the last 365 days, no leverage cap.
    assert (shown["method"], shown["observations"], shown["skipped"]) == ("slope_std", 365, ["eth_new"])
    config = json.loads(export.read_text())
    assert list(config)[:5] == [
        "account_value",
        "weights",
        "ann_volatility_pct",
        "target_vol_pct",
        "leverage",
    ]
    assert set(config["weights"]) == {"btc_ti_24h", "btc_ti_24h_short"}
    assert (config["account_value"], config["target_vol_pct"]) == (10000.0, 30.0)
    assert config["leverage"] == pytest.approx(30.0 / config["ann_volatility_pct"], rel=1e-9)
    # The same allocation as the library's, from the last 365 days.
    from rebal_allocation.compounded import compounded_slope_over_std
    from rebal_allocation.optimize import SlopeStd, Solved

    window = data[-365:]
    weights = np.array([config["weights"]["btc_ti_24h"], config["weights"]["btc_ti_24h_short"]])
    direct = SlopeStd(2, lookback=365).solve(window)
    assert isinstance(direct, Solved)
    np.testing.assert_allclose(weights, direct.weights, atol=1e-9)
    assert compounded_slope_over_std(window, weights) > 0
    text = CliRunner().invoke(app, ["optimize", "--stats-dir", str(folder), "--account-value", "10000"])
    assert "skipped (no stats.json): eth_new" in text.stdout


def test_a_folder_without_any_stats_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s" / "only").mkdir(parents=True)
    result = CliRunner().invoke(app, ["optimize", "--stats-dir", str(tmp_path / "s"), "--account-value", "1"])
    assert result.exit_code == 2
    assert (
        result.stderr.replace("\n", "") == f"error: {tmp_path / 's'}: no strategy folder holds a stats.json"
    )


def wide(path: Path, strategies: int, dates: int, value: str | None = None) -> Path:
    rng = np.random.default_rng(3)
    rows = [",".join(["date", *(f"s{i}" for i in range(strategies))])]
    for day in range(dates):
        cells = [value or f"{x:.5f}" for x in rng.normal(0.001, 0.02, strategies)]
        rows.append(",".join([(date(2024, 1, 1) + timedelta(days=day)).isoformat(), *cells]))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("strategies", "dates", "value", "message"),
    [
        # Issue 19, point 11: tried to allocate 59.6 GiB (MemoryError), and a traceback for 1e300. Three
        # dates are now refused before any problem is set up (the size refusal: tests/allocation).
        (2000, 3, None, "only 3 daily returns every strategy has in the window; at least 30 are needed"),
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
    from rebal_optimizer.allocations import Allocations
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


@pytest.mark.parametrize(
    ("allocation", "key"),
    [
        ('method = "mean_variance"\nparameters = { risk_aversion = nan }', "risk_aversion"),
        ('method = "max_sharpe"\nparameters = { risk_free = nan }', "risk_free"),
        ('method = "slope_std"\nparameters = { lookback = inf }', "lookback"),
        ('method = "slope_std"\nparameters = { lookback = 30.7 }', "lookback must be a whole number"),
        ('method = "mix"\nparameters = { return_weight = nan }', "return_weight"),
        ("target_volatility = inf", "target_volatility"),
    ],
)
def test_config_validate_refuses_a_non_finite_allocation_parameter(
    tmp_path: Path, allocation: str, key: str
) -> None:
    config = tmp_path / "rebal.toml"
    config.write_text(f'[targets.files]\nfund = "base.json"\n[allocations.fund]\n{allocation}\n')
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 4, result.output
    assert "allocations.fund" in result.stderr and key in result.stderr, result.stderr

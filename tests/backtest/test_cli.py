"""`rebal backtest` as users call it: the table, the JSON, the plot, and bad input named by file, line and
column with exit 2 (never a traceback)."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rebal_cli.app import app
from rebal_cli.backtest_files import read_history
from rebal_cli.backtest_plot import TITLES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "backtest"
HISTORY = "date,BTC,ETH\n2024-01-01,40000,2000\n2024-01-02,44000,2000\n2024-01-03,48000,1900\n"
TARGET = {
    "name": "alice",
    "children": [
        {"name": "spot", "kind": "account", "exchange": "binance", "quote": "USDT", "weight": 1, "children": [
            {"name": "btc", "asset": "BTC", "weight": "50%"},
            {"name": "eth", "asset": "ETH", "weight": "40%"},
            {"name": "usdt", "asset": "USDT", "weight": "10%"},
        ]},
    ],
}  # fmt: skip


def run(tmp_path: Path, *extra: str, history: str = HISTORY, target: object = TARGET) -> tuple[int, str, str]:
    (tmp_path / "history.csv").write_text(history)
    (tmp_path / "target.json").write_bytes(orjson.dumps(target))
    (tmp_path / "band.toml").write_text("drift_absolute = 0.05\n")
    args = ["backtest", "--prices", str(tmp_path / "history.csv"), "--target", str(tmp_path / "target.json")]
    args += ["--policy", str(tmp_path / "band.toml")]
    if "--real" not in extra:
        args += ["--initial", "10000"]
    result = CliRunner().invoke(app, [*args, *extra])
    return result.exit_code, result.stdout, result.stderr


def csv(*rows: str) -> str:
    return "\n".join(("date,BTC,ETH", *rows)) + "\n"


AT = "history.csv: line"
BAD_HISTORIES = {
    "gap": (
        csv("2024-01-01,1,2", "2024-01-02,1,2", "2024-01-04,1,2", "2024-01-05,1,2"),
        f"{AT} 4, column date: 2024-01-04T00:00:00Z follows 2024-01-02T00:00:00Z: a gap of 2d in a "
        "history of one row every 1d",
    ),
    "empty cell": (csv("2024-01-01,1,2", "2024-01-02,,2"), f"{AT} 3, column BTC: no price"),
    "negative": (csv("2024-01-01,1,2", "2024-01-02,1,-2"), f"{AT} 3, column ETH: price -2 must be positive"),
    "zero": (csv("2024-01-01,0,2", "2024-01-02,1,2"), f"{AT} 2, column BTC: price 0 must be positive"),
    "text": (csv("2024-01-01,abc,2", "2024-01-02,1,2"), f"{AT} 2, column BTC: 'abc' is not a decimal"),
    "nan": (csv("2024-01-01,1,2", "2024-01-02,nan,2"), f"{AT} 3, column BTC: 'nan' is not a decimal"),
    "too large": (
        csv("2024-01-01,1,2", "2024-01-02,1,1e400"),
        f"{AT} 3, column ETH: price 1e400 is out of range",
    ),
    "hourly gap": (
        "timestamp,BTC,ETH\n" + "".join(f"2024-01-01T{hour:02}:00:00Z,1,2\n" for hour in (0, 1, 2, 4, 5)),
        f"{AT} 5, column timestamp: 2024-01-01T04:00:00Z follows 2024-01-01T02:00:00Z: a gap of 2h in a "
        "history of one row every 1h",
    ),
    "unsorted": (csv("2024-01-02,1,2", "2024-01-01,1,2"), f"{AT} 3, column date: 2024-01-01 comes before"),
    "duplicate": (csv("2024-01-01,1,2", "2024-01-01,1,2"), f"{AT} 3, column date: 2024-01-01 repeats line 2"),
    "bad date": (csv("2024-01-01,1,2", "2024-13-01,1,2"), f"{AT} 3, column date: expected an ISO 8601 time"),
    "far date": (
        csv("9999-12-30,1,2", "9999-12-31,1,2"),
        f"{AT} 2, column date: expected a time from 1000-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    ),
    "missing asset": (
        "date,BTC\n2024-01-01,1\n2024-01-02,1\n",
        f"{AT} 1: no column ETH (held at alice/spot/eth in",
    ),
    "no date": ("day,BTC,ETH\n2024-01-01,1,2\n", f"{AT} 1: no date column"),
    "short row": (csv("2024-01-01,1,2", "2024-01-02,1"), f"{AT} 3: 2 columns, the header has 3"),
    "one row": (csv("2024-01-01,1,2"), f"{AT} 3: the file ends with one row of prices"),
}


@pytest.mark.parametrize("case", sorted(BAD_HISTORIES))
def test_a_bad_history_names_file_line_and_column(tmp_path: Path, case: str) -> None:
    history, message = BAD_HISTORIES[case]
    code, stdout, stderr = run(tmp_path, history=history)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1
    assert "Traceback" not in stderr + stdout


def test_a_spreadsheets_export_is_read(tmp_path: Path) -> None:
    """Failed before: the byte order mark and CRLF of a spreadsheet's CSV hid the date column."""
    exported = "\ufeff" + HISTORY.replace("\n", "\r\n")
    code, stdout, stderr = run(tmp_path, "--json", history=exported)
    assert code == 0, stderr
    assert orjson.loads(stdout)["frequency"] == "1d"


def test_a_timestamp_column_of_hours_is_stated_as_the_frequency(tmp_path: Path) -> None:
    hourly = "timestamp,BTC,ETH\n" + "".join(
        f"2024-01-01T{hour:02}:00:00+01:00,{40000 + 500 * hour},2000\n" for hour in range(6)
    )
    code, stdout, stderr = run(tmp_path, "--json", history=hourly)
    assert code == 0, stderr
    out = orjson.loads(stdout)
    assert out["frequency"] == "1h" and out["buy_and_hold"]["final_value"] == 10_312.5  # BTC +6.25% of 5,000


def test_bad_flows_name_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "flows.csv").write_text("date,amount\n2024-01-02,500\n2024-01-03,lots\n")
    code, _, stderr = run(tmp_path, "--flows", str(tmp_path / "flows.csv"))
    assert code == 2 and "flows.csv: line 3, column amount: 'lots' is not a decimal" in stderr
    (tmp_path / "flows.csv").write_text("date,amount\n2025-01-02,500\n")
    code, _, stderr = run(tmp_path, "--flows", str(tmp_path / "flows.csv"))
    assert (
        code == 2 and "flows.csv: line 2, column date: 2025-01-02 is after the history's last row" in stderr
    )


def test_a_withdrawal_larger_than_the_portfolio_names_its_line(tmp_path: Path) -> None:
    """Failed before: the replay paid what it could and printed a final value of 0 with a CAGR of 7,824%."""
    (tmp_path / "flows.csv").write_text("date,amount\n2024-01-02,-5000\n2024-01-03,-5000\n2024-01-03,-1000\n")
    code, stdout, stderr = run(tmp_path, "--flows", str(tmp_path / "flows.csv"))
    assert code == 2 and stdout == "" and stderr.count("\n") == 1
    assert (
        "flows.csv: line 3, column amount: withdrawing 6,000.00 USDT on 2024-01-03T00:00:00Z takes more"
        in stderr
    )
    assert "(baseline: 5,640.00 USDT)" in stderr


def test_bad_trees_policies_and_options_exit_2(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, target={"name": "alice", "children": [{"name": "x", "weight": "50%"}]})
    assert code == 2 and "target.json" in stderr and "sum to 50%" in stderr
    (tmp_path / "bad.toml").write_text("drift_absolute = -1\n")
    code, _, stderr = run(tmp_path, "--policy", str(tmp_path / "bad.toml"))
    assert code == 2 and "bad.toml: drift_absolute:" in stderr
    code, _, stderr = run(tmp_path, "--real", str(tmp_path / "none.json"))
    assert code == 2 and "none.json: file not found" in stderr
    code, _, stderr = run(tmp_path, "--plot", str(tmp_path / "out.gif"))
    assert code == 2 and "--plot" in stderr
    result = CliRunner().invoke(
        app, ["backtest", "--prices", str(tmp_path / "history.csv"), "--target", "t.json"]
    )
    assert result.exit_code == 2 and "--policy" in result.stderr


def test_a_real_start_and_flows_give_every_policy_the_same_money(tmp_path: Path) -> None:
    spot = {"name": "spot", "kind": "account", "exchange": "binance", "quote": "USDT"}
    spot["children"] = [{"name": "usdt", "asset": "USDT", "amount": "10000"}]
    (tmp_path / "real.json").write_bytes(orjson.dumps({"name": "alice", "children": [spot]}))
    (tmp_path / "flows.csv").write_text("date,amount\n2024-01-02T12:00:00Z,1000\n")
    code, stdout, stderr = run(
        tmp_path, "--real", str(tmp_path / "real.json"), "--flows", str(tmp_path / "flows.csv"), "--json"
    )
    assert code == 0, stderr
    out = orjson.loads(stdout)
    assert set(out) == {"frequency", "policies", "baseline", "buy_and_hold"} and out["frequency"] == "1d"
    (band,) = out["policies"]
    assert band["name"] == "band" and band["rebalances"] >= 1  # all cash at the start breaches the band
    assert band["final_value"] > 10_000
    assert out["buy_and_hold"]["final_value"] == 11_000  # never invested: the cash and the deposit
    keys = {"name", "rebalances", "orders", "turnover", "fees", "tracking_error", "max_drift", "mean_drift",
            "final_value", "cagr", "volatility", "max_drawdown", "sharpe"}  # fmt: skip
    assert all(set(row) == keys for row in (band, out["baseline"], out["buy_and_hold"]))


def test_the_bundled_example_prints_a_table_and_a_plot(tmp_path: Path) -> None:
    args = ["backtest", "--prices", str(EXAMPLES / "history.csv"), "--target", str(EXAMPLES / "target.json")]
    args += ["--initial", "100000", "--markets", str(EXAMPLES / "markets.json")]
    args += ["--policy", str(EXAMPLES / "monthly.toml"), "--policy", str(EXAMPLES / "band-5pt.toml")]
    result = CliRunner().invoke(app, [*args, "--plot", str(tmp_path / "lab.html")])
    assert result.exit_code == 0, result.stderr
    assert "monthly" in result.stdout and "band-5pt" in result.stdout and "buy_and_hold" in result.stdout
    page = (tmp_path / "lab.html").read_text()
    assert "Plotly.newPlot" in page and '<script src="http' not in page  # plotly.js inside, no CDN
    assert len(page) > 3_000_000
    assert "band-5pt" in page
    assert all(title in page for title in TITLES)  # equity curves, drift over time, the frontier


def test_a_png_plot_is_an_image(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, "--plot", str(tmp_path / "lab.png"))
    assert code == 0, stderr
    assert (tmp_path / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.decimals(min_value="1e-12", max_value="1e15", allow_nan=False, places=12), min_size=4, max_size=4
    )
)
def test_prices_read_at_once_are_the_decimals_the_cells_write(prices: list[Decimal]) -> None:
    """The fast path (float() of every cell) reads each cell as parsing it as a decimal does."""
    texts = [f"{prices[0]}", f" {prices[1]:e} ", f"+{prices[2]}", f"{prices[3]:f}"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "history.csv"
        path.write_text(csv(f"2024-01-01,{texts[0]},{texts[1]}", f"2024-01-02,{texts[2]},{texts[3]}"))
        table = read_history(path)
    assert table.prices.tolist() == [
        [float(Decimal(t.strip())) for t in pair] for pair in (texts[:2], texts[2:])
    ]


def test_policy_rows_are_named_apart_from_each_other_and_from_the_references(tmp_path: Path) -> None:
    """Failed before: baseline.toml gave a row "baseline" beside the reference row, and one file given
    twice gave two rows of the same name."""
    (tmp_path / "other").mkdir()
    chosen = ["baseline.toml", "buy_and_hold.toml", "band2.toml", "other/band2.toml"]
    for path in chosen:
        (tmp_path / path).write_text("drift_absolute = 0.02\n")
    policies = [part for path in chosen for part in ("--policy", str(tmp_path / path))]
    code, stdout, stderr = run(tmp_path, "--json", *policies)
    assert code == 0, stderr
    names = [row["name"] for row in orjson.loads(stdout)["policies"]]
    assert names == ["band", *(str(tmp_path / path) for path in chosen)]  # run() gives band.toml first
    code, _, stderr = run(tmp_path, "--policy", str(tmp_path / "other" / ".." / "band.toml"))
    assert code == 2
    assert f"--policy: {tmp_path / 'other' / '..' / 'band.toml'} is {tmp_path / 'band.toml'} again" in stderr

"""`rebal backtest` on histories that are irregular only on the wall clock or the calendar (a daily
history at local midnight across a change of summer time, quarterly rows on the first of the month), on
truly irregular ones, on numbers out of range and on too few rows; and where the portfolio starts when
neither --initial nor --real is given. Every one of these failed before with a traceback, a message
without its line, or a refusal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from rebal_cli.app import app

ALL_BTC = {"name": "p", "children": [{"name": "btc", "asset": "BTC", "weight": "100%"}]}
HALF = {"name": "p", "children": [
    {"name": "btc", "asset": "BTC", "weight": "50%"},
    {"name": "usd", "asset": "USD", "weight": "50%"},
]}  # fmt: skip


def backtest(
    tmp_path: Path, history: str, *extra: str, target: object = ALL_BTC, initial: str | None = "10000"
) -> tuple[int, str, str]:
    (tmp_path / "history.csv").write_text(history)
    (tmp_path / "target.json").write_bytes(orjson.dumps(target))
    (tmp_path / "band.toml").write_text("drift_absolute = 0.03\n")
    args = ["backtest", "--prices", str(tmp_path / "history.csv"), "--target", str(tmp_path / "target.json")]
    args += ["--policy", str(tmp_path / "band.toml")]
    args += ["--initial", initial] if initial is not None else []
    result = CliRunner().invoke(app, [*args, *extra])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def rows(header: str, stamps: list[str], prices: list[float]) -> str:
    return header + "\n" + "".join(f"{s},{p}\n" for s, p in zip(stamps, prices, strict=True))


def test_daily_rows_at_local_midnight_across_summer_time_are_daily(tmp_path: Path) -> None:
    """Berlin's midnight moves from +01:00 to +02:00 on 2024-03-31: 23 hours pass on the clock of UTC,
    one day on the dates as written. Before: ValueError traceback ("23 hours, not a whole number of the
    usual 1 day")."""
    stamps = ["2024-03-29T00:00:00+01:00", "2024-03-30T00:00:00+01:00", "2024-03-31T00:00:00+01:00"]
    stamps += ["2024-04-01T00:00:00+02:00", "2024-04-02T00:00:00+02:00", "2024-04-03T00:00:00+02:00"]
    prices = [100.0, 102.0, 99.0, 104.0, 101.0, 103.0]
    code, stdout, stderr = backtest(tmp_path, rows("timestamp,BTC", stamps, prices), "--json")
    assert code == 0, stderr
    out = orjson.loads(stdout)
    assert out["frequency"] == "1d"
    returns = np.diff(prices) / np.array(prices[:-1])
    expected = float(np.std(returns, ddof=1) * math.sqrt(365.25))  # annualised as daily rows
    assert out["buy_and_hold"]["volatility"] == round(expected, 6)


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-10-25T00:00:00+02:00", "2024-10-26T00:00:00+02:00", "2024-10-27T00:00:00+02:00",
         "2024-10-28T00:00:00+01:00", "2024-10-29T00:00:00+01:00"],  # Berlin in autumn: 25 hours
        ["2024-03-09T16:00:00-05:00", "2024-03-10T16:00:00-04:00", "2024-03-11T16:00:00-04:00"],  # New York
    ],
)  # fmt: skip
def test_other_changes_of_summer_time_are_daily_too(tmp_path: Path, stamps: list[str]) -> None:
    code, stdout, stderr = backtest(tmp_path, rows("timestamp,BTC", stamps, [1.0] * len(stamps)), "--json")
    assert code == 0, stderr
    assert orjson.loads(stdout)["frequency"] == "1d"


@pytest.mark.parametrize(
    ("dates", "label"),
    [
        (
            ["2022-01-01", "2022-04-01", "2022-07-01", "2022-10-01", "2023-01-01"],
            "3mo",
        ),  # 90, 91, 92, 92 days
        (["2021-01-01", "2022-01-01", "2023-01-01", "2024-01-01", "2025-01-01"], "1y"),  # 365, 365, 365, 366
        (["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31"], "1mo"),  # month ends
    ],
)
def test_calendar_steps_are_counted_in_months(tmp_path: Path, dates: list[str], label: str) -> None:
    """Four steps that double BTC: one year of quarterly rows (CAGR 100% at 4 a year), four years of
    yearly rows (2**(1/4) - 1 a year), four months of monthly rows (2**3 - 1 at 12 a year). Before, the
    quarterly rows raised "90 days, not a whole number of the usual 91 days" and monthly said "31d"."""
    code, stdout, stderr = backtest(
        tmp_path, rows("date,BTC", dates, [100.0, 110.0, 120.0, 150.0, 200.0]), "--json"
    )
    assert code == 0, stderr
    out = orjson.loads(stdout)
    per_year = {"3mo": 4, "1y": 1, "1mo": 12}[label]
    assert out["frequency"] == label
    assert out["buy_and_hold"]["final_value"] == 20_000.0
    assert out["buy_and_hold"]["cagr"] == round(2.0 ** (per_year / 4) - 1, 6)


UNEVEN = {
    "a short step": (
        ["2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z", "2024-03-02T12:00:00Z", "2024-03-03T00:00:00Z",
         "2024-03-03T12:00:00Z"],
        "history.csv: line 3, column timestamp: 2024-03-02T00:00:00Z follows 2024-03-01T00:00:00Z: a gap "
        "of 1d in a history of one row every 12h",
    ),
    "one day in a history of two": (
        ["2024-03-01", "2024-03-03", "2024-03-05", "2024-03-06", "2024-03-08"],
        "history.csv: line 5, column date: 2024-03-06T00:00:00Z follows 2024-03-05T00:00:00Z: a step of 1d "
        "in a history of one row every 2d",
    ),
    "a day and 9 hours": (
        ["2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z", "2024-03-03T09:00:00Z", "2024-03-04T09:00:00Z"],
        "history.csv: line 4, column timestamp: 2024-03-03T09:00:00Z follows 2024-03-02T00:00:00Z: a step "
        "of 1d9h in a history of one row every 1d",
    ),
    "a quarter skipped": (
        ["2022-01-01", "2022-04-01", "2022-10-01", "2023-01-01", "2023-04-01"],
        "history.csv: line 4, column date: 2022-10-01T00:00:00Z follows 2022-04-01T00:00:00Z: a gap of 183d "
        "in a history of one row every 3mo",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(UNEVEN))
def test_truly_uneven_rows_are_named_by_line_and_column(tmp_path: Path, case: str) -> None:
    """Before: a ValueError traceback from the annualisation, after the parser had accepted the rows."""
    stamps, message = UNEVEN[case]
    header = "timestamp,BTC" if "T" in stamps[0] else "date,BTC"
    code, _, stderr = backtest(tmp_path, rows(header, stamps, [1.0] * len(stamps)))
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1


def test_without_initial_or_real_the_portfolio_starts_with_10000(tmp_path: Path) -> None:
    """Before: exit 2 "--initial AMOUNT or --real START.json"; the issue makes both optional."""
    history = rows("date,BTC", ["2024-01-01", "2024-01-02", "2024-01-03"], [100.0, 120.0, 110.0])
    code, stdout, stderr = backtest(tmp_path, history, "--json", target=HALF, initial=None)
    assert code == 0, stderr
    assert orjson.loads(stdout)["buy_and_hold"]["final_value"] == 10_500.0  # 50 BTC at 110 and 5,000 USD
    code, stdout, stderr = backtest(tmp_path, history, target=HALF, initial=None)
    assert code == 0, stderr
    assert "Starting at the target with 10,000.00 USD (the default of --initial)." in stdout
    code, stdout, _ = backtest(tmp_path, history, target=HALF, initial="2500")
    assert "Starting at the target with 2,500.00 USD." in stdout


OUT_OF_RANGE = {
    "a price of 1e-30": (
        "date,BTC\n2024-01-01,1\n2024-01-02,1e-30\n2024-01-03,1\n",
        "history.csv: line 3, column BTC: price 1e-30 is out of range (1e-18 to 1e18)",
    ),
    "a price of 1e19": (
        "date,BTC\n2024-01-01,1\n2024-01-02,1e19\n2024-01-03,1\n",
        "history.csv: line 3, column BTC: price 1e19 is out of range (1e-18 to 1e18)",
    ),
    "no row": ("date,BTC\n", "history.csv: line 2: the file ends with no row of prices"),
    "one row": ("date,BTC\n2024-01-01,1\n", "history.csv: line 3: the file ends with one row of prices"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_prices_out_of_range_and_too_few_rows_name_the_line(tmp_path: Path, case: str) -> None:
    """Before: a price of 1e-30 was read and failed in the planner, and "fewer than two rows" named no
    line."""
    history, message = OUT_OF_RANGE[case]
    code, _, stderr = backtest(tmp_path, history)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize("amount", ["1e19", "1e30", "-1e19", "1e-19"])
def test_a_flow_out_of_range_names_its_line(tmp_path: Path, amount: str) -> None:
    (tmp_path / "flows.csv").write_text(f"date,amount\n2024-01-02,100\n2024-01-03,{amount}\n")
    history = rows("date,BTC", ["2024-01-01", "2024-01-02", "2024-01-03"], [1.0, 1.0, 1.0])
    code, _, stderr = backtest(tmp_path, history, "--flows", str(tmp_path / "flows.csv"))
    assert code == 2
    assert (
        f"flows.csv: line 3, column amount: amount {amount} is out of range (0, or 1e-18 to 1e18)" in stderr
    )


def test_an_empty_flows_file_asks_for_date_and_amount(tmp_path: Path) -> None:
    (tmp_path / "flows.csv").write_text("")
    history = rows("date,BTC", ["2024-01-01", "2024-01-02"], [1.0, 1.0])
    code, _, stderr = backtest(tmp_path, history, "--flows", str(tmp_path / "flows.csv"))
    assert code == 2 and "flows.csv: line 1: empty file (expected a header such as date,amount)" in stderr


def test_help_names_the_options_values() -> None:
    """Failed before: `--policy <list[Path]>` and `--initial <str>`."""
    result = CliRunner().invoke(app, ["backtest", "--help"], env={"COLUMNS": "120"})
    assert "--policy POLICY" in result.stdout and "--initial AMOUNT" in result.stdout
    assert "list[Path]" not in result.stdout and "default: 10000" in result.stdout


def test_a_policy_in_a_suffix_read_as_json_says_how_suffixes_pick_the_format(tmp_path: Path) -> None:
    """Failed before: TOML text in policy.txt (read as JSON, then YAML: a string) got only "a policy is a
    mapping of keys"."""
    history = rows("date,BTC", ["2024-01-01", "2024-01-02"], [1.0, 1.0])
    (tmp_path / "policy.txt").write_text("drift_absolute = 0.03\n")
    code, _, stderr = backtest(tmp_path, history, "--policy", str(tmp_path / "policy.txt"))
    assert code == 2
    assert "policy.txt: a policy is a mapping of keys" in stderr
    assert (
        "the suffix picks the format: .toml is TOML, .yaml or .yml YAML, any other JSON (or YAML)" in stderr
    )


def test_the_fee_axis_starts_at_zero_when_every_fee_is_zero(tmp_path: Path) -> None:
    """Failed before: with no fees matplotlib centred the frontier's fee axis on 0 (-0.05 to 0.05)."""
    pytest.importorskip("matplotlib")
    from rebal.core.backtest import History, compare
    from rebal.core.backtest.start import at_target
    from rebal.core.market import Markets
    from rebal.core.policy import Bands, Policy
    from rebal.core.tree import parse_tree
    from rebal_cli.backtest_plot import png_figure

    times = np.array([0, 86_400, 172_800], dtype=np.int64) + 1_704_067_200
    history = History(times, ("BTC",), np.array([[100.0], [130.0], [90.0]]), "USD")
    target = parse_tree(HALF, "target")
    start = at_target(HALF, target, 1_000, history.row_prices(0), "backtest")
    result = compare(history, start, target, Markets(), [("band", Policy(bands=Bands(absolute=0.05)))])
    assert result.policies[0].figures.rebalances and result.policies[0].figures.fees == 0
    figure = png_figure(result, [np.datetime64(int(t), "s").item() for t in times], "USD")
    assert figure.axes[2].get_ylim() == (0.0, 1.0)

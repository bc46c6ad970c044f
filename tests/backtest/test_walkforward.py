"""The optimizer walked forward: each re-optimisation sees only the returns known at its time, the
methods are the optimizer's own (`make_optimizer`), and the command names bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import orjson
from typer.testing import CliRunner

from rebal.schedule import CronSchedule
from rebal.trigger import parse_instant
from rebal_allocation.walkforward import Candidate, walk
from rebal_cli.app import app
from rebal_cli.walkforward import reoptimisation_rows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "backtest"
DAY = 86_400


def returns(rows: int = 300, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal([0.001, 0.0005, 0.0002], [0.02, 0.01, 0.004], (rows, 3))


def test_a_reoptimisation_sees_only_the_rows_before_it() -> None:
    data = returns()
    rows = [100, 130, 160, 190]
    candidate = Candidate(method="min_variance")
    first = walk("mv", candidate, data, rows, lookback=90, fee_rate=0.0)
    later = data.copy()
    later[130:] *= 5  # from row 130 on the returns change: the solves at rows 100 and 130 must not
    second = walk("mv", candidate, later, rows, lookback=90, fee_rate=0.0)
    assert np.array_equal(first.weights[:2], second.weights[:2])
    assert not np.allclose(first.weights[2], second.weights[2])
    assert np.array_equal(first.returns[:30], second.returns[:30])


def test_equal_weight_holds_the_mean_and_pays_for_what_moves() -> None:
    data = returns()
    run = walk("ew", Candidate(method="equal_weight"), data, [50, 80], lookback=30, fee_rate=0.01)
    expected = data[50:].mean(axis=1)
    expected[0] -= 0.01  # the first allocation moves the whole weight
    assert np.allclose(run.returns, expected)
    assert run.turnover == 1.0 and run.failures == 0


def test_volatility_targeting_scales_by_the_window_realised_volatility() -> None:
    data = returns()
    plain = walk("rp", Candidate(method="risk_parity"), data, [100], lookback=100, fee_rate=0.0)
    scaled = walk(
        "rp10", Candidate(method="risk_parity", target_volatility=0.05, max_leverage=4), data, [100], 100, 0.0
    )
    realised = np.std(data[:100] @ plain.weights[0], ddof=1) * np.sqrt(365.25)  # daily: one convention
    assert np.allclose(scaled.weights[0], plain.weights[0] * min(0.05 / realised, 4))


def test_ticks_between_two_rows_reoptimise_once_for_the_row_after() -> None:
    times = parse_instant("2024-01-01T00:00:00Z") + DAY * np.arange(100, dtype=np.int64)
    rows = reoptimisation_rows(times, CronSchedule("0 12 * * MON"), min_history=10)
    # Monday 2024-01-15 12:00 is after row 14 (the 15th, 00:00): its allocation holds from row 15.
    assert rows[0] == 15 and all(b - a == 7 for a, b in itertools.pairwise(rows))


def test_the_bundled_walk_forward_prints_every_method(tmp_path: Path) -> None:
    args = ["backtest", "--strategies", str(EXAMPLES / "strategies.csv")]
    result = CliRunner().invoke(app, [*args, "--allocation", str(EXAMPLES / "walkforward.toml"), "--json"])
    assert result.exit_code == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert out["frequency"] == "1d"
    names = [m["name"] for m in out["methods"]]
    assert names == [
        "equal_weight",
        "min_variance",
        "max_sharpe",
        "risk_parity",
        "slope_std",
        "risk_parity_vol10",
    ]
    (tmp_path / "bad.toml").write_text('[methods.x]\nmethod = "risk_parity"\nparameters = { lookback = 3 }\n')
    result = CliRunner().invoke(app, [*args, "--allocation", str(tmp_path / "bad.toml")])
    assert result.exit_code == 2
    assert "bad.toml: methods.x: risk_parity takes no parameter lookback" in result.stderr


def test_strategy_returns_too_irregular_to_annualise_are_named(tmp_path: Path) -> None:
    """Before: a ValueError traceback from `periods_per_year_from` after the file had been read."""
    rng = np.random.default_rng(1)
    lines = ["date,a,b"]
    for i in range(200):  # steps of 36 and 12 hours by turns: no frequency to annualise with
        stamp = parse_instant("2021-01-01T00:00:00Z") + (36 if i % 2 else 24) * 3600 * i
        lines.append(f"{np.datetime64(stamp, 's')}Z,{rng.normal(0, 0.01):.5f},{rng.normal(0, 0.01):.5f}")
    (tmp_path / "irr.csv").write_text("\n".join(lines) + "\n")
    args = ["backtest", "--strategies", str(tmp_path / "irr.csv")]
    result = CliRunner().invoke(app, [*args, "--allocation", str(EXAMPLES / "walkforward.toml")])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "irr.csv: irregular dates: 2021-01-02T12:00:00Z to 2021-01-03 is 12 hours" in result.stderr

"""`rebal backtest --strategies RETURNS.csv --allocation ALLOCATION`: the optimizer walked forward over
strategy returns, method against method, out of sample (docs/backtest.md; the maths is
`rebal_allocation.walkforward`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table as RichTable

from rebal.core import performance
from rebal.core.backtest.history import duration_text
from rebal.io import FileError, load_document
from rebal.schedule import CronSchedule
from rebal_cli.render import console
from rebal_cli.returns_file import ReturnsFileError, read_returns
from rebal_cli.support import fail, write_json

RATIO_PLACES = 6
TABLE_WIDTH = 140


def reoptimisation_rows(times: np.ndarray, schedule: CronSchedule, min_history: int) -> list[int]:
    """The first row each re-optimisation holds: a tick at instant T re-optimises on the rows up to T
    (their returns are known then) for the rows after it; ticks between the same two rows are one."""
    rows: list[int] = []
    if times.size <= min_history:
        return rows
    tick = schedule.following(int(times[min_history - 1]) - 1)
    while tick is not None:
        row = int(np.searchsorted(times, tick, side="right"))
        if row >= times.size:
            break
        if not rows or row > rows[-1]:
            rows.append(row)
        tick = schedule.following(max(tick, int(times[row]) - 1))
    return rows


def _load(path: Path) -> Any:
    from rebal_allocation.walkforward import WalkForward

    try:
        document = load_document(path)
    except FileError as exc:
        fail(str(exc))
    if not isinstance(document, dict):
        fail(f"{path}: a walk-forward file is a mapping (schedule, lookback, methods)")
    try:
        config = WalkForward.model_validate(document)
        schedule = CronSchedule(config.schedule, config.timezone)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        fail(f"{path}: {where or 'file'}: {str(error['msg']).removeprefix('Value error, ')}")
    except ValueError as exc:
        fail(f"{path}: schedule: {exc}")
    return config, schedule


def walk(
    strategies: Path | None,
    allocation: Path | None,
    prices: Path | None,
    target: Path | None,
    real: Path | None,
    initial: str | None,
    policy: list[Path] | None,
    flows: Path | None,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Compare the allocation file's methods out of sample (see the module's docstring)."""
    from rebal_allocation.walkforward import walk as walk_method

    if strategies is None or allocation is None:
        fail("--strategies and --allocation go together")
    mixed = [name for name, value in (("--prices", prices), ("--target", target), ("--real", real),
             ("--initial", initial), ("--policy", policy), ("--flows", flows)) if value]  # fmt: skip
    if mixed:
        fail(f"--strategies walks the optimizer: leave out {', '.join(mixed)}")
    config, schedule = _load(allocation)
    try:
        returns = read_returns(strategies)
    except ReturnsFileError as exc:
        fail(str(exc))
    names = tuple(returns.series)
    try:
        times, matrix = performance.align(
            [[ts.timestamp() for ts, _ in returns.series[n]] for n in names],
            [[float(v) for _, v in returns.series[n]] for n in names],
        )
    except ValueError as exc:
        fail(f"{strategies}: {exc}")
    stamps = times.astype(np.int64)
    rows = reoptimisation_rows(stamps, schedule, config.min_history)
    if not rows:
        fail(
            f"{strategies}: {stamps.size} dates every strategy has a return for: no re-optimisation falls "
            f"after the first {config.min_history} (min_history) and before the last"
        )
    try:
        per_year = performance.periods_per_year_from(stamps)
    except ValueError as exc:  # dates too irregular to annualise (the reason names them)
        fail(f"{strategies}: {exc}")
    walks = []
    for name, candidate in config.methods.items():
        try:
            walks.append(
                walk_method(name, candidate, matrix, rows, config.lookback, config.fee_rate, per_year)
            )
        except ValueError as exc:  # constraints a method cannot take, returns it cannot use
            fail(f"{allocation}: methods.{name}: {exc}")
    spacing = int(np.median(np.diff(stamps)))
    result = {
        "frequency": duration_text(spacing),
        "methods": [_figures(w, per_year) for w in walks],
    }
    if plot is not None:
        from rebal_cli.backtest_plot import write_curves

        dates = stamps[rows[0] :]
        write_curves(plot, {w.name: np.cumprod(1.0 + w.returns) for w in walks}, dates)
    if as_json:
        write_json(result)
        return
    _print(result, stamps, rows, len(names))


def _number(value: float) -> float | None:
    return round(value, RATIO_PLACES) if math.isfinite(value) else None


def _figures(w: Any, per_year: float) -> dict[str, Any]:
    returns = w.returns
    years = returns.size / per_year
    return {
        "name": w.name,
        "method": w.method,
        "reoptimisations": int(w.weights.shape[0]),
        "failures": w.failures,
        "turnover": _number(w.turnover / years if years > 0 else 0.0),
        "mean_leverage": _number(float(w.leverage.mean())),
        "final_value": _number(float(np.prod(1.0 + returns))),
        "cagr": _number(float(performance.annualised_return(returns, per_year))),
        "volatility": _number(float(performance.annualised_volatility(returns, per_year))),
        "max_drawdown": _number(float(performance.max_drawdown(returns))),
        "sharpe": _number(float(performance.sharpe(returns, per_year))),
    }


def _print(result: dict[str, Any], stamps: np.ndarray, rows: list[int], strategies: int) -> None:
    from rebal.trigger import instant_text

    out = console()
    if not out.is_terminal:
        out = Console(highlight=False, width=TABLE_WIDTH)
    out.print(
        f"{strategies} strategies, out of sample from {instant_text(int(stamps[rows[0]]))} to "
        f"{instant_text(int(stamps[-1]))} (one row every {result['frequency']}), {len(rows)} re-optimisations"
    )
    table = RichTable()
    for column in (
        "method",
        "solves",
        "failed",
        "turnover",
        "leverage",
        "growth",
        "CAGR",
        "vol",
        "max DD",
        "Sharpe",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for m in result["methods"]:
        table.add_row(
            m["name"],
            str(m["reoptimisations"]),
            str(m["failures"]),
            _pct(m["turnover"]),
            "-" if m["mean_leverage"] is None else f"{m['mean_leverage']:.2f}x",
            "-" if m["final_value"] is None else f"{m['final_value']:.3f}",
            _pct(m["cagr"]),
            _pct(m["volatility"]),
            _pct(m["max_drawdown"]),
            "-" if m["sharpe"] is None else f"{m['sharpe']:.2f}",
        )
    out.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"

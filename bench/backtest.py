"""Backtest benchmark: `rebal.core.backtest` beside bt and vectorbt, on the same prices and policies.

Data: 10 years of daily prices (3,653 rows from 2015-01-01, UTC midnights) for 10, 100 and 500 assets:
geometric Brownian motion from 100 with a market factor (each asset's daily volatility drawn in 1-4%),
seed 7. The portfolio: one account holding the assets at equal weights (cash 0), starting as 1,000,000
of cash. Fees 0.1% of notional; no steps or minimums that bt and vectorbt would not know (our markets
have the default step of 1e-8 and no minimum).

Policies, checked daily:

- the four reference policies: `monthly` (cron ``0 0 1 * *`` / bt ``RunMonthly``), `quarterly`
  (``0 0 1 1,4,7,10 *`` / ``RunQuarterly``), `abs5` (a 5-point absolute band on every weight, cash
  included; bt has no algo for it: a 12-line ``Algo`` in this file, as bt's docs suggest), `rel20` (a 20%
  relative band on every asset / ``RunIfOutOfBounds(0.2)``; our policy lifts the band on the cash
  wallet, which bt does not check);
- a 12-policy run: those four, weekly, yearly, absolute bands of 2 and 10 points, relative bands of 10%
  and 30%, monthly or the 5-point band, quarterly or the 20% band.

Each library as its documentation shows it: bt 1.4 ``Strategy([Or([RunOnce(), <trigger>]), SelectAll(),
WeighEqually(), Rebalance()])`` per policy, ``Backtest(..., commissions=0.1% of |q| p,
integer_positions=False)``, ``bt.run`` of the policies together; vectorbt 1.2 ``Portfolio.from_order_func``
with one group sharing its cash, a numba ``pre_segment_func_nb`` that decides the row (the calendar as a
precomputed mask; the bands from the current weights, exactly) and sorts the orders sells-first
(``sort_call_seq_nb``), and an ``order_func_nb`` placing target-percent orders. Its first call in a
process compiles (numba): reported apart (`compile`), then timed warm (best of two, by CPU). Ours:
best of two as well, by CPU: `replay_all` of the policies, as `rebal backtest` replays them (each policy's
screen, the core's `evaluate` on the rows it proposes, `plan_rebalance` when one fires, the fill; the
screens of the policies scan their rows together), and each policy's figures.

Agreement (monthly, 10 and 100 assets): final value and fees. With our own fill rule they differ from bt's
and vectorbt's by what their rules explain (bt spends a buy's budget including the fee and sells more to
cover a sell's; vectorbt sizes before the fee and cuts the last buys to the cash; ours scales every buy
of an account by the same factor when the fees do not fit); with our rule switched to theirs
(`fill_rule="bt"` / `"vectorbt"`, `rebal.core.backtest.references`) they agree to rounding.

Whole processes (`--process`): what a user waits for, start to exit. The same prices written as the
files `rebal backtest` reads (HISTORY.csv, the target, the markets, the four policies as JSON), then
`rebal backtest ... --json` run as a process (it also replays buy-and-hold and values the baseline),
beside a Python process that imports vectorbt, reads the same CSV with pandas and runs the four policies
as above (its numba compile included: `from_order_func` specialises its loop on the functions passed, so
every such process pays it). Both start from the same cash (`--real`, all USD) and buy the target at the
first row. Best of two each, CPU of the child processes.

    .venv-bench/bin/python bench/backtest.py                # all sizes, ~5 minutes (bt at 500 assets)
    .venv-bench/bin/python bench/backtest.py --sizes 10,100 --no-twelve
    .venv-bench/bin/python bench/backtest.py --process --sizes 10,100,500
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from rebal.core.backtest import History, figures, replay_all
from rebal.core.backtest.references import FillRule
from rebal.core.market import Markets
from rebal.core.policy import Bands, Policy
from rebal.core.tree import parse_tree
from rebal.schedule import CronSchedule

ROWS = 3653
START = 1_420_070_400  # 2015-01-01T00:00:00Z
DAY = 86_400
CAPITAL = 1_000_000.0
FEE = 0.001
SEED = 7


@dataclass(frozen=True)
class Spec:
    """A policy as each library spells it: calendar (cron, bt algo name), bands (absolute, relative)."""

    name: str
    cron: str | None = None
    calendar: str | None = None  # bt: RunWeekly / RunMonthly / RunQuarterly / RunYearly
    absolute: float | None = None
    relative: float | None = None


FOUR = (
    Spec("monthly", "0 0 1 * *", "RunMonthly"),
    Spec("quarterly", "0 0 1 1,4,7,10 *", "RunQuarterly"),
    Spec("abs5", absolute=0.05),
    Spec("rel20", relative=0.20),
)
TWELVE = (
    *FOUR,
    Spec("weekly", "0 0 * * MON", "RunWeekly"),
    Spec("yearly", "0 0 1 1 *", "RunYearly"),
    Spec("abs2", absolute=0.02),
    Spec("abs10", absolute=0.10),
    Spec("rel10", relative=0.10),
    Spec("rel30", relative=0.30),
    Spec("monthly|abs5", "0 0 1 * *", "RunMonthly", absolute=0.05),
    Spec("quarterly|rel20", "0 0 1 1,4,7,10 *", "RunQuarterly", relative=0.20),
)


def prices(assets: int, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0002, 0.012, ROWS)
    beta = rng.uniform(0.5, 1.5, assets)
    vol = rng.uniform(0.01, 0.04, assets)
    steps = market[:, None] * beta + rng.normal(0, 1, (ROWS, assets)) * vol - vol**2 / 2
    steps[0] = 0
    return 100 * np.exp(np.cumsum(steps, axis=0))


def names(assets: int) -> list[str]:
    return [f"A{i:03d}" for i in range(assets)]


# -- ours ----------------------------------------------------------------------------------------------


def our_setup(assets: int) -> tuple[dict[str, Any], Any, Markets]:
    symbols = names(assets)
    wallets = [{"name": s.lower(), "asset": s, "weight": 1 / assets} for s in symbols]
    target = {"name": "p", "children": [{"name": "spot", "weight": 1, "children": wallets}]}
    start = {"name": "p", "children": [{"name": "spot", "kind": "account", "exchange": "x", "quote": "USD",
             "children": [{"name": "usd", "asset": "USD", "amount": repr(CAPITAL)}]}]}  # fmt: skip
    markets = Markets.parse({"x": {f"{s}/USD": {"fee_rate": str(FEE)} for s in symbols}})
    return start, parse_tree(target, "target"), markets


def our_policy(spec: Spec) -> Policy:
    overrides = {"p/spot/usd": {"relative": None}} if spec.relative is not None else {}
    return Policy(
        bands=Bands(absolute=spec.absolute, relative=spec.relative),
        overrides=overrides,
        schedule=CronSchedule(spec.cron) if spec.cron else None,
    )


Outcomes = dict[str, tuple[float, float, int]]  # per policy: final value, fees, rebalances


def run_ours(data: np.ndarray, specs: tuple[Spec, ...], rule: FillRule = "rebal") -> Outcomes:
    assets = data.shape[1]
    history = History(START + DAY * np.arange(ROWS, dtype=np.int64), tuple(names(assets)), data, "USD")
    start, target, markets = our_setup(assets)
    out = {}
    policies = [(spec.name, our_policy(spec)) for spec in specs]
    runs = replay_all(history, start, target, markets, policies, fill_rule=rule)
    for spec, run in zip(specs, runs, strict=True):
        figures(run, None, 365.25)
        out[spec.name] = (float(run.value[-1]), float(run.fees.sum()), run.rebalances)
    return out


# -- bt ------------------------------------------------------------------------------------------------


def run_bt(data: np.ndarray, specs: tuple[Spec, ...]) -> Outcomes:
    import bt
    import pandas as pd

    class RunIfOutOfAbsoluteBand(bt.Algo):  # type: ignore[misc]
        """True when a weight, cash included, is more than `band` from its target (bt has no such algo)."""

        def __init__(self, band: float) -> None:
            super().__init__()
            self.band = band

        def __call__(self, target: Any) -> bool:
            weights = target.temp.get("weights", {})
            for name, weight in weights.items():
                current = target.children[name].weight if name in target.children else 0.0
                if abs(current - weight) > self.band:
                    return True
            return bool(target.value and abs(target.capital / target.value) > self.band)

    frame = pd.DataFrame(data, columns=names(data.shape[1]),
                         index=pd.to_datetime(START + DAY * np.arange(ROWS), unit="s"))  # fmt: skip
    tests = []
    for spec in specs:
        triggers: list[Any] = [bt.algos.RunOnce()]
        if spec.calendar:
            triggers.append(getattr(bt.algos, spec.calendar)())
        if spec.absolute is not None:
            triggers.append(RunIfOutOfAbsoluteBand(spec.absolute))
        if spec.relative is not None:
            triggers.append(bt.algos.RunIfOutOfBounds(spec.relative))
        algos = [bt.algos.SelectAll(), bt.algos.WeighEqually(), bt.algos.Or(triggers), bt.algos.Rebalance()]
        strategy = bt.Strategy(spec.name, algos)
        tests.append(bt.Backtest(strategy, frame, initial_capital=CAPITAL, integer_positions=False,
                                 commissions=lambda q, p: abs(q) * p * FEE, progress_bar=False))  # fmt: skip
    result = bt.run(*tests)
    out = {}
    for test in tests:
        strategy = result.backtests[test.name].strategy
        rebalances = int((strategy.outlays.abs().sum(axis=1) > 0).sum())
        out[test.name] = (float(strategy.values.iloc[-1]), float(strategy.fees.sum()), rebalances)
    return out


# -- vectorbt ------------------------------------------------------------------------------------------


def vbt_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from numba import njit
    from vectorbt.portfolio import nb
    from vectorbt.portfolio.enums import Direction, NoOrder, SizeType

    @njit
    def pre_segment(c, order_value, mask, absolute, relative, weights, sizes):  # type: ignore[no-untyped-def]
        value = c.last_cash[c.group]
        for col in range(c.from_col, c.to_col):
            c.last_val_price[col] = c.close[c.i, col]
            value += c.last_position[col] * c.close[c.i, col]
        go = mask[c.i] or c.i == 0
        if not go and value > 0:
            cash = c.last_cash[c.group] / value
            if not np.isnan(absolute) and abs(cash) > absolute:
                go = True
            for col in range(c.from_col, c.to_col):
                weight = c.last_position[col] * c.close[c.i, col] / value
                drift = abs(weight - weights[col])
                if not np.isnan(absolute) and drift > absolute:
                    go = True
                if not np.isnan(relative) and drift > relative * weights[col]:
                    go = True
        if go:
            nb.sort_call_seq_nb(c, sizes, SizeType.TargetPercent, Direction.LongOnly, order_value)
        return (go,)

    @njit
    def order(c, go, weights, fee):  # type: ignore[no-untyped-def]
        if not go:
            return NoOrder
        return nb.order_nb(size=weights[c.col], price=c.close[c.i, c.col], size_type=SizeType.TargetPercent,
                           direction=Direction.LongOnly, fees=fee)  # fmt: skip

    return pre_segment, order


def run_vbt(data: np.ndarray, specs: tuple[Spec, ...], functions: Any) -> Outcomes:
    import vectorbt as vbt

    pre_segment, order = functions
    assets = data.shape[1]
    weights = np.full(assets, 1.0 / assets)
    times = START + DAY * np.arange(ROWS, dtype=np.int64)
    out = {}
    for spec in specs:
        mask = np.zeros(ROWS, dtype=np.bool_)
        if spec.cron:
            schedule = CronSchedule(spec.cron)
            tick = schedule.following(int(times[0]) - 1)
            while tick is not None and tick <= times[-1]:
                mask[np.searchsorted(times, tick)] = True
                tick = schedule.following(tick)
        absolute = np.nan if spec.absolute is None else spec.absolute
        relative = np.nan if spec.relative is None else spec.relative
        portfolio = vbt.Portfolio.from_order_func(
            data, order, weights, FEE,
            pre_segment_func_nb=pre_segment,
            pre_segment_args=(np.empty(assets), mask, absolute, relative, weights, weights),
            group_by=np.zeros(assets, dtype=np.int64), cash_sharing=True, init_cash=CAPITAL, freq="1D",
        )  # fmt: skip
        orders = portfolio.orders.records
        out[spec.name] = (
            float(np.asarray(portfolio.value())[-1]),
            float(orders["fees"].sum()),
            len(np.unique(orders["idx"])),
        )
    return out


# -- whole processes -----------------------------------------------------------------------------------

VBT_PROCESS = """
import sys
import numpy as np
import pandas as pd
sys.path.insert(0, {bench!r})
import backtest as b
data = pd.read_csv({history!r}, index_col="date").to_numpy()
out = b.run_vbt(data, b.FOUR, b.vbt_functions())
print({{name: round(value, 2) for name, (value, fees, count) in out.items()}})
"""


def write_files(folder: Path, data: np.ndarray) -> list[str]:
    """The bench's portfolio as `rebal backtest`'s files; returns the command's arguments."""
    symbols = names(data.shape[1])
    days = np.datetime_as_string((START + DAY * np.arange(ROWS)).astype("datetime64[s]"), unit="D")
    lines = ["date," + ",".join(symbols)]
    lines += [f"{day}," + ",".join(repr(float(p)) for p in row) for day, row in zip(days, data, strict=True)]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    start, _, _ = our_setup(data.shape[1])  # all cash: the first row buys the target, as vectorbt's does
    (folder / "start.json").write_text(json.dumps(start))
    target = {"name": "p", "children": [{"name": "spot", "kind": "account", "exchange": "x", "quote": "USD",
              "weight": 1, "children": [{"name": s.lower(), "asset": s, "weight": 1 / len(symbols)}
                                        for s in symbols]}]}  # fmt: skip
    (folder / "target.json").write_text(json.dumps(target))
    (folder / "markets.json").write_text(
        json.dumps({"x": {f"{s}/USD": {"fee_rate": str(FEE)} for s in symbols}})
    )
    args = ["--prices", str(folder / "history.csv"), "--target", str(folder / "target.json")]
    args += ["--real", str(folder / "start.json"), "--markets", str(folder / "markets.json"), "--json"]
    for spec in FOUR:
        policy: dict[str, Any] = {"schedule": spec.cron, "drift_absolute": spec.absolute}
        if spec.relative is not None:
            policy |= {"drift_relative": spec.relative, "bands": {"p/spot/usd": {"drift_relative": None}}}
        (folder / f"{spec.name}.json").write_text(
            json.dumps({k: v for k, v in policy.items() if v is not None})
        )
        args += ["--policy", str(folder / f"{spec.name}.json")]
    return args


def process(command: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (the child's, user + system) of one process, and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout


def run_processes(sizes: list[int]) -> None:
    rebal = str(Path(sys.executable).with_name("rebal"))
    bench = str(Path(__file__).resolve().parent)
    print(f"{'assets':>6} | {'rebal s':>7} {'rebal cpu':>9} | {'vbt s':>7} {'vbt cpu':>8} | vbt/rebal (CPU)")
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            args = write_files(Path(folder), prices(size))
            ours = min((process([rebal, "backtest", *args]) for _ in range(2)), key=lambda t: t[1])
            script = VBT_PROCESS.format(bench=bench, history=str(Path(folder) / "history.csv"))
            vbt = min((process([sys.executable, "-c", script]) for _ in range(2)), key=lambda t: t[1])
        finals = {row["name"]: row["final_value"] for row in json.loads(ours[2])["policies"]}
        ratio = vbt[1] / ours[1]
        print(f"{size:>6} | {ours[0]:7.2f} {ours[1]:9.2f} | {vbt[0]:7.2f} {vbt[1]:8.2f} | {ratio:6.2f}x")
        print(f"         final values: rebal {finals}\n                       vectorbt {vbt[2].strip()}")


# -- the run -------------------------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--no-twelve", action="store_true", help="skip the 12-policy run")
    parser.add_argument("--no-bt", action="store_true", help="skip bt (the slow one)")
    parser.add_argument("--process", action="store_true", help="whole processes: rebal backtest vs vectorbt")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    print(f"backtest: {ROWS} daily rows, equal weights, fee {FEE:.1%}, seed {SEED}; load {load:.1f}")
    if args.process:
        run_processes(sizes)
        return
    functions = vbt_functions()
    compile_wall, compile_cpu, _ = timed(lambda: run_vbt(prices(3, 1), FOUR[:1] + FOUR[2:3], functions))
    print(
        f"vectorbt: first call in this process (numba compile) {compile_wall:.2f} s, {compile_cpu:.2f} s CPU"
    )
    header = (
        f"{'policies':>9} {'assets':>6} | {'ours s':>7} {'ours cpu':>8} | {'bt s':>7} {'bt cpu':>7} "
        f"{'bt/ours':>8} | {'vbt warm':>8} {'vbt cpu':>7} {'vbt/ours':>8} | rebalances (ours, bt, vbt)"
    )
    runs = [(FOUR, "4")] + ([] if args.no_twelve else [(TWELVE, "12")])
    agreement: dict[int, dict[str, Any]] = {}
    for specs, label in runs:
        print(header)
        for size in sizes:
            data = prices(size)
            # Each warm, best of two by CPU: our first run also pays what a process does once (the
            # first parse of a cron expression, numpy's first calls), as vectorbt's first pays its compile.
            ours_times = [timed(lambda: run_ours(data, specs)) for _ in range(2)]  # noqa: B023
            ours_wall, ours_cpu, ours = min(ours_times, key=lambda t: t[1])
            vbt_times = [timed(lambda: run_vbt(data, specs, functions)) for _ in range(2)]  # noqa: B023
            vbt_wall, vbt_cpu, vbt = min(vbt_times, key=lambda t: t[1])
            if args.no_bt:
                bt_wall = bt_cpu = float("nan")
                bt_result: Outcomes = {}
            else:
                bt_wall, bt_cpu, bt_result = timed(lambda: run_bt(data, specs))  # noqa: B023
            counts = ", ".join(
                f"{s.name} {ours[s.name][2]}/{bt_result.get(s.name, (0, 0, '-'))[2]}/{vbt[s.name][2]}"
                for s in specs[:4]
            )
            print(
                f"{label:>9} {size:>6} | {ours_wall:7.3f} {ours_cpu:8.3f} | {bt_wall:7.2f} {bt_cpu:7.2f} "
                f"{bt_cpu / ours_cpu:7.1f}x | {vbt_wall:8.3f} {vbt_cpu:7.3f} "
                f"{vbt_cpu / ours_cpu:7.2f}x | {counts}"
            )
            if label == "4" and size <= 100:
                agreement[size] = {"ours": ours, "bt": bt_result, "vbt": vbt, "data": data}
    print("\nmonthly: final value and fees, relative to the other tool (ours with our rule | with theirs)")
    for size, seen in agreement.items():
        data = seen["data"]
        as_bt = run_ours(data, FOUR[:1], "bt")["monthly"]
        as_vbt = run_ours(data, FOUR[:1], "vectorbt")["monthly"]
        ours = seen["ours"]["monthly"]
        pairs = (("bt", seen["bt"].get("monthly"), as_bt), ("vectorbt", seen["vbt"]["monthly"], as_vbt))
        for tool, theirs, switched in pairs:
            if theirs is None:
                continue
            print(
                f"{size:>4} assets vs {tool:<8}: value {theirs[0]:,.2f}, fees {theirs[1]:,.2f} | ours "
                f"{ours[0]:,.2f} ({relative(ours[0], theirs[0]):.2e}), "
                f"{ours[1]:,.2f} ({relative(ours[1], theirs[1]):.2e}) | "
                f"switched {switched[0]:,.2f} ({relative(switched[0], theirs[0]):.2e}), {switched[1]:,.2f} "
                f"({relative(switched[1], theirs[1]):.2e})"
            )


if __name__ == "__main__":
    main()

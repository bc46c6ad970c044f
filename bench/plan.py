"""Planner benchmark: ours (rebal.core) against the obvious Decimal reference (bench/reference.py).

For each size the four input files are generated once (bench/out/<size>/, reused while the generator and
seed are unchanged); every measurement then runs in a fresh subprocess, so its peak memory is its own:

- parse+plan: read and parse the files, then diff and plan (ours: `diff_trees` + `plan_rebalance`, whose
  plan holds every order exactly, as whole steps of the market's exact step; the reference: its Decimal
  recursion, which returns order dicts);
- plan alone: the same on already-parsed inputs. Ours is timed cold (the first call in a fresh process,
  which also pays for faulting in fresh memory) and warm (best of 3 more calls in that process);
- orders: ours only, the time to materialise every order as exact `Decimal` values (`Plan.orders()`),
  which rendering and publishing need and the reference's plan already includes.

Times are the best of `--repeat` runs (`--repeat-large` at 1M wallets and up). Then ours and the reference
are checked to give the same orders on the 10k tree.

    python bench/plan.py                       # 10k, 100k, 1M
    python bench/plan.py --sizes 10000,100000  # quick
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
FILES = ("real", "target", "prices", "markets")
KINDS = ("ours-full", "ours-plan", "ref-full", "ref-plan")
LARGE = 1_000_000
CHECK_SIZE = 10_000
PLAN_TARGET_SECONDS = 1.0
FULL_TARGET_SECONDS = 10.0
SPEEDUP_TARGET = 20.0
WARM_RUNS = 3


# Workers: one measurement each, in a fresh process; print one JSON line.


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_ours(folder: Path) -> tuple[Any, Any, Any, Any]:
    from rebal.core.market import Markets, Prices
    from rebal.io import load, load_tree

    return (
        load_tree(folder / "real.json", "real"),
        load_tree(folder / "target.json", "target"),
        load(folder / "prices.json", Prices.parse),
        load(folder / "markets.json", Markets.parse),
    )


def plan_ours(real: Any, target: Any, prices: Any, markets: Any) -> Any:
    from rebal.core.diff import diff_trees
    from rebal.core.plan import plan_rebalance

    return plan_rebalance(diff_trees(real, target, prices), markets)


def parse_reference(folder: Path) -> tuple[Any, Any, Any, Any]:
    real, target, prices, markets = (orjson.loads((folder / f"{name}.json").read_bytes()) for name in FILES)
    return real, target, prices, markets


def plan_reference(real: Any, target: Any, prices: Any, markets: Any) -> Any:
    from reference import reference_plan

    return reference_plan(real, target, prices, markets)


def import_modules() -> None:
    """Import everything a measurement uses before the clock starts: imports are not planning."""
    import reference  # noqa: F401

    import rebal.core.diff
    import rebal.core.market
    import rebal.core.plan
    import rebal.core.tree
    import rebal.io  # noqa: F401


def worker(kind: str, folder: Path) -> dict[str, float]:
    import_modules()
    ours = kind.startswith("ours")
    if ours:  # the process as `rebal plan` sets it up
        from rebal import batch

        batch.prepare()
    parse, plan = (parse_ours, plan_ours) if ours else (parse_reference, plan_reference)
    result: dict[str, float] = {}
    if kind.endswith("plan"):
        inputs = parse(folder)
        gc.collect()
        if ours:  # as `rebal plan` keeps what it read
            batch.settled()
        start = time.perf_counter()
        planned = plan(*inputs)
        result["seconds"] = time.perf_counter() - start
        if ours:
            warm = []
            for _ in range(WARM_RUNS):
                del planned
                start = time.perf_counter()
                planned = plan(*inputs)
                warm.append(time.perf_counter() - start)
            result["warm"] = min(warm)
            start = time.perf_counter()
            result["orders"] = len(planned.orders())
            result["orders_seconds"] = time.perf_counter() - start
        else:
            result["orders"] = len(planned["orders"])
    else:
        start = time.perf_counter()
        inputs = parse(folder)
        if ours:
            batch.settled()
        planned = plan(*inputs)
        result["seconds"] = time.perf_counter() - start
        result["orders"] = len(planned) if ours else len(planned["orders"])
    result["peak_mb"] = peak_mb()
    return result


# The driver.


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_mb: float
    orders: int
    warm: float = float("nan")
    orders_seconds: float = float("nan")


def measure(kind: str, folder: Path, repeat: int) -> Measure:
    runs: list[dict[str, float]] = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(folder)],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return Measure(
        seconds=min(r["seconds"] for r in runs),
        peak_mb=max(r["peak_mb"] for r in runs),
        orders=int(runs[0]["orders"]),
        warm=min(r.get("warm", float("nan")) for r in runs),
        orders_seconds=min(r.get("orders_seconds", float("nan")) for r in runs),
    )


def generator_stamp(size: int, seed: int) -> str:
    source = (HERE / "generate.py").read_bytes()
    return f"{size} {seed} {hashlib.sha256(source).hexdigest()[:16]}"


def inputs_for(size: int, seed: int, out: Path) -> Path:
    """bench/out/<size>/, generated unless already there for this generator and seed."""
    from generate import generate, write

    folder = out / str(size)
    stamp = folder / "stamp"
    wanted = generator_stamp(size, seed)
    if stamp.exists() and stamp.read_text() == wanted and all((folder / f"{n}.json").exists() for n in FILES):
        return folder
    start = time.perf_counter()
    write(folder, generate(size, seed))
    stamp.write_text(wanted)
    megabytes = sum((folder / f"{n}.json").stat().st_size for n in FILES) / 1e6
    print(
        f"  generated {size:,} wallets in {time.perf_counter() - start:.1f} s ({megabytes:.0f} MB)",
        flush=True,
    )
    return folder


def fmt_rate(size: int, seconds: float) -> str:
    rate = size / seconds
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"


COLUMNS = (
    ("wallets", 9),
    ("ours p+p s", 10),
    ("w/s", 6),
    ("MB", 5),
    ("plan cold s", 11),
    ("warm s", 6),
    ("w/s", 6),
    ("orders s", 8),
    ("ref p+p s", 9),
    ("MB", 5),
    ("ref plan s", 10),
    ("ref/ours cold", 13),
    ("warm", 6),
    ("p+p", 5),
)


def row(cells: list[str]) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def table_row(size: int, m: dict[str, Measure]) -> str:
    of, op, rf, rp = (m[kind] for kind in KINDS)
    return row(
        [
            f"{size:,}",
            f"{of.seconds:.3f}",
            fmt_rate(size, of.seconds),
            f"{of.peak_mb:.0f}",
            f"{op.seconds:.3f}",
            f"{op.warm:.3f}",
            fmt_rate(size, op.warm),
            f"{op.orders_seconds:.2f}",
            f"{rf.seconds:.3f}",
            f"{rf.peak_mb:.0f}",
            f"{rp.seconds:.3f}",
            f"{rp.seconds / op.seconds:.1f}x",
            f"{rp.seconds / op.warm:.1f}x",
            f"{rf.seconds / of.seconds:.1f}x",
        ]
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_targets(results: dict[int, dict[str, Measure]]) -> None:
    if LARGE not in results:
        print(f"\nTargets (at {LARGE:,} wallets, not measured in this run): plan within")
        print(f"  {PLAN_TARGET_SECONDS:g} s and >= {SPEEDUP_TARGET:g}x the reference; parse+plan within")
        print(f"  {FULL_TARGET_SECONDS:g} s")
        return
    m = results[LARGE]
    cold, warm, full_s = m["ours-plan"].seconds, m["ours-plan"].warm, m["ours-full"].seconds
    print(f"\nTargets at {LARGE:,} wallets:")
    for label, seconds in (("warm", warm), ("cold", cold)):
        speedup = m["ref-plan"].seconds / seconds
        target_line(
            f"plan within {PLAN_TARGET_SECONDS:g} s ({label})",
            f"{seconds:.3f} s",
            seconds <= PLAN_TARGET_SECONDS,
        )
        target_line(
            f"plan >= {SPEEDUP_TARGET:g}x the reference ({label})",
            f"{speedup:.1f}x",
            speedup >= SPEEDUP_TARGET,
        )
    target_line(
        f"parse+plan within {FULL_TARGET_SECONDS:g} s", f"{full_s:.3f} s", full_s <= FULL_TARGET_SECONDS
    )


def target_line(goal: str, figure: str, ok: bool) -> None:
    print(f"  {goal:<32} {figure:>10}   {verdict(ok)}")


def check_agreement(folder: Path) -> bool:
    """Ours and the reference give the same orders (account, symbol, side, exact amount) and values."""
    from agreement import (
        desired_differences,
        one_step_under,
        order_differences,
        our_orders,
        reference_orders,
        run_ours,
        scaled_steps,
    )
    from reference import reference_plan

    docs = parse_reference(folder)
    diff, plan = run_ours(*docs)
    reference = reference_plan(*docs)
    ours, theirs = our_orders(plan), reference_orders(reference)
    orders = order_differences(ours, theirs, scaled_steps(reference), limit=0)
    near = one_step_under(ours, theirs) if not orders else 0
    values = desired_differences(diff, reference["diff"], limit=0)
    print(f"\nAgreement on the {folder.name}-wallet tree: ours {len(ours)} orders, reference {len(theirs)}")
    print(f"  orders (account, symbol, side, exact amount, sequence): {'match' if not orders else 'DIFFER'}")
    for line in orders[:10]:
        print(f"    {line}")
    if near:
        print(f"    ({near} budget-scaled buys one step under the exact factor: the core's BUDGET_SAFETY)")
    print(f"  desired values within 1e-6 relative: {'match' if not values else 'DIFFER'}")
    for line in values[:10]:
        print(f"    {line}")
    skips = skip_differences(plan, reference)
    print(f"  skipped (path, symbol, side, reason): {'match' if not skips else 'DIFFER'}")
    for line in skips[:10]:
        print(f"    {line}")
    return not orders and not values


def skip_differences(plan: Any, reference: dict[str, Any]) -> list[str]:
    ours = {(s.path, s.symbol, s.side, s.reason) for s in plan.skipped()}
    theirs = {(s["path"], s["symbol"], s["side"], s["reason"]) for s in reference["skipped"]}
    return [f"ours only: {' '.join(k)}" for k in sorted(ours - theirs)] + [
        f"reference only: {' '.join(k)}" for k in sorted(theirs - ours)
    ]


def run(sizes: list[int], repeat: int, repeat_large: int, seed: int, out: Path) -> int:
    print(f"Python {platform.python_version()} on {platform.machine()}, seed {seed}", flush=True)
    results: dict[int, dict[str, Measure]] = {}
    for size in sizes:
        folder = inputs_for(size, seed, out)
        times = repeat_large if size >= LARGE else repeat
        results[size] = {}
        for kind in KINDS:
            results[size][kind] = measure(kind, folder, times)
            print(f"  {size:,} {kind}: {results[size][kind].seconds:.3f} s", flush=True)
    print()
    print(row([name for name, _ in COLUMNS]))
    for size in sizes:
        print(table_row(size, results[size]))
    print("(p+p = parse+plan: read + parse the JSON files, diff and plan; plan = diff and plan on parsed")
    print(" inputs, cold = first call in a fresh process, warm = best of 3 more; orders = materialising")
    print(" every order as exact Decimals; w/s = wallets per second (warm); MB = peak RSS of the process)")
    print_targets(results)
    agree = check_agreement(inputs_for(CHECK_SIZE, seed, out))
    return 0 if agree else 1


def parse_sizes(text: str) -> list[int]:
    return sorted(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement below 1M wallets")
    parser.add_argument("--repeat-large", type=int, default=2, help="runs per measurement at 1M and up")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("folder", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder)))
        return 0
    return run(args.sizes, args.repeat, args.repeat_large, args.seed, args.out)


if __name__ == "__main__":
    sys.exit(main())

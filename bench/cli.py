"""The whole `rebal plan --json > FILE`, start-up included, against the naive reference in the same run.

For each size the four input files come from bench/generate.py (bench/out/<size>/, as bench/plan.py
makes them). Then, alternating so that the machine's load weighs on both alike, each program runs as a
fresh process writing its JSON to a file:

- ours: the installed `rebal plan --json` (compact JSON: stdout is a file, not a terminal);
- the reference: `python bench/reference.py`, a straightforward recursive version of the same job
  (read the files, plan in exact Decimals, render every node, order, transfer and skip as the
  documented JSON), with its garbage collector paused (its best case: with it on, as a plain script
  runs, the reference takes two to three times longer on these trees, which would flatter the
  ratio; `--with-gc` times that too, once, as "reference-gc").

Each figure is the best of `--repeat` runs: wall-clock seconds, CPU seconds (user + system, helper
processes included) and the peak resident memory of the largest process; one more run samples the
memory of all of ours' processes together (`summed_memory`). The JSON goes to `--output-dir`, by
default a RAM-backed /dev/shm when there is one: writing 600 MB to this machine's disk alone takes
some 4 s (150 MB/s), which measures the disk, not the programs; `--output-dir bench/out` shows it.

Targets (issue 17, target 1): at 200k wallets ours takes at most 0.25x the reference's time; at 1M
wallets ours takes under 5 s and under 2 GB. A breakdown of ours (start-up, read + parse, plan,
write) comes from one more run with timers, in-process.

    python bench/cli.py                          # 200k and 1M (the reference at 200k only)
    python bench/cli.py --sizes 10000 --reference-up-to 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REBAL = Path(sys.executable).parent / "rebal"
RATIO_TARGET = 0.25
RATIO_SIZE = 200_000
LARGE = 1_000_000
LARGE_SECONDS = 5.0
LARGE_MEGABYTES = 2048.0
WIDTHS = (9, 12, 7, 6, 7, 9, 13, 6)
OUTPUT_DIR = Path("/dev/shm/rebal-bench") if Path("/dev/shm").is_dir() else HERE / "out"


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    peak_mb: float
    output_mb: float


def files(folder: Path) -> list[str]:
    args = []
    for name in ("real", "target", "prices", "markets"):
        args += [f"--{name}", str(folder / f"{name}.json")]
    return args


def command(program: str, folder: Path) -> list[str]:
    if program == "ours":
        return [str(REBAL), "plan", *files(folder), "--json"]
    if program == "reference":
        return [sys.executable, "-c", REFERENCE_MAIN, str(HERE), *files(folder)]
    return [sys.executable, str(HERE / "reference.py"), *files(folder)]  # its collector on


# The reference's entry point with its garbage collector off (see the module doc).
REFERENCE_MAIN = (
    "import gc, sys; gc.disable(); sys.path.insert(0, sys.argv.pop(1)); import reference; "
    "sys.exit(reference.main(sys.argv[1:]))"
)


# Processes run as on a user's machine: Python keeps compiled modules (.pyc). An environment with
# PYTHONDONTWRITEBYTECODE (CI containers often set it) compiles every imported module again at every
# start: some 0.4 s more for rebal's imports, next to nothing for the reference's.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def warm_up() -> None:
    """Compile both programs' modules once (what any first run does), before anything is timed."""
    for code in (
        "import rebal_cli.app, rebal.batch, rebal.render",
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import reference",
    ):
        subprocess.run([sys.executable, "-c", code], check=True, env=ENVIRONMENT)


def run_once(program: str, folder: Path, out: Path) -> Run:
    """One fresh process writing its JSON to `out`: wall and CPU time, its peak memory."""
    errors = out.with_suffix(".stderr")
    with out.open("wb") as sink, errors.open("wb") as error_sink:
        start = time.perf_counter()
        process = subprocess.Popen(command(program, folder), stdout=sink, stderr=error_sink, env=ENVIRONMENT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{program} failed: {errors.read_text()[-2000:]}")
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_mb=usage.ru_maxrss / 1024,
        output_mb=out.stat().st_size / 1e6,
    )


def best(runs: list[Run]) -> Run:
    return Run(
        wall=min(r.wall for r in runs),
        cpu=min(r.cpu for r in runs),
        peak_mb=max(r.peak_mb for r in runs),
        output_mb=runs[0].output_mb,
    )


BREAKDOWN = """
import sys, time
start = time.perf_counter()
from pathlib import Path
from rebal_cli import app, forked  # what `rebal plan` imports
from rebal.core.diff import diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.io import load, load_tree
from rebal import batch
imported = time.perf_counter()
batch.prepare()
folder = Path(sys.argv[1])
apart = forked.parallel(folder / "real.json", folder / "target.json")
with forked.tree_read_apart(folder / "target.json", "target", apart) as read_target:
    prices, markets = load(folder / "prices.json", Prices.parse), load(folder / "markets.json", Markets.parse)
    real = load_tree(folder / "real.json", "real")
    target = read_target()
batch.settled()
parsed = time.perf_counter()
plan = plan_rebalance(diff_trees(real, target, prices), markets)
planned = time.perf_counter()
with open(sys.argv[2], "wb") as out:
    forked.write_plan_json(plan, out, apart)
written = time.perf_counter()
import json
print(json.dumps({"start-up": imported - start, "read + parse": parsed - imported, "plan": planned - parsed,
                  "write": written - planned}))
"""


def breakdown(folder: Path, out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, str(folder), str(out)],
        check=True,
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def summed_memory(folder: Path, out: Path) -> float:
    """Megabytes: the peak, over one more run of ours, of the memory of it and its helper processes
    together, each counted by its proportional set size (Pss: a page two processes share counts half in
    each, as a forked helper shares its parent's pages until either writes them), sampled every 10 ms.
    The peak resident size `wait4` gives is the largest process's alone, not the sum."""
    with out.open("wb") as sink:
        process = subprocess.Popen(command("ours", folder), stdout=sink, env=ENVIRONMENT)
        peak = 0
        while process.poll() is None:
            pids, seen = [process.pid], 0
            while seen < len(pids):
                pids += children(pids[seen])
                seen += 1
            peak = max(peak, sum(map(pss_kilobytes, pids)))
            time.sleep(0.01)
    return peak / 1024


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    except OSError:  # it ended meanwhile
        pass
    return found


def pss_kilobytes(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss:")), 0)


# What `rebal plan` needs of the CLI's imports, against all of `rebal_cli.app` (which also loads the
# operator, strategy and fund commands with pydantic-settings and the API client).
PLAN_IMPORTS = (
    "import typer, rich.console, rebal.batch, rebal.io, rebal.render, rebal.core.diff, rebal.core.plan"
)


def start_up_cpu(code: str, repeat: int) -> float:
    """The best CPU seconds of a fresh process that runs `code` (imports)."""
    best_cpu = float("inf")
    for _ in range(repeat):
        process = subprocess.Popen([sys.executable, "-c", code], env=ENVIRONMENT)
        _, _, usage = os.wait4(process.pid, 0)
        best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime)
    return best_cpu


def same_content(ours: Path, reference: Path) -> str:
    """Node, order, transfer and skip counts of both outputs (the reference routes no order)."""
    import orjson

    def counts(path: Path) -> tuple[int, int, int, int]:
        doc = orjson.loads(path.read_bytes())
        nodes, stack = 0, [doc["diff"]]
        while stack:
            node = stack.pop()
            nodes += 1
            stack.extend(node["children"])
        return nodes, len(doc["orders"]), len(doc["transfers"]), len(doc["skipped"])

    a, b = counts(ours), counts(reference)
    return f"nodes/orders/transfers/skipped: ours {a}, reference {b}"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from plan import inputs_for, parse_sizes

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[RATIO_SIZE, LARGE])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--reference-up-to", type=int, default=RATIO_SIZE, help="largest size the reference runs at"
    )
    parser.add_argument(
        "--with-gc", action="store_true", help="also time the reference once with its garbage collector on"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "out", help="where the inputs are generated")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR, help="where the JSON is written")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, seed {args.seed}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    warm_up()
    results: dict[int, dict[str, Run]] = {}
    parts: dict[int, dict[str, float]] = {}
    summed: dict[int, float] = {}
    for size in args.sizes:
        folder = inputs_for(size, args.seed, args.out)
        programs = ["ours", "reference"] if size <= args.reference_up_to else ["ours"]
        once = ["reference-gc"] if args.with_gc and len(programs) > 1 else []
        runs: dict[str, list[Run]] = {program: [] for program in programs + once}
        for attempt in range(args.repeat):
            for program in programs + (once if attempt == 0 else []):
                output = args.output_dir / f"plan-{size}-{program}.json"
                runs[program].append(run_once(program, folder, output))
                print(f"  {size:,} {program}: {runs[program][-1].wall:.2f} s", flush=True)
        results[size] = {program: best(found) for program, found in runs.items()}
        parts[size] = breakdown(folder, args.output_dir / f"plan-{size}-breakdown.json")
        if Path("/proc/self/smaps_rollup").exists():
            summed[size] = summed_memory(folder, args.output_dir / f"plan-{size}-memory.json")
        if "reference" in runs:
            ours, theirs = (args.output_dir / f"plan-{size}-{p}.json" for p in ("ours", "reference"))
            print("  " + same_content(ours, theirs))
        for output in args.output_dir.glob(f"plan-{size}-*"):
            output.unlink()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    header = ("wallets", "program", "wall s", "cpu s", "peak MB", "output MB", "ours/ref wall", "cpu")
    print("  ".join(f"{title:>{width}}" for title, width in zip(header, WIDTHS, strict=True)))
    for size, measured in results.items():
        for program, run in measured.items():
            ratio = cpu_ratio = ""
            if program == "ours" and "reference" in measured:
                ratio = f"{run.wall / measured['reference'].wall:.3f}x"
                cpu_ratio = f"{run.cpu / measured['reference'].cpu:.3f}x"
            print(
                f"{size:>9,}  {program:>12}  {run.wall:>7.2f}  {run.cpu:>6.2f}  {run.peak_mb:>7.0f}  "
                f"{run.output_mb:>9.0f}  {ratio:>13}  {cpu_ratio:>5}"
            )
    print()
    for size, figures in parts.items():
        line = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures.items())
        print(f"ours at {size:,} wallets, in-process: {line}")
        if size in summed:
            megabytes = f"{summed[size]:.0f} MB"
            print(f"ours at {size:,} wallets, peak memory of all its processes (sum of Pss): {megabytes}")
    # The app's modules import what a command uses when it runs: what `rebal plan` starts with is the app
    # and the modules plan uses; beyond those, the app's own modules (the other commands' definitions).
    needed = start_up_cpu(PLAN_IMPORTS, args.repeat)
    whole = start_up_cpu(f"import rebal_cli.app; {PLAN_IMPORTS}", args.repeat)
    print(
        f"start-up CPU: what rebal plan uses {needed:.2f} s; with all of rebal_cli.app {whole:.2f} s"
        f" (the app's own modules, all commands' definitions: {max(0.0, whole - needed):.2f} s;"
        " issue 17 target 2)"
    )
    print()
    print("Targets:")
    if RATIO_SIZE in results and "reference" in results[RATIO_SIZE]:
        ours, reference = results[RATIO_SIZE]["ours"], results[RATIO_SIZE]["reference"]
        ratio = ours.wall / reference.wall
        verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"
        print(f"  {RATIO_SIZE:,} wallets: ours <= {RATIO_TARGET}x the reference  {ratio:.3f}x   {verdict}")
        if "reference-gc" in results[RATIO_SIZE]:
            plain = ours.wall / results[RATIO_SIZE]["reference-gc"].wall
            print(f"  (against the reference with its collector on, as a plain script runs: {plain:.3f}x)")
    if LARGE in results:
        ours = results[LARGE]["ours"]
        verdict = "PASS" if ours.wall < LARGE_SECONDS else "FAIL"
        print(f"  {LARGE:,} wallets: under {LARGE_SECONDS:g} s  {ours.wall:.2f} s   {verdict}")
        memory = max(ours.peak_mb, summed.get(LARGE, 0.0))  # the largest process, or all of them
        print(
            f"  {LARGE:,} wallets: under {LARGE_MEGABYTES:.0f} MB  {memory:.0f} MB   "
            f"{'PASS' if memory < LARGE_MEGABYTES else 'FAIL'}"
        )
    print(
        json.dumps(
            {str(size): {p: vars(r) for p, r in measured.items()} for size, measured in results.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

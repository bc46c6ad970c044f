"""How long `rebal --help` and `rebal --version` take, as whole processes (issue 17, target 2: under 0.25 s).

Each is run `--runs` times; the median and the worst are printed, beside a bare `python -c pass` (the
interpreter's own start, the floor) measured in the same run. Two ways:

- with compiled bytecode: the modules' ``.pyc`` in a cache of this run's own (written by a first
  run), as on a machine where Python may write bytecode (the default) or the installer compiled it;
- without: every module compiled from source on every start, as on a machine that sets
  ``PYTHONDONTWRITEBYTECODE=1`` over an install without bytecode (this development machine does).

It also lists the heavy packages each start loads (none of numpy, pydantic, httpx, NATS, asyncio: a
command imports what it uses when it runs).

    python bench/cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.25
REBAL = Path(sys.executable).parent / "rebal"
HEAVY = ("numpy", "pydantic", "pydantic_settings", "httpx", "nats", "asyncio", "rebal.events", "msgspec")
CHECK = """
import sys
sys.argv = ["rebal", {arg!r}]
from rebal_cli.app import main
try:
    main()
except SystemExit:
    pass
print(",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], runs: int) -> tuple[float, float, float]:
    """Median and worst wall-clock seconds, and the median CPU seconds (user + system) of the process: on
    a machine whose cores other jobs also use, the wall clock counts the waits for a core too."""
    seconds, cpu = [], []
    for _ in range(runs):
        started, used = time.perf_counter(), children_cpu()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - started)
        cpu.append(children_cpu() - used)
    return statistics.median(seconds), max(seconds), statistics.median(cpu)


def heavy_loaded(arg: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(arg=arg, heavy=HEAVY)], capture_output=True, text=True, check=True
    )
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"rebal start (median and worst of {args.runs} runs; load average {load}, {os.cpu_count()} cores)")
    print(f"{'':<50} {'median s':>9} {'worst s':>8} {'CPU s':>6}")
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="rebal-pyc-") as cache, tempfile.TemporaryDirectory() as empty:
        compiled = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
        compiled.pop("PYTHONDONTWRITEBYTECODE", None)
        source = {**os.environ, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}
        for arg in ("--help", "--version"):  # fill the bytecode cache
            subprocess.run([str(REBAL), arg], env=compiled, stdout=subprocess.DEVNULL, check=True)
        for label, env in (("with compiled bytecode", compiled), ("without bytecode (from source)", source)):
            floor = timed([sys.executable, "-c", "pass"], env, args.runs)
            print(f"  python -c pass, {label:<32} {floor[0]:>9.3f} {floor[1]:>8.3f} {floor[2]:>6.3f}")
            for arg in ("--help", "--version"):
                median, worst, cpu = timed([str(REBAL), arg], env, args.runs)
                print(f"  rebal {arg:<9} {label:<32} {median:>9.3f} {worst:>8.3f} {cpu:>6.3f}")
                verdicts.append((arg, label, median, cpu))
    for arg in ("--help", "--version"):
        print(f"  rebal {arg} loads of the heavy packages: {heavy_loaded(arg) or 'none'}")
    for arg, label, median, cpu in verdicts:
        met = "PASS" if median < TARGET_SECONDS else "FAIL"
        figure = f"{median:.3f} s (CPU {cpu:.3f} s)"
        print(f"target: rebal {arg} under {TARGET_SECONDS:g} s {label}: {figure}", met)
    return 0


if __name__ == "__main__":
    sys.exit(main())

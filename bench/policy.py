"""Autopilot trigger benchmark: what one evaluation of a policy costs, as a backtest pays it on every row.

For trees of 10, 100 and 500 wallets (bench/generate.py: drifted weights, locks, unlisted and new
wallets), each call timed as the median of `--calls` calls in this process:

- diff: `diff_trees` on parsed trees, the reference every evaluation needs anyway;
- evaluate: `rebal.core.policy.evaluate` on that diff, with an absolute and a relative band, ten
  per-node overrides, a weekly schedule in Europe/Berlin, a cooldown and a cash threshold, asked at
  consecutive days (as a daily backtest asks); its ratio to the diff says what the policy adds;
- buy-only and breaching: the partial rebalances' diffs (`rebal.core.partial`), made when a trigger fires;
- schedule: one `previous` + `following` pair of a `CronSchedule` at consecutive days, for an hourly,
  a weekly and a monthly expression.

    .venv/bin/python bench/policy.py
    .venv/bin/python bench/policy.py --sizes 500 --calls 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from generate import generate  # bench/generate.py: a script's own folder is on sys.path

from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.partial import breaching_only, buy_only
from rebal.core.policy import Bands, Policy, evaluate
from rebal.core.tree import parse_tree
from rebal.schedule import CronSchedule
from rebal.trigger import parse_instant

DAY = 86_400
START = parse_instant("2015-01-05T00:00:00Z")


def median_us(call: Callable[[int], object], calls: int) -> float:
    """The median time of `call(k)` for k = 0 .. calls-1, in microseconds."""
    times = []
    for k in range(calls):
        began = time.perf_counter()
        call(k)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def bench_tree(wallets: int, calls: int) -> None:
    real_doc, target_doc, prices_doc, _ = generate(wallets, seed=7)
    real, target = parse_tree(real_doc, "real"), parse_tree(target_doc, "target")
    prices = Prices.parse(prices_doc)
    diff = diff_trees(real, target, prices)
    paths = diff.tree.paths()
    policy = Policy(
        bands=Bands(absolute=0.05, relative=0.25),
        overrides={path: {"absolute": 0.02} for path in paths[1 : len(paths) : max(len(paths) // 10, 1)]},
        schedule=CronSchedule("0 0 * * MON", "Europe/Berlin"),
        cooldown=7 * DAY,
        invest_cash_above=500.0,
    )
    last = START - 3 * DAY
    decision = evaluate(diff, policy, now=START, last_rebalance=last)
    diff_us = median_us(lambda _: diff_trees(real, target, prices), calls)
    evaluate_us = median_us(lambda k: evaluate(diff, policy, now=START + k * DAY, last_rebalance=last), calls)
    buy_us = median_us(lambda _: buy_only(diff), calls)
    nodes = [breach.node for breach in decision.breaches]
    breaching_us = median_us(lambda _: breaching_only(diff, nodes), calls)
    print(
        f"{wallets:>5} wallets ({len(diff.tree)} nodes, {len(decision.breaches)} breaches): "
        f"diff {diff_us:8.1f} us | evaluate {evaluate_us:7.1f} us ({evaluate_us / diff_us:4.2f}x the diff) | "
        f"buy-only {buy_us:7.1f} us | breaching {breaching_us:7.1f} us"
    )


def bench_schedules(calls: int) -> None:
    for expression in ("0 * * * *", "0 0 * * MON", "0 0 1 * *"):
        schedule = CronSchedule(expression, "Europe/Berlin")

        def ask(k: int, schedule: CronSchedule = schedule) -> object:
            return schedule.previous(START + k * DAY), schedule.following(START + k * DAY)

        pair_us = median_us(ask, calls)
        began = time.perf_counter()
        CronSchedule(expression, "Europe/Berlin")
        built_ms = (time.perf_counter() - began) * 1e3
        asked = f"previous+following {pair_us:6.1f} us per day"
        print(f"schedule {expression!r:>15}: {asked}, built {built_ms:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500", help="wallets per tree, comma-separated")
    parser.add_argument("--calls", type=int, default=1000, help="calls timed per figure (median)")
    args = parser.parse_args(argv)
    for wallets in (int(size) for size in args.sizes.split(",")):
        bench_tree(wallets, args.calls)
    bench_schedules(args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where to trade: savings against the plain plan and planning time, on generated two- and three-venue trees.

Each user of the generated tree holds one account on each of two or three venues (quote USDT), their
wallets drawn from a universe of assets, and wants the whole as a pool (`"pool": {...}` on the user:
docs/formats.md) with weights near what it holds. Every venue quotes its own bid and ask per asset
(spreads of 1-30 bps, off the reference by up to ±20 bps) and charges its own fees (0.02-0.2%); a
network file gives every asset a withdrawal fee (1-10 USD worth), a minimum, and a few closed networks.

Measured, each in a fresh process:

- *savings*: the where plan (`rebal plan` with the pools, the venues and the network file) against the
  plain plan of the same input (`rebal.core.where.plain_plan`: each pool trades where its assets sit), as
  the difference of their estimated total costs (fees, spreads against the reference, withdrawal fees)
  in basis points of the plain plan's traded value;
- *time*: diff + plan on parsed inputs, warm (best of 3 in the process), of the where plan, against
  today's plan of the same real tree: a plain target giving each account the pool's weights, plain
  prices, no network file (what the planner did before pools). Target: pools add at most 2x. Both the
  wall-clock and the CPU time of this process are shown: on a machine shared with other jobs the CPU
  time varies less.
- *the command*: the whole `rebal plan --json` process a user runs (start-up, parsing the files, the
  plan, writing the JSON), where against today, best of 3 by CPU (user + system of the child).

    python bench/where.py                      # 10k and 100k wallets, two and three venues
    python bench/where.py --sizes 10000 --venues 2
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
VENUES = ("binance", "coinbase", "kraken")
QUOTE = "USDT"
BASIS = 10_000
WARM_RUNS = 3
TIME_TARGET = 2.0
Doc = dict[str, Any]


def generate(wallets: int, venues: int, seed: int) -> dict[str, Doc]:
    """The real tree, the pool target, today's plain target, prices (with venues) and markets, and the
    network file: deterministic in (wallets, venues, seed)."""
    rng = random.Random(f"{wallets}|{venues}|{seed}")
    names = [f"A{i:03d}" for i in range(60)]
    ref = {name: Decimal(str(round(10 ** rng.uniform(-2, 4.5), 4))) for name in names}
    used = VENUES[:venues]
    per_account = 5
    users = max(1, wallets // (venues * (per_account + 1)))
    real_users, pool_users, plain_users = [], [], []
    for u in range(users):
        held = rng.sample(names, 6)
        accounts, plain_accounts = [], []
        values: dict[str, float] = dict.fromkeys(held, 0.0)
        cash_total = 0.0
        for venue in used:
            assets = rng.sample(held, per_account)
            children: list[Doc] = []
            for asset in assets:
                value = rng.uniform(100, 5000)
                amount = Decimal(str(round(value / float(ref[asset]), 6)))
                values[asset] += float(amount * ref[asset])
                children.append({"name": asset.lower(), "asset": asset, "amount": str(amount)})
            cash = round(rng.uniform(0, 3000), 2)
            cash_total += cash
            children.append({"name": "usdt", "asset": QUOTE, "amount": str(cash)})
            accounts.append(
                {"name": venue, "kind": "account", "exchange": venue, "quote": QUOTE, "children": children}
            )
        # The pool: near what is held (±30%), one asset dropped, one new; USDT the rest.
        wanted = {asset: value * rng.uniform(0.7, 1.3) for asset, value in values.items()}
        wanted.pop(held[0])
        wanted[rng.choice([n for n in names if n not in held])] = rng.uniform(500, 5000)
        wanted[QUOTE] = max(cash_total * rng.uniform(0.5, 1.5), 1.0)
        total = sum(wanted.values())
        bps = {asset: int(value / total * BASIS) for asset, value in sorted(wanted.items())}
        bps[QUOTE] += BASIS - sum(bps.values())
        pool = {asset: f"{share / 100}%" for asset, share in bps.items()}
        real_users.append({"name": f"u{u:06d}", "kind": "user", "children": accounts})
        pool_users.append({"name": f"u{u:06d}", "pool": pool})
        for account in accounts:
            plain_accounts.append(
                {
                    "name": account["name"],
                    "weight": f"{100 / venues}%"
                    if account is not accounts[-1]
                    else f"{100 - 100 / venues * (venues - 1)}%",
                    "children": [
                        {"name": asset.lower(), "asset": asset, "weight": f"{share / 100}%"}
                        for asset, share in bps.items()
                        if asset != QUOTE
                    ]
                    + [{"name": "usdt", "asset": QUOTE, "weight": f"{bps[QUOTE] / 100}%"}],
                }
            )
        plain_users.append({"name": f"u{u:06d}", "weight": "0%", "children": plain_accounts})
    share = BASIS // users
    for i, (pool_user, plain_user) in enumerate(zip(pool_users, plain_users, strict=True)):
        weight = share if i < users - 1 else BASIS - share * (users - 1)
        pool_user["weight"] = plain_user["weight"] = f"{weight / 100}%"
    quotes: Doc = {}
    markets: Doc = {}
    network: Doc = {"withdrawals": {}, "deposits": {}}
    for venue in used:
        quotes[venue] = {}
        markets[venue] = {}
        network["withdrawals"][venue] = {}
        network["deposits"][venue] = {}
        for name in names:
            mid = ref[name] * (1 + Decimal(rng.randint(-20, 20)) / BASIS)
            half = Decimal(rng.randint(1, 30)) / (2 * BASIS)
            quotes[venue][name] = {"bid": format(mid * (1 - half), "f"), "ask": format(mid * (1 + half), "f")}
            step = Decimal(1).scaleb(-min(8, max(0, 4 - int(float(ref[name])).bit_length() // 3)))
            markets[venue][f"{name}/{QUOTE}"] = {
                "amount_step": format(step, "f"),
                "min_amount": format(step, "f"),
                "min_cost": "5",
                "fee_rate": rng.choice(("0.0002", "0.0005", "0.001", "0.002")),
            }
            fee_value = Decimal(rng.randint(1, 10))
            network["withdrawals"][venue][name] = {
                "fee": format((fee_value / ref[name]).quantize(Decimal("1e-8")), "f"),
                "min_amount": format((Decimal(10) / ref[name]).quantize(Decimal("1e-8")), "f"),
                "enabled": rng.random() > 0.05,
            }
            network["deposits"][venue][name] = {"enabled": rng.random() > 0.05}
        network["withdrawals"][venue][QUOTE] = {"networks": {"TRC20": {"fee": "1"}, "ERC20": {"fee": "5"}}}
        network["deposits"][venue][QUOTE] = {"networks": {"TRC20": {}, "ERC20": {}}}
    prices = {"quote": "USD", "prices": {QUOTE: "1", **{k: format(v, "f") for k, v in ref.items()}}}
    return {
        "real": {"name": "fund", "children": real_users},
        "pool": {"name": "fund", "children": pool_users},
        "plain": {"name": "fund", "children": plain_users},
        "prices": prices,
        "venues": {**prices, "venues": quotes},
        "markets": markets,
        "network": network,
    }


def files(wallets: int, venues: int, seed: int) -> Path:
    folder = HERE / "out" / f"where-{wallets}-{venues}-{seed}"
    if not (folder / "network.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name, doc in generate(wallets, venues, seed).items():
            (folder / f"{name}.json").write_bytes(orjson.dumps(doc))
    return folder


def worker(folder: Path, kind: str) -> dict[str, Any]:
    """One measurement in this process: `today` (plain target, plain prices) or `where` (the pools)."""
    from rebal.core.diff import diff_trees
    from rebal.core.market import Markets, Prices
    from rebal.core.networks import Networks
    from rebal.core.plan import plan_rebalance
    from rebal.core.where import plain_plan
    from rebal.io import load, load_tree

    real = load_tree(folder / "real.json", "real")
    markets = load(folder / "markets.json", Markets.parse)
    if kind == "today":
        target, prices, networks = (
            load_tree(folder / "plain.json", "target"),
            load(folder / "prices.json", Prices.parse),
            None,
        )
    else:
        target = load_tree(folder / "pool.json", "target")
        prices = load(folder / "venues.json", Prices.parse)
        networks = load(folder / "network.json", Networks.parse)

    def plan() -> Any:
        return plan_rebalance(diff_trees(real, target, prices), markets, networks=networks)

    started = time.perf_counter()
    made = plan()
    cold = time.perf_counter() - started
    warm, cpu = [], []
    for _ in range(WARM_RUNS):
        started, started_cpu = time.perf_counter(), time.process_time()
        plan()
        warm.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    result: dict[str, Any] = {
        "cold": cold,
        "warm": min(warm),
        "cpu": min(cpu),
        "orders": len(made),
        "transfers": len(made.transfers),
    }
    if kind == "where":
        diff = diff_trees(real, target, prices)
        plain = plain_plan(diff, markets, networks)
        traded = sum(
            float(order.est_cost) * float(prices.get(order.symbol.partition("/")[2]) or 0)
            for order in plain.orders()
        )
        assert made.notes is not None and plain.notes is not None
        result.update(
            where_cost=made.notes.total,
            plain_cost=plain.notes.total,
            traded=traded,
            moves=sum(1 for t in made.transfers if t.asset != QUOTE),
        )
    return result


def measure(folder: Path, kind: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(folder), kind], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def command(folder: Path, kind: str) -> tuple[float, float]:
    """The whole `rebal plan --json` process, best of 3: (wall-clock, CPU of the child) in seconds."""
    inputs = (
        ["--target", "plain.json", "--prices", "prices.json"]
        if kind == "today"
        else ["--target", "pool.json", "--prices", "venues.json", "--network", "network.json"]
    )
    rebal = str(Path(sys.executable).parent / "rebal")
    argv = [rebal, "plan", "--real", "real.json", "--markets", "markets.json", *inputs, "--json"]
    walls, cpus = [], []
    for _ in range(WARM_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--venues", default="2,3")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), args.worker[1])))
        return 0
    print(f"python {platform.python_version()} on {platform.machine()}, seed {args.seed}")
    print(
        "| wallets | venues | orders | moves | plain cost | where cost | saving (bps of traded) "
        "| today plan (warm) | where plan (warm) | ratio | today (CPU) | where (CPU) | CPU ratio "
        "| cold ratio | today `rebal plan` (CPU) | where `rebal plan` (CPU) | command CPU ratio |"
    )
    print("|" + " ---: |" * 17)
    worst = worst_cpu = worst_command = 0.0
    for size in (int(s) for s in args.sizes.split(",")):
        for venues in (int(v) for v in args.venues.split(",")):
            folder = files(size, venues, args.seed)
            today = measure(folder, "today")
            where = measure(folder, "where")
            saving = (
                (where["plain_cost"] - where["where_cost"]) / where["traded"] * BASIS
                if where["traded"]
                else 0.0
            )
            ratio = where["warm"] / today["warm"]
            cpu_ratio = where["cpu"] / today["cpu"]
            worst, worst_cpu = max(worst, ratio), max(worst_cpu, cpu_ratio)
            today_command, where_command = command(folder, "today")[1], command(folder, "where")[1]
            worst_command = max(worst_command, where_command / today_command)
            cells = (
                f"{size:,}",
                str(venues),
                f"{where['orders']:,}",
                f"{where['moves']:,}",
                f"{where['plain_cost']:,.2f}",
                f"{where['where_cost']:,.2f}",
                f"{saving:.1f}",
                f"{today['warm']:.3f} s",
                f"{where['warm']:.3f} s",
                f"{ratio:.2f}x",
                f"{today['cpu']:.3f} s",
                f"{where['cpu']:.3f} s",
                f"{cpu_ratio:.2f}x",
                f"{where['cold'] / today['cold']:.2f}x",
                f"{today_command:.3f} s",
                f"{where_command:.3f} s",
                f"{where_command / today_command:.2f}x",
            )
            print("| " + " | ".join(cells) + " |")
    verdict = "met" if max(worst, worst_cpu) <= TIME_TARGET else "NOT met"
    print(
        f"target: pools add at most {TIME_TARGET:g}x to today's plan time: "
        f"the plan on parsed inputs {verdict} "
        f"(worst {worst:.2f}x wall-clock, {worst_cpu:.2f}x CPU); the `rebal plan --json` command "
        f"{'met' if worst_command <= TIME_TARGET else 'NOT met'} (worst {worst_command:.2f}x CPU)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

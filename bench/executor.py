"""Executor benchmark: a 50-order plan against the fake Binance at its rate limit, through the real code path.

The executor (`rebal_executor.execution.Executor`, with its Postgres journal) runs one plan of `--orders`
market orders (half sells, then half buys sized from the quote the sells produced) on a `CcxtVenue`
(an unmodified ccxt binance client) pointed at the fake exchange of `tests/fake_exchange`. The fake
enforces Binance's request weights with a token bucket (`--weight-per-second`, burst `--burst`) and
answers 429 with Retry-After above it; ccxt's throttle is set to the same rate (5000/W ms per cost unit,
Binance's costs being weight/5).

Figures: the wall time of the run (from the plan handed over to RunFinished), the requests the run made
by kind and their total weight, 429s answered, and the theoretical minimum the rate limit allows for
those requests, ``max(0, weight - burst) / rate``, and for the bare minimum (one order request per leg,
weight 1 each, plus the one balance and one price read the buys' sizing needs).

`--orders-per-second R` gives the venue an ORDERS limit of 10·R per 10 s per account, as Binance counts
it (the fake answers one more with 429, -1015 and Retry-After; the adapter paces at it): the figure is
then the wall time against the busiest account's ``orders / R`` (issue 17: within 1.2x). Without it the
adapter paces at Binance's own 50 per 10 s and the fake does not count orders. `--accounts M` spreads the
plan over M accounts (a CcxtVenue and a fake Binance API key each; every account's sells, then every
account's buys, as a planner lists them): the executor runs the accounts side by side. The fake Binance
runs in a process of its own (its CPU is not the executor's) and counts the legs placed more than once;
the CPU time of the executor, Postgres and the fake is printed with the load average. The request weight
is the venue's per IP: each account's throttle paces at its share. `--no-fsync` runs Postgres as the
tests do (the journal is durable only with fsync on: the figures quoted are with it); `--data-dir` puts
Postgres elsewhere (a tmpfs such as /dev/shm makes fsync free: say so with a figure).

    python bench/executor.py                              # 50 orders at Binance's 6000 weight/min
    python bench/executor.py --weight-per-second 500      # a faster venue
    python bench/executor.py --no-throttle                # the throttle off: 429s and Retry-After only
    python bench/executor.py --ccxt-bucket                # ccxt's own throttle, for comparison
    python bench/executor.py --orders 2000 --orders-per-second 10 --weight-per-second 1000
    python bench/executor.py --orders 100000 --accounts 20 --orders-per-second 5 --weight-per-second 4000 \
        --burst 4000                                      # 20 accounts x 5,000 orders: 1,000 s minimum
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from rebal import db  # noqa: E402
from rebal.events import PlannedOrder, RebalancePlanned, RunFinished, derive_id, new_event  # noqa: E402
from rebal_devstack.postgres import PostgresServer  # noqa: E402
from rebal_executor.execution import Executor  # noqa: E402
from rebal_executor.journal import PostgresJournal  # noqa: E402
from rebal_executor.settings import ExecutorSettings  # noqa: E402
from rebal_venues.ccxt_settings import CcxtVenueSettings  # noqa: E402
from rebal_venues.ccxt_venue import open_ccxt_venue  # noqa: E402
from tests.fake_exchange import FakeBook, FakeMarket, OrderLimit, RateLimit, serving  # noqa: E402
from tests.fake_exchange.state import WEIGHTS  # noqa: E402
from tests.fakes import RecordingPublisher  # noqa: E402

D = Decimal
KEY = "bench-key"
PRICE = D("10")
SELL, BUY = D("100"), D("90")
# The fake's client ids: rb-<run>-<leg>-<attempt> (`rebal_executor.execution.outcomes`).
LEG_OF = re.compile(r"^rb-[0-9a-f]+-(\d+)-\d+$")


def asset(i: int) -> str:
    return f"X{i:02d}"


def venue_name(k: int, accounts: int) -> str:
    """Account k's venue: one CcxtVenue per account (one set of keys), as the service opens them."""
    return "binance" if accounts == 1 else f"binance-{k:02d}"


def account_name(k: int, accounts: int) -> str:
    return f"bench/{venue_name(k, accounts)}/spot"


def key_of(k: int, accounts: int) -> str:
    return KEY if accounts == 1 else f"{KEY}-{k:02d}"


def book(orders: int, accounts: int = 1) -> FakeBook:
    """`orders // accounts` markets X00/USDT…, each at 10 USDT (every account trades the same ones); each
    account holds 100 of each asset it sells, and 100 USDT."""
    per = orders // accounts
    markets = {
        f"{asset(i)}USDT": FakeMarket(asset(i), "USDT", D("0.01"), D("0.01"), D("5")) for i in range(per)
    }
    held = {asset(i): SELL for i in range(per // 2)}
    return FakeBook(
        markets=markets,
        prices=dict.fromkeys(markets, PRICE),
        accounts={key_of(k, accounts): {**held, "USDT": D("100")} for k in range(accounts)},
    )


def plan(orders: int, accounts: int = 1) -> RebalancePlanned:
    """Every account's sells, then every account's buys (a planner lists phase 1 first): per account, half
    its legs sell 100 X at 10, half buy 90 X from what the sells brought."""
    per = orders // accounts
    sells = per // 2
    legs = tuple(
        PlannedOrder(
            account=account_name(k, accounts),
            exchange=venue_name(k, accounts),
            symbol=f"{asset(i)}/USDT",
            side="sell" if phase == 1 else "buy",
            amount=SELL if phase == 1 else BUY,
            est_price=PRICE,
            est_cost=(SELL if phase == 1 else BUY) * PRICE,
            est_fee=D(0),
            phase=phase,
        )
        for phase in (1, 2)
        for k in range(accounts)
        for i in (range(sells) if phase == 1 else range(sells, per))
    )
    return new_event(
        RebalancePlanned,
        key=f"bench-{time.time_ns()}",
        now=datetime.now(UTC),
        portfolio_id="bench",
        correlation_id=derive_id("bench-run", time.time_ns()),
        dry_run=False,
        band=D(0),
        snapshot_id=derive_id("snapshot"),
        target_id=derive_id("target"),
        total_value=D(100000),
        orders=legs,
    )


def fake_process(connection: Connection, orders: int, accounts: int) -> None:
    """The fake Binance in a process of its own (its CPU is not the executor's): its origin is sent, then
    it answers the bench's commands ("arm" the limits, "figures", "stop") until told to stop."""
    fake = book(orders, accounts)

    async def serve() -> None:
        async with serving(fake) as origin:
            connection.send(origin)
            loop = asyncio.get_running_loop()
            while True:
                command, arguments = await loop.run_in_executor(None, connection.recv)
                if command == "arm":  # the run starts: what came before (markets loaded) is not counted
                    limit, per_10s = arguments
                    fake.requests.clear()
                    fake.rate_limit = limit
                    fake.order_limit = OrderLimit(per_10s=per_10s) if per_10s is not None else None
                    connection.send(None)
                elif command == "figures":
                    connection.send(fake_figures(fake))
                else:
                    connection.send(None)
                    return

    asyncio.run(serve())


def fake_figures(fake: FakeBook) -> dict[str, object]:
    """What the venue saw: requests by kind, weight, 429s, and the orders per account and per leg."""
    legs: Counter[tuple[str, str]] = Counter()
    for order in fake.orders.values():
        found = LEG_OF.match(order.client_order_id)
        legs[order.api_key, found.group(1) if found else order.client_order_id] += 1
    per_key = Counter(order.api_key for order in fake.orders.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "kinds": Counter(kind for kind, _ in fake.requests),
        "weight": fake.rate_limit.spent if fake.rate_limit is not None else 0.0,
        "refused": fake.rate_limit.refused if fake.rate_limit is not None else 0,
        "orders_at_venue": len(fake.orders),
        "twice": sum(1 for n in legs.values() if n > 1),
        "per_account": dict(per_key),
        "orders_refused": fake.order_limit.refused if fake.order_limit is not None else 0,
        "fake_cpu": usage.ru_utime + usage.ru_stime,
    }


class Fake:
    """The fake Binance's process, driven over a pipe."""

    def __init__(self, orders: int, accounts: int) -> None:
        self._pipe, theirs = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("fork").Process(
            target=fake_process, args=(theirs, orders, accounts), daemon=True
        )
        self._process.start()
        self.origin: str = self._pipe.recv()
        self.pid = self._process.pid or 0

    def ask(self, command: str, arguments: object = None) -> Any:
        self._pipe.send((command, arguments))
        return self._pipe.recv()

    def close(self) -> None:
        if self._process.is_alive():
            self.ask("stop")
        self._process.join(10)


class Timed:
    """The venue, with the wall time spent inside its calls added up (the rest is the executor's own)."""

    def __init__(self, venue: Any) -> None:
        self._venue = venue
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._venue, name)
        if not asyncio.iscoroutinefunction(found):
            return found

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await found(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def others_cpu(skip: int) -> float:
    """CPU seconds of this process's descendants (Postgres) but the fake's process `skip` (from /proc)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        spent[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == skip:
                return False
            if pid == os.getpid():
                return True
        return False

    return sum(seconds for pid, seconds in spent.items() if pid != skip and descends(pid))


async def run(
    dsn: str,
    fake: Fake,
    orders: int,
    accounts: int,
    weight_per_second: float,
    burst: float,
    throttle: bool,
    ccxt_bucket: bool = False,
    orders_per_second: float | None = None,
) -> dict[str, object]:
    limit = RateLimit(per_second=weight_per_second, burst=burst, weighted=True)
    # The venue's ORDERS limit per account, per 10 s as Binance states it; None: Binance's own (the
    # adapter's profile).
    per_10s = round(10 * orders_per_second) if orders_per_second else None
    # The request weight is the venue's per IP: every account's throttle paces at its share of it.
    share = weight_per_second / accounts
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max(4, accounts + 2))
    async with pool.acquire() as connection:
        await db.migrate(connection)
    try:
        async with AsyncExitStack() as stack:
            venues: dict[str, Timed] = {}
            for k in range(accounts):
                settings = CcxtVenueSettings(
                    exchange_id="binance",
                    name=venue_name(k, accounts),
                    account=account_name(k, accounts),
                    api_key=SecretStr(key_of(k, accounts)),
                    secret=SecretStr("bench-secret"),
                    sandbox=False,
                    api_base_url=fake.origin,
                    enable_rate_limit=throttle,
                    rate_limit_ms=5000 / share,
                    # The throttle may bank what the venue's burst allows beyond its largest request
                    # (/account, weight 20) and a margin of one cost unit, in ccxt's cost units (weight / 5).
                    rate_limit_burst=max(1.0, (burst / accounts - 20) / 5 - 1),
                    max_backoff_seconds=60,
                    rate_limit_retries=20,
                    orders_per_10s=per_10s,
                )
                venue = await stack.enter_async_context(open_ccxt_venue(settings))
                if ccxt_bucket:  # ccxt's own leaky bucket instead of the adapter's RequestBudget
                    venue.client.init_throttler()
                await venue.markets()  # loaded once when the service starts: not part of the run
                venues[settings.venue_name] = Timed(venue)
            fake.ask("arm", (limit, per_10s))
            recorder = RecordingPublisher()
            # A 100k-order run outlasts the default run deadline (600 s): the bench's is a day.
            executor_settings = ExecutorSettings(live=True, execution={"run_timeout_seconds": 86_400})
            executor = Executor(venues, recorder, executor_settings, PostgresJournal(pool))
            the_plan = plan(orders, accounts)
            others = others_cpu(fake.pid)
            cpu = time.process_time()
            started = time.perf_counter()
            await executor.on_plan(the_plan)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            others = others_cpu(fake.pid) - others
    finally:
        await pool.close()
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    return {
        **fake.ask("figures"),
        "elapsed": elapsed,
        "finished": finished,
        "in_venue": sum(venue.seconds for venue in venues.values()),
        "cpu": cpu,
        "postgres_cpu": others,
    }


def report(
    figures: dict[str, object],
    orders: int,
    accounts: int,
    rate: float,
    burst: float,
    orders_per_second: float | None,
) -> None:
    elapsed = float(figures["elapsed"])  # type: ignore[arg-type]
    weight = float(figures["weight"])  # type: ignore[arg-type]
    finished: RunFinished = figures["finished"]  # type: ignore[assignment]
    kinds: Counter[str] = figures["kinds"]  # type: ignore[assignment]
    per_account: dict[str, int] = figures["per_account"]  # type: ignore[assignment]
    minimum = max(0.0, weight - burst) / rate
    bare = orders * WEIGHTS[("POST", "/api/v3/order")] / rate
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    tally = f"{finished.placed} placed, {finished.filled} filled, {finished.failed} failed"
    print(f"  run: {finished.status}; {tally}")
    twice = figures["twice"]
    busiest = max(per_account.values(), default=0)
    print(
        f"  orders at the venue: {figures['orders_at_venue']} over {len(per_account)} accounts"
        f" (at most {busiest} in one); legs with more than one order: {twice}"
    )
    print(
        f"  requests: {sum(kinds.values())} ({counts}), weight {weight:g}, 429 answered: {figures['refused']}"
    )
    in_venue = float(figures["in_venue"])  # type: ignore[arg-type]
    cpu, pg, fake = (float(figures[k]) for k in ("cpu", "postgres_cpu", "fake_cpu"))  # type: ignore[arg-type]
    print(f"  wall time: {elapsed:.2f} s ({in_venue:.2f} s inside venue calls, summed over accounts,")
    print("    throttle waits included)")
    print(
        f"  CPU: the executor {cpu:.1f} s ({1000 * cpu / max(1, orders):.2f} ms per leg), Postgres"
        f" {pg:.1f} s, the fake Binance {fake:.1f} s (its whole life, markets loaded included)"
    )
    ratio = f"{elapsed / minimum:.2f}" if minimum else "n/a (within the burst)"
    sustained = weight / rate
    # (ccxt's throttle earns no burst credit: it paces at the sustained rate from the first request)
    print(f"  minimum for these requests at {rate:g} weight/s: {sustained:.2f} s,", end=" ")
    print(f"ratio {elapsed / sustained:.2f};")
    print(f"    {minimum:.2f} s after the venue's burst of {burst:g}, ratio {ratio}")
    print(
        f"  bare minimum, the {orders} order requests alone at the sustained rate: {bare:.2f} s;"
        f" ratio {elapsed / bare:.1f}"
    )
    if orders_per_second:
        # The ORDERS limit is per account: the run needs at least its busiest account's orders / R.
        floor = busiest / orders_per_second
        after_burst = max(0.0, busiest - 10 * orders_per_second) / orders_per_second
        per_10s, refused = round(10 * orders_per_second), figures["orders_refused"]
        print(
            f"  the venue's order-count limit per account, {orders_per_second:g} orders/s"
            f" ({per_10s} per 10 s; 429 -1015 answered: {refused}):"
            f" the busiest account's {busiest} orders need {floor:.1f} s,"
            f" ratio {elapsed / floor:.2f}"
        )
        if after_burst:
            print(f"    ({after_burst:.1f} s after its first 10 s' worth, ratio {elapsed / after_burst:.2f})")
        print(f"  throughput: {orders / elapsed:.1f} orders/s over {accounts} accounts")
        binance = busiest / 10
        print(
            f"  (at Binance's 100 orders per 10 s per account the same plan needs {binance:,.0f} s"
            f" = {binance / 3600:.2f} h)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument(
        "--accounts", type=int, default=1, help="spread the plan over this many accounts (fake Binance keys)"
    )
    parser.add_argument("--weight-per-second", type=float, default=100.0, help="Binance: 6000/min = 100/s")
    parser.add_argument("--burst", type=float, default=100.0)
    parser.add_argument(
        "--orders-per-second",
        type=float,
        help="the venue's ORDERS limit per account (default: Binance's 50 per 10 s, in the adapter only)",
    )
    parser.add_argument("--no-throttle", action="store_true", help="ccxt's throttle off (429s only)")
    parser.add_argument("--no-fsync", action="store_true", help="Postgres fsync off (as the tests run it)")
    parser.add_argument(
        "--data-dir", type=Path, help="where Postgres keeps its files (default: the system's temp dir)"
    )
    parser.add_argument("--ccxt-bucket", action="store_true", help="ccxt's own throttle, for comparison")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.orders < 2 * args.accounts:
        parser.error("--accounts must be at least 1, with at least two orders per account")
    # The fake first, forked before Postgres and the event loop exist.
    fake = Fake(args.orders, args.accounts)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="rebal-bench-exec-", dir=args.data_dir) as base,
            PostgresServer(Path(base) / "pg", settings={"fsync": "off"} if args.no_fsync else None) as pg,
        ):
            dsn = pg.ensure_database("rebal")
            if args.no_throttle:
                mode = "throttle off: 429 + Retry-After"
            elif args.ccxt_bucket:
                mode = "ccxt's own leaky bucket at the venue's rate"
            else:
                mode = "RequestBudget at the venue's rate"
            print(
                f"{args.orders}-order plan over {args.accounts} account(s) on the fake Binance (its own"
                f" process) at {args.weight_per_second:g} weight/s ({mode}); load average"
                f" {os.getloadavg()[0]:.2f} at the start"
            )
            figures = asyncio.run(
                run(
                    dsn,
                    fake,
                    args.orders,
                    args.accounts,
                    args.weight_per_second,
                    args.burst,
                    not args.no_throttle,
                    args.ccxt_bucket,
                    args.orders_per_second,
                )
            )
            report(
                figures,
                args.orders,
                args.accounts,
                args.weight_per_second,
                args.burst,
                args.orders_per_second,
            )
            print(f"  load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

`--orders-per-second R` gives the venue an ORDERS limit of 10·R per 10 s (the fake answers one more
with 429, -1015 and Retry-After; the adapter paces at it): the figure is then the wall time against the
``orders / R`` that limit allows (issue 17: within 1.2x). Without it the adapter paces at Binance's own
50 per 10 s and the fake does not count orders. `--no-fsync` runs Postgres as the tests do (the journal
is durable only with fsync on: the figures quoted are with it).

    python bench/executor.py                              # 50 orders at Binance's 6000 weight/min
    python bench/executor.py --weight-per-second 500      # a faster venue
    python bench/executor.py --no-throttle                # the throttle off: 429s and Retry-After only
    python bench/executor.py --ccxt-bucket                # ccxt's own throttle, for comparison
    python bench/executor.py --orders 2000 --orders-per-second 10 --weight-per-second 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
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
ACCOUNT = "bench/binance/spot"
KEY = "bench-key"
PRICE = D("10")
SELL, BUY = D("100"), D("90")


def asset(i: int) -> str:
    return f"X{i:02d}"


def book(orders: int) -> FakeBook:
    """`orders` markets X00/USDT…, each at 10 USDT; the account holds 100 of each asset it sells."""
    markets = {
        f"{asset(i)}USDT": FakeMarket(asset(i), "USDT", D("0.01"), D("0.01"), D("5")) for i in range(orders)
    }
    sells = orders // 2
    held = {asset(i): SELL for i in range(sells)}
    return FakeBook(
        markets=markets,
        prices=dict.fromkeys(markets, PRICE),
        accounts={KEY: {**held, "USDT": D("100")}},
    )


def plan(orders: int) -> RebalancePlanned:
    sells = orders // 2
    legs = tuple(
        PlannedOrder(
            account=ACCOUNT,
            exchange="binance",
            symbol=f"{asset(i)}/USDT",
            side="sell" if i < sells else "buy",
            amount=SELL if i < sells else BUY,
            est_price=PRICE,
            est_cost=(SELL if i < sells else BUY) * PRICE,
            est_fee=D(0),
            phase=1 if i < sells else 2,
        )
        for i in range(orders)
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


async def run(
    dsn: str,
    orders: int,
    weight_per_second: float,
    burst: float,
    throttle: bool,
    ccxt_bucket: bool = False,
    orders_per_second: float | None = None,
) -> dict[str, object]:
    fake = book(orders)
    limit = RateLimit(per_second=weight_per_second, burst=burst, weighted=True)
    # The venue's ORDERS limit, per 10 s as Binance states it; None: Binance's own (the adapter's profile).
    per_10s = round(10 * orders_per_second) if orders_per_second else None
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await db.migrate(connection)
    try:
        async with serving(fake) as origin:
            settings = CcxtVenueSettings(
                exchange_id="binance",
                account=ACCOUNT,
                api_key=SecretStr(KEY),
                secret=SecretStr("bench-secret"),
                sandbox=False,
                api_base_url=origin,
                enable_rate_limit=throttle,
                rate_limit_ms=5000 / weight_per_second,
                # The throttle may bank what the venue's burst allows beyond its largest request (/account,
                # weight 20) and a margin of one cost unit, in ccxt's cost units (weight / 5).
                rate_limit_burst=max(1.0, (burst - 20) / 5 - 1),
                max_backoff_seconds=60,
                rate_limit_retries=20,
                orders_per_10s=per_10s,
            )
            async with open_ccxt_venue(settings) as venue:
                if ccxt_bucket:  # ccxt's own leaky bucket instead of the adapter's RequestBudget
                    venue.client.init_throttler()
                await venue.markets()  # loaded once when the service starts: not part of the run
                fake.requests.clear()
                fake.rate_limit = limit
                if per_10s is not None:
                    fake.order_limit = OrderLimit(per_10s=per_10s)
                recorder = RecordingPublisher()
                timed = Timed(venue)
                executor = Executor(
                    {"binance": timed}, recorder, ExecutorSettings(live=True), PostgresJournal(pool)
                )
                the_plan = plan(orders)
                started = time.perf_counter()
                await executor.on_plan(the_plan)
                elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    [finished] = [e for e in recorder.published if isinstance(e, RunFinished)]
    kinds = Counter(kind for kind, _ in fake.requests)
    return {
        "elapsed": elapsed,
        "finished": finished,
        "kinds": kinds,
        "weight": limit.spent,
        "refused": limit.refused,
        "orders_at_venue": len(fake.orders),
        "in_venue": timed.seconds,
        "orders_refused": fake.order_limit.refused if fake.order_limit is not None else 0,
    }


def report(
    figures: dict[str, object], orders: int, rate: float, burst: float, orders_per_second: float | None
) -> None:
    elapsed = float(figures["elapsed"])  # type: ignore[arg-type]
    weight = float(figures["weight"])  # type: ignore[arg-type]
    finished: RunFinished = figures["finished"]  # type: ignore[assignment]
    kinds: Counter[str] = figures["kinds"]  # type: ignore[assignment]
    minimum = max(0.0, weight - burst) / rate
    bare = orders * WEIGHTS[("POST", "/api/v3/order")] / rate
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    tally = f"{finished.placed} placed, {finished.filled} filled, {finished.failed} failed"
    print(f"  run: {finished.status}; {tally}")
    print(f"  orders at the venue: {figures['orders_at_venue']} (one per leg: none placed twice)")
    print(
        f"  requests: {sum(kinds.values())} ({counts}), weight {weight:g}, 429 answered: {figures['refused']}"
    )
    in_venue = float(figures["in_venue"])  # type: ignore[arg-type]
    print(f"  wall time: {elapsed:.2f} s ({in_venue:.2f} s inside venue calls, throttle waits included;")
    print(f"    {elapsed - in_venue:.2f} s the executor's own: journal writes, sizing, events)")
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
        floor = orders / orders_per_second
        after_burst = max(0.0, orders - 10 * orders_per_second) / orders_per_second
        per_10s, refused = round(10 * orders_per_second), figures["orders_refused"]
        print(
            f"  the venue's order-count limit, {orders_per_second:g} orders/s ({per_10s} per 10 s;"
            f" 429 -1015 answered: {refused}): {orders} orders need {floor:.1f} s,"
            f" ratio {elapsed / floor:.2f}"
        )
        if after_burst:
            print(f"    ({after_burst:.1f} s after its first 10 s' worth, ratio {elapsed / after_burst:.2f})")
        binance = orders / 5
        print(
            f"  (at Binance's 50 orders per 10 s the same plan needs {binance:,.0f} s"
            f" = {binance / 3600:.1f} h)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--weight-per-second", type=float, default=100.0, help="Binance: 6000/min = 100/s")
    parser.add_argument("--burst", type=float, default=100.0)
    parser.add_argument(
        "--orders-per-second",
        type=float,
        help="the venue's ORDERS limit (default: Binance's 50 per 10 s, in the adapter only)",
    )
    parser.add_argument("--no-throttle", action="store_true", help="ccxt's throttle off (429s only)")
    parser.add_argument("--no-fsync", action="store_true", help="Postgres fsync off (as the tests run it)")
    parser.add_argument("--ccxt-bucket", action="store_true", help="ccxt's own throttle, for comparison")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="rebal-bench-exec-") as base,
        PostgresServer(Path(base) / "pg", settings={"fsync": "off"} if args.no_fsync else None) as pg,
    ):
        dsn = pg.ensure_database("rebal")
        if args.no_throttle:
            mode = "throttle off: 429 + Retry-After"
        elif args.ccxt_bucket:
            mode = "ccxt's own leaky bucket at the venue's rate"
        else:
            mode = "RequestBudget at the venue's rate"
        print(f"{args.orders}-order plan on the fake Binance at {args.weight_per_second:g} weight/s ({mode})")
        throttle = not args.no_throttle
        figures = asyncio.run(
            run(
                dsn,
                args.orders,
                args.weight_per_second,
                args.burst,
                throttle,
                args.ccxt_bucket,
                args.orders_per_second,
            )
        )
        report(figures, args.orders, args.weight_per_second, args.burst, args.orders_per_second)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

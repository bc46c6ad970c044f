"""Autopilot benchmark: how long from a breach in a snapshot to the run's first order (target: under 1 s).

The whole system runs as processes (`rebal_devstack`: nats-server, Postgres, the five services) on the
demo portfolio with still paper prices, under a policy with a 2% absolute band in `auto` mode. Each round
puts cash on the paper account (as a deposit would: `paper.balances`), asks the tracker for a snapshot,
and times the autopilot's path: the snapshot (its `emitted_at`) -> the planner's decision and plan ->
the executor's journal and worker -> the first `OrderPlaced` (its `occurred_at`), both stamped by the
services on this machine's clock.

Reference, in the same run: the path an operator's command takes to the same first order (policy in
`notify` mode: it only tells), from `StartRebalance` (its `emitted_at`) to the first `OrderPlaced`,
after the same deposit and a fresh snapshot. The ratio says what deciding from the snapshot adds.

    python bench/autopilot.py              # 10 rounds of each
    python bench/autopilot.py --rounds 3   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import nats
import nats.js.errors

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from rebal import bus, policy_store  # noqa: E402
from rebal.events import (  # noqa: E402
    BalanceSnapshotTaken,
    Event,
    OrderPlaced,
    RebalanceTriggered,
    RunFinished,
    StartRebalance,
    TakeSnapshot,
    TargetWeightsComputed,
    new_event,
)
from rebal_devstack.nats import NatsServer  # noqa: E402
from rebal_devstack.postgres import PostgresServer  # noqa: E402
from rebal_devstack.stack import PORTFOLIO, Services  # noqa: E402

TARGET_SECONDS = 1.0
DEPOSIT = Decimal(20_000)  # USDT on a 100,000 portfolio: cash leaves its 2% band
POLICY = {"drift_absolute": "2%", "mode": "auto"}
STILL = {"REBAL__PAPER__AMPLITUDE": "0", "REBAL__PAPER__NOISE": "0"}
E = TypeVar("E", bound=Event)


class Bus:
    """Every event of the portfolio as it arrives, for the rounds to wait on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[Event] = []

    async def start(self) -> None:
        self.client = await nats.connect(self.url)
        self.js = self.client.jetstream()

        async def keep(message: Any) -> None:
            event = bus.decode_any(message.subject, message.data)
            if not isinstance(event, str):
                self.seen.append(event)

        await self.client.subscribe(f"rebal.evt.*.*.v1.{PORTFOLIO}", cb=keep)

    async def publish(self, event: Event) -> None:
        await self.js.publish(
            event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)}
        )

    async def first(self, kind: type[E], check: Callable[[E], bool], timeout: float = 30.0) -> E:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.seen:
                if isinstance(event, kind) and check(event):
                    return event
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no {kind.__name__} in {timeout} s")
            await asyncio.sleep(0.005)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("gave up waiting")
        await asyncio.sleep(0.05)


async def has_target(events: Bus) -> bool:
    subject = TargetWeightsComputed.topic.subject(PORTFOLIO)
    try:
        await events.js.get_last_msg(bus.stream_of(subject).name, subject)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def deposit(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "UPDATE paper.balances SET amount = amount + $1 WHERE asset = 'USDT' AND account = 'demo/paper/spot'",
        DEPOSIT,
    )


async def snapshot(events: Bus) -> BalanceSnapshotTaken:
    command = new_event(TakeSnapshot, key=uuid.uuid4(), now=datetime.now(UTC), portfolio_id=PORTFOLIO)
    await events.publish(command)
    return await events.first(BalanceSnapshotTaken, lambda e: e.causation_id == command.event_id)


async def settle(events: Bus, run_id: uuid.UUID) -> None:
    """The run ended and the snapshot after it was taken (the autopilot has seen the fills)."""
    finished = await events.first(RunFinished, lambda e: e.correlation_id == run_id)
    await events.first(BalanceSnapshotTaken, lambda e: e.occurred_at > finished.occurred_at)
    await asyncio.sleep(0.5)


async def autopilot_round(events: Bus, pool: asyncpg.Pool) -> float:
    await deposit(pool)
    taken = await snapshot(events)
    trigger = await events.first(RebalanceTriggered, lambda e: e.snapshot_id == taken.event_id)
    order = await events.first(OrderPlaced, lambda e: e.correlation_id == trigger.correlation_id)
    await settle(events, trigger.correlation_id)
    return (order.occurred_at - taken.emitted_at).total_seconds()


async def operator_round(events: Bus, pool: asyncpg.Pool) -> float:
    await deposit(pool)
    await snapshot(events)
    command = new_event(
        StartRebalance, key=uuid.uuid4(), now=datetime.now(UTC), portfolio_id=PORTFOLIO, dry_run=False
    )
    await events.publish(command)
    order = await events.first(
        OrderPlaced, lambda e: e.causation_id is not None and e.occurred_at > command.emitted_at
    )
    await settle(events, order.correlation_id or uuid.uuid4())
    return (order.occurred_at - command.emitted_at).total_seconds()


async def set_policy(pool: asyncpg.Pool, mode: str) -> None:
    await policy_store.add(
        pool,
        policy_store.PORTFOLIO,
        PORTFOLIO,
        {**POLICY, "mode": mode},
        author="bench",
        note="",
        at=datetime.now(UTC),
    )


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{name:<34} {len(values):>3} {p50 * 1000:>8.0f} {p90 * 1000:>8.0f} {ordered[-1] * 1000:>8.0f}"


async def measure(url: str, dsn: str, rounds: int) -> tuple[list[float], list[float]]:
    events = Bus(url)
    await events.start()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await until(lambda: has_target(events), timeout=60)
        await snapshot(events)
        autopilot: list[float] = []
        operator: list[float] = []
        for _ in range(rounds + 1):  # the first of each warms the path up
            await set_policy(pool, "auto")
            autopilot.append(await autopilot_round(events, pool))
            await set_policy(pool, "notify")
            operator.append(await operator_round(events, pool))
        return autopilot[1:], operator[1:]
    finally:
        await pool.close()
        await events.client.drain()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rebal-bench-autopilot-") as tmp:
        base = Path(tmp)
        with (
            NatsServer(base / "nats" / "jetstream", extra_config="max_payload: 8MB") as server,
            PostgresServer(base / "pg" / "data") as postgres,
        ):
            dsn = postgres.ensure_database("rebal")
            services = Services(
                nats_url=server.url,
                database_url=dsn,
                root=ROOT,
                log_dir=base / "logs",
                service_env={
                    "tracker": {**STILL, "REBAL__TRACKING__SNAPSHOT_INTERVAL_SECONDS": "3600"},
                    "executor": STILL,
                    "planner": {
                        "REBAL__PLANNING__PREVIEW_ON_NEW_DATA": "false",
                        "REBAL__AUTOPILOT__TICK_SECONDS": "3600",
                    },
                    "optimizer": {"REBAL__TARGETS__INTERVAL_SECONDS": "3600"},
                },
            )
            services.start()
            try:
                autopilot, operator = asyncio.run(measure(server.url, dsn, args.rounds))
            except TimeoutError:
                for name in ("planner", "executor", "tracker"):
                    log = (base / "logs" / f"{name}.log").read_text().splitlines()
                    print(f"--- {name}.log (last lines)\n" + "\n".join(log[-15:]), file=sys.stderr)
                raise
            finally:
                services.stop()
    print(f"Python {sys.version.split()[0]}; the five services as processes, still paper prices")
    print(f"{'path (to the first order)':<34} {'n':>3} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    print(summary("autopilot: snapshot with a breach", autopilot))
    print(summary("reference: an operator's command", operator))
    p50 = sorted(autopilot)[len(autopilot) // 2]
    reference = sorted(operator)[len(operator) // 2]
    print(f"autopilot / operator (p50): {p50 / reference:.2f}")
    worst = max(autopilot)
    verdict = "meets" if worst < TARGET_SECONDS else "MISSES"
    print(
        f"slowest breach to first order {worst * 1000:.0f} ms: {verdict} the target of {TARGET_SECONDS:g} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

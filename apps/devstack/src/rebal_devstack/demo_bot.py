"""A demo bot: a few strategies report SIMULATED daily returns, one simulated day every `--interval`
seconds (1 by default), as a trading bot reports its daily returns.

``python -m rebal_devstack.demo_bot --nats-url nats://127.0.0.1:4222`` publishes one
`StrategyReturnReported` per strategy per simulated day with plain nats-py JetStream publishes. The days
are a simulated calendar, clearly apart from real time: midnight UTC of consecutive days from
`SIMULATION_START` (2000-01-01), so statistics see daily data (365.25 periods a year) with plausible
figures (annualised volatility 2-40%, Sharpe around 1), however fast the days pass. Returns are
pseudo-random but deterministic: derived from a hash of the strategy and the day, so a restarted bot
reports the same return for the same day, under the same event id (``Nats-Msg-Id``), and the bus drops
the repeat; it resumes after the latest day the stream holds for its strategies. The calendar reaches the
end of the dates events accept (2100) after 100 simulated years: the bot then stops, saying so.
SIGINT/SIGTERM stop it after the current day.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import math
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError

from rebal import subjects
from rebal.events import StrategyReturnReported, new_event

log = logging.getLogger("rebal.demo_bot")
RETURN_QUANTUM = Decimal("1e-8")
EQUITY_QUANTUM = Decimal("0.01")
LOG_EVERY = 60  # days between two progress lines in the log
SIMULATION_START = datetime(2000, 1, 1, tzinfo=UTC)
SIMULATION_END = datetime(2100, 1, 1, tzinfo=UTC)  # events accept no later date
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Strategy:
    """A strategy's return per simulated day: ``drift + volatility·z`` with z from a hash (about normal);
    annualised (365.25 days) that is a volatility of ``volatility·19.1`` and a Sharpe of about
    ``drift / volatility·19.1``."""

    name: str
    drift: float
    volatility: float
    start_equity: Decimal = Decimal(10_000)

    def period_return(self, timestamp: datetime) -> Decimal:
        z = _normal(f"{self.name}|{timestamp.isoformat()}")
        return Decimal(f"{self.drift + self.volatility * z:.10f}").quantize(RETURN_QUANTUM)


STRATEGIES = (
    Strategy("trend", drift=0.0008, volatility=0.02),  # ~38% a year, Sharpe ~0.8
    Strategy("meanrev", drift=0.0004, volatility=0.01),  # ~19%, Sharpe ~0.8
    Strategy("arb", drift=0.0001, volatility=0.001),  # ~2%, Sharpe ~1.9
)


def _normal(text: str) -> float:
    """A standard-normal-ish number from a string (Box-Muller on two hash-derived uniforms)."""
    digest = hashlib.sha256(text.encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(digest[8:16], "big") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def simulated_day(index: int) -> datetime:
    """The `index`-th simulated day (0 is `SIMULATION_START`), midnight UTC."""
    return SIMULATION_START + index * DAY


def reports(
    timestamp: datetime,
    equity: dict[str, Decimal],
    *,
    portfolio: str,
    now: datetime,
    strategies: tuple[Strategy, ...] = STRATEGIES,
) -> list[StrategyReturnReported]:
    """This period's report of every strategy; `equity` is compounded in place."""
    out = []
    for strategy in strategies:
        value = strategy.period_return(timestamp)
        held = equity.get(strategy.name, strategy.start_equity)
        equity[strategy.name] = (held * (1 + value)).quantize(EQUITY_QUANTUM)
        out.append(
            new_event(
                StrategyReturnReported,
                key=f"{strategy.name}|{timestamp.isoformat()}",
                now=now,
                portfolio_id=portfolio,
                strategy_id=strategy.name,
                timestamp=timestamp,
                period_return=value,
                equity=equity[strategy.name],
            )
        )
    return out


async def publish(client: Client, events: list[StrategyReturnReported]) -> int:
    """Publish to the events stream; the number the server stored (repeats are dropped by id)."""
    js = client.jetstream()
    stored = 0
    for event in events:
        ack = await js.publish(
            event.subject,
            event.model_dump_json().encode(),
            stream=subjects.EVENTS_STREAM,
            headers={"Nats-Msg-Id": str(event.event_id)},
            timeout=5.0,
        )
        stored += 0 if ack.duplicate else 1
    return stored


async def resume_day(client: Client, strategies: tuple[Strategy, ...] = STRATEGIES) -> datetime:
    """The simulated day after the latest one the events stream holds for these strategies; the first day
    when it holds none (or cannot be asked)."""
    manager = client.jsm()
    latest: datetime | None = None
    for strategy in strategies:
        subject = StrategyReturnReported.topic.subject(strategy.name)
        try:
            message = await manager.get_last_msg(subjects.EVENTS_STREAM, subject)
        except (JetStreamError, NatsError, TimeoutError):
            continue  # none yet (or no permission to look): the calendar starts at its start
        if message.data is None:
            continue
        reported = StrategyReturnReported.model_validate_json(message.data).timestamp
        latest = reported if latest is None else max(latest, reported)
    return SIMULATION_START if latest is None else latest + DAY


async def run(url: str, *, interval: float, portfolio: str, stop: asyncio.Event) -> int:
    """Report one simulated day every `interval` seconds until `stop` is set (or the calendar ends); the
    number of days reported."""
    client = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=1.0)
    equity: dict[str, Decimal] = {}
    days = 0
    try:
        day = await resume_day(client)
        log.info("simulated daily returns from %s, one day every %g s", day.date(), interval)
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not stop.is_set():
            if day >= SIMULATION_END:
                log.warning(
                    "the simulated calendar reached %s, the last date events accept: stopped", day.date()
                )
                break
            try:
                await publish(client, reports(day, equity, portfolio=portfolio, now=datetime.now(UTC)))
            except (NatsError, TimeoutError) as exc:
                log.warning("simulated day %s not reported (tried again): %s", day.date(), exc)
            else:
                day += DAY
                days += 1
                if days == 1 or days % LOG_EVERY == 0:
                    log.info(
                        "reported %d simulated days, to %s; equity %s", days, day.date(), _equities(equity)
                    )
            deadline += interval
            try:
                await asyncio.wait_for(stop.wait(), max(deadline - loop.time(), 0.01))
            except TimeoutError:
                continue
    finally:
        await client.drain()
    log.info("stopped after %d simulated days", days)
    return days


def _equities(equity: dict[str, Decimal]) -> str:
    return ", ".join(f"{name} {value}" for name, value in sorted(equity.items()))


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(args.nats_url, interval=args.interval, portfolio=args.portfolio, stop=stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rebal_devstack.demo_bot", description=__doc__)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per simulated day")
    parser.add_argument("--portfolio", default="demo")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()

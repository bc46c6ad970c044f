"""A demo bot: a few strategies report their returns every second, as a trading bot would.

``python -m rebal_devstack.demo_bot --nats-url nats://127.0.0.1:4222`` publishes one
`StrategyReturnReported` per strategy per period with plain nats-py JetStream publishes. Returns are
pseudo-random but deterministic: derived from a hash of the strategy and the period's timestamp, so a
restarted bot reports the same return for the same period, under the same event id (``Nats-Msg-Id``),
and the bus drops the repeat. SIGINT/SIGTERM stop it after the current period.

With ``--var DIR`` (`make run`), each strategy connects as its own NATS user ``bot-<strategy>``
(deploy/nats/auth.conf: a bot may report only its own returns), with the password `make run` made in
``DIR/secrets/``; without it the bot connects anonymously, to an open bus.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import math
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from rebal import subjects
from rebal.events import StrategyReturnReported, new_event
from rebal_devstack import credentials

log = logging.getLogger("rebal.demo_bot")
RETURN_QUANTUM = Decimal("1e-8")
EQUITY_QUANTUM = Decimal("0.01")
LOG_EVERY = 60  # periods between two progress lines in the log


@dataclass(frozen=True)
class Strategy:
    """A strategy's return per period: ``drift + volatility·z`` with z from a hash (about normal)."""

    name: str
    drift: float
    volatility: float
    start_equity: Decimal = Decimal(10_000)

    def period_return(self, timestamp: datetime) -> Decimal:
        z = _normal(f"{self.name}|{timestamp.isoformat()}")
        return Decimal(f"{self.drift + self.volatility * z:.10f}").quantize(RETURN_QUANTUM)


STRATEGIES = (
    Strategy("trend", drift=0.0002, volatility=0.004),
    Strategy("meanrev", drift=0.0001, volatility=0.002),
    Strategy("arb", drift=0.00005, volatility=0.0004),
)


def _normal(text: str) -> float:
    """A standard-normal-ish number from a string (Box-Muller on two hash-derived uniforms)."""
    digest = hashlib.sha256(text.encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(digest[8:16], "big") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def period_start(now: datetime, interval: float) -> datetime:
    """The start of the period holding `now` (periods are multiples of `interval` since the epoch)."""
    return datetime.fromtimestamp(math.floor(now.timestamp() / interval) * interval, UTC)


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


def bot_user(strategy: Strategy) -> str:
    """The strategy's NATS user (deploy/nats/auth.conf)."""
    return f"bot-{strategy.name}"


async def connect(url: str, strategy: Strategy, var_dir: Path | None) -> Client:
    """A client for `strategy`'s reports: as its own user with `var_dir`, else anonymous."""
    login: dict[str, str] = {}
    if var_dir is not None:
        user = bot_user(strategy)
        login = {
            "user": user,
            "password": credentials.read_secret(credentials.nats_password_file(var_dir, user)),
        }
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=1.0, **login)


async def run(
    url: str, *, interval: float, portfolio: str, stop: asyncio.Event, var_dir: Path | None = None
) -> int:
    """Report every `interval` seconds until `stop` is set; the number of periods reported."""
    clients: dict[str, Client] = {}
    for strategy in STRATEGIES:
        clients[strategy.name] = await connect(url, strategy, var_dir)
    equity: dict[str, Decimal] = {}
    periods = 0
    last: datetime | None = None
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            timestamp = period_start(now, interval)
            if timestamp != last:
                try:
                    for event in reports(timestamp, equity, portfolio=portfolio, now=now):
                        await publish(clients[event.strategy_id], [event])
                except (NatsError, TimeoutError) as exc:
                    log.warning("period %s not reported (tried again next period): %s", timestamp, exc)
                else:
                    last = timestamp
                    periods += 1
                    if periods == 1 or periods % LOG_EVERY == 0:
                        log.info("reported %d periods; equity %s", periods, _equities(equity))
            wait = (timestamp.timestamp() + interval) - datetime.now(UTC).timestamp()
            try:
                await asyncio.wait_for(stop.wait(), max(wait, 0.01))
            except TimeoutError:
                continue
    finally:
        for client in clients.values():
            await client.drain()
    log.info("stopped after %d periods", periods)
    return periods


def _equities(equity: dict[str, Decimal]) -> str:
    return ", ".join(f"{name} {value}" for name, value in sorted(equity.items()))


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(args.nats_url, interval=args.interval, portfolio=args.portfolio, stop=stop, var_dir=args.var)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rebal_devstack.demo_bot", description=__doc__)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per period")
    parser.add_argument("--portfolio", default="demo")
    parser.add_argument(
        "--var", type=Path, default=None, help="make run's state: connect as each strategy's NATS user"
    )
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()

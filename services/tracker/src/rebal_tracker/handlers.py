"""Tracker handlers: venue balances in, `BalanceSnapshotTaken` out; strategy returns into Postgres."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol

from faststream import AckPolicy, Context
from faststream.nats import NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage
from nats.aio.msg import Msg
from nats.js import api

from rebal import bus, metrics
from rebal.core.assemble import LayoutAccount, assemble_tree, layout_accounts
from rebal.core.numbers import dec_str
from rebal.events import BalanceSnapshotTaken, StrategyReturnReported, TakeSnapshot, new_event
from rebal.venue import Venue
from rebal_tracker.returns import ReturnRow

log = logging.getLogger("rebal.tracker")
SERVICE = "tracker"
Doc = dict[str, Any]


class SeededVenue(Venue, Protocol):
    """A venue whose starting balances the tracker loads from the layout (the paper exchange)."""

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Tracker:
    """Reads every account of the layout from its venue and publishes the assembled real tree."""

    portfolio_id: str
    layout: Doc
    quote: str
    venues: Mapping[str, SeededVenue]
    publisher: bus.EventSink
    clock: Callable[[], datetime] = utc_now
    accounts: list[LayoutAccount] = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = [a for a in layout_accounts(self.layout) if a.exchange in self.venues]

    async def seed(self) -> list[str]:
        """Load the layout's amounts into accounts that hold nothing yet; returns the seeded paths."""
        seeded = []
        for account in self.accounts:
            if await self.venues[str(account.exchange)].seed(account.path, account.amounts):
                seeded.append(account.path)
        return seeded

    async def read(self) -> Doc:
        """The snapshot's facts: the assembled tree, prices in the valuation quote, the markets."""
        holdings: dict[str, dict[str, Decimal]] = {}
        assets_by_venue: dict[str, set[str]] = {}
        for account in self.accounts:
            exchange = str(account.exchange)
            balances = await self.venues[exchange].balances(account.path)
            held = dict(balances.free)
            for asset, amount in balances.locked.items():
                held[asset] = held.get(asset, Decimal(0)) + amount
            holdings[account.path] = held
            wanted = assets_by_venue.setdefault(exchange, set())
            wanted.update(held, account.amounts, [account.quote] if account.quote else [])
        prices: dict[str, str] = {}
        markets: dict[str, dict[str, dict[str, str]]] = {}
        for exchange, assets in sorted(assets_by_venue.items()):
            venue = self.venues[exchange]
            symbols = [f"{asset}/{self.quote}" for asset in sorted(assets - {self.quote, *prices})]
            for symbol, price in (await venue.prices(symbols)).items():
                prices[symbol.partition("/")[0]] = dec_str(price)
            markets[exchange] = {
                symbol: {
                    "amount_step": dec_str(info.amount_step),
                    "min_amount": dec_str(info.min_amount),
                    "min_cost": dec_str(info.min_cost),
                    "fee_rate": dec_str(info.fee_rate),
                }
                for symbol, info in sorted((await venue.markets()).items())
                if info.active
            }
        return {
            "tree": assemble_tree(self.layout, holdings),
            "prices": {"quote": self.quote, "prices": dict(sorted(prices.items()))},
            "markets": markets,
        }

    async def on_take_snapshot(self, command: TakeSnapshot) -> None:
        if command.portfolio_id != self.portfolio_id:
            log.info("ignoring a snapshot command for portfolio %s", command.portfolio_id)
            return
        facts = await self.read()
        await self.publisher.publish(command.caused(BalanceSnapshotTaken, now=self.clock(), **facts))

    async def on_tick(self, tick: datetime) -> bool:
        """The scheduled snapshot of `tick`; its id comes from the tick, so replicas publish it once."""
        facts = await self.read()
        event = new_event(
            BalanceSnapshotTaken,
            key=f"tick|{tick.isoformat()}",
            now=self.clock(),
            portfolio_id=self.portfolio_id,
            **facts,
        )
        return await self.publisher.publish(event)

    async def run_schedule(self, interval: float) -> None:
        """Take a snapshot at every multiple of `interval` seconds (UTC) until cancelled."""
        while True:
            now = self.clock().timestamp()
            tick = (now // interval + 1) * interval
            await asyncio.sleep(tick - now)
            try:
                await self.on_tick(datetime.fromtimestamp(tick, UTC))
            except Exception:  # a failed tick is logged with its traceback; the next one tries again
                log.exception("scheduled snapshot failed")


@dataclass
class ReturnsIngest:
    """Stores a batch of strategy returns in one statement and counts every one of them."""

    store: ReturnsWriter
    latest: dict[str, float] = field(default_factory=dict)

    async def on_returns(self, events: Sequence[StrategyReturnReported]) -> None:
        if not events:
            return
        await self.store.insert([ReturnRow.of(event) for event in events])
        for event in events:
            strategy = event.strategy_id
            metrics.STRATEGY_RETURNS.labels(strategy=strategy).inc()
            ts = event.timestamp.timestamp()
            if ts > self.latest.get(strategy, float("-inf")):
                self.latest[strategy] = ts
                metrics.STRATEGY_LAST_RETURN.labels(strategy=strategy).set(ts)


class ReturnsWriter(Protocol):
    async def insert(self, rows: Sequence[ReturnRow]) -> int: ...


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    on_take_snapshot: Callable[[TakeSnapshot], Awaitable[None]],
    on_returns: Callable[[Sequence[StrategyReturnReported]], Awaitable[None]],
    *,
    batch_size: int = 1000,
    batch_wait: float = 0.05,
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=TakeSnapshot,
        durable="tracker-take-snapshot",
        handler=on_take_snapshot,
    )
    consume_returns(broker, publisher, on_returns, batch_size=batch_size, batch_wait=batch_wait)


def consume_returns(
    broker: NatsBroker,
    publisher: bus.Publisher,
    on_returns: Callable[[Sequence[StrategyReturnReported]], Awaitable[None]],
    *,
    batch_size: int,
    batch_wait: float,
) -> None:
    """Strategy returns in batches: up to `batch_size` messages per fetch (or what came in `batch_wait`),
    stored by one call, then each message acked; `bus.consume`'s rules otherwise (unreadable messages
    are dead-lettered and acked, a failed write is retried with backoff, then dead-lettered)."""
    topic = StrategyReturnReported.topic
    subject = topic.any_version()
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=bus.ACK_WAIT_SECONDS,
        max_deliver=bus.MAX_DELIVER,
        deliver_policy=api.DeliverPolicy.ALL,
        max_ack_pending=4 * batch_size,
    )

    @broker.subscriber(
        subject,
        stream=bus.stream_of(subject).jstream(),
        durable="tracker-strategy-returns",
        pull_sub=PullSub(batch_size=batch_size, timeout=batch_wait, batch=True),
        config=config,
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw_batch,
    )
    async def receive(batch: Annotated[NatsBatchMessage, Context("message")]) -> None:
        started = time.perf_counter()
        readable: list[tuple[Msg, StrategyReturnReported]] = []
        for raw in batch.raw_message:
            event = bus.decode(StrategyReturnReported, raw.subject, raw.data)
            if isinstance(event, str):
                await publisher.dead_letter(SERVICE, _one(raw), event)
                await raw.ack()
            else:
                readable.append((raw, event))
        try:
            await on_returns([event for _, event in readable])
        except Exception as exc:  # noqa: BLE001 - a failed write is retried, then dead-lettered
            await _retry_or_give_up(publisher, readable, f"{type(exc).__name__}: {exc}")
            return
        for raw, _ in readable:
            await raw.ack()
        metrics.HANDLED.labels(service=SERVICE, topic=topic.name).observe(time.perf_counter() - started)


async def _raw_batch(message: NatsBatchMessage) -> None:
    """No body for the handler: it validates each message itself (FastStream would JSON-decode them all)."""


async def _retry_or_give_up(
    publisher: bus.Publisher, readable: Sequence[tuple[Msg, StrategyReturnReported]], reason: str
) -> None:
    log.warning("storing %d strategy returns failed, retrying: %s", len(readable), reason)
    metrics.HANDLER_RETRIES.labels(service=SERVICE, topic=StrategyReturnReported.topic.name).inc()
    for raw, _ in readable:
        delivered = _deliveries(raw)
        if delivered >= bus.MAX_DELIVER:
            await publisher.dead_letter(SERVICE, _one(raw), f"gave up after {delivered} deliveries: {reason}")
            await raw.ack()
        else:
            await raw.nak(delay=bus.BACKOFF_SECONDS[min(delivered, len(bus.BACKOFF_SECONDS)) - 1])


def _deliveries(raw: Msg) -> int:
    try:
        return int(raw.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - a plain (non-JetStream) message is delivered once
        return 1


def _one(raw: Msg) -> NatsMessage:
    """One message of a batch as FastStream's message, for `Publisher.dead_letter`."""
    headers = raw.header or {}
    return NatsMessage(raw_message=raw, body=raw.data, headers=headers, reply_to=raw.reply)

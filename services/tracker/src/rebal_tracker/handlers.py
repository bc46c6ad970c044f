"""Tracker handlers: snapshot commands to the `Tracker` (tracker.py), strategy returns in batches to the
`ReturnsIngest` (returns.py), bank transfers opened, confirmed or expired to the bank ledger (banks.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import (
    StrategyReturnReported,
    TakeSnapshot,
    TransferConfirmed,
    TransferTaskExpired,
    TransferTaskOpened,
)

SERVICE = "tracker"


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    on_take_snapshot: Callable[[TakeSnapshot], Awaitable[None]],
    on_returns: Callable[[Sequence[StrategyReturnReported]], Awaitable[None]],
    *,
    on_transfer_confirmed: Callable[[TransferConfirmed], Awaitable[None]] | None = None,
    on_task_opened: Callable[[TransferTaskOpened], Awaitable[None]] | None = None,
    on_task_expired: Callable[[TransferTaskExpired], Awaitable[None]] | None = None,
    batch_size: int = 1000,
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=TakeSnapshot,
        durable="tracker-take-snapshot",
        handler=on_take_snapshot,
    )
    bus.consume_batch(
        broker,
        publisher,
        service=SERVICE,
        kind=StrategyReturnReported,
        durable="tracker-strategy-returns",
        handler=on_returns,
        batch_size=batch_size,
    )
    if on_transfer_confirmed is None:  # a tracker of no bank accounts' balances
        return
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=TransferConfirmed,
        durable="tracker-bank-ledger",
        handler=on_transfer_confirmed,
    )
    if on_task_opened is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=TransferTaskOpened,
            durable="tracker-bank-tasks",
            handler=on_task_opened,
        )
    if on_task_expired is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=TransferTaskExpired,
            durable="tracker-bank-expiries",
            handler=on_task_expired,
        )

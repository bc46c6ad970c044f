"""Monitor handlers: every event and command on the bus, in batches, to the `Monitor` (monitor.py)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from rebal import bus, subjects
from rebal_monitor.monitor import Monitor

SERVICE = "monitor"
BATCH_SIZE = 500


def register(broker: NatsBroker, publisher: bus.Publisher, monitor: Monitor) -> None:
    """Everything on the bus, in stream order, in batches (strategy returns alone can be 20k a second)."""
    for durable, subject in (
        ("monitor-events", subjects.ALL_EVENTS),
        ("monitor-commands", subjects.ALL_COMMANDS),
    ):
        bus.consume_all_batch(
            broker,
            publisher,
            service=SERVICE,
            durable=durable,
            filter_subject=subject,
            handler=monitor.on_events,
            batch_size=BATCH_SIZE,
        )

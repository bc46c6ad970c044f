"""Optimizer handlers: the operators' `RunOptimization` commands to the `Allocations` (allocations.py),
their `SetTarget` commands to the `ManualTargets` (manual.py)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import RunOptimization, SetTarget
from rebal_optimizer.allocations import Allocations
from rebal_optimizer.manual import ManualTargets

SERVICE = "optimizer"


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    allocations: Allocations,
    manual: ManualTargets | None = None,
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=RunOptimization,
        durable="optimizer-commands",
        handler=allocations.on_command,
    )
    if manual is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=SetTarget,
            durable="optimizer-targets",
            handler=manual.on_set,
        )

"""Executor subscribers: a non-dry-run `RebalancePlanned`, `HaltTrading`, `ResumeTrading` and an operator's
`ConfirmTransfer` in, each handed to the engine (`rebal_executor.execution`). Translation only: what to do
with them lives in the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import ConfirmTransfer, HaltTrading, RebalancePlanned, ResumeTrading

SERVICE = "executor"


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    on_plan: Callable[[RebalancePlanned], Awaitable[None]],
    on_halt: Callable[[HaltTrading], Awaitable[None]] | None = None,
    on_resume: Callable[[ResumeTrading], Awaitable[None]] | None = None,
    on_confirm: Callable[[ConfirmTransfer], Awaitable[None]] | None = None,
) -> None:
    bus.consume(
        broker, publisher, service=SERVICE, kind=RebalancePlanned, durable="executor-plans", handler=on_plan
    )
    if on_halt is not None:
        bus.consume(
            broker, publisher, service=SERVICE, kind=HaltTrading, durable="executor-halt", handler=on_halt
        )
    if on_resume is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=ResumeTrading,
            durable="executor-resume",
            handler=on_resume,
        )
    if on_confirm is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=ConfirmTransfer,
            durable="executor-transfer-confirm",
            handler=on_confirm,
        )

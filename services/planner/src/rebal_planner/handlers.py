"""Planner handlers: the commands, snapshots, targets and approvals the planner subscribes to, handed to
the `Planner` (planner.py) and the `Approvals` (approvals.py)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import ApprovePlan, BalanceSnapshotTaken, StartRebalance, TargetWeightsComputed
from rebal_planner.approvals import Approvals
from rebal_planner.planner import Planner

SERVICE = "planner"


def register(broker: NatsBroker, publisher: bus.Publisher, planner: Planner) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=StartRebalance,
        durable="planner-commands",
        handler=planner.on_command,
    )
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=BalanceSnapshotTaken,
        durable="planner-snapshots",
        handler=planner.on_snapshot,
    )
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=TargetWeightsComputed,
        durable="planner-targets",
        handler=planner.on_target,
    )


def register_approvals(broker: NatsBroker, publisher: bus.Publisher, approvals: Approvals) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=ApprovePlan,
        durable="planner-approvals",
        handler=approvals.on_approve,
    )

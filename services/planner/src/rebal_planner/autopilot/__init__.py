"""The autopilot (docs/autopilot.md): portfolios rebalance by themselves by their policies.

Bottom-up: `state` (its tables), `decide` (one decision, no I/O), `engine` (decisions on snapshots,
targets and the clock; what runs and operators did; the funds' schedules), and `register` (its consumer).
"""

from __future__ import annotations

from typing import Any

from rebal import bus
from rebal.events import RunFinished
from rebal_planner.autopilot.engine import Autopilot

__all__ = ["Autopilot", "register"]


def register(broker: Any, publisher: bus.Publisher, autopilot: Autopilot) -> None:
    """How runs end, for the autopilot's memory (its own durable consumer, in order)."""
    bus.consume(
        broker,
        publisher,
        service="planner",
        kind=RunFinished,
        durable="planner-autopilot-runs",
        handler=autopilot.on_run_finished,
    )

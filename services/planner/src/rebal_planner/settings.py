"""Planner settings."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from rebal.settings import Section, ServiceSettings


class PlanningSettings(Section):
    # Relative drift band for previews made on new snapshots and targets (commands carry their own).
    band: Decimal = Field(default=Decimal(0), ge=0)
    # Make a dry-run preview whenever a new snapshot or target arrives.
    preview_on_new_data: bool = True
    # Reconciler mode (an optimizer target with `optimization.mode == "reconciler"`): plan it for execution
    # at once, with this band, rather than as a preview. Off by default (production-safe: dry-run).
    execute_reconciler_targets: bool = False
    reconcile_band: Decimal = Field(default=Decimal("0.001"), ge=0)


class PlannerSettings(ServiceSettings):
    service: ClassVar[str] = "planner"
    planning: PlanningSettings = PlanningSettings()

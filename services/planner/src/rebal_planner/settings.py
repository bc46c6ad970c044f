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


class PlannerSettings(ServiceSettings):
    service: ClassVar[str] = "planner"
    planning: PlanningSettings = PlanningSettings()

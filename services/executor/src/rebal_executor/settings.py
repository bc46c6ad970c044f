"""Executor settings. Whether a plan is executed is the plan's own `dry_run` (dry-run by default)."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from rebal.settings import Section, ServiceSettings
from rebal_venues.settings import PaperSettings


class ExecutionSettings(Section):
    # How often an order is looked up until it is filled or rejected, and for how long.
    poll_interval_seconds: float = Field(default=0.2, gt=0)
    order_timeout_seconds: float = Field(default=30.0, gt=0)
    # Buys are sized at the current price raised by this much, so a small move cannot overspend.
    price_buffer: Decimal = Field(default=Decimal("0.002"), ge=0, lt=1)
    # A placement whose outcome is unknown (a venue error) is looked up, then retried under the same id.
    placement_attempts: int = Field(default=3, ge=1)


class ExecutorSettings(ServiceSettings):
    service: ClassVar[str] = "executor"
    # Off: plans are acked and ignored (an operator's stop switch).
    enabled: bool = True
    execution: ExecutionSettings = ExecutionSettings()
    paper: PaperSettings = PaperSettings()

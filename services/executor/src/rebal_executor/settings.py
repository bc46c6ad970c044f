"""Executor settings. Whether a plan is executed is the plan's own `dry_run` (dry-run by default), and then
only when live trading is switched on here (`live`, off by default)."""

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
    # A placement that fails for a retryable reason (network, rate limit, outcome unknown) is looked up by
    # its client id, then sent again under the SAME id, this many times in all, with backoff.
    placement_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=0.2, gt=0)
    retry_max_seconds: float = Field(default=10.0, gt=0)
    # Guardrails, in each market's quote (None: no limit). An order above the per-order limit, or one that
    # would take the run's orders above the per-run limit, is not sent: its leg is skipped with the reason.
    max_order_notional: Decimal | None = Field(default=None, gt=0)
    max_run_notional: Decimal | None = Field(default=None, gt=0)
    # When a buy's current price is further than this (a fraction) from the plan's estimate after the sells,
    # the run stops before its buys and asks for a re-plan (status cancelled_mid_run).
    max_price_move: Decimal = Field(default=Decimal("0.02"), gt=0)
    # A run must end this long after its plan was made: a queued plan older than this is not started
    # (cancelled: re-plan), and a run still going after it stops before its next leg (timed_out). It keeps
    # an executor that was down for a while from trading on stale prices.
    run_timeout_seconds: float = Field(default=600.0, gt=0)
    # A transfer leg waits this long for the destination to credit it (looked up every poll).
    transfer_timeout_seconds: float = Field(default=600.0, gt=0)
    transfer_poll_seconds: float = Field(default=2.0, gt=0)
    # Unfinished runs and our open orders are reconciled with the venues this often (and at start).
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)


class ExecutorSettings(ServiceSettings):
    service: ClassVar[str] = "executor"
    # Off: plans are acked and ignored (an operator's stop switch).
    enabled: bool = True
    # Live trading: until this is on, every non-dry-run plan is refused (RunFinished cancelled, with the
    # reason). The demo and the tests switch it on for the paper exchange (REBAL__LIVE=true).
    live: bool = False
    # Transfers between accounts (plan.transfers): off by default; when on, they run after the sells and
    # before the buys, which wait for the credit (venues that cannot move assets skip them).
    transfers: bool = False
    execution: ExecutionSettings = ExecutionSettings()
    paper: PaperSettings = PaperSettings()

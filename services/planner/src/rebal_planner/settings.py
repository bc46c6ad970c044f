"""Planner settings."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from rebal.core.errors import InputError
from rebal.core.networks import Networks
from rebal.io import FileError, load_document
from rebal.settings import Section, ServiceSettings


def load_networks(path: Path | None) -> Networks | None:
    """The planner's network file, parsed (None: no file); a missing or bad one is refused with one line
    naming the file (a `ValueError`: in the settings, a configuration error)."""
    if path is None:
        return None
    try:
        return Networks.parse(load_document(path))
    except FileError as exc:
        raise ValueError(str(exc)) from None
    except InputError as exc:
        raise ValueError(f"{path}: {exc}") from None


class PlanningSettings(Section):
    # Relative drift band for previews made on new snapshots and targets (commands carry their own).
    band: Decimal = Field(default=Decimal(0), ge=0)
    # Make a dry-run preview whenever a new snapshot or target arrives.
    preview_on_new_data: bool = True
    # Reconciler mode (an optimizer target with `optimization.mode == "reconciler"`): plan it for execution
    # at once, with this band, rather than as a preview. Off by default (production-safe: dry-run).
    execute_reconciler_targets: bool = False
    reconcile_band: Decimal = Field(default=Decimal("0.001"), ge=0)
    # A network file (docs/formats.md, "Where to trade"): how assets leave one exchange and enter another
    # (withdrawal fees, minimums, networks on and off). With it the planner may move an asset to the venue
    # where it sells better (the sell waits for the transfer); without it (the default) transfers stay
    # in each account's quote, between any two accounts, without a fee.
    network_file: Path | None = None

    @field_validator("network_file")
    @classmethod
    def _network_file_parses(cls, path: Path | None) -> Path | None:
        # Checked when the settings load, so a bad file is a configuration error (exit 4, named) and
        # `rebal config validate` reports it, rather than a traceback when the app is built.
        load_networks(path)
        return path


class AutopilotSettings(Section):
    """The autopilot: each portfolio's policy (set with `rebal policy set`) evaluated on every snapshot,
    target and clock tick (docs/autopilot.md)."""

    enabled: bool = True
    # How often the clock evaluates every policy (a schedule's tick is acted on within this) and runs the
    # funds' scheduled cycles.
    tick_seconds: float = Field(default=15.0, gt=0, le=3600)
    # A plan made in `approve` mode may be approved this long after it was made.
    approval_ttl_seconds: int = Field(default=3600, gt=0)
    # A live plan whose run never reports its end is given up after this long (the executor's
    # run_timeout_seconds, 600, plus its reconciliation).
    active_run_timeout_seconds: int = Field(default=900, gt=0)
    # After a run that did not complete, the next trigger waits base x 2^(failures-1) s, at most max.
    retry_base_seconds: int = Field(default=60, gt=0)
    retry_max_seconds: int = Field(default=3600, gt=0)


class PlannerSettings(ServiceSettings):
    service: ClassVar[str] = "planner"
    planning: PlanningSettings = PlanningSettings()
    autopilot: AutopilotSettings = AutopilotSettings()

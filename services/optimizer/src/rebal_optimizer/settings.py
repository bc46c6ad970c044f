"""Optimizer settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from rebal.settings import Section, ServiceSettings


class TargetSettings(Section):
    # The operator's desired tree per portfolio (docs/formats.md); re-read when it changes.
    files: dict[str, Path] = Field(default_factory=lambda: {"demo": Path("examples/demo/target.json")})
    # How often the file is checked and the target republished (idempotent: same content, same id).
    interval_seconds: float = Field(default=30.0, gt=0)


class OptimizerSettings(ServiceSettings):
    service: ClassVar[str] = "optimizer"
    targets: TargetSettings = TargetSettings()

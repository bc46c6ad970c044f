"""Tracker settings: the portfolio layout, the paper exchange and how often to take snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from rebal.events import PortfolioId
from rebal.settings import Section, ServiceSettings
from rebal_venues.settings import PaperSettings


class TrackingSettings(Section):
    portfolio_id: PortfolioId = "demo"
    # A real-tree document (docs/formats.md): its accounts name the venue accounts, its wallet amounts
    # seed the paper exchange the first time.
    layout_file: Path = Path("examples/demo/real.json")
    snapshot_interval_seconds: float = Field(default=10.0, gt=0)
    # Strategy returns are fetched and written in batches of up to this many.
    return_batch_size: int = Field(default=1000, ge=1, le=10_000)


class TrackerSettings(ServiceSettings):
    service: ClassVar[str] = "tracker"
    tracking: TrackingSettings = TrackingSettings()
    paper: PaperSettings = PaperSettings()

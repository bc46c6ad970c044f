"""Tracker settings: the portfolio layout, the paper exchange and how often to take snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from rebal.events import PortfolioId
from rebal.settings import Section, ServiceSettings
from rebal_venues.settings import PaperSettings


class TrackingSettings(Section):
    portfolio_id: PortfolioId = "demo"
    # A real-tree document (docs/formats.md): its accounts name the venue accounts, its wallet amounts
    # seed the paper exchange the first time.
    layout_file: Path = Path("examples/demo/real.json")
    snapshot_interval_seconds: float = Field(default=10.0, gt=0)
    # The snapshot's prices carry each venue's own best bid and ask (`venues`, docs/formats.md), so the
    # planner sells where the bid is best and buys where the ask is lowest; off: one price per asset.
    venue_prices: bool = True
    # Strategy returns are fetched and written in batches of up to this many.
    return_batch_size: int = Field(default=1000, ge=1, le=10_000)
    # Strategy statistics: since inception and over these rolling windows (days), recomputed at most
    # once per `stats_debounce_seconds` after new returns arrive.
    stats_windows_days: list[int] = Field(default_factory=lambda: [90])
    stats_debounce_seconds: float = Field(default=2.0, gt=0)

    @field_validator("stats_windows_days")
    @classmethod
    def _positive_windows(cls, value: list[int]) -> list[int]:
        if any(days < 1 for days in value):
            raise ValueError("every statistics window must be at least one day")
        return sorted(set(value))


class TrackerSettings(ServiceSettings):
    service: ClassVar[str] = "tracker"
    tracking: TrackingSettings = TrackingSettings()
    paper: PaperSettings = PaperSettings()

"""Monitor settings."""

from __future__ import annotations

from typing import ClassVar

from rebal.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    service: ClassVar[str] = "monitor"

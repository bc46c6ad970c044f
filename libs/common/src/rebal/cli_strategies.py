"""Strategy commands (issue 5): optimize, backfill."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""

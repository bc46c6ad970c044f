"""Fund commands (issue 6): `rebal fund deposit|withdraw|show`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""

"""Operator commands (issue 7): approve, apply, status, history, halt, resume, export, config, doctor."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""

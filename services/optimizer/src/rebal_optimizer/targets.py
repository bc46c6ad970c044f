"""The desired tree from the operator's file, validated, as a `TargetWeightsComputed` event."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from rebal.core.tree import parse_tree
from rebal.events import TargetWeightsComputed, new_event
from rebal.io import FileError, load


def target_event(portfolio: str, path: Path, *, now: datetime) -> TargetWeightsComputed:
    """Read and validate the file; the event id is derived from its content, so an unchanged file
    republished is the same event. Raises `FileError` (naming the file and node) when it is bad."""
    document = load(path, lambda doc: (parse_tree(doc, "target"), doc)[1])
    if not isinstance(document, dict):
        raise FileError(path, "", "a desired tree must be a mapping")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return new_event(
        TargetWeightsComputed, key=digest, now=now, portfolio_id=portfolio, tree=document, source=str(path)
    )

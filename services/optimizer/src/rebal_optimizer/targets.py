"""The desired trees from the operators' files, validated, as `TargetWeightsComputed` events: each
published when it is new or changed (the operators' manual versions first), on an interval."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rebal import bus
from rebal.core.tree import parse_tree
from rebal.events import TargetWeightsComputed, new_event
from rebal.io import FileError, load
from rebal_optimizer.manual import ManualTargets
from rebal_optimizer.settings import OptimizerSettings

log = logging.getLogger("rebal.optimizer")


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


@dataclass
class Targets:
    publisher: bus.EventSink
    history: bus.History
    settings: OptimizerSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    problems: dict[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    # The operators' targets: the latest manual version replaces the file (`rebal_optimizer.manual`).
    manual: ManualTargets | None = None

    async def publish_manual(self) -> None:
        if self.manual is None:
            return
        try:
            await self.manual.refresh()
        except Exception as exc:  # noqa: BLE001 - Postgres away or not migrated yet: the next tick again
            log.warning("the operators' targets could not be read: %s", exc)
        for portfolio in sorted(self.manual.versions):
            if portfolio not in self.settings.allocations and await self.manual.publish_if_missing(portfolio):
                log.info("published the operators' target of %s", portfolio)

    async def publish_all(self) -> None:
        await self.publish_manual()
        for portfolio, path in sorted(self.settings.targets.files.items()):
            if portfolio in self.settings.allocations:
                continue  # the file is the base tree of the allocation
            if self.manual is not None and self.manual.base(portfolio) is not None:
                continue  # the operators' version takes precedence over the file
            try:
                event = target_event(portfolio, path, now=self.clock())
            except FileError as exc:
                if self.problems.get(portfolio) != str(exc):
                    log.error("target for %s not published: %s", portfolio, exc)
                self.problems[portfolio] = str(exc)
                continue
            self.problems.pop(portfolio, None)
            # Already the latest in the stream: nothing to say (and no copy after the duplicate window).
            if await self.history.latest_id(TargetWeightsComputed, portfolio) == event.event_id:
                continue
            if await self.publisher.publish(event):
                log.info("published the target of %s from %s (%s)", portfolio, path, event.event_id)

    async def ready(self) -> None:
        if self.problems:
            raise RuntimeError("; ".join(f"{p}: {why}" for p, why in sorted(self.problems.items())))

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish_all()
            except Exception:  # a broken bus is retried next tick; readiness reports NATS
                log.exception("publishing targets failed")
            await asyncio.sleep(self.settings.targets.interval_seconds)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="optimizer-targets")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

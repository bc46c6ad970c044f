"""The optimizer loop: publish each portfolio's target when it is new or changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rebal import bus
from rebal.events import TargetWeightsComputed
from rebal.io import FileError
from rebal_optimizer.settings import OptimizerSettings
from rebal_optimizer.targets import target_event

log = logging.getLogger("rebal.optimizer")
SERVICE = "optimizer"


@dataclass
class Targets:
    publisher: bus.EventSink
    history: bus.History
    settings: OptimizerSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    problems: dict[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def publish_all(self) -> None:
        for portfolio, path in sorted(self.settings.targets.files.items()):
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

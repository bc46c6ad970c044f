"""Every portfolio configured with an allocation, allocated across its strategies (`allocator.py`) on its
schedules: at each tick of the cron `schedule` in its `timezone`, after `after_new_returns` new returns,
when the strategies' positions change (reconciler mode) or the manager's portfolio_config.json does, and
on a `RunOptimization` command."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rebal import bus
from rebal.events import OptimizationFailed, RunOptimization
from rebal_optimizer.allocator import Allocator, StrategyData, Trigger, positions_key
from rebal_optimizer.manual import ManualTargets
from rebal_optimizer.settings import OptimizerSettings

log = logging.getLogger("rebal.optimizer")


@dataclass
class Allocations:
    """Every configured portfolio's `Allocator`, its schedules and the operators' command."""

    publisher: bus.EventSink
    history: bus.History
    settings: OptimizerSettings
    data: StrategyData
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    allocators: dict[str, Allocator] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    manual: ManualTargets | None = None

    def __post_init__(self) -> None:
        for portfolio, allocation in sorted(self.settings.allocations.items()):
            base = self.settings.targets.files[portfolio]  # checked by the settings
            self.allocators[portfolio] = Allocator(
                portfolio, allocation, base, self.data, self.history, self.publisher, self.clock
            )
            if self.manual is not None:  # the operators' tree, when set, is the allocation's base
                self.allocators[portfolio].manual_base = functools.partial(self.manual.base, portfolio)

    async def on_command(self, command: RunOptimization) -> None:
        allocator = self.allocators.get(command.portfolio_id)
        if allocator is None:
            reason = f"no allocation is configured for {command.portfolio_id}"
            await self.publisher.publish(
                command.caused(
                    OptimizationFailed, now=self.clock(), method="", reason=reason, trigger="command"
                )
            )
            return
        await allocator.run(Trigger("command", str(command.event_id), cause=command))

    async def check(self, allocator: Allocator) -> None:
        """One look at the data: solve when enough returns arrived, the manager's portfolio_config.json
        changed, or the positions changed."""
        if await allocator.due_for_data():
            await allocator.run(Trigger("data", str(await self.data.count(allocator.portfolio))))
            return
        changed = allocator.config_changed()
        if changed is not None:
            await allocator.run(Trigger("config", changed))
            return
        positions = await allocator.positions_changed()
        if positions is not None:
            await allocator.run(Trigger("positions", positions_key(positions)))

    async def _watch(self, allocator: Allocator) -> None:
        schedule = allocator.settings.cron()
        try:
            await allocator.publish_base()
        except Exception:  # logged; the first allocation still runs, and publishes a target if it can
            log.exception("publishing the base tree of %s failed", allocator.portfolio)
        try:  # a tick missed while the service was away is this first solve's trigger
            tick = None if schedule is None else await allocator.due_tick(schedule)
            await allocator.run(tick or Trigger("data", str(await self.data.count(allocator.portfolio))))
        except Exception:  # logged; the schedules try again
            log.exception("the first allocation of %s failed", allocator.portfolio)
        while True:
            await asyncio.sleep(allocator.settings.poll_seconds)
            try:
                tick = None if schedule is None else await allocator.due_tick(schedule)
                if tick is not None:
                    await allocator.run(tick)
                else:
                    await self.check(allocator)
            except Exception:  # a broken bus or database is retried next time; readiness reports it
                log.exception("allocating %s failed", allocator.portfolio)

    async def start(self) -> None:
        for portfolio, allocator in sorted(self.allocators.items()):
            self._tasks.append(asyncio.create_task(self._watch(allocator), name=f"allocate-{portfolio}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

"""The optimizer: publish each portfolio's target from its file when it is new or changed, and allocate the
portfolios configured with an allocation across their strategies (`rebal_optimizer.allocator`) on their
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

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import OptimizationFailed, RunOptimization, SetTarget, TargetWeightsComputed
from rebal.io import FileError
from rebal_optimizer.allocator import Allocator, StrategyData, Trigger, positions_key
from rebal_optimizer.manual import ManualTargets
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


def register(
    broker: NatsBroker,
    publisher: bus.Publisher,
    allocations: Allocations,
    manual: ManualTargets | None = None,
) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=RunOptimization,
        durable="optimizer-commands",
        handler=allocations.on_command,
    )
    if manual is not None:
        bus.consume(
            broker,
            publisher,
            service=SERVICE,
            kind=SetTarget,
            durable="optimizer-targets",
            handler=manual.on_set,
        )

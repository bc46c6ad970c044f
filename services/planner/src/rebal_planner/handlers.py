"""Planner handlers: a command, a snapshot or a target in; a plan (or why not) out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from faststream.nats import NatsBroker

from rebal import bus
from rebal.events import BalanceSnapshotTaken, Event, PlanFailed, StartRebalance, TargetWeightsComputed
from rebal_planner.planning import plan_event
from rebal_planner.settings import PlannerSettings

log = logging.getLogger("rebal.planner")
SERVICE = "planner"


@dataclass
class Planner:
    history: bus.History
    publisher: bus.EventSink
    settings: PlannerSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def on_command(self, command: StartRebalance) -> None:
        await self._plan(command, dry_run=command.dry_run, band=command.band)

    async def on_snapshot(self, snapshot: BalanceSnapshotTaken) -> None:
        if self.settings.planning.preview_on_new_data:
            await self._plan(snapshot, dry_run=True, band=self.settings.planning.band, snapshot=snapshot)

    async def on_target(self, target: TargetWeightsComputed) -> None:
        if self.settings.planning.preview_on_new_data:
            await self._plan(target, dry_run=True, band=self.settings.planning.band, target=target)

    async def _plan(
        self,
        cause: Event,
        *,
        dry_run: bool,
        band: Decimal,
        snapshot: BalanceSnapshotTaken | None = None,
        target: TargetWeightsComputed | None = None,
    ) -> None:
        portfolio = cause.portfolio_id
        snapshot = snapshot or await self.history.latest(BalanceSnapshotTaken, portfolio)
        target = target or await self.history.latest(TargetWeightsComputed, portfolio)
        now = self.clock()
        if snapshot is None or target is None:
            missing = "a balance snapshot" if snapshot is None else "a target"
            if isinstance(cause, StartRebalance):
                failed = cause.caused(
                    PlanFailed, now=now, reason=f"no {missing} yet for {portfolio}", dry_run=dry_run
                )
                await self.publisher.publish(failed)
            else:
                log.info("no %s yet for %s: nothing to preview", missing, portfolio)
            return
        result = await asyncio.to_thread(
            plan_event, cause, snapshot, target, band=band, dry_run=dry_run, now=now
        )
        stored = await self.publisher.publish(result)
        log.info(
            "%s %s for %s (run %s)%s",
            "planned" if result.type == "RebalancePlanned" else "could not plan",
            "a preview" if dry_run else "a rebalance",
            portfolio,
            result.correlation_id,
            "" if stored else " - already published",
        )


def register(broker: NatsBroker, publisher: bus.Publisher, planner: Planner) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=StartRebalance,
        durable="planner-commands",
        handler=planner.on_command,
    )
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=BalanceSnapshotTaken,
        durable="planner-snapshots",
        handler=planner.on_snapshot,
    )
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=TargetWeightsComputed,
        durable="planner-targets",
        handler=planner.on_target,
    )

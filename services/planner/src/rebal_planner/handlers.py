"""Planner handlers: a command, a snapshot or a target in, a plan (or why not) out; an approval, its plan."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Generic, TypeVar

from faststream.nats import NatsBroker

from rebal import bus, metrics
from rebal.core.errors import InputError
from rebal.core.tree import Tree
from rebal.events import (
    ApprovePlan,
    BalanceSnapshotTaken,
    Event,
    Optimization,
    PlanFailed,
    StartRebalance,
    TargetWeightsComputed,
)
from rebal_planner.approvals import Approvals
from rebal_planner.planning import (
    ParsedSnapshot,
    Planned,
    Weights,
    parse_snapshot,
    parse_target,
    parsed_or_error,
    plan_with_weights,
)
from rebal_planner.settings import PlannerSettings

log = logging.getLogger("rebal.planner")
SERVICE = "planner"
# Parsed inputs kept per event id: a few snapshots and targets per portfolio is plenty.
PARSED_CACHE_SIZE = 16
K = TypeVar("K", BalanceSnapshotTaken, TargetWeightsComputed)
P = TypeVar("P", ParsedSnapshot, Tree)


@dataclass(frozen=True)
class Known(Generic[P]):
    """An event's id and its parsed form (or why it does not parse): the payload itself is not kept."""

    event_id: uuid.UUID
    parsed: P | InputError


@dataclass
class Parsed(Generic[K, P]):
    """Parsed events of one kind, by event id (the stream stays the record of which is the latest)."""

    parse: Callable[[K], P]
    entries: OrderedDict[uuid.UUID, Known[P]] = field(default_factory=OrderedDict)

    async def add(self, event: K) -> Known[P]:
        """Parse (off the event loop) and keep a few."""
        known = self.entries.get(event.event_id)
        if known is None:
            known = Known(event.event_id, await asyncio.to_thread(parsed_or_error, self.parse, event))
            self.entries[event.event_id] = known
            while len(self.entries) > PARSED_CACHE_SIZE:
                self.entries.popitem(last=False)
        return known

    async def latest(self, history: bus.History, kind: type[K], portfolio: str) -> Known[P] | None:
        """The latest event of the stream, parsed; only its id is read when it is already known."""
        latest_id = await history.latest_id(kind, portfolio)
        if latest_id is not None and latest_id in self.entries:
            self.entries.move_to_end(latest_id)
            return self.entries[latest_id]
        event = await history.latest(kind, portfolio)
        return None if event is None else await self.add(event)


@dataclass
class Planner:
    history: bus.History
    publisher: bus.EventSink
    settings: PlannerSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    snapshots: Parsed[BalanceSnapshotTaken, ParsedSnapshot] = field(
        default_factory=lambda: Parsed(parse_snapshot)
    )
    targets: Parsed[TargetWeightsComputed, Tree] = field(default_factory=lambda: Parsed(parse_target))

    async def on_command(self, command: StartRebalance) -> None:
        await self._plan(command, dry_run=command.dry_run, band=command.band)

    async def on_snapshot(self, snapshot: BalanceSnapshotTaken) -> None:
        known = await self.snapshots.add(snapshot)
        if self.settings.planning.preview_on_new_data:
            await self._plan(snapshot, dry_run=True, band=self.settings.planning.band, snapshot=known)

    async def on_target(self, target: TargetWeightsComputed) -> None:
        known = await self.targets.add(target)
        if target.optimization is not None:
            record_allocation(target.portfolio_id, target.optimization)
        planning = self.settings.planning
        reconciling = target.optimization is not None and target.optimization.mode == "reconciler"
        if reconciling and planning.execute_reconciler_targets:
            # Reconciler mode: the strategies' positions changed; bring the account to them now (the
            # executor's own live switch still decides whether orders are sent).
            await self._plan(target, dry_run=False, band=planning.reconcile_band, target=known)
            return
        if planning.preview_on_new_data:
            await self._plan(target, dry_run=True, band=self.settings.planning.band, target=known)

    async def _inputs(
        self, portfolio: str, snapshot: Known[ParsedSnapshot] | None, target: Known[Tree] | None
    ) -> tuple[Known[ParsedSnapshot] | None, Known[Tree] | None]:
        """The snapshot and target given, or the latest of the stream: both looked up at once (two round
        trips in the time of one)."""

        async def latest_snapshot() -> Known[ParsedSnapshot] | None:
            return snapshot or await self.snapshots.latest(self.history, BalanceSnapshotTaken, portfolio)

        async def latest_target() -> Known[Tree] | None:
            return target or await self.targets.latest(self.history, TargetWeightsComputed, portfolio)

        return await asyncio.gather(latest_snapshot(), latest_target())

    async def _plan(
        self,
        cause: Event,
        *,
        dry_run: bool,
        band: Decimal,
        snapshot: Known[ParsedSnapshot] | None = None,
        target: Known[Tree] | None = None,
    ) -> None:
        portfolio = cause.portfolio_id
        snapshot, target = await self._inputs(portfolio, snapshot, target)
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
        planned = await asyncio.to_thread(
            plan_with_weights,
            cause,
            snapshot_id=snapshot.event_id,
            target_id=target.event_id,
            snapshot=snapshot.parsed,
            target=target.parsed,
            band=band,
            dry_run=dry_run,
            now=now,
        )
        result = planned.event
        stored = await self._publish(cause, planned, dry_run=dry_run, now=now)
        if planned.weights is not None:  # once the plan is out: the gauges are not on its way
            record(portfolio, planned.weights)
        if stored is None:
            return
        log.info(
            "%s %s for %s (run %s)%s",
            "planned" if result.type == "RebalancePlanned" else "could not plan",
            "a preview" if dry_run else "a rebalance",
            portfolio,
            result.correlation_id,
            "" if stored else " - already published",
        )

    async def _publish(self, cause: Event, planned: Planned, *, dry_run: bool, now: datetime) -> bool | None:
        """Publish the plan (whether the bus stored it), or, when it cannot be, a `PlanFailed` saying
        why (None): loudly, so that the operator and a CLI waiting for the run learn why no plan came."""
        result = planned.event
        try:
            return await self.publisher.publish(result, planned.body)
        except bus.PublishFailed as exc:
            portfolio = cause.portfolio_id
            log.error("could not publish the plan of run %s (%s): %s", result.correlation_id, portfolio, exc)
            failed = cause.caused(
                PlanFailed,
                now=now,
                correlation_id=result.correlation_id,
                reason=f"the plan could not be published: {exc}",
                dry_run=dry_run,
            )
            await self.publisher.publish(failed)
            return None


# The weights last recorded per portfolio: a plan from the same inputs sets no gauge again (setting
# some 130 labelled gauges took 6 ms).
_RECORDED: dict[str, Weights] = {}


def record(portfolio: str, weights: Weights) -> None:
    """The portfolio as the planner last saw it: value, weights against targets, drift."""
    if _RECORDED.get(portfolio) == weights:
        return
    _RECORDED[portfolio] = weights
    metrics.PORTFOLIO_VALUE.labels(portfolio=portfolio).set(weights.value)
    metrics.DRIFT.labels(portfolio=portfolio).set(weights.drift)
    for gauge in (metrics.WEIGHT_ACTUAL, metrics.WEIGHT_TARGET):
        gauge.remove_by_labels({"portfolio": portfolio})  # a node gone from the trees goes from the gauges
    for node, weight in weights.actual.items():
        metrics.WEIGHT_ACTUAL.labels(portfolio=portfolio, node=node).set(weight)
    for node, weight in weights.target.items():
        metrics.WEIGHT_TARGET.labels(portfolio=portfolio, node=node).set(weight)


def record_allocation(portfolio: str, optimization: Optimization) -> None:
    """The optimizer's strategy weights and leverage, as the latest target carries them."""
    metrics.STRATEGY_WEIGHT.remove_by_labels({"portfolio": portfolio})  # a strategy dropped goes too
    for strategy, weight in optimization.weights.items():
        metrics.STRATEGY_WEIGHT.labels(portfolio=portfolio, strategy=strategy).set(weight)
    metrics.LEVERAGE.labels(portfolio=portfolio).set(optimization.leverage)


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


def register_approvals(broker: NatsBroker, publisher: bus.Publisher, approvals: Approvals) -> None:
    bus.consume(
        broker,
        publisher,
        service=SERVICE,
        kind=ApprovePlan,
        durable="planner-approvals",
        handler=approvals.on_approve,
    )

"""The planner: a command, a snapshot or a target in, a plan (or why not) out; the gauges of what it saw."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from rebal import bus, metrics
from rebal.core.tree import Tree
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    Optimization,
    PlanFailed,
    RebalancePlanned,
    StartRebalance,
    TargetWeightsComputed,
    derive_run_id,
)
from rebal_planner.autopilot import Autopilot
from rebal_planner.inputs import Known, Parsed, snapshot_cache, target_cache
from rebal_planner.planning import ParsedSnapshot, Planned, Weights, plan_with_weights
from rebal_planner.settings import PlannerSettings

log = logging.getLogger("rebal.planner")


@dataclass
class Planner:
    history: bus.History
    publisher: bus.EventSink
    settings: PlannerSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    snapshots: Parsed[BalanceSnapshotTaken, ParsedSnapshot] = field(default_factory=snapshot_cache)
    targets: Parsed[TargetWeightsComputed, Tree] = field(default_factory=target_cache)
    # Each portfolio's policy decided on every snapshot and target (None: no autopilot, as in tests).
    autopilot: Autopilot | None = None

    async def on_command(self, command: StartRebalance) -> None:
        await self._plan(command, dry_run=command.dry_run, band=command.band)

    async def on_snapshot(self, snapshot: BalanceSnapshotTaken) -> None:
        known = await self.snapshots.add(snapshot)
        if self.autopilot is not None:  # first: a breach becomes a plan before any preview is made
            await self.autopilot.evaluate(snapshot.portfolio_id, "snapshot", snapshot=known)
        if self.settings.planning.preview_on_new_data:
            await self._plan(snapshot, dry_run=True, band=self.settings.planning.band, snapshot=known)

    async def on_target(self, target: TargetWeightsComputed) -> None:
        known = await self.targets.add(target)
        if target.optimization is not None:
            record_allocation(target.portfolio_id, target.optimization)
        if self.autopilot is not None:
            await self.autopilot.evaluate(target.portfolio_id, "target", target=known)
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
            if isinstance(cause, StartRebalance):
                await self.publisher.publish(self._missing(cause, snapshot, target, now=now, dry_run=dry_run))
            else:
                log.info("no %s yet for %s: nothing to preview", missing_input(snapshot), portfolio)
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
        if self.autopilot is not None and isinstance(result, RebalancePlanned) and not result.dry_run:
            await self.autopilot.on_live_plan(result)  # the autopilot starts nothing while it runs
        log.info(
            "%s %s for %s (run %s)%s",
            "planned" if result.type == "RebalancePlanned" else "could not plan",
            "a preview" if dry_run else "a rebalance",
            portfolio,
            result.correlation_id,
            "" if stored else " - already published",
        )

    def _missing(
        self,
        command: StartRebalance,
        snapshot: object | None,
        target: object | None,
        *,
        now: datetime,
        dry_run: bool,
    ) -> PlanFailed:
        """Why a command has no plan: an unknown portfolio (not configured, nothing ever published for
        it), or a known one whose snapshot or target has not come yet."""
        portfolio = command.portfolio_id
        unknown = snapshot is None and target is None and portfolio not in self.settings.portfolios
        reason = (
            f"unknown portfolio {portfolio!r}: not configured and no snapshot or target was ever published"
            if unknown
            else f"no {missing_input(snapshot)} yet for {portfolio}"
        )
        return command.caused(
            PlanFailed,
            now=now,
            correlation_id=derive_run_id(command),
            reason=reason,
            dry_run=dry_run,
            unknown_portfolio=unknown,
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


def missing_input(snapshot: object | None) -> str:
    return "balance snapshot" if snapshot is None else "target"


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

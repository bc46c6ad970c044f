"""The autopilot inside the planner: each portfolio's policy evaluated on every snapshot, every target and
every clock tick; a `RebalanceTriggered` and its plan published, or why not recorded; the funds'
scheduled cycles started.

Why in the planner: it already receives every snapshot and target (parsed once, kept by id), it alone
publishes plans, and a decision is one core call away from the plan it leads to — a breach in a snapshot
becomes a live plan in the same handler, with no hop through another service (the latency from a breach to
the first order is measured in bench/autopilot.py). The clock is a task of the planner; replicas share
its work safely: a decision holds its portfolio's row lock in Postgres, and every id derives from what it
was decided from, so a second replica deciding the same publishes nothing new.

A decision: load the policy in force (`rebal.policy_store`), lock the portfolio's memory, decide
(`decide.py`, no I/O, off the event loop), publish the trigger and its plan, then store the memory, the
decision and its notifications in the same transaction. A publish that fails rolls the transaction back;
the message is redelivered and decided again under the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from rebal import bus, metrics, notifications, policy_store, service
from rebal.core import autopilot as rules
from rebal.core.errors import InputError
from rebal.core.policy import Policy
from rebal.core.tree import Tree
from rebal.events import (
    BalanceSnapshotTaken,
    RebalancePlanned,
    RunFinished,
    RunFundCycle,
    TargetWeightsComputed,
    new_event,
)
from rebal.policy import parse_fund_policy, parse_policy
from rebal_planner.autopilot import state
from rebal_planner.autopilot.decide import Inputs, Outcome, Settings, decide, seconds
from rebal_planner.inputs import Known, Parsed
from rebal_planner.planning import ParsedSnapshot
from rebal_planner.settings import AutopilotSettings

log = logging.getLogger("rebal.planner.autopilot")


@dataclass
class Autopilot:
    database: service.Database
    history: bus.History
    publisher: bus.EventSink
    settings: AutopilotSettings
    snapshots: Parsed[BalanceSnapshotTaken, ParsedSnapshot]
    targets: Parsed[TargetWeightsComputed, Tree]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Policies compiled once per version (a cron schedule is built once).
    _compiled: dict[tuple[str, int], Policy] = field(default_factory=dict)
    _ticker: asyncio.Task[None] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self.database.pool is None:
            raise RuntimeError("the planner's database pool is not open")
        return self.database.pool

    @property
    def rules(self) -> Settings:
        s = self.settings
        return Settings(
            s.approval_ttl_seconds, s.active_run_timeout_seconds, s.retry_base_seconds, s.retry_max_seconds
        )

    # -- decisions --------------------------------------------------------------------------------------

    async def evaluate(
        self,
        portfolio: str,
        cause: str,
        snapshot: Known[ParsedSnapshot] | None = None,
        target: Known[Tree] | None = None,
    ) -> Outcome | None:
        """Decide for the portfolio now (nothing when it has no policy or no readable inputs yet)."""
        if not self.settings.enabled:
            return None
        version = await policy_store.current(self.pool, policy_store.PORTFOLIO, portfolio)
        if version is None:
            return None
        policy = self._policy(portfolio, version)
        snapshot = snapshot or await self.snapshots.latest(self.history, BalanceSnapshotTaken, portfolio)
        target = target or await self.targets.latest(self.history, TargetWeightsComputed, portfolio)
        if snapshot is None or target is None:
            log.info("autopilot %s: no %s yet", portfolio, "snapshot" if snapshot is None else "target")
            return None
        if isinstance(snapshot.parsed, InputError) or isinstance(target.parsed, InputError):
            log.warning(
                "autopilot %s: the latest snapshot or target cannot be read: nothing decided", portfolio
            )
            return None
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            memory, previous = await state.lock(connection, portfolio, now)
            inputs = Inputs(
                portfolio,
                cause,
                snapshot.event_id,
                snapshot.parsed,
                target.event_id,
                target.parsed,
                policy,
                version.version,
                memory,
                previous,
                now,
            )
            outcome = await asyncio.to_thread(decide, inputs, self.rules)
            if outcome.trigger is not None and await self.publisher.publish(outcome.trigger):
                trigger = outcome.trigger
                metrics.AUTOPILOT_TRIGGERS.labels(
                    portfolio=portfolio, mode=trigger.mode, kind=trigger.kind
                ).inc()
            if outcome.plan is not None:
                await self.publisher.publish(outcome.plan)
            await state.save(connection, portfolio, outcome.memory, now)
            await state.decide(connection, portfolio, outcome.record, now, outcome.changed)
            for notification in outcome.notifications:
                await notifications.enqueue(connection, notification)
        if outcome.changed:
            log.info("autopilot %s (%s): %s", portfolio, cause, outcome.record["summary"])
        return outcome

    def _policy(self, portfolio: str, version: policy_store.Version) -> Policy:
        key = (portfolio, version.version)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = parse_policy(version.document).to_policy()  # stored documents were checked
            self._compiled = {k: v for k, v in self._compiled.items() if k[0] != portfolio}
            self._compiled[key] = compiled
        return compiled

    # -- what the rest of the system did ----------------------------------------------------------------

    async def on_live_plan(self, plan: RebalancePlanned, preview_id: uuid.UUID | None = None) -> None:
        """A live plan the planner published for an operator (a command, an approval): its run is active."""
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            memory, _ = await state.lock(connection, plan.portfolio_id, now)
            run = str(plan.correlation_id)
            if preview_id is not None:
                memory = rules.approved(memory, preview_id=str(preview_id), run_id=run, now=seconds(now))
            else:
                memory = rules.started(
                    memory, run_id=run, kind="full", now=seconds(now), snapshot_id=None, trigger=None
                )
            await state.save(connection, plan.portfolio_id, memory, now)

    async def on_run_finished(self, finished: RunFinished) -> None:
        """A run ended: the memory learns it (last rebalance, a fresh plan due, a failure to back off)."""
        portfolio = finished.portfolio_id
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            memory, _ = await state.lock(connection, portfolio, now)
            version = await policy_store.current(connection, policy_store.PORTFOLIO, portfolio)
            allowed = self._policy(portfolio, version).replan_on_price_move if version is not None else 0
            memory = rules.finished(
                memory,
                run_id=str(finished.correlation_id),
                status=finished.status,
                ended=finished.occurred_at.timestamp(),
                replans_allowed=allowed,
                retry_base=self.settings.retry_base_seconds,
                retry_max=self.settings.retry_max_seconds,
            )
            await state.save(connection, portfolio, memory, now)
        if memory.replan_due:
            log.info(
                "autopilot %s: run %s stopped on a price move; a fresh plan follows the next snapshot",
                portfolio,
                finished.correlation_id,
            )

    # -- the clock --------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.enabled:
            self._ticker = asyncio.create_task(self._tick_forever(), name="autopilot-clock")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_seconds)
            try:
                await self.tick()
            except Exception:  # the database or NATS is away: the next tick tries again
                log.exception("the autopilot's clock tick failed; next in %g s", self.settings.tick_seconds)

    async def tick(self) -> None:
        """Every portfolio with a policy decided again (a schedule's tick falls between snapshots), and the
        funds' scheduled cycles that are due started."""
        for version in await policy_store.in_force(self.pool, policy_store.PORTFOLIO):
            await self.evaluate(version.owner_id, "clock")
        for version in await policy_store.in_force(self.pool, policy_store.FUND):
            await self.fund_cycle_due(version)

    async def fund_cycle_due(self, version: policy_store.Version) -> RunFundCycle | None:
        """Start the fund's cycle for its latest tick after the last one run (and after the schedule was
        set): a `RunFundCycle`, the command an operator's `rebal fund cycle` sends."""
        fund = version.owner_id
        try:
            schedule = parse_fund_policy(version.document)
        except InputError as exc:
            log.warning("fund %s: its stored schedule no longer reads (%s): no scheduled cycle", fund, exc)
            return None
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            tick = schedule.cron().previous(seconds(now))
            last = await state.last_fund_tick(connection, fund)
            since = max(seconds(version.created_at), seconds(last) if last is not None else 0)
            if tick is None or tick <= since:
                return None
            at = datetime.fromtimestamp(tick, UTC)
            command = new_event(
                RunFundCycle,
                key=f"schedule|{tick}",
                now=now,
                portfolio_id=fund,
                rebalance=schedule.rebalance,
                requested_by="autopilot",
            )
            await self.publisher.publish(command)
            await state.fund_ticked(connection, fund, at)
        log.info("fund %s: scheduled cycle for the tick at %s", fund, at.isoformat())
        return command

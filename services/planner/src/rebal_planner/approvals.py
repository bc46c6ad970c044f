"""An operator's approval of a preview: `ApprovePlan` in, that very plan as a live `RebalancePlanned` out.

The planner made the preview; it alone publishes plans, so an approval is a command it answers rather
than a plan another service writes. The preview is read back from the journal (every event the bus
carried, kept by the monitor; the API offers a plan for approval only once the journal has it) and
published again unchanged but for the envelope: not a dry run, its run derived from the command
(`derive_run_id`), its id derived from the preview, so one preview gives at most one live plan however
often it is approved. An unknown plan, a plan that is not a preview, or an approval taken after it
expired gives a `PlanFailed` for that run, naming why.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rebal import bus, service
from rebal.events import ApprovePlan, PlanFailed, RebalancePlanned, derive_id, derive_run_id

log = logging.getLogger("rebal.planner")


class Previews(Protocol):
    """Where a plan the planner published can be read back by its id."""

    async def preview(self, plan_id: uuid.UUID) -> RebalancePlanned | None: ...


@dataclass(frozen=True)
class JournalPreviews:
    """Plans read back from the journal (table `events`, migration 0001), on the planner's database."""

    database: service.Database

    async def preview(self, plan_id: uuid.UUID) -> RebalancePlanned | None:
        if self.database.pool is None:
            raise RuntimeError("the planner's database pool is not open")
        payload = await self.database.pool.fetchval(
            "SELECT payload::text FROM events WHERE event_id = $1 AND type = 'RebalancePlanned'", plan_id
        )
        return None if payload is None else RebalancePlanned.model_validate_json(payload)


def approved_plan(
    command: ApprovePlan, preview: RebalancePlanned | None, now: datetime
) -> RebalancePlanned | PlanFailed:
    """The live plan the approval asks for, or why there is none."""
    run_id = derive_run_id(command)
    plan = command.plan_id
    why = None
    if preview is None:
        why = f"no plan {plan} in the journal"
    elif preview.portfolio_id != command.portfolio_id:
        why = f"plan {plan} is a plan for {preview.portfolio_id}, not {command.portfolio_id}"
    elif not preview.dry_run:
        why = f"plan {plan} was made with dry_run false: it executes already"
    elif now > command.expires_at:
        why = f"plan {plan} expired at {command.expires_at.isoformat()}: make a new plan"
    if why is not None:
        return command.caused(PlanFailed, now=now, correlation_id=run_id, reason=why, dry_run=False)
    assert preview is not None
    return preview.model_copy(
        update={
            "event_id": derive_id("RebalancePlanned", "approved", plan),
            "occurred_at": now,
            "emitted_at": now,
            "correlation_id": run_id,
            "causation_id": command.event_id,
            "dry_run": False,
        }
    )


@dataclass
class Approvals:
    previews: Previews
    publisher: bus.EventSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Told of each live plan an approval made (the autopilot: its run is active), with the preview's id.
    on_live: Callable[[RebalancePlanned, uuid.UUID], Awaitable[None]] | None = None

    async def on_approve(self, command: ApprovePlan) -> None:
        result = approved_plan(command, await self.previews.preview(command.plan_id), self.clock())
        await self.publisher.publish(result)
        if self.on_live is not None and isinstance(result, RebalancePlanned):
            await self.on_live(result, command.plan_id)
        log.info(
            "approval of plan %s for %s: %s (run %s)",
            command.plan_id,
            command.portfolio_id,
            "planned" if isinstance(result, RebalancePlanned) else result.reason,
            result.correlation_id,
        )

"""The autopilot's memory of a portfolio between messages, and the coalescing rules around a trigger.

`rebal.core.policy.evaluate` says whether a policy asks for a rebalance now; this module says whether one
may *start* now, so that whatever fires at the same time (schedule, drift, cash, a new target, an
operator) yields exactly one run per portfolio. Nothing starts (`hold`) while:

- ``run_active``: a live plan of the portfolio was published and its run has not finished (a run that
  never reports is given up after `active_timeout` seconds);
- ``awaiting_approval``: a plan waits for an operator's approval (until it expires);
- ``fills_pending``: the snapshot was taken at or before the end of the last run that traded, so that
  run's fills are not in it yet (planning from it would trade again what the run did);
- ``same_snapshot``: a trigger already came from this snapshot;
- ``retry_backoff``: the last run ended without completing (cancelled, halted, an error, timed out);
  the next try waits ``retry_base x 2^(failures-1)`` seconds, at most ``retry_max`` — unless a fresh plan
  is due because prices moved (`replan_on_price_move`), which only waits for a newer snapshot.

The memory changes with what the planner publishes (`started`, `awaiting`, `approved`) and with how runs
end (`finished`). Times are seconds since the epoch (whole seconds but for the end of the last run, which
a snapshot's time is compared with to the microsecond: a snapshot taken in the same second after a run
ended has its fills); ids are text. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from rebal.core.policy import Kind, Scope

HoldCode = Literal["run_active", "awaiting_approval", "fills_pending", "same_snapshot", "retry_backoff"]
HOLDS: tuple[HoldCode, ...] = get_args(HoldCode)
# How a run ended (`RunFinished.status`), as far as the autopilot cares.
COMPLETED = frozenset({"completed", "completed_with_adjustments"})
REPLAN_NEEDED = "replan_needed"
NEVER_STARTED = "cancelled"  # refused before its first order: it traded nothing


@dataclass(frozen=True)
class Trigger:
    """What a trigger asked for: its kind, its scope and, for a breaching scope, the breaching paths (a
    fresh plan after a price move continues the same rebalance)."""

    kind: Kind
    scope: Scope = "portfolio"
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hold:
    """Why no run may start now: the code, until when (when known), and the run or plan concerned."""

    code: HoldCode
    until: int | None = None
    about: str | None = None


@dataclass(frozen=True)
class Memory:
    """What the autopilot remembers of a portfolio (stored as JSON between messages)."""

    active_run: str | None = None  # a live plan's run, published and not finished
    active_kind: Kind | None = None
    active_since: int | None = None
    last_run_end: float | None = None  # the end of the last run that traded (to the microsecond)
    last_rebalance: int | None = None  # the end of the last completed full rebalance
    last_trigger_snapshot: str | None = None
    awaiting_plan: str | None = None  # a preview waiting for approval
    awaiting_kind: Kind | None = None
    awaiting_until: int | None = None
    failures: int = 0  # runs in a row that ended without completing
    retry_after: int | None = None
    replans: int = 0  # fresh plans made for the current rebalance after prices moved
    replan_due: bool = False
    trigger: Trigger | None = None  # the autopilot's trigger of the active (or stopped) rebalance
    breaches: tuple[str, ...] = ()  # the paths breaching at the last decision (to notify a change)
    # In `notify` mode nothing trades, so what fired stays: operators are told again only when it changes.
    notified: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        fields = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        trigger = fields.get("trigger")
        if isinstance(trigger, dict):
            fields["trigger"] = Trigger(trigger["kind"], trigger["scope"], tuple(trigger["paths"]))
        fields["breaches"] = tuple(fields.get("breaches", ()))
        return cls(**fields)


def hold(
    memory: Memory, *, snapshot_id: str, snapshot_taken: float, now: int, active_timeout: int
) -> Hold | None:
    """Why no run may start from this snapshot now (see the module's docstring), or None."""
    if memory.active_run is not None and (
        memory.active_since is None or now < memory.active_since + active_timeout
    ):
        until = None if memory.active_since is None else memory.active_since + active_timeout
        return Hold("run_active", until, memory.active_run)
    if memory.awaiting_plan is not None and memory.awaiting_until is not None and now < memory.awaiting_until:
        return Hold("awaiting_approval", memory.awaiting_until, memory.awaiting_plan)
    if memory.last_run_end is not None and snapshot_taken <= memory.last_run_end:
        return Hold("fills_pending", None, None)
    if memory.last_trigger_snapshot == snapshot_id:
        return Hold("same_snapshot", None, snapshot_id)
    if not memory.replan_due and memory.retry_after is not None and now < memory.retry_after:
        return Hold("retry_backoff", memory.retry_after, None)
    return None


def started(
    memory: Memory, *, run_id: str, kind: Kind, now: int, snapshot_id: str | None, trigger: Trigger | None
) -> Memory:
    """A live plan was published for run `run_id` (the autopilot's, with its `trigger`, or an operator's)."""
    return replace(
        memory,
        active_run=run_id,
        active_kind=kind,
        active_since=now,
        last_trigger_snapshot=snapshot_id or memory.last_trigger_snapshot,
        awaiting_plan=None,
        awaiting_kind=None,
        awaiting_until=None,
        replan_due=False,
        trigger=trigger,
    )


def awaiting(
    memory: Memory, *, plan_id: str, kind: Kind, until: int, snapshot_id: str, trigger: Trigger
) -> Memory:
    """A preview was stored for an operator's approval until `until`."""
    return replace(
        memory,
        awaiting_plan=plan_id,
        awaiting_kind=kind,
        awaiting_until=until,
        last_trigger_snapshot=snapshot_id,
        replan_due=False,
        trigger=trigger,
    )


def approved(memory: Memory, *, preview_id: str, run_id: str, now: int) -> Memory:
    """An operator approved a preview: its run is live (of the kind the preview was made for)."""
    kind: Kind = (
        memory.awaiting_kind if memory.awaiting_plan == preview_id and memory.awaiting_kind else "full"
    )
    trigger = memory.trigger if memory.awaiting_plan == preview_id else None
    return started(memory, run_id=run_id, kind=kind, now=now, snapshot_id=None, trigger=trigger)


def plan_failed(memory: Memory, *, snapshot_id: str, now: int, retry_base: int, retry_max: int) -> Memory:
    """No plan could be made from this snapshot (bad input): not again from it, and back off."""
    failures = memory.failures + 1
    wait = min(retry_base * 2 ** (failures - 1), retry_max)
    return replace(
        memory, last_trigger_snapshot=snapshot_id, failures=failures, retry_after=now + wait, replan_due=False
    )


def finished(
    memory: Memory,
    *,
    run_id: str,
    status: str,
    ended: float,
    replans_allowed: int,
    retry_base: int,
    retry_max: int,
) -> Memory:
    """A run of the portfolio ended with `status` at `ended`: what the autopilot now knows.

    A completed full rebalance sets the last rebalance (the schedule's and the cooldown's reference); a
    run that stopped because prices moved asks for a fresh plan while the policy allows more; any other
    end counts as a failure and backs off."""
    ours = run_id == memory.active_run
    kind = memory.active_kind if ours and memory.active_kind else "full"
    after = replace(memory, active_run=None, active_kind=None, active_since=None) if ours else memory
    if status != NEVER_STARTED:
        after = replace(after, last_run_end=max(ended, after.last_run_end or ended))
    if status in COMPLETED:
        last = int(ended // 1) if kind == "full" else after.last_rebalance
        return replace(
            after,
            last_rebalance=last,
            failures=0,
            retry_after=None,
            replans=0,
            replan_due=False,
            trigger=None,
        )
    if status == REPLAN_NEEDED and ours and after.trigger is not None and after.replans < replans_allowed:
        return replace(after, replans=after.replans + 1, replan_due=True)
    failures = after.failures + 1
    wait = min(retry_base * 2 ** (failures - 1), retry_max)
    return replace(after, failures=failures, retry_after=int(ended // 1) + wait, replan_due=False, replans=0)

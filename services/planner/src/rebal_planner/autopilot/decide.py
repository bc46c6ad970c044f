"""One autopilot decision, without I/O: the policy evaluated on the latest snapshot and target, the
coalescing rules (`rebal.core.autopilot`), and what follows — a `RebalanceTriggered` with its plan (live in
`auto`, a preview to approve in `approve`, none in `notify`), or the reason nothing starts — with the
memory after it, the decision as it is recorded, and the notifications it asks for.

Ids derive from what the decision was made from (portfolio, snapshot, target, and the fresh plan's number
after a price move), so a replica or a redelivered message deciding the same again publishes nothing new.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rebal.core.autopilot import Hold, Memory, Trigger, awaiting, hold, plan_failed, started
from rebal.core.diff import DiffTree, diff_trees
from rebal.core.errors import InputError
from rebal.core.numbers import weight_str
from rebal.core.partial import breaching_only, buy_only
from rebal.core.plan import plan_rebalance
from rebal.core.policy import Decision, Kind, Mode, Policy, Scope, evaluate, planned_diff
from rebal.core.position_plan import PositionPlan, plan_positions
from rebal.core.tree import Tree
from rebal.events import (
    PlanFailed,
    RebalancePlanned,
    RebalanceTriggered,
    TriggerBreach,
    derive_id,
)
from rebal.notifications import Kind as NoticeKind
from rebal.notifications import Notification
from rebal.trigger import decision_json, instant_text, reason_text
from rebal_planner.planning import SOURCES, ParsedSnapshot, planned_of

JsonDict = dict[str, Any]
# What a hold means, for the decision's summary.
HOLD_TEXTS = {
    "run_active": "run {about} is under way",
    "awaiting_approval": "plan {about} waits for approval until {until}",
    "fills_pending": "waiting for a snapshot taken after the last run ended ({last_run_end})",
    "same_snapshot": "a rebalance was already triggered from snapshot {about}",
    "retry_backoff": "the last run did not complete; next try after {until}",
}


@dataclass(frozen=True)
class Settings:
    approval_ttl: int
    active_timeout: int
    retry_base: int
    retry_max: int


@dataclass(frozen=True)
class Inputs:
    portfolio: str
    cause: str  # "snapshot", "target", "clock" or "run"
    snapshot_id: uuid.UUID
    snapshot: ParsedSnapshot
    target_id: uuid.UUID
    target: Tree
    policy: Policy
    policy_version: int
    memory: Memory
    previous: JsonDict | None  # the latest recorded decision
    now: datetime


@dataclass(frozen=True)
class Outcome:
    memory: Memory
    record: JsonDict  # the decision as recorded (and shown by the API and the dashboard)
    changed: bool  # the decision differs from the previous one: kept in the history
    trigger: RebalanceTriggered | None = None
    plan: RebalancePlanned | PlanFailed | None = None
    notifications: tuple[Notification, ...] = ()


def seconds(moment: datetime) -> int:
    return int(moment.timestamp() // 1)


def instant(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def decide(inputs: Inputs, settings: Settings) -> Outcome:
    """The decision for these inputs (see the module's docstring)."""
    memory, policy, now = inputs.memory, inputs.policy, seconds(inputs.now)
    taken = inputs.snapshot.taken_at
    diff = diff_trees(inputs.snapshot.real, inputs.target, inputs.snapshot.prices)
    decision = evaluate(diff, policy, now=now, last_rebalance=memory.last_rebalance)
    paths = tuple(breach.path for breach in decision.breaches)
    notes: list[Notification] = []
    if paths and paths != memory.breaches:
        notes.append(_breach_notice(inputs, decision))
    memory = replace(memory, breaches=paths)
    wanted = decision.rebalance or memory.replan_due
    held = (
        hold(
            memory,
            snapshot_id=str(inputs.snapshot_id),
            snapshot_taken=taken.timestamp() if taken is not None else now,
            now=now,
            active_timeout=settings.active_timeout,
        )
        if wanted
        else None
    )
    if policy.mode == "notify" and held is None and wanted and memory.notified == _signature(decision):
        held = Hold("same_snapshot", None, memory.last_trigger_snapshot)  # told already: nothing new fired
    if not wanted or held is not None:
        record = _record(inputs, decision, memory, held=held)
        return Outcome(memory, record, _changed(inputs.previous, record), notifications=tuple(notes))
    return _trigger(inputs, settings, diff, decision, memory, notes)


def _trigger(
    inputs: Inputs,
    settings: Settings,
    diff: DiffTree,
    decision: Decision,
    memory: Memory,
    notes: list[Notification],
) -> Outcome:
    policy, portfolio = inputs.policy, inputs.portfolio
    replan = memory.replans if memory.replan_due else 0
    if memory.replan_due and memory.trigger is not None:
        trigger_of = memory.trigger
        planned = _continued(diff, trigger_of)
        reasons = (
            f"replan: the last run stopped because prices moved; fresh plan {replan} of "
            f"{policy.replan_on_price_move}",
            *(reason_text(decision, reason) for reason in decision.reasons),
        )
    else:
        assert decision.kind is not None
        trigger_of = Trigger(decision.kind, decision.scope, tuple(b.path for b in decision.breaches))
        planned = planned_diff(diff, decision) or diff  # a decision to rebalance plans something
        reasons = tuple(reason_text(decision, reason) for reason in decision.reasons)
    key = f"{inputs.snapshot_id}|{inputs.target_id}|{replan}"
    trigger_id = derive_id(RebalanceTriggered.__name__, portfolio, key)
    run_id = derive_id("run", trigger_id)
    expires = inputs.now + timedelta(seconds=settings.approval_ttl) if policy.mode == "approve" else None
    trigger = RebalanceTriggered(
        type=RebalanceTriggered.__name__,
        event_id=trigger_id,
        occurred_at=inputs.now,
        emitted_at=inputs.now,
        portfolio_id=portfolio,
        correlation_id=run_id,
        causation_id=inputs.snapshot_id,
        mode=policy.mode,
        kind=trigger_of.kind,
        scope=trigger_of.scope,
        reasons=reasons,
        breaches=tuple(
            TriggerBreach(
                path=b.path,
                current_weight=Decimal(weight_str(b.current_weight)),
                desired_weight=Decimal(weight_str(b.desired_weight)),
                limit=Decimal(weight_str(b.limit)),
                band=b.band,
            )
            for b in decision.breaches
        ),
        snapshot_id=inputs.snapshot_id,
        target_id=inputs.target_id,
        policy_version=inputs.policy_version,
        next_scheduled=instant(decision.next_scheduled),
        replan=replan,
        approval_expires_at=expires,
    )
    snapshot_key = str(inputs.snapshot_id)
    if policy.mode == "notify":
        memory = replace(memory, last_trigger_snapshot=snapshot_key, notified=_signature(decision))
        record = _record(inputs, decision, memory, trigger=trigger)
        return Outcome(memory, record, True, trigger, None, (*notes, _trigger_notice(trigger, None)))
    plan = _plan(inputs, trigger, planned, run_id, policy.mode)
    now = seconds(inputs.now)
    if isinstance(plan, PlanFailed):
        memory = plan_failed(
            memory,
            snapshot_id=snapshot_key,
            now=now,
            retry_base=settings.retry_base,
            retry_max=settings.retry_max,
        )
    elif policy.mode == "auto":
        memory = started(
            memory,
            run_id=str(run_id),
            kind=trigger_of.kind,
            now=now,
            snapshot_id=snapshot_key,
            trigger=trigger_of,
        )
    else:
        assert expires is not None
        memory = awaiting(
            memory,
            plan_id=str(plan.event_id),
            kind=trigger_of.kind,
            until=seconds(expires),
            snapshot_id=snapshot_key,
            trigger=trigger_of,
        )
    record = _record(inputs, decision, memory, trigger=trigger, plan=plan)
    return Outcome(memory, record, True, trigger, plan, (*notes, _trigger_notice(trigger, plan)))


def _continued(diff: DiffTree, trigger: Trigger) -> DiffTree:
    """A fresh plan's diff: the same kind and scope as the rebalance it continues."""
    if trigger.kind == "buy_only":
        return buy_only(diff)
    if trigger.scope == "breaching":
        nodes = {path: node for node, path in enumerate(diff.tree.paths())}
        return breaching_only(diff, [nodes[path] for path in trigger.paths if path in nodes])
    return diff


def _plan(
    inputs: Inputs, trigger: RebalanceTriggered, diff: DiffTree, run_id: uuid.UUID, mode: Mode
) -> RebalancePlanned | PlanFailed:
    dry_run = mode != "auto"
    min_trade = inputs.policy.min_trade_value or 0.0
    try:
        plan = plan_rebalance(
            diff, inputs.snapshot.markets, networks=inputs.snapshot.networks, min_trade_value=min_trade
        )
        # Futures positions follow a whole-portfolio rebalance; a buy-only or breaching run leaves them.
        whole = trigger.kind != "buy_only" and trigger.scope != "breaching"
        positions = (
            plan_positions(diff.tree, inputs.snapshot.contracts, Decimal(0)) if whole else PositionPlan()
        )
    except InputError as exc:
        where = SOURCES.get(exc.source, "input")
        return trigger.caused(PlanFailed, now=inputs.now, reason=f"{where}: {exc}", dry_run=dry_run)
    return planned_of(
        trigger,
        run_id=run_id,
        diff=diff,
        plan=plan,
        snapshot_id=inputs.snapshot_id,
        target_id=inputs.target_id,
        taken_at=inputs.snapshot.taken_at,
        band=Decimal(0),
        dry_run=dry_run,
        now=inputs.now,
        positions=positions,
    ).whole()


def _signature(decision: Decision) -> str:
    """What fired, for `notify` mode: told again only when this changes."""
    breaches = ",".join(b.path for b in decision.breaches)
    return f"{decision.kind}|{decision.tick}|{breaches}|{decision.cash_above_target > 0}"


def _record(
    inputs: Inputs,
    decision: Decision,
    memory: Memory,
    *,
    held: Hold | None = None,
    trigger: RebalanceTriggered | None = None,
    plan: RebalancePlanned | PlanFailed | None = None,
) -> JsonDict:
    answer = decision_json(decision)
    summary = _summary(inputs, decision, memory, held, trigger, plan)
    return {
        "decision_id": str(
            derive_id("autopilot-decision", inputs.portfolio, inputs.now.isoformat(), summary)
        ),
        "portfolio_id": inputs.portfolio,
        "decided_at": inputs.now.isoformat(),
        "cause": inputs.cause,
        "mode": inputs.policy.mode,
        "policy_version": inputs.policy_version,
        "snapshot_id": str(inputs.snapshot_id),
        "target_id": str(inputs.target_id),
        "rebalance": trigger is not None and not isinstance(plan, PlanFailed),
        "kind": None if trigger is None else trigger.kind,
        "hold": None
        if held is None
        else {
            "code": held.code,
            "until": None if held.until is None else instant_text(held.until),
            "about": held.about,
        },
        "summary": summary,
        "reasons": answer["reasons"] if trigger is None else list(trigger.reasons),
        "policy": answer,
        "trigger_id": None if trigger is None else str(trigger.event_id),
        "run_id": None if trigger is None else str(trigger.correlation_id),
        "plan_id": None if plan is None or isinstance(plan, PlanFailed) else str(plan.event_id),
        "plan_failed": plan.reason if isinstance(plan, PlanFailed) else None,
    }


def _summary(
    inputs: Inputs,
    decision: Decision,
    memory: Memory,
    held: Hold | None,
    trigger: RebalanceTriggered | None,
    plan: RebalancePlanned | PlanFailed | None,
) -> str:
    if trigger is not None:
        return _triggered(trigger, plan)
    if held is not None:
        last_end = instant_text(int(memory.last_run_end)) if memory.last_run_end is not None else "never"
        text = HOLD_TEXTS[held.code].format(
            about=held.about,
            until=instant_text(held.until) if held.until is not None else "",
            last_run_end=last_end,
        )
        return f"no rebalance: {text}"
    if decision.blocked_by == "cooldown":
        return f"no rebalance: in cooldown until {instant_text(decision.cooldown_until or 0)}"
    texts = [reason_text(decision, reason).partition(": ")[2] for reason in decision.reasons]
    return "no rebalance: " + "; ".join(texts)


def _triggered(trigger: RebalanceTriggered, plan: RebalancePlanned | PlanFailed | None) -> str:
    first = trigger.reasons[0] if trigger.reasons else ""
    if isinstance(plan, PlanFailed):
        return f"no rebalance: no plan could be made ({plan.reason})"
    if trigger.mode == "auto":
        return f"rebalancing ({trigger.kind}, run {trigger.correlation_id}): {first}"
    if trigger.mode == "approve" and plan is not None and trigger.approval_expires_at is not None:
        until = instant_text(seconds(trigger.approval_expires_at))
        return f"plan {plan.event_id} waits for approval until {until} ({trigger.kind}): {first}"
    return f"rebalance due ({trigger.kind}; notify mode: operators told): {first}"


def _changed(previous: JsonDict | None, record: JsonDict) -> bool:
    """Whether the decision says something the previous one did not (a new hold, reason, breach)."""
    if previous is None:
        return True

    def gist(decision: JsonDict) -> tuple[Any, ...]:
        policy = decision.get("policy") or {}
        codes = tuple(reason.partition(":")[0] for reason in decision.get("reasons", ()))
        breaches = tuple(b["path"] for b in policy.get("breaches", ()))
        held = (decision.get("hold") or {}).get("code")
        return (decision.get("rebalance"), held, codes, breaches, policy.get("blocked_by"))

    return gist(previous) != gist(record)


def _breach_notice(inputs: Inputs, decision: Decision) -> Notification:
    worst = reason_text(decision, "drift").partition(": ")[2]
    return Notification(
        id=derive_id("notification", "breach", inputs.portfolio, inputs.snapshot_id),
        kind="breach",
        portfolio_id=inputs.portfolio,
        created_at=inputs.now,
        title=f"{inputs.portfolio}: drift outside the bands",
        text=worst,
        data={"breaches": decision_json(decision)["breaches"], "snapshot_id": str(inputs.snapshot_id)},
    )


def _trigger_notice(trigger: RebalanceTriggered, plan: RebalancePlanned | PlanFailed | None) -> Notification:
    """What operators are told of a trigger: rebalancing now (auto), a rebalance due (notify), a plan
    waiting for their approval (approve), or that no plan could be made."""
    data: JsonDict = {
        "run_id": str(trigger.correlation_id),
        "mode": trigger.mode,
        "kind": trigger.kind,
        "reasons": list(trigger.reasons),
    }
    kind: NoticeKind = "rebalance_triggered"
    if isinstance(plan, PlanFailed):
        title = f"{trigger.portfolio_id}: a rebalance is due but no plan could be made"
        data["plan_failed"] = plan.reason
    elif plan is not None and trigger.mode == "approve":
        kind = "approval_needed"
        expires = trigger.approval_expires_at.isoformat() if trigger.approval_expires_at else None
        title = f"{trigger.portfolio_id}: plan {plan.event_id} ({len(plan.orders)} orders) waits for approval"
        data.update(
            plan_id=str(plan.event_id),
            orders=len(plan.orders),
            expires_at=expires,
            approve=f"rebal approve {plan.event_id}",
        )
    elif trigger.mode == "auto":
        title = f"{trigger.portfolio_id}: rebalancing now ({trigger.kind})"
    else:
        title = f"{trigger.portfolio_id}: a rebalance is due ({trigger.kind}; notify mode: nothing is traded)"
    return Notification(
        id=derive_id("notification", kind, trigger.event_id),
        kind=kind,
        portfolio_id=trigger.portfolio_id,
        created_at=trigger.occurred_at,
        title=title,
        text="; ".join(trigger.reasons),
        data=data,
    )


__all__ = ["Inputs", "Kind", "Outcome", "Scope", "Settings", "decide"]

"""Plans: make one (`StartRebalance`, the planner's answer stored), read them back, approve one.

A plan is made by the planner; the API sends the command, waits for the planner's answer in the journal
(the run id derived from the command), stores it as a preview (or `executing`, made live) and answers. An
approval is a command too (`ApprovePlan`): the planner makes the very preview live under a run derived
from the approval; the API checks first that the plan is fresh (same target, prices and balances within
tolerance), unexpired and not halted, and records the approval once the planner has answered.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Body, Path
from pydantic import Field

from rebal import telemetry
from rebal.core.errors import InputError
from rebal.events import ApprovePlan, RebalancePlanned, StartRebalance, derive_run_id, new_event
from rebal_monitor import plan_store, queries, views
from rebal_monitor.api.deps import (
    DEFAULT_PAGE,
    PORTFOLIO_PATTERN,
    After,
    Authorised,
    Chosen,
    Db,
    Deps,
    JsonDict,
    Limit,
    Needs,
    OperatorOnly,
    Problem,
    Strict,
    cursor_of,
    latest_inputs,
    publish,
    refuse_if_halted,
    until_found,
)

# How often the API looks for the planner's answer in the journal.
PLAN_POLL_SECONDS = 0.02
PlanId = Annotated[uuid.UUID, Path(description="the plan id POST /portfolio/rebalance returned")]
router = APIRouter(dependencies=[Authorised])


class RebalanceRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None
    dry_run: bool = True
    band: Annotated[Decimal, Field(ge=0, le=1)] | None = Field(
        default=None, strict=False, description="a fraction (0.01 = 1%), as a number or a decimal string"
    )


async def planners_answer(pool: asyncpg.Pool, deps: Deps, run_id: uuid.UUID) -> queries.Stored | None:
    """The planner's answer for the run (its plan or why there is none), None after the plan timeout."""
    return await until_found(
        lambda: queries.plan_outcome(pool, run_id), deps.settings.plan_timeout_seconds, PLAN_POLL_SECONDS
    )


@router.post(
    "/portfolio/rebalance",
    status_code=201,
    dependencies=[OperatorOnly],
    summary="Make a plan (a dry-run preview by default)",
)
async def rebalance(
    deps: Needs, pool: Db, request: Annotated[RebalanceRequest | None, Body()] = None
) -> JsonDict:
    request = request or RebalanceRequest()  # every field has a default: no body is a preview
    portfolio = request.portfolio_id or deps.portfolios[0]
    if not request.dry_run:
        if not deps.settings.live:
            raise Problem(
                409, "the system is not live (REBAL__API__LIVE is false): make a dry-run plan and approve it"
            )
        await refuse_if_halted(pool, portfolio)
    now = deps.clock()
    command = new_event(
        StartRebalance,
        key=uuid.uuid4(),  # an operator's request has no cause on the bus: new each time
        now=now,
        portfolio_id=portfolio,
        dry_run=request.dry_run,
        band=request.band if request.band is not None else Decimal(0),
        requested_by="api",
    )
    with telemetry.operator_span("POST /portfolio/rebalance", portfolio=portfolio):
        await publish(deps, command)
    outcome = await planners_answer(pool, deps, derive_run_id(command))
    if outcome is None:
        raise Problem(
            503, f"no plan within {deps.settings.plan_timeout_seconds:g} s: is the planner running?"
        )
    if outcome.payload["type"] == "PlanFailed":
        unknown = outcome.payload.get("unknown_portfolio", False)  # older failures have no such field
        raise Problem(404 if unknown else 422, f"no plan could be made: {outcome.payload['reason']}")
    plan = RebalancePlanned.model_validate(outcome.payload)
    snapshot = await queries.event(pool, plan.snapshot_id)
    if snapshot is None:
        raise Problem(503, "the plan's snapshot is not in the journal yet; try again")
    expires_at = now + timedelta(seconds=deps.settings.plan_ttl_seconds)
    document = plan_store.plan_of(plan, snapshot.payload["prices"], now, expires_at)
    return await plan_store.insert_plan(pool, document, "preview" if plan.dry_run else "executing")


async def stored_plan(pool: asyncpg.Pool, plan_id: uuid.UUID) -> JsonDict:
    plan = await plan_store.get_plan(pool, plan_id)
    if plan is None:
        raise Problem(404, f"no plan {plan_id}")
    return plan


@router.get("/portfolio/plans/{plan_id}", summary="One stored plan")
async def get_plan(plan_id: PlanId, pool: Db) -> JsonDict:
    return await stored_plan(pool, plan_id)


@router.get("/portfolio/plans", summary="Stored plans, newest first")
async def list_plans(portfolio: Chosen, pool: Db, after: After, limit: Limit = DEFAULT_PAGE) -> JsonDict:
    page, more = await plan_store.list_plans(pool, portfolio, limit, after)
    return {"plans": page, "next_cursor": cursor_of(more)}


@router.post(
    "/portfolio/plans/{plan_id}/approve", dependencies=[OperatorOnly], summary="Execute exactly this plan"
)
async def approve(plan_id: PlanId, deps: Needs, pool: Db) -> JsonDict:
    plan = await stored_plan(pool, plan_id)
    if plan["status"] == "executing":
        raise Problem(409, f"plan {plan_id} was made with dry_run false: it executes already")
    if plan["approved_at"] is not None:
        return plan
    now = deps.clock()
    portfolio = plan["portfolio_id"]
    expires_at = datetime.fromisoformat(plan["expires_at"])
    if now > expires_at:
        raise Problem(409, f"plan {plan_id} expired at {plan['expires_at']}: make a new plan")
    await refuse_if_halted(pool, portfolio)
    await check_fresh(pool, deps, plan)
    command = new_event(
        ApprovePlan,
        key=plan_id,  # one approval per plan: asking again is the same command, the same run
        now=now,
        portfolio_id=portfolio,
        plan_id=plan_id,
        expires_at=expires_at,
        requested_by="api",
    )
    run_id = derive_run_id(command)
    with telemetry.operator_span("POST /portfolio/plans/approve", portfolio=portfolio):
        await publish(deps, command)
    outcome = await planners_answer(pool, deps, run_id)
    if outcome is None:
        raise Problem(
            503,
            f"the approval was sent but the planner did not answer within"
            f" {deps.settings.plan_timeout_seconds:g} s: is it running? It executes the plan if it"
            f" takes the approval before {plan['expires_at']}",
        )
    if outcome.payload["type"] == "PlanFailed":
        raise Problem(409, f"the planner refused the approval: {outcome.payload['reason']}")
    await plan_store.mark_approved(pool, plan_id, now, run_id)
    return await stored_plan(pool, plan_id)


async def check_fresh(pool: asyncpg.Pool, deps: Deps, plan: JsonDict) -> None:
    """A 409 when the world moved since the plan was made: another target, prices or balances beyond
    the tolerances."""
    portfolio, inputs = plan["portfolio_id"], plan["inputs"]
    planned = await queries.event(pool, uuid.UUID(inputs["snapshot_id"]))
    snapshot, target = await latest_inputs(pool, portfolio)
    if planned is None:
        raise Problem(409, f"the plan's snapshot {inputs['snapshot_id']} is not in the journal: re-plan")
    if str(target.event_id) != inputs["target_id"]:
        raise Problem(409, f"stale plan: the target changed since the plan was made ({target.event_id})")
    tolerances = views.Tolerances(deps.settings.stale_price_tolerance, deps.settings.stale_balance_tolerance)
    try:
        why = views.staleness(
            planned.payload, snapshot.payload, [o["symbol"] for o in plan["orders"]], tolerances
        )
    except InputError as exc:
        why = f"the latest snapshot cannot be compared: {exc}"
    if why is not None:
        raise Problem(409, f"stale plan: {why}; make a new plan")

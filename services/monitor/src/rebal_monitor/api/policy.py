"""The autopilot's policies: read and set a portfolio's policy and a fund's cycle schedule, versioned.

    GET  /portfolio/policy                 the policy in force, its version, the drift against each band
                                           now, the next scheduled check and the autopilot's last decision
    PUT  /portfolio/policy                 a new version: {"policy": {...}, "author": "...", "note": "..."},
                                           or the bare policy document (as in a policy file)
    GET  /portfolio/policy/history         every version, newest first: who, when, what changed
    GET  /portfolio/policy/decisions       the autopilot's decisions that changed something, newest first
    GET  /funds/{fund}/policy              a fund's cycle schedule in force and its next tick
    PUT  /funds/{fund}/policy              a new version of it
    GET  /funds/{fund}/policy/history

A policy is checked as `rebal trigger` checks a file (`rebal.policy`): a bad key is a 422 naming it
(``policy.bands.alice/spot/sol.drift_absolute: ...``). Versions live in Postgres (`rebal.policy_store`);
the planner's autopilot reads the latest at its next snapshot, target or clock tick.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from rebal import policy_store
from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.numbers import weight_str
from rebal.core.policy import band_use
from rebal.core.tree import parse_tree
from rebal.policy import FundCyclePolicy, PolicyDocument, parse_fund_policy, parse_policy
from rebal.trigger import instant_text
from rebal_monitor import queries
from rebal_monitor.api.deps import (
    SNAPSHOT_TYPES,
    TARGET_TYPES,
    Authorised,
    Chosen,
    Db,
    JsonDict,
    Needs,
    OperatorOnly,
    Problem,
    Strict,
)

FUND_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
HISTORY_LIMIT = 100
# The nodes whose drift is shown against their bands: the nearest to breaching.
SHOWN_BANDS = 20
FundId = Annotated[str, Path(pattern=FUND_PATTERN, description="the fund's id")]
Author = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s]+( [^\s]+)*$")]
router = APIRouter(dependencies=[Authorised], tags=["autopilot"])


class PolicyRequest(Strict):
    """A new version: the document with who sets it and why, or the bare document (no key of a policy is
    named `policy`), as `curl -X PUT --json @policy.json` sends a policy file."""

    policy: dict[str, Any] = Field(description="the policy document, as in a policy file (docs/formats.md)")
    author: Author = "operator"
    note: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="before")
    @classmethod
    def _bare_document(cls, body: object) -> object:
        return {"policy": body} if isinstance(body, dict) and "policy" not in body else body


def _checked(request: PolicyRequest, fund: bool) -> PolicyDocument | FundCyclePolicy:
    try:
        return parse_fund_policy(request.policy) if fund else parse_policy(request.policy)
    except InputError as exc:
        raise Problem(
            422, f"policy.{exc.where}: {exc.message}" if exc.where else f"policy: {exc.message}"
        ) from None


async def _store(
    deps: Needs, pool: asyncpg.Pool, kind: policy_store.OwnerKind, owner: str, request: PolicyRequest
) -> JSONResponse:
    checked = _checked(request, kind == policy_store.FUND)
    stored = await policy_store.add(
        pool, kind, owner, checked.document(), author=request.author, note=request.note, at=deps.clock()
    )
    key = "portfolio_id" if kind == policy_store.PORTFOLIO else "fund_id"
    return JSONResponse({key: owner, **stored.json(), "policy": stored.document}, status_code=201)


@router.get(
    "/portfolio/policy",
    summary="The autopilot policy in force, the drift against its bands, the last decision",
)
async def show(portfolio: Chosen, deps: Needs, pool: Db) -> JsonDict:
    found = await policy_store.current(pool, policy_store.PORTFOLIO, portfolio)
    decided = await policy_store.latest_decision(pool, portfolio)
    body: JsonDict = {"portfolio_id": portfolio, "version": None, "policy": None, "status": None}
    if found is not None:
        body.update(found.json(), policy=found.document, status=await _status(pool, portfolio, found, deps))
    body["last_decision"] = None if decided is None else _decision(decided)
    return body


@router.put(
    "/portfolio/policy",
    status_code=201,
    dependencies=[OperatorOnly],
    summary="Set the autopilot policy: checked, stored as a new version",
)
async def put(request: PolicyRequest, portfolio: Chosen, deps: Needs, pool: Db) -> JSONResponse:
    return await _store(deps, pool, policy_store.PORTFOLIO, portfolio, request)


@router.get("/portfolio/policy/history", summary="Every version of the policy, newest first")
async def history(portfolio: Chosen, pool: Db) -> JsonDict:
    versions = await policy_store.history(pool, policy_store.PORTFOLIO, portfolio, HISTORY_LIMIT)
    return {"portfolio_id": portfolio, "versions": [v.json() for v in versions]}


@router.get("/portfolio/policy/decisions", summary="The autopilot's decisions that changed something")
async def decisions(
    portfolio: Chosen, pool: Db, limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT)] = 20
) -> JsonDict:
    found = await policy_store.recent_decisions(pool, portfolio, limit)
    return {"portfolio_id": portfolio, "decisions": [_decision(d) for d in found]}


@router.get("/funds/{fund}/policy", summary="A fund's cycle schedule in force and its next tick")
async def show_fund(fund: FundId, deps: Needs, pool: Db) -> JsonDict:
    found = await policy_store.current(pool, policy_store.FUND, fund)
    if found is None:
        return {"fund_id": fund, "version": None, "policy": None, "next_scheduled": None}
    following = parse_fund_policy(found.document).cron().following(int(deps.clock().timestamp()))
    return {
        "fund_id": fund,
        **found.json(),
        "policy": found.document,
        "next_scheduled": None if following is None else instant_text(following),
    }


@router.put(
    "/funds/{fund}/policy",
    status_code=201,
    dependencies=[OperatorOnly],
    summary="Schedule a fund's cycle: a new version",
)
async def put_fund(fund: FundId, request: PolicyRequest, deps: Needs, pool: Db) -> JSONResponse:
    return await _store(deps, pool, policy_store.FUND, fund, request)


@router.get("/funds/{fund}/policy/history", summary="Every version of a fund's cycle schedule")
async def fund_history(fund: FundId, pool: Db) -> JsonDict:
    versions = await policy_store.history(pool, policy_store.FUND, fund, HISTORY_LIMIT)
    return {"fund_id": fund, "versions": [v.json() for v in versions]}


async def _status(pool: asyncpg.Pool, portfolio: str, found: policy_store.Version, deps: Needs) -> JsonDict:
    """The drift now (latest journaled snapshot against the latest target) against each band, and the
    next scheduled check."""
    policy = parse_policy(found.document).to_policy()
    now = int(deps.clock().timestamp())
    following = policy.schedule.following(now) if policy.schedule is not None else None
    status: JsonDict = {
        "next_scheduled": None if following is None else instant_text(following),
        "as_of": None,
        "drift": [],
    }
    snapshot = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    target = await queries.latest_event(pool, portfolio, TARGET_TYPES)
    if snapshot is None or target is None:
        return status
    try:
        diff = diff_trees(
            parse_tree(snapshot.payload["tree"], "real"),
            parse_tree(target.payload["tree"], "target"),
            Prices.parse(snapshot.payload["prices"]),
        )
    except InputError as exc:
        status["problem"] = f"the latest snapshot and target cannot be compared: {exc}"
        return status
    status["as_of"] = snapshot.occurred_at.isoformat()
    status["drift"] = [
        {
            "path": use.path,
            "band": use.band,
            "current_weight": weight_str(use.current_weight),
            "desired_weight": weight_str(use.desired_weight),
            "drift": weight_str(use.drift),
            "limit": weight_str(use.limit),
            "used": round(use.used, 4),
            "breach": use.used > 1,
        }
        for use in band_use(diff, policy, SHOWN_BANDS + len(diff.tree))
        if not use.current_weight == use.desired_weight == 1  # an only child never drifts
    ][:SHOWN_BANDS]
    return status


def _decision(decided: policy_store.Decided) -> JsonDict:
    decision = decided.decision
    return {
        "decided_at": decided.decided_at.isoformat(),
        "cause": decision.get("cause"),
        "rebalance": decision.get("rebalance"),
        "kind": decision.get("kind"),
        "summary": decision.get("summary"),
        "reasons": decision.get("reasons", []),
        "hold": decision.get("hold"),
        "breaches": (decision.get("policy") or {}).get("breaches", []),
        "run_id": decision.get("run_id"),
        "plan_id": decision.get("plan_id"),
        "policy_version": decision.get("policy_version"),
    }

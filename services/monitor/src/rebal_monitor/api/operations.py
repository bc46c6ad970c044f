"""Running the system: the runs' history, the kill switch (halt, resume) and the status of every part.

Halt and resume publish the command and answer 202 with its id and subject; the executor obeys it and
the journal shows it (`/status`). The history is one round trip: Postgres builds the page's JSON.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rebal.events import HaltTrading, ResumeTrading, new_event
from rebal_monitor import queries
from rebal_monitor.api.deps import (
    DEFAULT_PAGE,
    OPERATOR,
    PORTFOLIO_PATTERN,
    SNAPSHOT_TYPES,
    TARGET_TYPES,
    After,
    Authorised,
    Chosen,
    Db,
    JsonDict,
    Limit,
    Needs,
    OperatorOnly,
    Scope,
    Strict,
    cursor_of,
    halted,
    publish,
)

PEER_TIMEOUT_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 2.0
router = APIRouter(dependencies=[Authorised])


class HaltRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ResumeRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None


async def peer_health(peers: Mapping[str, Any]) -> dict[str, str]:
    """Each peer service's readiness from its /readyz, probed together: "ok", or why not."""
    if not peers:
        return {}

    async def probe(client: httpx.AsyncClient, url: str) -> str:
        try:
            response = await client.get(f"{str(url).rstrip('/')}/readyz")
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        if response.status_code == 200:
            return "ok"
        return f"not ready (HTTP {response.status_code})"

    # Straight to the services: never through an HTTP(S)_PROXY of the environment.
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT_SECONDS, trust_env=False) as client:
        names = sorted(peers)
        states = await asyncio.gather(*(probe(client, peers[name]) for name in names))
    return dict(zip(names, states, strict=True))


@router.get("/portfolio/history", summary="Runs with their orders, fills, skips and reasons")
async def history(
    portfolio: Chosen, pool: Db, after: After, limit: Limit = DEFAULT_PAGE, include_previews: bool = True
) -> Response:
    runs, more = await queries.history_json(pool, portfolio, limit, after, include_previews)
    body = f'{{"runs": {runs}, "next_cursor": {json.dumps(cursor_of(more))}}}'
    return Response(body.encode(), media_type="application/json")


@router.post(
    "/halt", status_code=202, dependencies=[OperatorOnly], summary="The kill switch: publish HaltTrading"
)
async def halt(request: HaltRequest, deps: Needs) -> JsonDict:
    portfolio = request.portfolio_id or deps.portfolios[0]
    command = new_event(
        HaltTrading,
        key=uuid.uuid4(),
        now=deps.clock(),
        portfolio_id=portfolio,
        reason=request.reason,
        requested_by="api",
    )
    await publish(deps, command)
    return {"command_id": str(command.event_id), "portfolio_id": portfolio, "subject": command.subject}


@router.post(
    "/resume", status_code=202, dependencies=[OperatorOnly], summary="Lift a halt: publish ResumeTrading"
)
async def resume(request: ResumeRequest, deps: Needs) -> JsonDict:
    portfolio = request.portfolio_id or deps.portfolios[0]
    command = new_event(
        ResumeTrading, key=uuid.uuid4(), now=deps.clock(), portfolio_id=portfolio, requested_by="api"
    )
    await publish(deps, command)
    return {"command_id": str(command.event_id), "portfolio_id": portfolio, "subject": command.subject}


@router.get("/session", summary="What the request's token may do: operator (everything) or viewer (read)")
async def session(scope: Scope) -> JsonDict:
    return {"scope": scope, "may_change": scope == OPERATOR}


@router.get("/status", summary="Halted?, live or dry-run, the last real run and preview, health")
async def status(portfolio: Chosen, deps: Needs, pool: Db) -> JsonDict:
    health = {}
    for name, check in deps.checks.items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            health[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is reported, by name
            health[name] = f"{type(exc).__name__}: {exc}"
    peers = await peer_health(deps.settings.peers)
    halt = await halted(pool, portfolio)
    # The last run is the last real one: the planner previews every new snapshot and target, and those
    # previews would hide it.
    last_run = await queries.latest_run(pool, portfolio, dry_run=False)
    last_preview = await queries.latest_run(pool, portfolio, dry_run=True)
    snapshot = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    target = await queries.latest_event(pool, portfolio, TARGET_TYPES)
    return {
        "portfolio_id": portfolio,
        "halted": halt is not None,
        "halt_reason": halt.payload.get("reason") if halt else None,
        "halted_at": halt.occurred_at.isoformat() if halt else None,
        "live": deps.settings.live,
        "mode": "live" if deps.settings.live else "dry-run",
        "last_run": last_run,
        "last_preview": last_preview,
        "snapshot_at": snapshot.occurred_at.isoformat() if snapshot else None,
        "target_at": target.occurred_at.isoformat() if target else None,
        **health,
        **({"services": peers} if peers else {}),
    }

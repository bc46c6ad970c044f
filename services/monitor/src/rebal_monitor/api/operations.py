"""Running the system: the runs' history, the kill switch (halt, resume) and the status of every part.

Halt and resume publish the command and answer 202 with its id and subject. A halt's reason is checked
first (text Postgres cannot hold is a 422: the executor could not record it, and trading went on); then
the API waits for the executor's acknowledgement (`HaltApplied`) and says whether the halt is in force
or still pending (`halt_state`, also in `/status`). The history is one round trip: Postgres builds the
page's JSON. Both `/status` and the history are kept for a moment and shared by a crowd asking the same
(`deps.kept_json`); the journal, halt and resume drop them when they change.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import asyncpg
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from rebal.events import HaltApplied, HaltTrading, ResumeTrading, caused_id, new_event
from rebal_monitor import queries, transfer_tasks
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
    Deps,
    JsonDict,
    Limit,
    Needs,
    OperatorOnly,
    Scope,
    Storable,
    Strict,
    cursor_of,
    halted,
    kept_json,
    publish,
    until_found,
)

ACK_POLL_SECONDS = 0.05
router = APIRouter(dependencies=[Authorised])


class HaltRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500), Storable]


class ResumeRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None


@router.get("/portfolio/history", summary="Runs with their orders, fills, skips and reasons")
async def history(
    request: Request,
    portfolio: Chosen,
    deps: Needs,
    pool: Db,
    scope: Scope,
    after: After,
    limit: Limit = DEFAULT_PAGE,
    include_previews: bool = True,
) -> Response:
    async def page() -> bytes:
        runs, more = await queries.history_json(pool, portfolio, limit, after, include_previews)
        return f'{{"runs": {runs}, "next_cursor": {json.dumps(cursor_of(more))}}}'.encode()

    return await kept_json(deps, request, scope, portfolio, page)


@router.post(
    "/halt", status_code=202, dependencies=[OperatorOnly], summary="The kill switch: publish HaltTrading"
)
async def halt(request: HaltRequest, deps: Needs, pool: Db) -> JsonDict:
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
    state = await until_found(
        lambda: halt_state(pool, command.event_id), deps.settings.halt_ack_timeout_seconds, ACK_POLL_SECONDS
    )
    # The journal forgets the portfolio's answers when it writes the halt and its acknowledgement; this
    # answer may come between that write and that forgetting: /status right after it shows the halt.
    deps.answers.forget(portfolio)
    return {
        "command_id": str(command.event_id),
        "portfolio_id": portfolio,
        "subject": command.subject,
        "halt_state": state or "pending",
    }


async def halt_state(pool: asyncpg.Pool, command_id: uuid.UUID) -> str | None:
    """ "in_force" once the executor acknowledged the halt (`HaltApplied`, its id derived from the
    command's), "superseded" when a newer resume was recorded first, None before it answered."""
    ack = await queries.event(pool, caused_id(HaltApplied, command_id))
    if ack is None:
        return None
    return "in_force" if ack.payload.get("in_force", True) else "superseded"


@router.post(
    "/resume", status_code=202, dependencies=[OperatorOnly], summary="Lift a halt: publish ResumeTrading"
)
async def resume(request: ResumeRequest, deps: Needs) -> JsonDict:
    portfolio = request.portfolio_id or deps.portfolios[0]
    command = new_event(
        ResumeTrading, key=uuid.uuid4(), now=deps.clock(), portfolio_id=portfolio, requested_by="api"
    )
    await publish(deps, command)
    deps.answers.forget(portfolio)
    return {"command_id": str(command.event_id), "portfolio_id": portfolio, "subject": command.subject}


@router.get("/session", summary="What the request's token may do: operator (everything) or viewer (read)")
async def session(scope: Scope) -> JsonDict:
    return {"scope": scope, "may_change": scope == OPERATOR}


@router.get("/status", summary="Halted?, live or dry-run, the last real run and preview, health")
async def status(request: Request, portfolio: Chosen, deps: Needs, pool: Db, scope: Scope) -> Response:
    async def made() -> bytes:
        return orjson.dumps(await status_of(portfolio, deps, pool))

    return await kept_json(deps, request, scope, portfolio, made)


async def status_of(portfolio: str, deps: Deps, pool: asyncpg.Pool) -> JsonDict:
    health, peers = await deps.health.get()
    # One connection for the six reads: under load, taking one from the pool each time was a wait each.
    async with pool.acquire() as connection:
        halt = await halted(connection, portfolio)
        # The last run is the last real one: the planner previews every new snapshot and target, and
        # those previews would hide it.
        last_run = await queries.latest_run(connection, portfolio, dry_run=False)
        last_preview = await queries.latest_run(connection, portfolio, dry_run=True)
        snapshot = await queries.latest_event(connection, portfolio, SNAPSHOT_TYPES)
        target = await queries.latest_event(connection, portfolio, TARGET_TYPES)
        waiting = await transfer_tasks.waiting(connection, portfolio)
    return {
        "portfolio_id": portfolio,
        "halted": halt is not None,
        "halt_reason": halt.payload.get("reason") if halt else None,
        "halted_at": halt.occurred_at.isoformat() if halt else None,
        # A halt the executor has not acknowledged is not in force yet: the operator sees it pending.
        "halt_state": (await halt_state(pool, halt.event_id) or "pending") if halt else None,
        "live": deps.settings.live,
        "mode": "live" if deps.settings.live else "dry-run",
        "last_run": last_run,
        "last_preview": last_preview,
        "snapshot_at": snapshot.occurred_at.isoformat() if snapshot else None,
        "target_at": target.occurred_at.isoformat() if target else None,
        # Bank transfers a run waits for (`rebal transfer list`): nothing trades for them until confirmed.
        "transfers_waiting": waiting,
        **health,
        **({"services": peers} if peers else {}),
    }

"""Operators' transfer tasks: transfers to or from a bank account (no API) that a run waits for.

`GET /transfers` lists them (waiting ones by default); `POST /transfers/{id}/confirm` says the money
arrived (`received`: how much, the planned amount when left out), publishes `ConfirmTransfer` and waits for
the executor's `TransferConfirmed` like a halt waits for its acknowledgement. An unknown id is a 404, a bad
amount a 422, an expired task a 409 (its run ended); a task confirmed before is answered as it stands
(`already_confirmed`), and nothing is credited twice.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import Field

from rebal.core import bounds
from rebal.events import ConfirmTransfer, TransferConfirmed, caused_id, new_event
from rebal_monitor import queries, transfer_tasks
from rebal_monitor.api.deps import (
    Authorised,
    Db,
    JsonDict,
    Needs,
    OperatorOnly,
    Problem,
    Strict,
    publish,
    until_found,
)

ACK_POLL_SECONDS = 0.05
router = APIRouter(dependencies=[Authorised])
TaskPath = Annotated[str, Path(max_length=64, description="the task id (`bt-…`) from GET /transfers")]


class ConfirmRequest(Strict):
    received: (
        Annotated[
            Decimal,
            Field(
                ge=0,
                lt=bounds.DECIMAL_LIMIT,
                decimal_places=bounds.DECIMAL_PLACES,
                strict=False,
                description="what arrived, in the transfer's asset; the planned amount if left out",
            ),
        ]
        | None
    ) = None


@router.get("/transfers", summary="Operators' transfer tasks (bank accounts): the waiting ones by default")
async def transfers(
    deps: Needs,
    pool: Db,
    state: Annotated[
        Literal["waiting", "confirmed", "expired", "all"], Query(description="which tasks to list")
    ] = "waiting",
) -> JsonDict:
    chosen = None if state == "all" else state
    return {"transfers": await transfer_tasks.listed(pool, list(deps.portfolios), chosen)}


@router.post(
    "/transfers/{task_id}/confirm",
    dependencies=[OperatorOnly],
    summary="The money of a transfer task arrived: publish ConfirmTransfer, resume the buys that wait",
)
async def confirm(
    task_id: TaskPath,
    deps: Needs,
    pool: Db,
    response: Response,
    request: Annotated[ConfirmRequest | None, Body()] = None,
) -> JsonDict:
    task = await transfer_tasks.one(pool, task_id)
    if task is None or task["portfolio_id"] not in deps.portfolios:
        raise Problem(404, f"no transfer task {task_id} (rebal transfer list shows the waiting ones)")
    if task["state"] == "expired":
        raise Problem(409, f"transfer task {task_id} expired, its run ended: {task['reason']}")
    if task["state"] == "confirmed":
        return {"task_id": task_id, "already_confirmed": True, "task": task}
    received = request.received if request is not None else None
    command = new_event(
        ConfirmTransfer,
        key=uuid.uuid4(),
        now=deps.clock(),
        portfolio_id=task["portfolio_id"],
        task_id=task_id,
        received=received,
        requested_by="api",
    )
    await publish(deps, command)
    ack = await until_found(
        lambda: queries.event(pool, caused_id(TransferConfirmed, command.event_id)),
        deps.settings.halt_ack_timeout_seconds,
        ACK_POLL_SECONDS,
    )
    shown = await transfer_tasks.one(pool, task_id)
    if ack is None:
        response.status_code = 202  # published; the executor has not answered yet
        return {"task_id": task_id, "command_id": str(command.event_id), "state": "pending", "task": shown}
    return {
        "task_id": task_id,
        "command_id": str(command.event_id),
        "already_confirmed": bool(ack.payload.get("already_confirmed", False)),
        "received": ack.payload["received"],
        "task": shown,
    }

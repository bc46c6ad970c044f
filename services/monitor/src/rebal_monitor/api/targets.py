"""The portfolio's desired tree, managed by operators: read it, preview a change, set it, roll it back.

    GET  /portfolio/targets                 the target in force (the latest journaled) and its version
    GET  /portfolio/targets/history         every version the operators set, newest first
    GET  /portfolio/targets/{version}       one version's tree
    PUT  /portfolio/targets                 a new desired tree: checked, previewed, stored, published
    POST /portfolio/targets/rollback        a new version with the tree of an older one

A tree is checked as `rebal plan` checks its target (`rebal.core.tree.parse_tree`, then against the
latest snapshot: its assets must be priced and fit the real tree) and previewed with the pure core: the
orders, transfers and skips the change would make now, and each shown node's weight before and after.
``PUT ?dry_run=true`` answers the preview and stores nothing. Otherwise the version is stored in Postgres
(`rebal.target_store`, with its author and time) and `SetTarget` is sent: the optimizer publishes it as
the portfolio's target (201 once it is in the journal, 202 while not yet). Precedence (docs/api.md): the
latest manual version replaces the optimizer's target file; a portfolio with an allocation keeps having
its strategy nodes' weights set by the optimizer, within the manual tree.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import Field

from rebal import target_store
from rebal.core.errors import InputError
from rebal.events import SetTarget, TargetWeightsComputed, derive_id, new_event
from rebal_monitor import queries, views
from rebal_monitor.api.deps import (
    SNAPSHOT_TYPES,
    TARGET_TYPES,
    Authorised,
    Chosen,
    Db,
    Deps,
    JsonDict,
    Needs,
    OperatorOnly,
    Problem,
    Strict,
    publish,
    until_found,
)

# How long a change waits for the optimizer to publish it before answering 202.
PUBLISH_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
HISTORY_LIMIT = 100
Author = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s]+( [^\s]+)*$")]
Note = Annotated[str, Field(max_length=500)]
router = APIRouter(dependencies=[Authorised], tags=["targets"])


class TargetRequest(Strict):
    tree: dict[str, Any] = Field(description="the desired tree, as in a target file (docs/formats.md)")
    author: Author = "operator"
    note: Note = ""


class RollbackRequest(Strict):
    version: Annotated[int, Field(ge=1)]
    author: Author = "operator"
    note: Note = ""


def _version(found: target_store.Version, with_tree: bool = True) -> JsonDict:
    return {
        "version": found.version,
        "author": found.author,
        "note": found.note,
        "based_on": found.based_on,
        "created_at": found.created_at.isoformat(),
        "source": found.source,
        **({"tree": found.tree} if with_tree else {}),
    }


@router.get("/portfolio/targets", summary="The target in force and the operators' version of it")
async def current(portfolio: Chosen, pool: Db) -> JsonDict:
    target = await queries.latest_event(pool, portfolio, TARGET_TYPES)
    if target is None:
        raise Problem(404, f"no target yet for portfolio {portfolio!r}")
    manual = await target_store.current(pool, portfolio)
    return {
        "portfolio_id": portfolio,
        "target_id": str(target.event_id),
        "as_of": target.occurred_at.isoformat(),
        "source": target.payload.get("source"),
        "tree": target.payload["tree"],
        "manual": None if manual is None else _version(manual, with_tree=False),
    }


@router.get("/portfolio/targets/history", summary="Every version the operators set, newest first")
async def history(portfolio: Chosen, pool: Db) -> JsonDict:
    versions = await target_store.history(pool, portfolio, HISTORY_LIMIT)
    return {"portfolio_id": portfolio, "versions": [_version(v, with_tree=False) for v in versions]}


@router.get("/portfolio/targets/{version}", summary="One version the operators set")
async def one(portfolio: Chosen, pool: Db, version: Annotated[int, Path(ge=1)]) -> JsonDict:
    found = await target_store.get(pool, portfolio, version)
    if found is None:
        raise Problem(404, f"no target version {version} for portfolio {portfolio!r}")
    return {"portfolio_id": portfolio, **_version(found)}


@router.put(
    "/portfolio/targets",
    dependencies=[OperatorOnly],
    summary="Set the desired tree: checked, previewed (dry_run: only that), stored, published",
)
async def put(
    request: TargetRequest,
    portfolio: Chosen,
    deps: Needs,
    pool: Db,
    dry_run: Annotated[bool, Query(description="only check and preview: store and send nothing")] = False,
) -> JSONResponse:
    preview = await checked_preview(pool, portfolio, request.tree)
    if dry_run:
        return JSONResponse({"portfolio_id": portfolio, "dry_run": True, "preview": preview})
    return await store_and_publish(deps, pool, portfolio, request.tree, request.author, request.note, preview)


@router.post(
    "/portfolio/targets/rollback",
    dependencies=[OperatorOnly],
    summary="A new version with the tree of an older one",
)
async def rollback(request: RollbackRequest, portfolio: Chosen, deps: Needs, pool: Db) -> JSONResponse:
    older = await target_store.get(pool, portfolio, request.version)
    if older is None:
        raise Problem(404, f"no target version {request.version} for portfolio {portfolio!r}")
    preview = await checked_preview(pool, portfolio, older.tree)
    note = request.note or f"rollback to version {request.version}"
    return await store_and_publish(
        deps, pool, portfolio, older.tree, request.author, note, preview, based_on=request.version
    )


async def checked_preview(pool: asyncpg.Pool, portfolio: str, tree: dict[str, Any]) -> JsonDict:
    """The preview of a tree against the latest snapshot; 422 naming the node when it does not hold."""
    snapshot = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    try:
        if snapshot is None:
            views.check_target(tree)
            return {"snapshot_id": None, "orders": [], "transfers": [], "skipped": [], "weights": []}
        return {"snapshot_id": str(snapshot.event_id), **views.target_preview(snapshot.payload, tree)}
    except InputError as exc:
        raise Problem(422, f"tree: {exc}") from None


async def store_and_publish(
    deps: Deps,
    pool: asyncpg.Pool,
    portfolio: str,
    tree: dict[str, Any],
    author: str,
    note: str,
    preview: JsonDict,
    based_on: int | None = None,
) -> JSONResponse:
    """Store the version, send `SetTarget`, and wait for the optimizer's `TargetWeightsComputed`."""
    now = deps.clock()
    command_id = uuid.uuid4()
    stored = await target_store.add(
        pool, portfolio, tree, author=author, note=note, at=now, command_id=command_id, based_on=based_on
    )
    command = new_event(
        SetTarget,
        key=command_id,
        now=now,
        portfolio_id=portfolio,
        target_version=stored.version,
        tree=tree,
        author=author,
        note=note,
        requested_by="api",
    )
    await publish(deps, command)
    target_id = derive_id(TargetWeightsComputed.__name__, portfolio, target_store.event_key(stored.version))
    published = await until_found(lambda: queries.event(pool, target_id), PUBLISH_WAIT_SECONDS, POLL_SECONDS)
    body = {
        "portfolio_id": portfolio,
        **_version(stored, with_tree=False),
        "target_id": str(target_id),
        "published": published is not None,
        "preview": preview,
    }
    return JSONResponse(body, status_code=201 if published is not None else 202)

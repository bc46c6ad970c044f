"""What every route of the operators' API depends on, as FastAPI dependencies.

The monitor's app puts one `Deps` on ``app.state.deps``; routes ask for it (`Needs`), for the API's pool
(`Db`, a 503 while it is not open), for the portfolio a request is about (`Chosen`: the first configured
one by default) or for a page's cursor (`After`). Every router carries `Authorised`: a bearer token
compared in constant time, the operator's (everything) or a viewer's (reads only: `OperatorOnly` on
every route that changes something). Every token has its rate (`RateLimit`: 429 beyond it). Every
dependency is `async def`: FastAPI runs a plain `def` one in a worker thread, a thread hop each per
request (seen in the profile under load: bench/api_load.py). A request the API refuses raises `Problem`:
a status and one sentence.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.errors import Error as NatsError
from pydantic import AfterValidator, BaseModel, ConfigDict

from rebal import bus
from rebal.core import bounds
from rebal.settings import ApiSettings
from rebal_monitor import queries, views
from rebal_monitor.api.guards import Kept, RateLimit, Recent, retry_after
from rebal_monitor.api.health import HEALTH_TTL_SECONDS, probe_all

PORTFOLIO_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_PAGE = 500
DEFAULT_PAGE = 50
SNAPSHOT_TYPES = ("BalanceSnapshotTaken",)
TARGET_TYPES = ("TargetWeightsComputed",)
HALT_TYPES = ("HaltTrading", "ResumeTrading")
# Text a request brings in: what Postgres text cannot hold (NUL) is refused with a 422 naming the field,
# never accepted and then lost where it is stored (a halt's reason was, and the halt with it).
Storable = AfterValidator(bounds.storable)
JsonDict = dict[str, Any]
T = TypeVar("T")


@dataclass
class Deps:
    """What the API needs, wired by the monitor's app."""

    pool: Callable[[], asyncpg.Pool | None]
    publisher: bus.EventSink
    settings: ApiSettings
    portfolios: tuple[str, ...]
    checks: dict[str, Callable[[], Awaitable[None]]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    rate: RateLimit = field(init=False)
    health: Recent[tuple[dict[str, str], dict[str, str]]] = field(init=False)
    # Answers (JSON bytes) by request (`answer_key`), grouped by portfolio: see `kept_json`.
    answers: Kept[bytes] = field(init=False)
    tokens: list[tuple[str, bytes]] = field(init=False)  # (scope, token)

    def __post_init__(self) -> None:
        self.rate = RateLimit(self.settings.rate_limit_per_second)
        self.answers = Kept(self.settings.cache_seconds)
        self.tokens = [
            (scope, secret.get_secret_value().encode())
            for scope, secret in ((OPERATOR, self.settings.token), (VIEWER, self.settings.viewer_token))
            if secret is not None and secret.get_secret_value()
        ]
        self.health = Recent(lambda: probe_all(self.checks, self.settings.peers), HEALTH_TTL_SECONDS)

    def scope_of(self, token: str) -> str | None:
        """The scope of a bearer token (`OPERATOR` or `VIEWER`), None for no configured one; compared with
        each configured token in constant time."""
        given = token.encode()
        matches = [scope for scope, known in self.tokens if secrets.compare_digest(given, known)]
        return matches[0] if matches else None


class Strict(BaseModel):
    """A request body: unknown fields and loose types refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(Exception):
    """A request the API refuses: the status and one clear sentence."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


async def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


Needs = Annotated[Deps, Depends(deps_of)]
bearer = HTTPBearer(auto_error=False, description="the token from REBAL__API__TOKEN(_FILE)")


OPERATOR, VIEWER = "operator", "viewer"


async def authorised(
    deps: Needs, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The scope of the request's token: `OPERATOR` (may do everything) or `VIEWER` (may only read).
    Each configured token is compared in constant time."""
    if not deps.tokens:
        raise Problem(401, "the API has no token configured (REBAL__API__TOKEN): every request is refused")
    if credentials is None:
        raise Problem(401, "missing 'Authorization: Bearer <token>' header")
    scope = deps.scope_of(credentials.credentials)
    if scope is None:
        raise Problem(401, "wrong bearer token")
    wait = await deps.rate.wait_for(scope)
    if wait is not None:
        raise Problem(
            429,
            f"too many requests with this token (at most {deps.settings.rate_limit_per_second} a second)",
            {"Retry-After": retry_after(wait)},
        )
    return scope


async def operator_only(scope: Annotated[str, Depends(authorised)]) -> None:
    if scope != OPERATOR:
        raise Problem(
            403,
            "this token may only read (a viewer's): plans, approvals, halt and resume, targets and funds"
            " need the operator's token",
        )


# Every router carries `Authorised` (any token: read); every route that changes something adds
# `OperatorOnly`.
Authorised = Depends(authorised)
OperatorOnly = Depends(operator_only)
Scope = Annotated[str, Depends(authorised)]


async def pool_of(deps: Needs) -> asyncpg.Pool:
    found = deps.pool()
    if found is None:
        raise Problem(503, "the monitor's database pool is not open yet")
    return found


Db = Annotated[asyncpg.Pool, Depends(pool_of)]


async def portfolio_of(
    deps: Needs,
    portfolio_id: Annotated[
        str | None,
        Query(pattern=PORTFOLIO_PATTERN, description="defaults to the first configured portfolio"),
    ] = None,
) -> str:
    return portfolio_id or deps.portfolios[0]


Chosen = Annotated[str, Depends(portfolio_of)]


async def after_of(
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        return views.decode_cursor(cursor)
    except views.BadCursor as exc:
        raise Problem(422, f"query.cursor: {exc}") from None


After = Annotated[tuple[datetime, uuid.UUID] | None, Depends(after_of)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def cursor_of(key: tuple[datetime, uuid.UUID] | None) -> str | None:
    return None if key is None else views.encode_cursor(*key)


async def publish(deps: Deps, event: Any) -> bool:
    """Publish a command; NATS not taking it is a 503 naming why."""
    try:
        return await deps.publisher.publish(event)
    except (NatsError, TimeoutError, OSError) as exc:
        raise Problem(503, f"NATS did not take the command: {type(exc).__name__} {exc}") from None


async def halted(pool: queries.Reader, portfolio: str) -> queries.Stored | None:
    """The halt in force for the portfolio, if any (the latest of HaltTrading and ResumeTrading)."""
    last = await queries.latest_event(pool, portfolio, HALT_TYPES)
    return last if last is not None and last.payload.get("type") == "HaltTrading" else None


async def refuse_if_halted(pool: asyncpg.Pool, portfolio: str) -> None:
    if (halt := await halted(pool, portfolio)) is not None:
        raise Problem(409, f"trading is halted for {portfolio}: {halt.payload.get('reason', '')}")


async def latest_inputs(pool: asyncpg.Pool, portfolio: str) -> tuple[queries.Stored, queries.Stored]:
    """The latest journaled snapshot and target of the portfolio (404 naming which is missing)."""
    snapshot = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    if snapshot is None:
        raise Problem(404, f"no balance snapshot yet for portfolio {portfolio!r}")
    target = await queries.latest_event(pool, portfolio, TARGET_TYPES)
    if target is None:
        raise Problem(404, f"no target yet for portfolio {portfolio!r}")
    return snapshot, target


def answer_key(request: Mapping[str, Any], scope: str) -> tuple[str, bytes, str]:
    """What a kept answer is kept by: the path, the query as it came and the token's scope (an ASGI
    request's scope, the one `AnsweredFirst` serves from too)."""
    return request["path"], request["query_string"], scope


async def kept_json(
    deps: Deps, request: Request, scope: str, portfolio: str, make: Callable[[], Awaitable[bytes]]
) -> Response:
    """The JSON `make` gives for this request, kept `cache_seconds` and shared by every request asking the
    same (path, query, token's scope) meanwhile: under 200 clients, each of them read the same answer from
    Postgres (bench/api_load.py). Correct as long as every change of what `make` reads comes with a
    `deps.answers.forget(portfolio)`: the journal calls it for each portfolio it writes an event of, halt
    and resume call it too. No answer made for one scope is given to another."""
    body = await deps.answers.get(answer_key(request.scope, scope), portfolio, make)
    return Response(body, media_type="application/json")


async def until_found(find: Callable[[], Awaitable[T | None]], timeout: float, interval: float) -> T | None:
    """What `find()` gives as soon as it gives something (a service's answer reaching the journal), or
    None after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await find()
        if found is not None or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(interval)

"""The operators' REST API (docs/api.md): FastAPI routes over the journal, the core and the bus.

One module per concern, each with its module-level router: `plans` (make, read, approve), `portfolio`
(weights, trees, performance, the optimizer), `operations` (history, halt, resume, status), `exports`,
`funds`, `transfers` (operators' bank transfer tasks); what they depend on (the wiring, the pool, the
token, the portfolio asked about) is in `deps`.
Each route is thin: check the request, load from Postgres, one core call, publish a command, answer. Bad
requests get a 4xx whose `detail` names what is wrong and where; nothing a client sends makes a 500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from fastapi_offline import FastAPIOffline

from rebal import metrics
from rebal_monitor import dashboard
from rebal_monitor.api import (
    alerts,
    exports,
    funds,
    operations,
    plans,
    policy,
    portfolio,
    targets,
    transfers,
)
from rebal_monitor.api.deps import Deps, Problem, answer_key
from rebal_monitor.api.guards import Asgi, BodyLimit, Message, Receive, Scope, Send

__all__ = ["Deps", "Problem", "create_api"]
DOCS_STATIC = "/static/docs"
# The routes whose answers are kept (`deps.kept_json`), and served before routing (`AnsweredFirst`).
KEPT_PATHS = frozenset({"/status", "/portfolio/history"})


def create_api(deps: Deps) -> FastAPI:
    """The API and the dashboard on `deps` (every route finds them on ``app.state.deps``)."""
    # /docs (Swagger UI) and /redoc load their scripts from the fastapi-offline wheel, never a CDN: the
    # page works on a machine without internet, like the dashboard.
    api = FastAPIOffline(
        title="Rebal operators' API",
        version="1",
        description="See docs/api.md. Every endpoint needs `Authorization: Bearer <token>`.",
        static_url=DOCS_STATIC,
    )
    api.state.deps = deps
    api.add_middleware(AnsweredFirst, deps=deps, paths=KEPT_PATHS)  # inside the limit and the metrics
    api.add_middleware(
        BodyLimit, max_bytes=deps.settings.max_body_bytes, timeout_seconds=deps.settings.body_timeout_seconds
    )
    api.add_middleware(Measured)
    api.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    api.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    for module in (portfolio, targets, plans, operations, exports, funds, policy, alerts, transfers):
        api.include_router(module.router)
    api.include_router(dashboard.router)  # the page at / and its static files (no token)
    return api


@dataclass(frozen=True)
class Template:
    """A route's template, for `Measured` (these paths have no parameters: the template is the path)."""

    path: str


class AnsweredFirst:
    """A kept answer (`deps.kept_json`) served before FastAPI routes the request: with a crowd of clients
    asking the same, FastAPI's routing and dependencies were most of what each request cost once the
    answer itself was kept. Only a GET of a path in `routes`, with a configured bearer token, within the
    token's rate, for which FastAPI made an answer from the same path, query and scope a moment ago, is
    served here; everything else (no answer yet, a wrong token, the rate exceeded) goes to FastAPI, which
    validates, refuses and answers as always."""

    def __init__(self, app: Asgi, deps: Deps, paths: frozenset[str]) -> None:
        self.app = app
        self.deps = deps
        self.routes = {path: Template(path) for path in paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is not None and scope["method"] == "GET":
            body = self._kept(scope)
            if body is not None and await self.deps.rate.wait_for(body[0]) is None:
                scope["route"] = route  # the metrics' label (`Measured`), as FastAPI's route gives it
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body[1]))]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body[1]})
                return
        await self.app(scope, receive, send)

    def _kept(self, scope: Scope) -> tuple[str, bytes] | None:
        """The token's scope and the answer kept for this request, if both are there."""
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if authorization is None:
            return None
        # As `HTTPBearer` reads the header.
        scheme, token = get_authorization_scheme_param(authorization.decode("latin-1"))
        if scheme.lower() != "bearer" or not token or (token_scope := self.deps.scope_of(token)) is None:
            return None
        body = self.deps.answers.peek(answer_key(scope, token_scope))
        return None if body is None else (token_scope, body)


class Measured:
    """Count and time every request by its route template (bounded: ids are not in it). Plain ASGI: a
    `BaseHTTPMiddleware` costs a task and a stream per request."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.API_REQUESTS.labels(method=scope["method"], route=template, status=str(status)).inc()
            metrics.API_SECONDS.labels(method=scope["method"], route=template).observe(
                time.perf_counter() - started
            )


async def _problem(request: Request, exc: Problem) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = f"malformed JSON ({error.get('ctx', {}).get('error', 'cannot be parsed')})"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

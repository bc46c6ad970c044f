"""The operators' REST API (docs/api.md): FastAPI routes over the journal, the core and the bus.

One module per concern, each with its module-level router: `plans` (make, read, approve), `portfolio`
(weights, trees, performance, the optimizer), `operations` (history, halt, resume, status), `exports`,
`funds`; what they depend on (the wiring, the pool, the token, the portfolio asked about) is in `deps`.
Each route is thin: check the request, load from Postgres, one core call, publish a command, answer. Bad
requests get a 4xx whose `detail` names what is wrong and where; nothing a client sends makes a 500.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from rebal import metrics
from rebal_monitor import dashboard
from rebal_monitor.api import exports, funds, operations, plans, portfolio, targets
from rebal_monitor.api.deps import Deps, Problem

__all__ = ["Deps", "Problem", "create_api"]
DOCS_STATIC = "/static/docs"


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
    api.middleware("http")(_measured)
    api.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    api.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    for module in (portfolio, targets, plans, operations, exports, funds):
        api.include_router(module.router)
    api.include_router(dashboard.router)  # the page at / and its static files (no token)
    return api


async def _measured(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Count and time every request by its route template (bounded: ids are not in it)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.API_REQUESTS.labels(method=request.method, route=template, status=str(status)).inc()
        metrics.API_SECONDS.labels(method=request.method, route=template).observe(
            time.perf_counter() - started
        )


async def _problem(request: Request, exc: Problem) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


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

"""The operators' web dashboard: one page at ``/`` and its static files, no data of its own.

The page (``static/index.html`` + ``dashboard.js``) reads everything from the monitor's REST API with the
operator's bearer token, which it keeps in the browser tab's ``sessionStorage``: typed into the sign-in
field, or given once as ``/?token=...`` (taken out of the address bar at once). The page and its scripts
carry no data, so they are served without a token. Plotly.js comes from the ``plotly`` wheel: no CDN, no
Node build; these machines and many operators' servers are offline.

The figures it shows are the portfolio's own (``GET /portfolio/performance``'s ``portfolio`` and
``GET /portfolio/equity``, from its snapshots, net of deposits and withdrawals); the strategies' figures
are shown beside them, labelled as the strategies'. The API (`rebal_monitor.api.create_api`) mounts
``dashboard.router``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
# The scripts and styles change with the code: a browser revalidates them (cheap: ETag, 304). Plotly.js
# (4.8 MB) changes only with the wheel: an hour without asking.
PLOTLY_MAX_AGE_SECONDS = 3600
# Only our own scripts and styles; Plotly sets inline styles on the charts it draws.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PORTFOLIO_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def plotly_js() -> Path:
    """plotly.min.js inside the installed ``plotly`` package (found without importing it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (the monitor depends on it)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _assets() -> dict[str, Path]:
    """The files the page may load, by name: nothing else under any path is served."""
    files = {path.name: path for path in STATIC.iterdir() if path.suffix in MEDIA_TYPES}
    files["plotly.min.js"] = plotly_js()
    return files


ASSETS = _assets()
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    max_age = PLOTLY_MAX_AGE_SECONDS if name == "plotly.min.js" else 0
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[path.suffix],
        headers={
            "Cache-Control": f"max-age={max_age}" if max_age else "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )

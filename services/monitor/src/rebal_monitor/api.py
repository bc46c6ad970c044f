"""The operators' REST API (docs/api.md): FastAPI routes over the journal, the core and the bus.

Each route is thin: check the request, load from Postgres, one core call (`views`), persist or publish,
answer. Bad requests get a 4xx whose `detail` names what is wrong and where; nothing a client sends
makes a 500.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import asyncpg
import httpx
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.errors import Error as NatsError
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from rebal import bus, strategy_store, telemetry
from rebal.core import performance as perf
from rebal.core.errors import InputError
from rebal.events import (
    ApprovePlan,
    HaltTrading,
    RebalancePlanned,
    ResumeTrading,
    StartRebalance,
    derive_run_id,
    new_event,
)
from rebal.render import diff_json
from rebal.settings import ApiSettings
from rebal_monitor import dashboard, queries, views

log = logging.getLogger("rebal.monitor.api")
PORTFOLIO_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# How often POST /portfolio/rebalance looks for the planner's answer in the journal.
PLAN_POLL_SECONDS = 0.02
DEFAULT_PAGE = 50
MAX_PAGE = 500
SNAPSHOT_TYPES = ("BalanceSnapshotTaken",)
TARGET_TYPES = ("TargetWeightsComputed",)
HALT_TYPES = ("HaltTrading", "ResumeTrading")
JsonDict = dict[str, Any]


PEER_TIMEOUT_SECONDS = 2.0


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


@dataclass
class Deps:
    """What the API needs, wired by the monitor's app."""

    pool: Callable[[], asyncpg.Pool | None]
    publisher: bus.EventSink
    settings: ApiSettings
    portfolios: tuple[str, ...]
    checks: dict[str, Callable[[], Awaitable[None]]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


bearer = HTTPBearer(auto_error=False, description="the token from REBAL__API__TOKEN(_FILE)")
Portfolio = Annotated[
    str | None,
    Query(pattern=PORTFOLIO_PATTERN, description="defaults to the first configured portfolio"),
]
PlanId = Annotated[uuid.UUID, Path(description="the plan id POST /portfolio/rebalance returned")]
Format = Annotated[Literal["csv", "json"], Query(description="csv or json")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]
Band = Annotated[float, Query(ge=0, le=1)]
Window = Annotated[str, Query(pattern=r"^(inception|[1-9][0-9]{0,3}d)$", description="inception or <N>d")]


class Problem(Exception):
    """A request the API refuses: the status and one clear sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RebalanceRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None
    dry_run: bool = True
    band: Annotated[Decimal, Field(ge=0, le=1)] | None = Field(
        default=None, strict=False, description="a fraction (0.01 = 1%), as a number or a decimal string"
    )


class HaltRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ResumeRequest(Strict):
    portfolio_id: Annotated[str, Field(pattern=PORTFOLIO_PATTERN)] | None = None


def create_api(deps: Deps) -> FastAPI:
    api = FastAPI(
        title="Rebal operators' API",
        version="1",
        description="See docs/api.md. Every endpoint needs `Authorization: Bearer <token>`.",
    )
    api.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    api.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    api.include_router(_router(deps))
    api.include_router(dashboard.router)  # the page at / and its static files (rebal_monitor.dashboard)
    return api


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


def _router(deps: Deps) -> APIRouter:
    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        token = deps.settings.token
        given = credentials.credentials if credentials is not None else None
        if token is None or not token.get_secret_value():
            raise Problem(
                401, "the API has no token configured (REBAL__API__TOKEN): every request is refused"
            )
        if given is None:
            raise Problem(401, "missing 'Authorization: Bearer <token>' header")
        if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Problem(401, "wrong bearer token")

    router = APIRouter(dependencies=[Depends(authorised)])

    def pool() -> asyncpg.Pool:
        found = deps.pool()
        if found is None:
            raise Problem(503, "the monitor's database pool is not open yet")
        return found

    def portfolio_of(value: str | None) -> str:
        return value or deps.portfolios[0]

    def after_of(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
        if cursor is None:
            return None
        try:
            return views.decode_cursor(cursor)
        except views.BadCursor as exc:
            raise Problem(422, f"query.cursor: {exc}") from None

    def cursor_of(key: tuple[datetime, uuid.UUID] | None) -> str | None:
        return None if key is None else views.encode_cursor(*key)

    async def latest_inputs(portfolio: str) -> tuple[queries.Stored, queries.Stored]:
        snapshot = await queries.latest_event(pool(), portfolio, SNAPSHOT_TYPES)
        if snapshot is None:
            raise Problem(404, f"no balance snapshot yet for portfolio {portfolio!r}")
        target = await queries.latest_event(pool(), portfolio, TARGET_TYPES)
        if target is None:
            raise Problem(404, f"no target yet for portfolio {portfolio!r}")
        return snapshot, target

    def diff_or_problem(snapshot: queries.Stored, target: queries.Stored, band: float = 0.0) -> Any:
        try:
            return views.diff_of(snapshot.payload, target.payload, band)
        except InputError as exc:
            raise Problem(422, f"the latest snapshot and target do not fit together: {exc}") from None

    async def halted(portfolio: str) -> queries.Stored | None:
        last = await queries.latest_event(pool(), portfolio, HALT_TYPES)
        return last if last is not None and last.payload.get("type") == "HaltTrading" else None

    async def publish(event: Any) -> bool:
        try:
            return await deps.publisher.publish(event)
        except (NatsError, TimeoutError, OSError) as exc:
            raise Problem(503, f"NATS did not take the command: {type(exc).__name__} {exc}") from None

    @router.get("/portfolio/weights", summary="Target vs actual weights from the latest snapshot and target")
    async def weights(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        snapshot, target = await latest_inputs(portfolio)
        total, rows = views.weights(diff_or_problem(snapshot, target))
        return {
            "portfolio_id": portfolio,
            "snapshot_id": str(snapshot.event_id),
            "target_id": str(target.event_id),
            "as_of": snapshot.occurred_at.isoformat(),
            "total_value": total,
            "nodes": rows,
        }

    @router.get("/portfolio/performance", summary="Return, volatility, Sharpe, Sortino, max drawdown")
    async def performance(portfolio_id: Portfolio = None, window: Window = "inception") -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        # The tracker's statistics when it has computed them; since inception, computed here from the
        # stored returns meanwhile (the same rebal.core.performance conventions).
        loaded = await strategy_store.load_stats(pool(), portfolio)
        stats = {s.strategy_id: s for s in loaded if s.window == window}
        series = await queries.strategy_returns(pool(), portfolio)
        strategies = []
        for name in sorted(stats.keys() | (series.keys() if window == "inception" else set())):
            if name in stats:
                strategies.append(_stored_statistics(stats[name]))
            else:
                stamps, values = series[name]
                strategies.append({**_statistics(name, stamps, values), "source": "strategy_returns"})
        combined = None
        if series:
            stamps_list: list[ArrayLike] = [stamps for stamps, _ in series.values()]
            common, matrix = perf.align(stamps_list, [values for _, values in series.values()])
            mixed = matrix.mean(axis=1) if matrix.size else np.empty(0)
            combined = {**_statistics("combined", common.tolist(), mixed.tolist()), "window": "inception"}
        return {"portfolio_id": portfolio, "window": window, "strategies": strategies, "combined": combined}

    @router.get("/portfolio/equity", summary="Equity curve of the strategies' equally weighted mix")
    async def equity(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        series = await queries.strategy_returns(pool(), portfolio)
        points, drawdown = dashboard.equity_points(series)
        return {
            "portfolio_id": portfolio,
            "source": "strategy_returns",
            "strategies": sorted(series),
            "max_drawdown": drawdown,
            "points": points,
        }

    @router.post(
        "/portfolio/rebalance", status_code=201, summary="Make a plan (a dry-run preview by default)"
    )
    async def rebalance(request: RebalanceRequest) -> JsonDict:
        portfolio = portfolio_of(request.portfolio_id)
        if not request.dry_run:
            if not deps.settings.live:
                raise Problem(
                    409,
                    "the system is not live (REBAL__API__LIVE is false): make a dry-run plan and approve it",
                )
            if (halt := await halted(portfolio)) is not None:
                raise Problem(409, f"trading is halted for {portfolio}: {halt.payload.get('reason', '')}")
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
        run_id = derive_run_id(command)
        with telemetry.operator_span("POST /portfolio/rebalance", portfolio=portfolio):
            await publish(command)
        outcome = await _await_outcome(pool(), run_id, deps.settings.plan_timeout_seconds)
        if outcome is None:
            raise Problem(
                503, f"no plan within {deps.settings.plan_timeout_seconds:g} s: is the planner running?"
            )
        if outcome.payload["type"] == "PlanFailed":
            raise Problem(422, f"no plan could be made: {outcome.payload['reason']}")
        plan = RebalancePlanned.model_validate(outcome.payload)
        snapshot = await queries.event(pool(), plan.snapshot_id)
        if snapshot is None:
            raise Problem(503, "the plan's snapshot is not in the journal yet; try again")
        document = {
            "plan_id": str(plan.event_id),
            "run_id": str(plan.correlation_id),
            "portfolio_id": portfolio,
            "dry_run": plan.dry_run,
            "band": str(plan.band),
            "inputs": {
                "snapshot_id": str(plan.snapshot_id),
                "target_id": str(plan.target_id),
                "total_value": str(plan.total_value),
                "prices": snapshot.payload["prices"],
            },
            "orders": [o.model_dump(mode="json") for o in plan.orders],
            "transfers": [t.model_dump(mode="json") for t in plan.transfers],
            "skipped": [s.model_dump(mode="json") for s in plan.skipped],
            "projected_weights": views.projected(plan.projected_weights),
            "created_at": now,
            "expires_at": now + timedelta(seconds=deps.settings.plan_ttl_seconds),
        }
        status = "preview" if plan.dry_run else "executing"
        return await queries.insert_plan(pool(), document, status)

    async def stored_plan(plan_id: uuid.UUID) -> JsonDict:
        plan = await queries.get_plan(pool(), plan_id)
        if plan is None:
            raise Problem(404, f"no plan {plan_id}")
        return plan

    @router.get("/portfolio/plans/{plan_id}", summary="One stored plan")
    async def get_plan(plan_id: PlanId) -> JsonDict:
        return await stored_plan(plan_id)

    @router.get("/portfolio/plans", summary="Stored plans, newest first")
    async def list_plans(
        portfolio_id: Portfolio = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> JsonDict:
        page, more = await queries.list_plans(pool(), portfolio_of(portfolio_id), limit, after_of(cursor))
        return {"plans": page, "next_cursor": cursor_of(more)}

    @router.post("/portfolio/plans/{plan_id}/approve", summary="Execute exactly this plan")
    async def approve(plan_id: PlanId) -> JsonDict:
        plan = await stored_plan(plan_id)
        if plan["status"] == "executing":
            raise Problem(409, f"plan {plan_id} was made with dry_run false: it executes already")
        if plan["approved_at"] is not None:
            return plan
        now = deps.clock()
        portfolio = plan["portfolio_id"]
        expires_at = datetime.fromisoformat(plan["expires_at"])
        if now > expires_at:
            raise Problem(409, f"plan {plan_id} expired at {plan['expires_at']}: make a new plan")
        if (halt := await halted(portfolio)) is not None:
            raise Problem(409, f"trading is halted for {portfolio}: {halt.payload.get('reason', '')}")
        await _check_fresh(plan)
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
            await publish(command)
        outcome = await _await_outcome(pool(), run_id, deps.settings.plan_timeout_seconds)
        if outcome is None:
            raise Problem(
                503,
                f"the approval was sent but the planner did not answer within"
                f" {deps.settings.plan_timeout_seconds:g} s: is it running? It executes the plan if it"
                f" takes the approval before {plan['expires_at']}",
            )
        if outcome.payload["type"] == "PlanFailed":
            raise Problem(409, f"the planner refused the approval: {outcome.payload['reason']}")
        await queries.mark_approved(pool(), plan_id, now, run_id)
        return await stored_plan(plan_id)

    async def _check_fresh(plan: JsonDict) -> None:
        portfolio, inputs = plan["portfolio_id"], plan["inputs"]
        planned = await queries.event(pool(), uuid.UUID(inputs["snapshot_id"]))
        snapshot, target = await latest_inputs(portfolio)
        if planned is None:
            raise Problem(409, f"the plan's snapshot {inputs['snapshot_id']} is not in the journal: re-plan")
        if str(target.event_id) != inputs["target_id"]:
            raise Problem(409, f"stale plan: the target changed since the plan was made ({target.event_id})")
        tolerances = views.Tolerances(
            deps.settings.stale_price_tolerance, deps.settings.stale_balance_tolerance
        )
        try:
            why = views.staleness(
                planned.payload, snapshot.payload, [o["symbol"] for o in plan["orders"]], tolerances
            )
        except InputError as exc:
            why = f"the latest snapshot cannot be compared: {exc}"
        if why is not None:
            raise Problem(409, f"stale plan: {why}; make a new plan")

    @router.get("/portfolio/history", summary="Runs with their orders, fills, skips and reasons")
    async def history(
        portfolio_id: Portfolio = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
        include_previews: bool = True,
    ) -> Response:
        runs, more = await queries.history_json(
            pool(), portfolio_of(portfolio_id), limit, after_of(cursor), include_previews
        )
        body = f'{{"runs": {runs}, "next_cursor": {json.dumps(cursor_of(more))}}}'
        return Response(body.encode(), media_type="application/json")

    @router.get("/portfolio/optimization", summary="The optimizer's latest result")
    async def optimization(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        found = await queries.latest_optimization(pool(), portfolio)
        if found is None:
            raise Problem(404, f"the optimizer has published no optimization result for {portfolio!r} yet")
        return {"portfolio_id": portfolio, "target_id": str(found.event_id),
                "computed_at": found.occurred_at.isoformat(), **found.payload}  # fmt: skip

    @router.get("/portfolio/trees/real", summary="The latest snapshot's tree")
    async def tree_real(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        snapshot = await queries.latest_event(pool(), portfolio, SNAPSHOT_TYPES)
        if snapshot is None:
            raise Problem(404, f"no balance snapshot yet for portfolio {portfolio!r}")
        return {
            "portfolio_id": portfolio,
            "snapshot_id": str(snapshot.event_id),
            "as_of": snapshot.occurred_at.isoformat(),
            "tree": snapshot.payload["tree"],
            "prices": snapshot.payload["prices"],
        }

    @router.get("/portfolio/trees/desired", summary="The latest target tree")
    async def tree_desired(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        target = await queries.latest_event(pool(), portfolio, TARGET_TYPES)
        if target is None:
            raise Problem(404, f"no target yet for portfolio {portfolio!r}")
        return {
            "portfolio_id": portfolio,
            "target_id": str(target.event_id),
            "as_of": target.occurred_at.isoformat(),
            "tree": target.payload["tree"],
        }

    @router.get("/portfolio/trees/diff", summary="The diff tree of the latest snapshot and target")
    async def tree_diff(portfolio_id: Portfolio = None, band: Band = 0.0) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        snapshot, target = await latest_inputs(portfolio)
        diff = diff_or_problem(snapshot, target, band)
        return {
            "portfolio_id": portfolio,
            "snapshot_id": str(snapshot.event_id),
            "target_id": str(target.event_id),
            "band": band,
            "diff": diff_json(diff),
        }

    @router.post("/halt", status_code=202, summary="The kill switch: publish HaltTrading")
    async def halt(request: HaltRequest) -> JsonDict:
        portfolio = portfolio_of(request.portfolio_id)
        command = new_event(
            HaltTrading,
            key=uuid.uuid4(),
            now=deps.clock(),
            portfolio_id=portfolio,
            reason=request.reason,
            requested_by="api",
        )
        await publish(command)
        return {"command_id": str(command.event_id), "portfolio_id": portfolio, "subject": command.subject}

    @router.post("/resume", status_code=202, summary="Lift a halt: publish ResumeTrading")
    async def resume(request: ResumeRequest) -> JsonDict:
        portfolio = portfolio_of(request.portfolio_id)
        command = new_event(
            ResumeTrading, key=uuid.uuid4(), now=deps.clock(), portfolio_id=portfolio, requested_by="api"
        )
        await publish(command)
        return {"command_id": str(command.event_id), "portfolio_id": portfolio, "subject": command.subject}

    @router.get("/status", summary="Halted?, live or dry-run, the last run, health")
    async def status(portfolio_id: Portfolio = None) -> JsonDict:
        portfolio = portfolio_of(portfolio_id)
        health = {}
        for name, check in deps.checks.items():
            try:
                await asyncio.wait_for(check(), 2.0)
                health[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is reported, by name
                health[name] = f"{type(exc).__name__}: {exc}"
        peers = await peer_health(deps.settings.peers)
        last_halt = await queries.latest_event(pool(), portfolio, HALT_TYPES)
        is_halted = last_halt is not None and last_halt.payload.get("type") == "HaltTrading"
        runs, _ = await queries.history(pool(), portfolio, 1, None, True, with_orders=False)
        snapshot = await queries.latest_event(pool(), portfolio, SNAPSHOT_TYPES)
        target = await queries.latest_event(pool(), portfolio, TARGET_TYPES)
        return {
            "portfolio_id": portfolio,
            "halted": is_halted,
            "halt_reason": last_halt.payload.get("reason") if is_halted and last_halt else None,
            "halted_at": last_halt.occurred_at.isoformat() if is_halted and last_halt else None,
            "live": deps.settings.live,
            "mode": "live" if deps.settings.live else "dry-run",
            "last_run": runs[0] if runs else None,
            "snapshot_at": snapshot.occurred_at.isoformat() if snapshot else None,
            "target_at": target.occurred_at.isoformat() if target else None,
            **health,
            **({"services": peers} if peers else {}),
        }

    @router.get("/export/trades", summary="Every fill, streamed")
    async def export_trades(portfolio_id: Portfolio = None, format: Format = "json") -> StreamingResponse:
        rows = queries.trades(pool(), portfolio_of(portfolio_id))
        return _stream(rows, format, queries.TRADE_FIELDS, "trades")

    @router.get("/export/plans", summary="Every stored plan, streamed (csv: one row per order)")
    async def export_plans(portfolio_id: Portfolio = None, format: Format = "json") -> StreamingResponse:
        documents = queries.plans(pool(), portfolio_of(portfolio_id))
        if format == "json":
            return _stream(documents, format, (), "plans")
        return _stream(_plan_rows(documents), format, PLAN_CSV_FIELDS, "plans")

    return router


PLAN_CSV_FIELDS = (
    "plan_id",
    "portfolio_id",
    "status",
    "created_at",
    "approved_at",
    "leg",
    "account",
    "exchange",
    "symbol",
    "side",
    "amount",
    "est_price",
    "est_cost",
    "est_fee",
    "phase",
)


async def _plan_rows(documents: AsyncIterator[JsonDict]) -> AsyncIterator[JsonDict]:
    async for plan in documents:
        for leg, order in enumerate(plan["orders"]):
            yield {**{k: plan[k] for k in PLAN_CSV_FIELDS[:5]}, "leg": leg, **order}


def _stream(
    rows: AsyncIterator[JsonDict], format: str, fields: tuple[str, ...], name: str
) -> StreamingResponse:
    async def as_json() -> AsyncIterator[bytes]:
        yield b"["
        first = True
        async for row in rows:
            yield (b"" if first else b",\n") + json.dumps(row).encode()
            first = False
        yield b"]\n"

    async def as_csv() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        async for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
            if buffer.tell() > 1 << 16:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    media = "application/json" if format == "json" else "text/csv; charset=utf-8"
    headers = {"content-disposition": f'attachment; filename="{name}.{format}"'}
    return StreamingResponse(as_json() if format == "json" else as_csv(), media_type=media, headers=headers)


async def _await_outcome(pool: asyncpg.Pool, run_id: uuid.UUID, timeout: float) -> queries.Stored | None:
    """The planner's answer for the run, as soon as the journal has it (None after `timeout`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await queries.plan_outcome(pool, run_id)
        if found is not None or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(PLAN_POLL_SECONDS)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stored_statistics(stats: strategy_store.StrategyStats) -> JsonDict:
    return {
        "strategy_id": stats.strategy_id,
        "observations": stats.observations,
        "cumulative_return": stats.cumulative_return,
        "annualised_return": stats.annualised_return,
        "volatility": stats.volatility,
        "sharpe": stats.sharpe,
        "sortino": stats.sortino,
        "max_drawdown": stats.max_drawdown,
        "last_timestamp": stats.last_timestamp.isoformat() if stats.last_timestamp else None,
        "source": "strategy_stats",
        "computed_at": stats.computed_at.isoformat(),
    }


def _statistics(name: str, stamps: list[float], values: list[float]) -> JsonDict:
    try:
        periods = perf.periods_per_year_from(stamps) if len(stamps) > 1 else perf.DEFAULT_PERIODS_PER_YEAR
    except ValueError:
        periods = perf.DEFAULT_PERIODS_PER_YEAR
    stats = perf.performance(values, periods)
    return {
        "strategy_id": name,
        "observations": stats.periods,
        "cumulative_return": _finite(stats.cumulative_return),
        "annualised_return": _finite(stats.annualised_return),
        "volatility": _finite(stats.annualised_volatility),
        "sharpe": _finite(stats.sharpe),
        "sortino": _finite(stats.sortino),
        "max_drawdown": _finite(stats.max_drawdown),
        "last_timestamp": datetime.fromtimestamp(stamps[-1], UTC).isoformat() if stamps else None,
    }

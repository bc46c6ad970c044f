"""The operators' fund endpoints (issue 6): a fund's ledgers, deposits, withdrawals and cycles.

    GET  /funds/{fund}              the fund, users' amounts, totals vs the venue, pending flows, cycles
    PUT  /funds/{fund}              define the fund (account, quote, target weights): `DefineFund`
    POST /funds/{fund}/deposits     record a user's deposit: `RecordDeposit`
    POST /funds/{fund}/withdrawals  a user's withdrawal (an amount, or all): `RequestWithdrawal`
    POST /funds/{fund}/cycles       net what is due now: `RunFundCycle`

Reads come from the planner's fund tables (migration 0006); writes publish the command, whose id derives
from the fund and the caller's `reference` (a retried request is the same command, recorded once), then
wait up to `WAIT_SECONDS` for the planner to record it: 201 with the flow when it did, 202 when not yet.
`GET` also compares the users' totals with the account in the latest journaled snapshot of the fund's
`prices_from` portfolio (when its tree holds the account): beyond one amount step, a surplus is
`unattributed` (never assigned to a user), a deficit `missing`. Bad input is a 422 naming the field, an
unknown fund or user a 404. Same bearer token as the rest of the API. The monitor's app mounts it with
``api.include_router(funds_api.create_router(deps))``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import numpy as np
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field

from rebal.core.errors import InputError
from rebal.core.funds import Fund, Ledger, account_holdings, drift, dust, fund_quotes, reconcile_totals
from rebal.core.market import Markets, Prices
from rebal.events import DefineFund, RecordDeposit, RequestWithdrawal, RunFundCycle, new_event
from rebal_monitor import queries
from rebal_monitor.api import Deps, Problem, bearer

FUND_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_PATTERN = r"^[^\s/]{1,128}$"
# How long a write waits for the planner to record the command before answering 202.
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
RECENT_CYCLES = 10
QUANTUM = Decimal("1e-8")
FundId = Annotated[str, Path(pattern=FUND_PATTERN, description="the fund's id")]
JsonDict = dict[str, Any]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Amount = Annotated[Decimal, Field(gt=0, max_digits=30, description="a decimal string, at most 8 places")]
Reference = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class DepositRequest(Strict):
    user_id: Annotated[str, Field(pattern=USER_PATTERN)]
    amount: Amount
    reference: Reference | None = None


class WithdrawalRequest(Strict):
    user_id: Annotated[str, Field(pattern=USER_PATTERN)]
    amount: Amount | None = Field(default=None, description="omit (or null) with all=true for everything")
    all: bool = False
    reference: Reference | None = None


class CycleRequest(Strict):
    rebalance: bool = False
    reference: Reference | None = None


class FundDefinition(Strict):
    exchange: Annotated[str, Field(min_length=1, max_length=64)]
    account: Annotated[str, Field(min_length=1, max_length=256)]
    quote: Annotated[str, Field(min_length=1, max_length=32)]
    weights: dict[str, Annotated[Decimal, Field(ge=0, le=1)]]
    prices_from: Annotated[str, Field(pattern=FUND_PATTERN)]


def _places(value: Decimal, field: str) -> None:
    if value % QUANTUM != 0:
        raise Problem(422, f"{field}: {value} has more than 8 decimal places")


def create_router(deps: Deps) -> APIRouter:
    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        token = deps.settings.token
        if token is None or not token.get_secret_value():
            raise Problem(
                401, "the API has no token configured (REBAL__API__TOKEN): every request is refused"
            )
        if credentials is None:
            raise Problem(401, "missing 'Authorization: Bearer <token>' header")
        if not secrets.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
            raise Problem(401, "wrong bearer token")

    router = APIRouter(dependencies=[Depends(authorised)], tags=["funds"])

    def pool() -> asyncpg.Pool:
        found = deps.pool()
        if found is None:
            raise Problem(503, "the monitor's database pool is not open yet")
        return found

    async def fund_row(fund: str) -> asyncpg.Record:
        try:
            row = await pool().fetchrow("SELECT * FROM funds WHERE fund_id = $1", fund)
        except asyncpg.UndefinedTableError:
            raise Problem(
                503, "the fund tables do not exist yet (the planner applies migration 0006)"
            ) from None
        if row is None:
            raise Problem(404, f"no fund {fund!r}")
        return row

    async def publish(event: Any) -> None:
        try:
            await deps.publisher.publish(event)
        except (NatsError, TimeoutError, OSError) as exc:
            raise Problem(503, f"NATS did not take the command: {type(exc).__name__} {exc}") from None

    async def recorded(flow_id: uuid.UUID) -> asyncpg.Record | None:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while True:
            row = await pool().fetchrow("SELECT * FROM fund_flows WHERE flow_id = $1", flow_id)
            if row is not None or asyncio.get_running_loop().time() > deadline:
                return row
            await asyncio.sleep(POLL_SECONDS)

    def key_of(reference: str | None) -> str:
        return reference if reference is not None else str(uuid.uuid4())

    async def answer(command: Any, kind: str) -> JSONResponse:
        row = await recorded(command.event_id)
        body = {"command_id": str(command.event_id), "kind": kind, "recorded": row is not None}
        if row is not None:
            body["flow"] = _flow(row)
        return JSONResponse(body, status_code=201 if row is not None else 202)

    @router.get("/funds/{fund}", summary="A fund: users' amounts, totals, pending flows, recent cycles")
    async def show(fund: FundId, user: Annotated[str | None, Query(pattern=USER_PATTERN)] = None) -> JsonDict:
        row = await fund_row(fund)
        ledger = await pool().fetch(
            "SELECT user_id, asset, amount FROM fund_ledger"
            " WHERE fund_id = $1 AND ($2::text IS NULL OR user_id = $2) ORDER BY user_id, asset",
            fund,
            user,
        )
        if user is not None and not ledger:
            raise Problem(404, f"{user!r} has nothing in fund {fund!r}")
        users: dict[str, dict[str, str]] = {}
        totals: dict[str, Decimal] = {}
        for entry in ledger:
            users.setdefault(entry["user_id"], {})[entry["asset"]] = _dec(entry["amount"])
            totals[entry["asset"]] = totals.get(entry["asset"], Decimal(0)) + entry["amount"]
        flows = await pool().fetch(
            "SELECT * FROM fund_flows WHERE fund_id = $1 AND status IN ('pending', 'running')"
            " AND ($2::text IS NULL OR user_id = $2) ORDER BY created_at, flow_id",
            fund,
            user,
        )
        cycles = await pool().fetch(
            "SELECT cycle_id, phase, status, report, created_at, updated_at FROM fund_cycles"
            " WHERE fund_id = $1 ORDER BY created_at DESC LIMIT $2",
            fund,
            RECENT_CYCLES,
        )
        latest = await queries.latest_event(pool(), row["prices_from"], ("BalanceSnapshotTaken",))
        venue = _venue(latest, row) if latest is not None and user is None else None
        reconciliation = None
        if venue is not None and latest is not None:
            balances, steps = venue
            found = reconcile_totals(totals, balances, steps)
            reconciliation = {
                "snapshot_at": latest.occurred_at.isoformat(),
                "venue": {a: _dec(v) for a, v in sorted(balances.items())},
                "unattributed": {a: _dec(v) for a, v in found.unattributed.items()},
                "missing": {a: _dec(v) for a, v in found.missing.items()},
            }
        positions = _positions(latest, row, ledger) if latest is not None else None
        return {
            "fund_id": fund,
            "exchange": row["exchange"],
            "account": row["account"],
            "quote": row["quote"],
            "weights": json.loads(row["weights"]),
            "prices_from": row["prices_from"],
            "status": row["status"],
            "reason": row["reason"],
            "users": users,
            "totals": {asset: _dec(amount) for asset, amount in sorted(totals.items())},
            "flows": [_flow(f) for f in flows],
            "reconciliation": reconciliation,
            "drift": None if positions is None else positions[0],
            "dust": None if positions is None else positions[1],
            "cycles": [
                {
                    "cycle_id": str(c["cycle_id"]),
                    "phase": c["phase"],
                    "status": c["status"],
                    "report": json.loads(c["report"]) if c["report"] else None,
                    "created_at": c["created_at"].isoformat(),
                    "updated_at": c["updated_at"].isoformat(),
                }
                for c in cycles
            ],
        }

    @router.put("/funds/{fund}", status_code=202, summary="Define (or change) a fund: DefineFund")
    async def define(fund: FundId, request: FundDefinition) -> JsonDict:
        total = sum(request.weights.values(), Decimal(0))
        if not request.weights or abs(total - 1) > Decimal("1e-9"):
            raise Problem(422, f"weights: they sum to {total}, not 1")
        command = new_event(
            DefineFund,
            key=uuid.uuid4(),
            now=deps.clock(),
            portfolio_id=fund,
            exchange=request.exchange,
            account=request.account,
            quote=request.quote,
            weights=request.weights,
            prices_from=request.prices_from,
            requested_by="api",
        )
        await publish(command)
        return {"command_id": str(command.event_id), "kind": "define"}

    @router.post("/funds/{fund}/deposits", summary="Record a user's deposit (credited at once as cash)")
    async def deposit(fund: FundId, request: DepositRequest) -> JSONResponse:
        await fund_row(fund)
        _places(request.amount, "amount")
        command = new_event(
            RecordDeposit,
            key=key_of(request.reference),
            now=deps.clock(),
            portfolio_id=fund,
            user_id=request.user_id,
            amount=request.amount,
            reference=request.reference or "",
            requested_by="api",
        )
        await publish(command)
        return await answer(command, "deposit")

    @router.post("/funds/{fund}/withdrawals", summary="Ask for a withdrawal: an amount after fees, or all")
    async def withdraw(fund: FundId, request: WithdrawalRequest) -> JSONResponse:
        await fund_row(fund)
        if (request.amount is None) == (not request.all):
            raise Problem(422, "amount: give an amount, or all=true for everything (not both)")
        if request.amount is not None:
            _places(request.amount, "amount")
        held = await pool().fetchval(
            "SELECT count(*) FROM fund_ledger WHERE fund_id = $1 AND user_id = $2 AND amount > 0",
            fund,
            request.user_id,
        )
        if not held:
            raise Problem(404, f"{request.user_id!r} holds nothing in fund {fund!r}")
        command = new_event(
            RequestWithdrawal,
            key=key_of(request.reference),
            now=deps.clock(),
            portfolio_id=fund,
            user_id=request.user_id,
            amount=request.amount,
            reference=request.reference or "",
            requested_by="api",
        )
        await publish(command)
        return await answer(command, "withdrawal")

    @router.post("/funds/{fund}/cycles", status_code=202, summary="Net what is due now: RunFundCycle")
    async def cycle(fund: FundId, request: CycleRequest) -> JsonDict:
        await fund_row(fund)
        command = new_event(
            RunFundCycle,
            key=key_of(request.reference),
            now=deps.clock(),
            portfolio_id=fund,
            rebalance=request.rebalance,
            requested_by="api",
        )
        await publish(command)
        return {"command_id": str(command.event_id), "kind": "cycle"}

    return router


def _venue(
    latest: queries.Stored, fund: asyncpg.Record
) -> tuple[dict[str, Decimal], dict[str, Decimal]] | None:
    """The fund account's balances in a journaled snapshot (when its tree holds the account) and each
    asset's amount step; None when it does not."""
    tree = latest.payload.get("tree")
    balances = account_holdings(tree, fund["account"]) if isinstance(tree, dict) else None
    if balances is None:
        return None
    markets = (latest.payload.get("markets") or {}).get(fund["exchange"]) or {}
    steps = {
        asset: Decimal(str(market["amount_step"]))
        for asset in balances
        if isinstance(market := markets.get(f"{asset}/{fund['quote']}"), dict) and "amount_step" in market
    }
    return balances, steps


def _positions(
    latest: queries.Stored, row: asyncpg.Record, entries: list[asyncpg.Record]
) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """The fund's drift per asset (value share minus weight, dust left out) and each user's dust (assets
    too small to sell alone), at the snapshot's prices and markets; None when they do not parse."""
    amounts: dict[str, dict[str, Decimal]] = {}
    for entry in entries:
        amounts.setdefault(entry["user_id"], {})[entry["asset"]] = entry["amount"]
    weights = {a: Decimal(w) for a, w in json.loads(row["weights"]).items()}
    try:
        fund = Fund(row["fund_id"], row["exchange"], row["account"], row["quote"], weights)
        ledger = Ledger.from_amounts(fund.assets(tuple({e["asset"] for e in entries})), amounts)
        prices = Prices.parse(latest.payload.get("prices"))
        markets = Markets.parse(latest.payload.get("markets"))
    except InputError:
        return None
    quotes = fund_quotes(fund, prices, markets, ledger.assets)
    small = dust(ledger, quotes)
    return (
        {asset: _dec(value) for asset, value in drift(ledger, fund, quotes).items()},
        {
            user: [ledger.assets[j] for j in np.flatnonzero(small[i])]
            for i, user in enumerate(ledger.users)
            if small[i].any()
        },
    )


def _dec(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


def _flow(row: asyncpg.Record) -> JsonDict:
    return {
        "flow_id": str(row["flow_id"]),
        "user_id": row["user_id"],
        "kind": row["kind"],
        "amount": None if row["amount"] is None else _dec(row["amount"]),
        "status": row["status"],
        "paid": None if row["paid"] is None else _dec(row["paid"]),
        "reason": row["reason"],
        "created_at": row["created_at"].isoformat(),
    }

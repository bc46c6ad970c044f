"""The operators' fund endpoints: a fund's ledgers, deposits, withdrawals and cycles.

    GET  /funds/{fund}              the fund, users' amounts, totals vs the venue, pending flows, cycles
    PUT  /funds/{fund}              define the fund (account, quote, target weights): `DefineFund`
    POST /funds/{fund}/deposits     record a user's deposit: `RecordDeposit`
    POST /funds/{fund}/withdrawals  a user's withdrawal (an amount, or all): `RequestWithdrawal`
    POST /funds/{fund}/cycles       net what is due now: `RunFundCycle`

Reads come from the planner's fund tables through `rebal.fund_store`; writes publish the command, whose
id derives from the fund and the caller's `reference` (a retried request is the same command, recorded
once), then wait up to `WAIT_SECONDS` for the planner to record it: 201 with the flow (a cycle: its id)
when it did, 409 with its reason when it refused, 202 when not yet. `GET` also compares the users'
totals with the account in the latest journaled snapshot of the fund's `prices_from` portfolio (when its
tree holds the account): beyond one amount step, a surplus is `unattributed` (never assigned to a user),
a deficit `missing`. Bad input is a 422 naming the field, an unknown fund or user a 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, TypeVar

import asyncpg
import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rebal import fund_store
from rebal.core.display import money_text
from rebal.core.errors import InputError
from rebal.core.fund_checks import account_holdings, drift, dust, reconcile_totals
from rebal.core.funds import fund_quotes
from rebal.core.market import Markets, Prices
from rebal.core.numbers import dec_str
from rebal.events import (
    DefineFund,
    Event,
    RecordDeposit,
    RequestWithdrawal,
    RunFundCycle,
    derive_id,
    new_event,
)
from rebal.fund_store import FundRecord
from rebal_monitor import queries
from rebal_monitor.api.deps import (
    SNAPSHOT_TYPES,
    Authorised,
    Db,
    Deps,
    JsonDict,
    Needs,
    OperatorOnly,
    Problem,
    Storable,
    publish,
    until_found,
)

FUND_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_PATTERN = r"^[^\s/]{1,128}$"
# How long a write waits for the planner to record the command before answering 202.
WAIT_SECONDS = 5.0
REJECTED = "FundCommandRejected"
POLL_SECONDS = 0.05
T = TypeVar("T")
RECENT_CYCLES = 10
QUANTUM = Decimal("1e-8")
FundId = Annotated[str, Path(pattern=FUND_PATTERN, description="the fund's id")]
router = APIRouter(dependencies=[Authorised], tags=["funds"])


class Lenient(BaseModel):
    """A request body: unknown fields refused; amounts as decimal strings or numbers."""

    model_config = ConfigDict(extra="forbid")


Amount = Annotated[Decimal, Field(gt=0, max_digits=30, description="a decimal string, at most 8 places")]
Reference = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class DepositRequest(Lenient):
    user_id: Annotated[str, Field(pattern=USER_PATTERN)]
    amount: Amount
    reference: Reference | None = None


class WithdrawalRequest(Lenient):
    user_id: Annotated[str, Field(pattern=USER_PATTERN)]
    amount: Amount | None = Field(default=None, description="omit (or null) with all=true for everything")
    all: bool = False
    reference: Reference | None = None


class CycleRequest(Lenient):
    rebalance: bool = False
    reference: Reference | None = None


class FundDefinition(Lenient):
    exchange: Annotated[str, Field(min_length=1, max_length=64), Storable]
    account: Annotated[str, Field(min_length=1, max_length=256), Storable]
    quote: Annotated[str, Field(min_length=1, max_length=32), Storable]
    weights: dict[str, Annotated[Decimal, Field(ge=0, le=1)]]
    prices_from: Annotated[str, Field(pattern=FUND_PATTERN)]


def _places(value: Decimal, field: str) -> None:
    if value % QUANTUM != 0:
        raise Problem(422, f"{field}: {value} has more than 8 decimal places")


async def defined(pool: asyncpg.Pool, fund: str) -> FundRecord:
    try:
        found = await fund_store.fund(pool, fund)
    except asyncpg.UndefinedTableError:
        raise Problem(503, "the fund tables do not exist yet (the planner applies migration 0006)") from None
    if found is None:
        raise Problem(404, f"no fund {fund!r}")
    return found


def key_of(reference: str | None) -> str:
    return reference if reference is not None else str(uuid.uuid4())


async def record_flow(
    kind: type[RecordDeposit | RequestWithdrawal],
    fund: str,
    request: DepositRequest | WithdrawalRequest,
    deps: Deps,
    pool: asyncpg.Pool,
) -> JSONResponse:
    """Publish a deposit or a withdrawal and answer with the flow the planner records for it."""
    command = new_event(
        kind,
        key=key_of(request.reference),
        now=deps.clock(),
        portfolio_id=fund,
        user_id=request.user_id,
        amount=request.amount,
        reference=request.reference or "",
        requested_by="api",
    )
    await publish(deps, command)
    return await answer(pool, command, "deposit" if kind is RecordDeposit else "withdrawal")


async def planners_answer(
    pool: asyncpg.Pool, command: Event, kind: str, recorded: Callable[[], Awaitable[T | None]]
) -> T | None:
    """What the planner recorded for the command (`recorded`), once it has; None when it has not answered
    within `WAIT_SECONDS`; a 409 with its reason when it refused the command."""

    async def outcome() -> T | queries.Stored | None:
        found = await recorded()
        # The planner's refusal has the id `Event.caused` derives from the command.
        return (
            found
            if found is not None
            else await queries.event(pool, derive_id(REJECTED, command.event_id, ""))
        )

    found: T | queries.Stored | None = await until_found(outcome, WAIT_SECONDS, POLL_SECONDS)
    if isinstance(found, queries.Stored):
        raise Problem(409, f"the planner refused the {kind}: {found.payload.get('reason', '')}")
    return found


async def answer(pool: asyncpg.Pool, command: Event, kind: str) -> JSONResponse:
    """201 with the flow once the planner has recorded the command, 409 with its reason when the planner
    rejected it, 202 when it has not answered yet."""
    found = await planners_answer(pool, command, kind, lambda: fund_store.flow(pool, command.event_id))
    body: JsonDict = {"command_id": str(command.event_id), "kind": kind, "recorded": found is not None}
    if found is not None:
        body["flow"] = _flow(found)
    return JSONResponse(body, status_code=201 if found is not None else 202)


@router.get("/funds/{fund}", summary="A fund: users' amounts, totals, pending flows, recent cycles")
async def show(
    fund: FundId, pool: Db, user: Annotated[str | None, Query(pattern=USER_PATTERN)] = None
) -> JsonDict:
    found = await defined(pool, fund)
    entries = await fund_store.entries(pool, fund, user)
    if user is not None and not entries:
        raise Problem(404, f"{user!r} has nothing in fund {fund!r}")
    users: dict[str, dict[str, str]] = {}
    totals: dict[str, Decimal] = {}
    for entry in entries:
        users.setdefault(entry.user_id, {})[entry.asset] = dec_str(entry.amount)
        totals[entry.asset] = totals.get(entry.asset, Decimal(0)) + entry.amount
    flows = await fund_store.open_flows(pool, fund, user)
    cycles = await fund_store.recent_cycles(pool, fund, RECENT_CYCLES)
    latest = await queries.latest_event(pool, found.prices_from, SNAPSHOT_TYPES)
    venue = _venue(latest, found) if latest is not None and user is None else None
    reconciliation = None
    if venue is not None and latest is not None:
        balances, steps = venue
        reconciled = reconcile_totals(totals, balances, steps)
        reconciliation = {
            "snapshot_at": latest.occurred_at.isoformat(),
            "venue": {a: dec_str(v) for a, v in sorted(balances.items())},
            "unattributed": {a: dec_str(v) for a, v in reconciled.unattributed.items()},
            "missing": {a: dec_str(v) for a, v in reconciled.missing.items()},
        }
    positions = _positions(latest, found, entries) if latest is not None else None
    spec = found.fund
    return {
        "fund_id": fund,
        "exchange": spec.exchange,
        "account": spec.account,
        "quote": spec.quote,
        "weights": {asset: str(weight) for asset, weight in spec.weights.items()},
        "prices_from": found.prices_from,
        "status": found.status,
        "reason": found.reason,
        "users": users,
        "totals": {asset: dec_str(amount) for asset, amount in sorted(totals.items())},
        "flows": [_flow(f) for f in flows],
        "reconciliation": reconciliation,
        "drift": None if positions is None else positions[0],
        "dust": None if positions is None else positions[1],
        "cycles": [
            {
                "cycle_id": str(c.cycle_id),
                "phase": c.phase,
                "status": c.status,
                "report": c.report,
                "traded": vars(await fund_store.traded(pool, list(c.run_ids))),
                "created_at": c.created_at.isoformat(),
                "updated_at": c.updated_at.isoformat(),
            }
            for c in cycles
        ],
    }


@router.put(
    "/funds/{fund}",
    status_code=202,
    dependencies=[OperatorOnly],
    summary="Define (or change) a fund: DefineFund",
)
async def define(fund: FundId, request: FundDefinition, deps: Needs) -> JsonDict:
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
    await publish(deps, command)
    return {"command_id": str(command.event_id), "kind": "define"}


@router.post(
    "/funds/{fund}/deposits",
    dependencies=[OperatorOnly],
    summary="Record a user's deposit (credited at once as cash)",
)
async def deposit(fund: FundId, request: DepositRequest, deps: Needs, pool: Db) -> JSONResponse:
    await defined(pool, fund)
    _places(request.amount, "amount")
    return await record_flow(RecordDeposit, fund, request, deps, pool)


@router.post(
    "/funds/{fund}/withdrawals",
    dependencies=[OperatorOnly],
    summary="Ask for a withdrawal: an amount after fees, or all",
)
async def withdraw(fund: FundId, request: WithdrawalRequest, deps: Needs, pool: Db) -> JSONResponse:
    if (request.amount is None) == (not request.all):
        raise Problem(422, "amount: give an amount, or all=true for everything (not both)")
    if request.amount is not None:
        _places(request.amount, "amount")
    found = await defined(pool, fund)
    if not await fund_store.holds(pool, fund, request.user_id):
        raise Problem(404, f"{request.user_id!r} holds nothing in fund {fund!r}")
    if request.amount is not None:
        await refuse_beyond_holdings(pool, found, request.user_id, request.amount)
    return await record_flow(RequestWithdrawal, fund, request, deps, pool)


async def refuse_beyond_holdings(pool: asyncpg.Pool, found: FundRecord, user: str, amount: Decimal) -> None:
    """A 422 naming the user, the fund and what the user holds when the withdrawal asks for more than the
    user's holdings are worth at the latest prices (the planner would drop it at the next cycle). Without
    prices, only holdings all in cash are judged; the rest is the planner's at the cycle."""
    latest = await queries.latest_event(pool, found.prices_from, SNAPSHOT_TYPES)
    entries = await fund_store.entries(pool, found.fund.fund_id, user)
    # No prices yet (a fresh system): cash in the fund's quote is still worth what it says.
    snapshot = latest.payload if latest is not None else {"prices": {"quote": found.fund.quote, "prices": {}}}
    held = held_value(found, entries, snapshot)
    if held is not None and amount > held:
        quote = found.fund.quote
        raise Problem(
            422,
            f"amount: {user!r} holds {money_text(held, quote)} {quote} in fund {found.fund.fund_id!r}"
            f" at the latest prices; a withdrawal of {dec_str(amount)} {quote} cannot be paid",
        )


def held_value(found: FundRecord, entries: list[fund_store.Entry], snapshot: JsonDict) -> Decimal | None:
    """What the entries are worth in the fund's quote at the snapshot's prices (None: not priced)."""
    fund = found.fund
    try:
        prices = Prices.parse(snapshot.get("prices"))
        markets = Markets.parse(snapshot.get("markets"))
    except InputError:
        return None
    ledger = fund_store.ledger_of(fund, entries)
    quotes = fund_quotes(fund, prices, markets, ledger.assets)
    total = Decimal(0)
    for entry in entries:
        if entry.asset == fund.quote:
            total += entry.amount
        elif entry.asset in quotes:
            total += entry.amount * quotes[entry.asset].price
        else:
            return None
    return total


@router.post(
    "/funds/{fund}/cycles",
    status_code=202,
    dependencies=[OperatorOnly],
    summary="Net what is due now: RunFundCycle",
)
async def cycle(fund: FundId, request: CycleRequest, deps: Needs, pool: Db) -> JSONResponse:
    await defined(pool, fund)
    command = new_event(
        RunFundCycle,
        key=key_of(request.reference),
        now=deps.clock(),
        portfolio_id=fund,
        rebalance=request.rebalance,
        requested_by="api",
    )
    await publish(deps, command)
    cycle_id = derive_id("fund-cycle", command.event_id)  # the planner's id for the cycle it opens

    async def opened() -> bool | None:
        return True if await fund_store.cycle_exists(pool, cycle_id) else None

    found = await planners_answer(pool, command, "cycle", opened)
    body: JsonDict = {
        "command_id": str(command.event_id),
        "kind": "cycle",
        "cycle_id": str(cycle_id),
        "started": found is not None,
    }
    return JSONResponse(body, status_code=201 if found is not None else 202)


def _venue(latest: queries.Stored, found: FundRecord) -> tuple[dict[str, Decimal], dict[str, Decimal]] | None:
    """The fund account's balances in a journaled snapshot (when its tree holds the account) and each
    asset's amount step; None when it does not."""
    fund = found.fund
    tree = latest.payload.get("tree")
    balances = account_holdings(tree, fund.account) if isinstance(tree, dict) else None
    if balances is None:
        return None
    markets = (latest.payload.get("markets") or {}).get(fund.exchange) or {}
    steps = {
        asset: Decimal(str(market["amount_step"]))
        for asset in balances
        if isinstance(market := markets.get(f"{asset}/{fund.quote}"), dict) and "amount_step" in market
    }
    return balances, steps


def _positions(
    latest: queries.Stored, found: FundRecord, entries: list[fund_store.Entry]
) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """The fund's drift per asset (value share minus weight, dust left out) and each user's dust (assets
    too small to sell alone), at the snapshot's prices and markets; None when they do not parse."""
    fund = found.fund
    try:
        ledger = fund_store.ledger_of(fund, entries)
        prices = Prices.parse(latest.payload.get("prices"))
        markets = Markets.parse(latest.payload.get("markets"))
    except InputError:
        return None
    quotes = fund_quotes(fund, prices, markets, ledger.assets)
    small = dust(ledger, quotes)
    return (
        {asset: dec_str(value) for asset, value in drift(ledger, fund, quotes).items()},
        {
            user: [ledger.assets[j] for j in np.flatnonzero(small[i])]
            for i, user in enumerate(ledger.users)
            if small[i].any()
        },
    )


def _flow(flow: fund_store.Flow) -> JsonDict:
    return {
        "flow_id": str(flow.flow_id),
        "user_id": flow.user_id,
        "kind": flow.kind,
        "amount": None if flow.amount is None else dec_str(flow.amount),
        "status": flow.status,
        "paid": None if flow.paid is None else dec_str(flow.paid),
        "reason": flow.reason,
        "created_at": flow.created_at.isoformat(),
    }

"""Exports: every fill, every stored plan, streamed as JSON or CSV straight from a database cursor."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from rebal_monitor import plan_store, queries
from rebal_monitor.api.deps import Authorised, Chosen, Db, JsonDict

Format = Annotated[Literal["csv", "json"], Query(description="csv or json")]
# CSV is handed on in pieces of about this many bytes.
CSV_CHUNK_BYTES = 1 << 16
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
router = APIRouter(dependencies=[Authorised])


@router.get("/export/trades", summary="Every fill, streamed")
async def export_trades(portfolio: Chosen, pool: Db, format: Format = "json") -> StreamingResponse:
    return _stream(queries.trades(pool, portfolio), format, queries.TRADE_FIELDS, "trades")


@router.get("/export/plans", summary="Every stored plan, streamed (csv: one row per order)")
async def export_plans(portfolio: Chosen, pool: Db, format: Format = "json") -> StreamingResponse:
    documents = plan_store.plans(pool, portfolio)
    if format == "json":
        return _stream(documents, format, (), "plans")
    return _stream(_plan_rows(documents), format, PLAN_CSV_FIELDS, "plans")


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
            if buffer.tell() > CSV_CHUNK_BYTES:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    media = "application/json" if format == "json" else "text/csv; charset=utf-8"
    headers = {"content-disposition": f'attachment; filename="{name}.{format}"'}
    return StreamingResponse(as_json() if format == "json" else as_csv(), media_type=media, headers=headers)

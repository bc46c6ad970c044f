"""`rebal paper deposit`: money arriving on a paper-exchange account, as a transfer would on a real one.

    rebal paper deposit ACCOUNT ASSET AMOUNT [--exchange paper] [--reference R] [--json]

The paper exchange keeps its balances in Postgres (`rebal_venues.paper`); the command credits the account
there directly (the database of the operator's settings: the environment, the client context `make run`
writes, REBAL_CONFIG), once per reference: the same `--reference` again changes nothing. A portfolio's
performance counts the deposit as money in, not as a gain. Exit codes: 0 ok, 2 bad input, 3 Postgres
not answering or not migrated.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import typer

from rebal.core.numbers import dec_str, parse_decimal
from rebal_cli.support import EXIT_NOT_RUNNING, fail, write_json

ASSET = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
REFERENCE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CONNECT_TIMEOUT_SECONDS = 5.0

paper_app = typer.Typer(help="The paper exchange: fund its accounts.", no_args_is_help=True)


@paper_app.command()
def deposit(
    account: Annotated[
        str, typer.Argument(help="The account, as the tree names it (user/exchange/account).")
    ],
    asset: Annotated[str, typer.Argument(help="The asset that arrives (USDT, BTC, ...).")],
    amount: Annotated[str, typer.Argument(help="How much arrives (a decimal > 0).")],
    exchange: Annotated[str, typer.Option("--exchange", help="The paper exchange.")] = "paper",
    reference: Annotated[
        str | None, typer.Option("--reference", help="The transfer's id: credited once (default: new).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Credit a paper-exchange account from outside, as a deposit arriving on a real exchange."""
    import asyncio

    from rebal_cli.api import operator_settings
    from rebal_cli.render import console

    value = parse_decimal(amount)
    if value is None or value <= 0:
        fail(f"AMOUNT: {amount!r} is not a decimal amount > 0")
    if not ASSET.match(asset):
        fail(f"ASSET: {asset!r} must be 1-32 letters, digits or '._-'")
    if not account.strip() or any(c.isspace() for c in account):
        fail(f"ACCOUNT: {account!r} must be an account path without spaces (user/exchange/account)")
    if reference is not None and not REFERENCE.match(reference):
        fail(f"--reference: {reference!r} must be 1-128 letters, digits or '_.:-'")
    ref = reference or f"cli-{uuid.uuid4()}"
    dsn = operator_settings().database.url.get_secret_value()
    new, balance = asyncio.run(_credit(dsn, exchange, account, asset, value, ref))
    if as_json:
        write_json(
            {
                "exchange": exchange,
                "account": account,
                "asset": asset,
                "amount": dec_str(value),
                "reference": ref,
                "credited": new,
                "balance": dec_str(balance),
            }
        )
        return
    said = "credited" if new else "already credited (same reference): nothing changed;"
    console().print(
        f"{said} {dec_str(value)} {asset} to {account} on {exchange} (reference {ref});"
        f" balance now {dec_str(balance)} {asset}",
        markup=False,
    )


async def _credit(
    dsn: str, exchange: str, account: str, asset: str, amount: Decimal, reference: str
) -> tuple[bool, Decimal]:
    import asyncpg

    from rebal_venues.paper import credit

    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        fail(
            f"Postgres does not answer ({type(exc).__name__}: {exc}); is the system running?",
            EXIT_NOT_RUNNING,
        )
    try:
        done = await credit(pool, exchange, account, asset, amount, reference, datetime.now(UTC))
    except asyncpg.UndefinedTableError:
        fail("the paper exchange's tables do not exist: start the services (they migrate)", EXIT_NOT_RUNNING)
    finally:
        await pool.close()
    return done.new, done.balance


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.add_typer(paper_app, name="paper")

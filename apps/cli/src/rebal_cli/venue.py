"""`rebal venue check`: before trusting a venue, check on its testnet every assumption the executor relies
on (`rebal_venues.conformance`), one line each, pass or fail, with what was seen.

The venue is a ``[venues.NAME]`` section with ``kind = "ccxt"`` (docs/venues.md), read as the services
read it (``REBAL_CONFIG`` and ``REBAL__VENUES__…``). A live account (``sandbox = false``) is refused
before anything is sent unless ``--allow-live``. Exit 0 when every assumption holds, 1 when one fails,
2 for a venue or account that is not configured (or a live one refused), 4 for a configuration that does
not load or a venue that cannot be opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rebal_cli.support import EXIT_ERROR, fail, write_json

if TYPE_CHECKING:
    from rebal_venues.ccxt_settings import CcxtVenueSettings
    from rebal_venues.conformance import Conformance

venue_app = typer.Typer(help="Exchanges: check one before trusting it.", no_args_is_help=True)


def _account(name: str, account: str | None) -> tuple[CcxtVenueSettings, str]:
    """The configured ccxt account to check, and the venue's valuation quote (exit 2/4 naming why not)."""
    from pydantic import ValidationError

    from rebal.settings import EXIT_CONFIGURATION, ConfigFileError
    from rebal_venues.factory import VenuesConfig

    try:
        venues = VenuesConfig().venues
    except (ValidationError, ConfigFileError, ValueError) as exc:
        fail(f"configuration: {exc}".splitlines()[0], EXIT_CONFIGURATION)
    section = venues.get(name)
    if section is None or section.kind != "ccxt":
        known = sorted(n for n, v in venues.items() if v.kind == "ccxt")
        fail(
            f"--venue {name}: no ccxt venue of that name in the configuration"
            f' ([venues.{name}] kind = "ccxt"); configured: {", ".join(known) or "none"}'
        )
    accounts = section.ccxt_accounts(name)
    if not accounts:
        fail(f"--venue {name}: no account has keys (api_key or api_key_file)", EXIT_CONFIGURATION)
    if account is None:
        return accounts[0], section.valuation_quote
    chosen = next((a for a in accounts if a.account == account), None)
    if chosen is None:
        fail(
            f"--account {account}: not an account of venue {name} ({', '.join(a.account for a in accounts)})"
        )
    return chosen, section.valuation_quote


async def _check(settings: CcxtVenueSettings, symbol: str, allow_live: bool, window: float) -> Conformance:
    from rebal.settings import EXIT_CONFIGURATION
    from rebal_venues.ccxt_venue import open_ccxt_venue
    from rebal_venues.conformance import check_venue

    try:
        opened = open_ccxt_venue(settings)
    except ValueError as exc:  # no such exchange in ccxt, or one without a sandbox
        fail(f"--venue {settings.venue_name}: {exc}", EXIT_CONFIGURATION)
    async with opened as venue:
        return await check_venue(venue, symbol, allow_live=allow_live, lookup_window_seconds=window)


@venue_app.command("check")
def check(
    venue: Annotated[str, typer.Option("--venue", help="The [venues.NAME] section (kind ccxt) to check.")],
    account: Annotated[
        str | None, typer.Option("--account", help="One of its accounts (default: the first with keys).")
    ] = None,
    symbol: Annotated[
        str | None,
        typer.Option("--symbol", help="The market to trade tiny orders on (default: BTC/<quote>)."),
    ] = None,
    allow_live: Annotated[
        bool,
        typer.Option(
            "--allow-live", help="Check a live (sandbox = false) account too: real orders, real money."
        ),
    ] = False,
    lookup_window: Annotated[
        float, typer.Option("--lookup-window", help="Seconds to look a new order up by its client id.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Place, look up, cancel and fill tiny orders on the venue's testnet; report every assumption the
    executor relies on as pass or fail (exit 1 when one fails)."""
    import asyncio

    from rich.markup import escape

    from rebal.venue import VenueError
    from rebal_cli.render import console

    if not 0 < lookup_window <= 600:
        fail(f"--lookup-window: {lookup_window} must be seconds from 0 to 600")
    settings, quote = _account(venue, account)
    if not settings.sandbox and not allow_live:
        fail(
            f"--venue {venue}: account {settings.account} is LIVE (sandbox = false): refused; "
            "--allow-live checks it with real orders and real money"
        )
    market = symbol or f"BTC/{quote}"
    try:
        report = asyncio.run(_check(settings, market, allow_live, lookup_window))
    except VenueError as error:
        fail(f"--venue {venue}: {type(error).__name__}: {error}", EXIT_ERROR)
    if as_json:
        write_json(
            {
                "venue": report.venue,
                "account": report.account,
                "symbol": report.symbol,
                "passed": report.passed,
                "assumptions": [
                    {"name": a.name, "passed": a.passed, "detail": a.detail} for a in report.assumptions
                ],
            }
        )
    else:
        out = console()
        for found in report.assumptions:
            mark = "[green]pass[/]" if found.passed else "[red]FAIL[/]"
            out.print(f"{mark} {escape(found.name)}: {escape(found.detail)}")
        held = sum(a.passed for a in report.assumptions)
        out.print(
            f"{report.venue} {report.account} on {report.symbol}: {held} of {len(report.assumptions)} "
            f"assumptions hold"
        )
    if not report.passed:
        raise typer.Exit(EXIT_ERROR)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.add_typer(venue_app, name="venue")

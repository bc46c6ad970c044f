"""Fund commands (issue 6): `rebal fund deposit|withdraw|show|cycle|define`, over the monitor's API.

    rebal fund deposit FUND USER AMOUNT [--reference R] [--json]
    rebal fund withdraw FUND USER (AMOUNT | --all) [--reference R] [--json]
    rebal fund show FUND [--user USER] [--json]
    rebal fund cycle FUND [--rebalance] [--json]

(or with options: `rebal fund deposit --fund FUND --user USER --amount AMOUNT`, `rebal fund show --fund
FUND`, ...)
    rebal fund define FUND --exchange X --account A --quote Q --weights BTC=0.5,USDT=0.5 --prices-from P

Amounts are exact decimals (at most 8 places) of the fund's quote. `--reference` names the transfer or the
request: giving the same one again records it once. Exit codes (`rebal_cli.support`): 0 ok, 1 error, 2 bad
input or an unknown fund/user (one line naming the argument), 3 the API not running, 4 no token.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from rebal.core.display import money_text, percent_text
from rebal.core.numbers import parse_decimal
from rebal.subjects import TOKEN
from rebal_cli.support import DEFAULT_API_URL, fail, write_json

QUANTUM = Decimal("1e-8")

fund_app = typer.Typer(help="Funds: users' deposits, withdrawals and ledgers.", no_args_is_help=True)
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="REBAL__API__URL",
        help=f"The monitor's REST API (default: the context's, else {DEFAULT_API_URL}).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reference = Annotated[
    str | None, typer.Option("--reference", help="The transfer's or request's id (recorded once).")
]


# Each argument may also be given as an option (`--fund F --user U --amount A`), as the other commands
# take `--portfolio`.
FundArg = Annotated[
    str | None, typer.Argument(metavar="FUND", help="The fund (or --fund).", show_default=False)
]
FundOpt = Annotated[str | None, typer.Option("--fund", help="The fund (instead of FUND).")]
UserOpt = Annotated[str | None, typer.Option("--user", help="The user (instead of USER).")]
AmountOpt = Annotated[str | None, typer.Option("--amount", help="The amount (instead of AMOUNT).")]


def _one(name: str, positional: str | None, option: str | None) -> str | None:
    """The argument given as NAME or as --name (the same value if both)."""
    if positional is not None and option is not None and positional != option:
        fail(f"{name}: given as {positional!r} and as --{name.lower()} {option!r}")
    return positional if positional is not None else option


def _required(name: str, positional: str | None, option: str | None) -> str:
    value = _one(name, positional, option)
    if value is None:
        fail(f"{name}: missing (give it as {name} or --{name.lower()})")
    return value


def _fund(raw: str) -> str:
    if not TOKEN.match(raw):
        fail(f"FUND: {raw!r} must be 1-64 letters, digits, '_' or '-'")
    return raw


def _user(raw: str) -> str:
    if not raw or len(raw) > 128 or any(c.isspace() or c == "/" for c in raw):
        fail(f"USER: {raw!r} must be 1-128 characters without spaces or '/'")
    return raw


def _amount(raw: str, name: str = "AMOUNT") -> str:
    value = parse_decimal(raw)
    if value is None or value <= 0:
        fail(f"{name}: {raw!r} is not a decimal amount > 0")
    if value % QUANTUM != 0:
        fail(f"{name}: {raw!r} has more than 8 decimal places")
    return format(value, "f")


def _reference(raw: str | None) -> str | None:
    if raw is not None and (not raw or len(raw) > 128 or not all(c.isalnum() or c in "_.:-" for c in raw)):
        fail(f"--reference: {raw!r} must be 1-128 letters, digits or '_.:-'")
    return raw


def _said(answer: dict[str, Any], as_json: bool, what: str) -> None:
    from rich.console import Console

    if as_json:
        write_json(answer)
        return
    flow = answer.get("flow")
    console = Console(highlight=False)
    if flow is None:
        console.print(f"{what} sent (command {answer['command_id']}); the planner has not recorded it yet")
    else:
        console.print(f"{what} recorded: {flow['status']} (flow {flow['flow_id']})")


@fund_app.command()
def deposit(
    fund_arg: FundArg = None,
    user_arg: Annotated[
        str | None, typer.Argument(metavar="USER", help="The user who deposited.", show_default=False)
    ] = None,
    amount_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="AMOUNT", help="The amount that arrived, in the fund's quote.", show_default=False
        ),
    ] = None,
    fund_opt: FundOpt = None,
    user_opt: UserOpt = None,
    amount_opt: AmountOpt = None,
    reference: Reference = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Record a user's deposit: credited at once as cash, invested by the next cycle."""
    from rebal_cli.api import connect

    fund = _required("FUND", fund_arg, fund_opt)
    user = _required("USER", user_arg, user_opt)
    amount = _required("AMOUNT", amount_arg, amount_opt)
    body = {"user_id": _user(user), "amount": _amount(amount), "reference": _reference(reference)}
    answer = connect(api_url).post(f"/funds/{_fund(fund)}/deposits", body)
    _said(answer, as_json, f"deposit of {body['amount']} for {user}")


@fund_app.command()
def withdraw(
    fund_arg: FundArg = None,
    user_arg: Annotated[
        str | None, typer.Argument(metavar="USER", help="The user who withdraws.", show_default=False)
    ] = None,
    amount_arg: Annotated[
        str | None,
        typer.Argument(metavar="AMOUNT", help="What the user receives after fees.", show_default=False),
    ] = None,
    fund_opt: FundOpt = None,
    user_opt: UserOpt = None,
    amount_opt: AmountOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Withdraw everything the user holds.")] = False,
    reference: Reference = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Ask for a withdrawal: AMOUNT of the quote after fees, or --all; paid by the next cycle."""
    from rebal_cli.api import connect

    fund = _required("FUND", fund_arg, fund_opt)
    user = _required("USER", user_arg, user_opt)
    amount = _one("AMOUNT", amount_arg, amount_opt)
    if (amount is None) == (not everything):
        fail("AMOUNT: give an amount or --all (not both)")
    body = {
        "user_id": _user(user),
        "amount": None if amount is None else _amount(amount),
        "all": everything,
        "reference": _reference(reference),
    }
    answer = connect(api_url).post(f"/funds/{_fund(fund)}/withdrawals", body)
    _said(answer, as_json, f"withdrawal of {'everything' if everything else body['amount']} for {user}")


@fund_app.command()
def cycle(
    fund_arg: FundArg = None,
    fund_opt: FundOpt = None,
    rebalance: Annotated[
        bool, typer.Option("--rebalance", help="Also bring every user to the weights.")
    ] = False,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Net what is due on the fund now into one set of orders."""
    from rich.console import Console

    from rebal_cli.api import connect

    fund = _required("FUND", fund_arg, fund_opt)
    answer = connect(api_url).post(f"/funds/{_fund(fund)}/cycles", {"rebalance": rebalance})
    if as_json:
        write_json(answer)
    else:
        said = (
            f"cycle {answer['cycle_id']} started"
            if answer.get("started")
            else f"cycle asked (command {answer['command_id']}), the planner has not answered yet"
        )
        Console(highlight=False).print(f"{said}: rebal fund show {fund}")


@fund_app.command()
def define(
    fund: Annotated[str, typer.Argument(help="The fund.")],
    exchange: Annotated[str, typer.Option("--exchange", help="The venue.")],
    account: Annotated[str, typer.Option("--account", help="The account the fund trades on.")],
    quote: Annotated[str, typer.Option("--quote", help="The fund's cash asset.")],
    weights: Annotated[str, typer.Option("--weights", help="ASSET=WEIGHT,... summing to 1.")],
    prices_from: Annotated[
        str, typer.Option("--prices-from", help="The portfolio whose snapshots price it.")
    ],
    api_url: ApiUrl = None,
) -> None:
    """Define (or change) a fund's account and target weights."""
    from rich.console import Console

    from rebal_cli.api import connect

    parsed: dict[str, str] = {}
    for part in weights.split(","):
        asset, sep, raw = part.partition("=")
        value = parse_decimal(raw)
        if not sep or not asset.strip() or value is None or not 0 <= value <= 1:
            fail(f"--weights: {part!r} must be ASSET=WEIGHT with a weight between 0 and 1")
        parsed[asset.strip()] = format(value, "f")
    total = sum((Decimal(v) for v in parsed.values()), Decimal(0))
    if total != 1:
        fail(f"--weights: they sum to {total}, not 1")
    body = {
        "exchange": exchange,
        "account": account,
        "quote": quote,
        "weights": parsed,
        "prices_from": _fund(prices_from),
    }
    answer = connect(api_url).request("PUT", f"/funds/{_fund(fund)}", body=body)
    Console(highlight=False).print(f"fund {fund} defined (command {answer['command_id']})")


@fund_app.command()
def show(
    fund_arg: FundArg = None,
    fund_opt: FundOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """The fund's status, each user's amounts, the totals, the flows waiting and the recent cycles."""
    from rich.console import Console
    from rich.table import Table

    from rebal_cli.api import connect

    fund = _required("FUND", fund_arg, fund_opt)
    params = {"user": None if user is None else _user(user)}
    data = connect(api_url).get(f"/funds/{_fund(fund)}", params)
    if as_json:
        write_json(data)
        return
    console = Console(highlight=False)
    weights = ", ".join(f"{a} {w}" for a, w in data["weights"].items())
    status = data["status"] + (f" ({data['reason']})" if data["reason"] else "")
    console.print(
        f"fund {data['fund_id']} on {data['exchange']} {data['account']}: {status}; weights {weights}"
    )
    assets = list(data["totals"]) or [data["quote"]]
    table = Table(title=f"Ledger ({len(data['users'])} users)")
    table.add_column("user")
    for asset in assets:
        table.add_column(asset, justify="right")
    for name, amounts in data["users"].items():
        table.add_row(name, *(amounts.get(asset, "0") for asset in assets))
    table.add_row("[bold]total[/]", *(data["totals"].get(asset, "0") for asset in assets))
    console.print(table)
    check = data.get("reconciliation")
    if check is not None:
        extra = ", ".join(f"{a} {v}" for a, v in check["unattributed"].items()) or "none"
        short = ", ".join(f"{a} {v}" for a, v in check["missing"].items()) or "none"
        console.print(f"venue at {check['snapshot_at']}: unattributed {extra}; missing {short}")
    if data.get("drift") is not None:
        drift = ", ".join(f"{a} {percent_text(v)}" for a, v in data["drift"].items())
        console.print(f"drift from the weights (dust left out): {drift}")
        if data["dust"]:
            console.print(f"dust held by {len(data['dust'])} users (too small to sell alone)")
    for flow in data["flows"]:
        console.print(
            f"{flow['status']}: {flow['kind']} of {flow['amount'] or 'everything'} for {flow['user_id']}"
        )
    for item in data["cycles"][:3]:
        console.print(cycle_line(item, data["quote"]), markup=False)


def cycle_line(cycle: dict[str, Any], quote: str) -> str:
    """One cycle as the operator reads it: what it planned and what really traded (a cycle whose orders
    all failed says it traded nothing), the fees to the quote's precision, the executor's reasons."""
    from rebal_cli.render import number

    report = cycle.get("report") or {}
    traded = cycle.get("traded") or {}
    line = f"cycle {cycle['cycle_id']}: {cycle['status']} (phase {cycle['phase']})"
    if not report:
        return line
    planned, filled = int(report.get("orders") or 0), int(traded.get("orders") or 0)
    if planned == 0:
        line += ", nothing to trade"
    elif filled == 0:
        line += f", nothing traded: {planned} orders planned, none filled"
    else:
        line += f", {filled} of {planned} orders filled"
    line += f" for {report.get('user_orders')} user legs"
    line += f", fees {money_text(str(report.get('fees') or 0), quote)} {quote}"
    other = report.get("unallocated_fees") or {}
    if other:
        line += " (not charged to users: " + ", ".join(f"{number(f)} {a}" for a, f in other.items()) + ")"
    reasons = report.get("reasons") or []
    if reasons:
        line += "; " + "; ".join(reasons)
    return line


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.add_typer(fund_app, name="fund")

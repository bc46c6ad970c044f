"""The autopilot's commands: `rebal trigger` (a policy evaluated on files, no server) and `rebal policy`.

    rebal trigger --real REAL --target TARGET --prices PRICES --policy POLICY --now TIME
                  [--last-rebalance TIME] [--json]
    rebal policy show (--portfolio P | --fund F) [--json]
    rebal policy set FILE (--portfolio P | --fund F) [--author A] [--note N] [--json]
    rebal policy history (--portfolio P | --fund F) [--json]

`rebal trigger` answers whatever the decision with exit 0 (docs/formats.md, "rebal trigger"); bad input is
exit 2 with one line naming the file and the key. `rebal policy` reads and sets the policy the running
system follows, over the monitor's API (`GET/PUT /portfolio/policy`, `/funds/{fund}/policy`); a file is
checked here first, so a bad one is refused naming its key before anything is sent.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from rebal_cli.support import fail, write_json

policy_app = typer.Typer(
    help="The autopilot's policy: when Rebal rebalances by itself.", no_args_is_help=True
)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ApiUrl = Annotated[str | None, typer.Option("--api-url", envvar="REBAL__API__URL", help="The monitor's API.")]
PortfolioOpt = Annotated[str | None, typer.Option("--portfolio", help="The portfolio whose policy it is.")]
FundOpt = Annotated[str | None, typer.Option("--fund", help="The fund whose cycle schedule it is.")]


def _instant(raw: str, option: str) -> int:
    from rebal.trigger import parse_instant

    try:
        return parse_instant(raw)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def trigger(
    real: Annotated[Path, typer.Option("--real", help="The real tree (JSON, YAML or TOML).")],
    target: Annotated[Path, typer.Option("--target", help="The desired tree with weights.")],
    prices: Annotated[Path, typer.Option("--prices", help='Prices: {"quote": "USD", "prices": {...}}.')],
    policy: Annotated[Path, typer.Option("--policy", help="The autopilot policy (docs/formats.md).")],
    now: Annotated[str, typer.Option("--now", help="When to evaluate: ISO 8601 (2024-06-05T12:00:00Z).")],
    last_rebalance: Annotated[
        str | None,
        typer.Option("--last-rebalance", help="When the last completed rebalance ended (ISO 8601)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Evaluate a policy on files: whether the autopilot would rebalance now, of which kind, and why.

    Exit 0 whatever the answer; 2 on bad input (naming the file and the key)."""
    from rebal.core.errors import InputError
    from rebal.core.market import Prices
    from rebal.core.policy import evaluate_trees
    from rebal.core.tree import parse_tree
    from rebal.io import FileError, load
    from rebal.policy import load_policy
    from rebal.trigger import decision_json

    at = _instant(now, "--now")
    last = None if last_rebalance is None else _instant(last_rebalance, "--last-rebalance")
    if last is not None and last > at:
        fail(f"--last-rebalance: {last_rebalance} is later than --now {now}")
    try:
        document = load_policy(policy)
        price_table = load(prices, Prices.parse)
        real_tree = load(real, lambda doc: parse_tree(doc, "real"))
        target_tree = load(target, lambda doc: parse_tree(doc, "target"))
    except FileError as exc:
        fail(str(exc))
    try:
        decision = evaluate_trees(
            real_tree, target_tree, price_table, document.to_policy(), now=at, last_rebalance=last
        )
    except InputError as exc:
        source = {"real": real, "target": target, "prices": prices}.get(exc.source)
        fail(f"{source}: {exc}" if source is not None else str(exc))
    answer = decision_json(decision)
    if as_json:
        write_json(answer)
        return
    _print_decision(answer)


def _print_decision(answer: dict[str, Any]) -> None:
    from rich.console import Console

    from rebal_cli.ops import when
    from rebal_cli.render import percent

    out = Console(highlight=False, soft_wrap=True)
    if answer["rebalance"]:
        out.print(f"rebalance: {answer['kind']}", markup=False)
    else:
        blocked = f" (blocked by {answer['blocked_by']})" if answer["blocked_by"] else ""
        out.print(f"no rebalance{blocked}", markup=False)
    for reason in answer["reasons"]:
        out.print(f"  {reason}", markup=False)
    for breach in answer["breaches"]:
        out.print(
            f"  breach {breach['path']}: weight {percent(breach['current_weight'])} for"
            f" {percent(breach['desired_weight'])} ({breach['band']} limit {percent(breach['limit'])})",
            markup=False,
        )
    if answer["next_scheduled"]:
        out.print(f"  next scheduled check {when(answer['next_scheduled'])}", markup=False)


def _owner(portfolio: str | None, fund: str | None) -> tuple[str, dict[str, str]]:
    """The API path of the policy and its query: exactly one of --portfolio and --fund."""
    from rebal.subjects import TOKEN

    if (portfolio is None) == (fund is None):
        fail("name the policy's owner: --portfolio P or --fund F (one of them)")
    owner = portfolio if portfolio is not None else fund
    assert owner is not None
    if not TOKEN.match(owner):
        option = "--portfolio" if portfolio is not None else "--fund"
        fail(f"{option}: {owner!r} must be 1-64 letters, digits, '_' or '-'")
    if portfolio is not None:
        return "/portfolio/policy", {"portfolio_id": portfolio}
    return f"/funds/{fund}/policy", {}


@policy_app.command("show")
def show(
    portfolio: PortfolioOpt = None, fund: FundOpt = None, api_url: ApiUrl = None, as_json: AsJson = False
) -> None:
    """The policy in force (its version, who set it and when) and what the autopilot last decided."""
    from rebal_cli.api import connect

    path, params = _owner(portfolio, fund)
    answer = connect(api_url).get(path, params)
    if as_json:
        write_json(answer)
        return
    _print_policy(answer)


@policy_app.command("set")
def set_policy(
    file: Annotated[Path, typer.Argument(help="The policy (TOML, YAML or JSON; docs/formats.md).")],
    portfolio: PortfolioOpt = None,
    fund: FundOpt = None,
    author: Annotated[
        str | None, typer.Option("--author", help="Who sets it (default: your user name).")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why, kept with the version.")] = "",
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Set the policy from FILE: checked here, then stored as a new version (who, when, what changed)."""
    from rich.console import Console

    from rebal.io import FileError
    from rebal.policy import load_fund_policy, load_policy
    from rebal_cli.api import connect

    path, params = _owner(portfolio, fund)
    try:
        document = (
            load_policy(file).document() if portfolio is not None else load_fund_policy(file).document()
        )
    except FileError as exc:
        fail(str(exc))
    body = {"policy": document, "author": author or _user(), "note": note}
    answer = connect(api_url).request("PUT", path, body=body, params=params)
    if as_json:
        write_json(answer)
        return
    out = Console(highlight=False, soft_wrap=True)
    changes = answer.get("changes") or []
    what = "; ".join(_change_text(change) for change in changes) or "no change"
    out.print(f"policy version {answer['version']} set by {answer['author']}: {what}", markup=False)


@policy_app.command("history")
def history(
    portfolio: PortfolioOpt = None, fund: FundOpt = None, api_url: ApiUrl = None, as_json: AsJson = False
) -> None:
    """Every version of the policy, newest first: who set it, when, and what changed."""
    from rich.console import Console

    from rebal_cli.api import connect

    path, params = _owner(portfolio, fund)
    answer = connect(api_url).get(f"{path}/history", params)
    if as_json:
        write_json(answer)
        return
    out = Console(highlight=False, soft_wrap=True)
    for version in answer["versions"]:
        what = "; ".join(_change_text(change) for change in version["changes"]) or "no change"
        note = f" ({version['note']})" if version["note"] else ""
        out.print(
            f"v{version['version']}  {version['created_at']}  {version['author']}{note}: {what}", markup=False
        )


def _user() -> str:
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):
        return "operator"


def _change_text(change: dict[str, Any]) -> str:
    if change["from"] is None:
        return f"{change['key']} = {change['to']}"
    if change["to"] is None:
        return f"{change['key']} removed (was {change['from']})"
    return f"{change['key']} {change['from']} -> {change['to']}"


def _print_policy(answer: dict[str, Any]) -> None:
    from rich.console import Console

    from rebal_cli.ops import when
    from rebal_cli.render import percent

    out = Console(highlight=False, soft_wrap=True)
    owner = answer.get("portfolio_id") or answer.get("fund_id")
    if answer.get("version") is None:
        out.print(f"{owner}: no policy set (the autopilot does nothing)", markup=False)
        return
    out.print(
        f"{owner}: policy version {answer['version']}, set by {answer['author']}"
        f" at {when(answer['created_at'])}",
        markup=False,
    )
    for key, value in answer["policy"].items():
        # Drift bands are fractions: shown as the percentages they were set as ("2%", not 0.02).
        shown = percent(value) if key.startswith("drift_") and isinstance(value, int | float | str) else value
        out.print(f"  {key} = {shown}", markup=False)
    status = answer.get("status") or {}
    if status.get("next_scheduled"):
        out.print(f"  next scheduled check {when(status['next_scheduled'])}", markup=False)
    decision = answer.get("last_decision")
    if decision:
        out.print(f"  last decision at {when(decision['decided_at'])}: {decision['summary']}", markup=False)
        for reason in decision["reasons"]:
            out.print(f"    {reason}", markup=False)
    for band in status.get("drift", []):
        out.print(
            f"  {band['path']}: weight {percent(band['current_weight'])}"
            f" for {percent(band['desired_weight'])}, drift {percent(band['drift'])}"
            f" of {percent(band['limit'])} ({band['band']})",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add `rebal trigger` and `rebal policy` to the `rebal` app."""
    app.command("trigger")(trigger)
    app.add_typer(policy_app, name="policy")

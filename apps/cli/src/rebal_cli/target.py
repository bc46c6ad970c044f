"""`rebal target`: a portfolio's desired tree, managed through the monitor's API (docs/cli.md).

    rebal target show [--portfolio P] [--json]          the target in force, where it came from
    rebal target diff FILE [--portfolio P] [--json]     what setting FILE would trade now (stores nothing)
    rebal target set FILE [--portfolio P] [--author A] [--note N] [--json]
    rebal target history [--portfolio P] [--json]       every version the operators set
    rebal target rollback VERSION [--portfolio P] [--author A] [--note N] [--json]

FILE is a target file as `rebal plan --target` reads it (JSON or YAML, docs/formats.md), checked here
first (a bad node exits 2 naming the file and the node) and again by the API against the latest snapshot.
`set` and `rollback` store a new version (with its author and time) and publish it as the portfolio's
target: the next rebalance trades it. Precedence: the operators' latest version replaces the optimizer's
target file; a portfolio with an allocation keeps having its strategy nodes' weights set by the
optimizer within it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rebal_cli.ops import ApiUrl, AsJson, PortfolioOpt, when
from rebal_cli.support import fail, write_json

if TYPE_CHECKING:
    from rich.tree import Tree as RichTree

target_app = typer.Typer(help="A portfolio's desired tree: show, preview, set, history, roll back.",
                         no_args_is_help=True)  # fmt: skip
File = Annotated[Path, typer.Argument(help="A target file (JSON or YAML), as `rebal plan --target` reads.")]
Author = Annotated[
    str | None, typer.Option("--author", help="Who sets it (kept with the version; default: user@host).")
]
Note = Annotated[str, typer.Option("--note", help="Why (kept with the version).")]


def _author(given: str | None) -> str:
    if given is not None:
        if not given.strip() or len(given) > 128:
            fail(f"--author: {given!r} must be 1-128 characters")
        return given.strip()
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"[:128]
    except (OSError, KeyError):
        return "operator"


def _tree(file: Path) -> dict[str, Any]:
    from rebal.core.tree import parse_tree
    from rebal.io import FileError, load

    try:
        document = load(file, lambda doc: (parse_tree(doc, "target"), doc)[1])
    except FileError as exc:
        fail(str(exc))
    if not isinstance(document, dict):
        fail(f"{file}: a desired tree must be a mapping")
    return document


def _params(portfolio: str | None, **more: Any) -> dict[str, Any]:
    return {"portfolio_id": portfolio, **more}


def _weights(node: dict[str, Any], parent: RichTree | None = None) -> RichTree:
    from rich.markup import escape
    from rich.tree import Tree as RichTree

    label = f"[bold]{escape(str(node.get('name', '?')))}[/]"
    if "weight" in node:
        label += f" {escape(str(node['weight']))}"
    if "asset" in node:
        label += f"  [cyan]{escape(str(node['asset']))}[/]"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node.get("children") or ():
        _weights(child, branch)
    return branch


def print_preview(preview: dict[str, Any]) -> None:
    """What a new target would trade now: orders, transfers, skips, and the shown nodes' shares."""
    from rich.markup import escape
    from rich.table import Table

    from rebal_cli.render import console, percent, print_plan

    out = console()
    if preview.get("snapshot_id") is None:
        out.print("no snapshot yet: nothing to compare the tree with (it is valid)")
        return
    print_plan({**preview, "orders": preview["orders"], "skipped": preview["skipped"]}, out=out)
    table = Table(title="Shares of the portfolio (of the whole)")
    table.add_column("path", overflow="fold")
    table.add_column("now", justify="right")
    table.add_column("new target", justify="right")
    for row in preview.get("weights") or ():
        table.add_row(escape(row["path"]), percent(row["actual_share"]), percent(row["target_share"]))
    out.print(table)


@target_app.command()
def show(portfolio: PortfolioOpt = None, api_url: ApiUrl = None, as_json: AsJson = False) -> None:
    """The target in force: its tree, where it came from (a file, the optimizer, an operator's version)."""
    from rebal_cli.api import connect
    from rebal_cli.render import console

    data = connect(api_url).get("/portfolio/targets", _params(portfolio))
    if as_json:
        write_json(data)
        return
    manual = data.get("manual")
    origin = data.get("source") or "?"
    if manual is not None:
        at = when(manual["created_at"])
        origin += f"; the operators' version {manual['version']} by {manual['author']} at {at}"
    out = console()
    out.print(f"target of {data['portfolio_id']} ({data['target_id']}), published {when(data['as_of'])}")
    out.print(f"from {origin}", markup=False)
    out.print(_weights(data["tree"]))


@target_app.command()
def diff(file: File, portfolio: PortfolioOpt = None, api_url: ApiUrl = None, as_json: AsJson = False) -> None:
    """What setting FILE as the target would trade now; stores and sends nothing."""
    from rebal_cli.api import connect
    from rebal_cli.render import console

    tree = _tree(file)
    answer = connect(api_url).request(
        "PUT", "/portfolio/targets", body={"tree": tree}, params=_params(portfolio, dry_run="true")
    )
    if as_json:
        write_json(answer)
        return
    print_preview(answer["preview"])
    console().print(f"nothing stored: rebal target set {file} makes it the target")


@target_app.command("set")
def set_target(
    file: File,
    portfolio: PortfolioOpt = None,
    author: Author = None,
    note: Note = "",
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Make FILE the portfolio's target: a new version, published; the next rebalance trades it."""
    from rebal_cli.api import connect

    tree = _tree(file)
    body = {"tree": tree, "author": _author(author), "note": note}
    answer = connect(api_url).request("PUT", "/portfolio/targets", body=body, params=_params(portfolio))
    _said(answer, as_json)


@target_app.command()
def rollback(
    version: Annotated[int, typer.Argument(help="The version whose tree becomes the target again.")],
    portfolio: PortfolioOpt = None,
    author: Author = None,
    note: Note = "",
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Make an older version's tree the target again (as a new version)."""
    from rebal_cli.api import connect

    if version < 1:
        fail(f"VERSION: {version} must be >= 1")
    body = {"version": version, "author": _author(author), "note": note}
    answer = connect(api_url).post("/portfolio/targets/rollback", body, params=_params(portfolio))
    _said(answer, as_json)


def _said(answer: dict[str, Any], as_json: bool) -> None:
    from rebal_cli.render import console

    if as_json:
        write_json(answer)
        return
    print_preview(answer["preview"])
    state = (
        "published as the target: the next rebalance trades it"
        if answer["published"]
        else "stored; the optimizer has not published it yet (is it running?)"
    )
    console().print(
        f"version {answer['version']} of {answer['portfolio_id']} by {answer['author']}: {state}",
        markup=False,
    )


@target_app.command()
def history(portfolio: PortfolioOpt = None, api_url: ApiUrl = None, as_json: AsJson = False) -> None:
    """Every version the operators set, newest first: who, when, why."""
    from rebal_cli.api import connect
    from rebal_cli.render import console

    data = connect(api_url).get("/portfolio/targets/history", _params(portfolio))
    if as_json:
        write_json(data)
        return
    lines = [f"Target versions of {data['portfolio_id']} ({len(data['versions'])})"]
    for item in data["versions"]:
        based = f" (the tree of version {item['based_on']})" if item.get("based_on") else ""
        lines.append(f"v{item['version']}  {when(item['created_at'])}  {item['author']}{based}")
        if item.get("note"):
            lines.append(f"    {item['note']}")
    console().print("\n".join(lines), markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.add_typer(target_app, name="target")

"""How `rebal` shows a plan and a run's outcome: one renderer, wherever the plan comes from.

A plan reaches the operator three ways: `rebal plan` makes it from files (its JSON, docs/formats.md),
`rebal plan --portfolio`/`apply` get the API's stored plan, and `rebal rebalance` (and `make run`'s first
rebalance) receive the planner's `RebalancePlanned` event. All three carry the same orders and skips
(`rebal.events.PlannedOrder`, `SkippedOrder`: the file format uses the same names) and the same
transfers, whose ends are ``from``/``to`` in the file format and ``from_account``/``to_account`` on the
bus and in the API. They are shown alike: the orders, the transfers, every skip with its reason; the
diff tree when the plan has one (from files) and the projected weights when it has them (stored plans).

Numbers are shown as operators read them (`rebal.core.display`): order amounts exactly (whole steps of
the market), prices, costs and fees to the quote's precision, weights to two decimals of a percent; never
in exponent form (the bus's JSON may write ``8.3E-7``). Nothing is cut to fit the terminal: below
`WIDE_COLUMNS` the orders are listed per account (the account as the table's title) and a where-mode
plan's reason, saving and awaited transfer share one column, so that the numbers keep their width: a
number is never broken across lines unless even unbroken ones cannot fit (then folded, never cropped);
ids are never broken or shortened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree as RichTree

from rebal.core.display import money_text, percent_text, price_text
from rebal.core.numbers import dec_str

if TYPE_CHECKING:
    from rebal_cli.commands import Outcome

JsonDict = dict[str, Any]
OPERATION_STYLE = {"buy": "green", "sell": "red", "hold": "dim"}
# Columns of short tokens, never broken.
UNBROKEN = frozenset({"phase", "side", "symbol"})
# Columns of numbers: never broken across lines (a number read as `0.999` over `8` is misread); their
# headers take a line per word instead, so that a column is as wide as its numbers.
NUMBERS = frozenset(
    {
        "#",
        "phase",
        "amount",
        "est. price",
        "est. cost",
        "est. fee",
        "est. notional",
        "est. saving",
        "after transfer",
        "est. value",
        "fee",
        "fees",
        "spread",
        "withdrawal fees",
        "total",
        "now",
        "after",
    }
)
# Below this width the orders leave out their exchange (the account's path names it) so that the rest fits,
# and a where-mode plan's reason, saving and awaited transfer share one column (`WHY`).
WIDE_COLUMNS = 100
WHERE_COLUMNS = ("reason", "est. saving", "after transfer")
WHY = "why"


def console(stderr: bool = False) -> Console:
    return Console(highlight=False, stderr=stderr, soft_wrap=True)


def plan_counts(plan: Mapping[str, Any]) -> str:
    """ "3 orders, 1 skipped, 0 transfers": the plan's size, for a header line (with its position orders
    when it has any)."""
    positions = len(plan.get("position_orders") or ())
    return (
        f"{len(plan['orders'])} orders, "
        + (f"{positions} position orders, " if positions else "")
        + f"{len(plan['skipped'])} skipped, {len(plan.get('transfers') or ())} transfers"
    )


def print_plan(plan: Mapping[str, Any], header: str | None = None, out: Console | None = None) -> None:
    """The header (when given), then the plan's sections (`plan_sections`), wrapped to the terminal."""
    out = out or console()
    if header is not None:
        out.print(header)
    for section in plan_sections(plan, out.width):
        out.print(_fitted(section, out.width) if isinstance(section, Table) else section, soft_wrap=False)


# The fewest characters a folding column (a name, a reason) is given when deciding whether numbers fit.
FOLDED_MIN = 4


def _fitted(table: Table, width: int) -> Table:
    """The table, its numbers let fold after all when even unbroken they cannot fit in `width`: rich
    would otherwise crop every column, losing digits; a folded number is still there to read."""
    needed = 1 + sum(
        3 + (max(map(cell_len, _lines(column))) if column.no_wrap else FOLDED_MIN) for column in table.columns
    )
    if needed > width:
        for column in table.columns:
            column.no_wrap = column.no_wrap and str(column.header) in UNBROKEN
    return table


def _lines(column: Column) -> Iterable[str]:
    """The header and cells of a column as shown, line by line (markup removed)."""
    for cell in (column.header, *column.cells):
        yield from Text.from_markup(str(cell)).plain.splitlines() or [""]


def valuation_quote(plan: Mapping[str, Any]) -> str | None:
    """The currency a plan's values are in: its prices' quote (a stored plan), else the quote every order
    shares (a plan on the bus); None when unknown."""
    prices = (plan.get("inputs") or {}).get("prices") or plan.get("prices")
    if isinstance(prices, Mapping) and isinstance(prices.get("quote"), str):
        return str(prices["quote"])
    quotes = {_quote(order["symbol"]) for order in plan.get("orders") or ()}
    return quotes.pop() if len(quotes) == 1 else None


def _quote(symbol: str) -> str | None:
    _base, slash, quote = symbol.partition("/")
    return quote if slash else None


def value_text(value: Any, quote: str | None) -> str:
    """A value in the valuation currency: to its precision when it is known, else exact."""
    return money_text(str(value), quote) if quote is not None else number(value)


def print_outcome(outcome: Outcome, out: Console | None = None) -> None:
    """A rebalance command's outcome: the command sent, or why there is no plan, or the plan (header and
    sections) and, for a live run, how it ended."""
    out = out or console()
    plan, finished = outcome.plan, outcome.finished
    if plan is None:
        out.print(f"sent rebalance command {outcome.command.event_id} for {outcome.command.portfolio_id}")
        return
    from rebal.events import PlanFailed

    if isinstance(plan, PlanFailed):
        out.print(f"[red]no plan[/] for run {plan.correlation_id}: {escape(plan.reason)}")
        return
    kind = "dry-run plan" if plan.dry_run else "plan"
    shown = plan.model_dump(mode="json")
    counted = plan_counts(shown)
    value = value_text(plan.total_value, valuation_quote(shown))
    header = f"run {plan.correlation_id}: {kind} with {counted} (portfolio value {value})"
    print_plan(shown, header, out)
    if finished is not None:
        out.print(run_line(finished.status, finished.model_dump(), finished.reasons))


def plan_sections(plan: Mapping[str, Any], width: int = WIDE_COLUMNS) -> list[RenderableType]:
    """The diff tree (a plan from files), the orders, the transfers, the skips with their reasons and the
    projected weights (a stored plan); empty sections are left out, except the orders."""
    sections: list[RenderableType] = []
    quote = valuation_quote(plan)
    if plan.get("diff"):
        sections.append(diff_tree(plan["diff"]))
    sections.extend(_orders(plan["orders"], width, quote))
    if plan.get("transfers"):
        sections.append(_transfers(plan["transfers"], quote, width))
    if plan.get("position_orders") or plan.get("position_settings"):
        sections.append(_position_orders(plan.get("position_orders") or ()))
    if plan.get("position_settings"):
        sections.append(_position_settings(plan["position_settings"]))
    if plan["skipped"]:
        sections.append(_skipped(plan["skipped"]))
    if plan.get("projected_weights"):
        sections.append(_projected(plan["projected_weights"]))
    if plan.get("costs"):
        sections.append(_costs(plan["costs"], quote))
    return sections


def _costs(costs: Mapping[str, Any], quote: str | None) -> Table:
    """A where-mode plan's estimated costs (valuation currency; spreads against the reference prices)."""
    table = _table("Estimated costs", ("fees", "spread", "withdrawal fees", "total"), right=("total",))
    parts = [value_text(costs[key], quote) for key in ("fees", "spread", "withdrawal_fees")]
    # The total of the parts as shown (each rounded alone, their total might otherwise differ by a cent).
    total = value_text(sum(map(Decimal, parts)), quote) if quote is not None else number(costs["total"])
    table.add_row(*parts, total)
    return table


def _table(title: str, columns: Sequence[str], right: Iterable[str] = ()) -> Table:
    """Names and reasons fold onto more lines when the terminal is narrow; numbers and short tokens never
    break (a number's header takes a line per word)."""
    table = Table(title=title)
    aligned = set(right)
    for column in columns:
        table.add_column(
            column.replace(" ", "\n") if column in NUMBERS else column,
            justify="right" if column in aligned else "left",
            overflow="fold",
            no_wrap=column in UNBROKEN or column in NUMBERS,
        )
    return table


def _side(side: str) -> str:
    return f"[{OPERATION_STYLE.get(side, 'dim')}]{side}[/]"


def _orders(orders: Sequence[Mapping[str, Any]], width: int, valuation: str | None = None) -> list[Table]:
    """One table of every order, or, below `WIDE_COLUMNS`, one per account (titled with the account, so
    that the numbers keep their width)."""
    money: tuple[str, ...] = ("amount", "est. price", "est. cost", "est. fee")
    if orders and orders[0].get("reason") is not None:  # a where-mode plan says why and what it saves
        money = (*money, *(WHERE_COLUMNS if width >= WIDE_COLUMNS else (WHY,)))
    if width >= WIDE_COLUMNS or not orders:
        names: tuple[str, ...] = ("phase", "account", "exchange", "symbol", "side")
        table = _table(
            f"Orders ({len(orders)})",
            (*names, *money),
            right=("phase", *(name for name in money if name != WHY)),
        )
        for order in orders:
            table.add_row(*_order_cells(order, names, valuation, WHY not in money))
        return [table]
    accounts: dict[str, list[Mapping[str, Any]]] = {}
    for order in orders:
        accounts.setdefault(order["account"], []).append(order)
    tables = []
    for account, held in accounts.items():
        names = ("phase", "symbol", "side")
        title = f"Orders ({len(orders)})" + ("" if len(accounts) == 1 else f": {len(held)}")
        table = _table(
            f"{title} on {escape(account)}",
            (*names, *money),
            right=("phase", *(name for name in money if name != WHY)),
        )
        for order in held:
            table.add_row(*_order_cells(order, names, valuation, WHY not in money))
        tables.append(table)
    return tables


def _position_orders(orders: Sequence[Mapping[str, Any]]) -> Table:
    """The futures accounts' orders: reduce-only ones (phase 1) before the ones that open or increase."""
    money = ("amount", "est. price", "est. notional", "est. fee")
    names = ("phase", "account", "symbol", "side", "reduce-only")
    table = _table(
        f"Position orders ({len(orders)})",
        (*names, *money),
        right=("phase", *(name for name in money if name != WHY)),
    )
    for order in orders:
        quote = _perpetual_quote(order["symbol"])
        table.add_row(
            str(order["phase"]),
            escape(order["account"]),
            escape(order["symbol"]),
            _side(order["side"]),
            "yes" if order["reduce_only"] else "no",
            number(order["amount"]),
            price_text(str(order["est_price"]), quote),
            money_text(str(order["est_notional"]), quote),
            money_text(str(order["est_fee"]), quote),
        )
    return table


def _position_settings(settings: Sequence[Mapping[str, Any]]) -> Table:
    """What is set on each symbol before its opening order (blank: left as it is)."""
    table = _table(f"Position settings ({len(settings)})", ("account", "symbol", "leverage", "margin mode"))
    for setting in settings:
        leverage, mode = setting.get("leverage"), setting.get("margin_mode")
        table.add_row(
            escape(setting["account"]),
            escape(setting["symbol"]),
            "" if leverage is None else f"{leverage}x",
            "" if mode is None else str(mode),
        )
    return table


def _perpetual_quote(symbol: str) -> str | None:
    """``BTC/USDT:USDT`` -> USDT (a perpetual's quote, which it settles in)."""
    return _quote(symbol.partition(":")[0])


def _order_cells(
    order: Mapping[str, Any], names: Sequence[str], valuation: str | None = None, wide: bool = True
) -> list[str]:
    quote = _quote(order["symbol"])
    cells = {
        "phase": str(order["phase"]),
        "account": escape(order["account"]),
        "exchange": escape(order["exchange"]),
        "symbol": escape(order["symbol"]),
        "side": _side(order["side"]),
    }
    made = [
        *(cells[name] for name in names),
        number(order["amount"]),
        price_text(str(order["est_price"]), quote),
        money_text(str(order["est_cost"]), quote),
        money_text(str(order["est_fee"]), quote),
    ]
    if order.get("reason") is not None:
        after = order.get("after_transfer")
        saving = value_text(order["est_saving"], valuation)  # the valuation currency, to its precision
        if wide:
            made += [escape(order["reason"]), saving, "" if after is None else str(after)]
        else:
            made.append(_why(order["reason"], saving, after))
    return made


def _why(reason: str, saving: str, after: int | None = None) -> str:
    """A where-mode leg's reason, saving and the transfer it waits for, in one cell of a line each (the
    narrow view: three columns more would break the numbers)."""
    lines = [escape(reason), f"saving {saving}"]
    return "\n".join(lines if after is None else [*lines, f"after #{after}"])


def _transfers(transfers: Sequence[Mapping[str, Any]], quote: str | None, width: int = WIDE_COLUMNS) -> Table:
    noted = transfers[0].get("reason") is not None
    wide = width >= WIDE_COLUMNS
    columns: tuple[str, ...] = (
        ("#", "asset", "from", "to", "amount", "est. value")
        if noted
        else ("asset", "from", "to", "amount", "est. value")
    )
    if noted:
        columns = (*columns, "network", "fee", *(("reason", "est. saving") if wide else (WHY,)))
    table = _table(f"Transfers ({len(transfers)})", columns)
    for index, transfer in enumerate(transfers):
        source = transfer.get("from", transfer.get("from_account"))
        destination = transfer.get("to", transfer.get("to_account"))
        cells = [
            escape(transfer["asset"]),
            escape(source),
            escape(destination),
            number(transfer["amount"]),
            value_text(transfer["est_value"], quote),
        ]
        if noted:
            network = transfer.get("network")
            cells = [str(index), *cells, escape(network or "-"), number(transfer["fee"])]
            saving = value_text(transfer["est_saving"], quote)
            reason = transfer["reason"]
            cells += [escape(reason), saving] if wide else [_why(reason, saving)]
        table.add_row(*cells)
    return table


def _skipped(skipped: Sequence[Mapping[str, Any]]) -> Table:
    table = _table(f"Skipped ({len(skipped)})", ("path", "symbol", "side", "amount", "reason"))
    for skip in skipped:
        table.add_row(
            escape(skip["path"]),
            escape(skip["symbol"]),
            skip["side"],
            number(skip["amount"]),
            escape(skip["reason"]),
        )
    return table


def _projected(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Projected weights (of the parent)", ("path", "now", "after"), right=("now", "after"))
    for row in rows:
        table.add_row(escape(row["path"]), percent(row["current_weight"]), percent(row["projected_weight"]))
    return table


def number(value: Any) -> str:
    """An exact decimal as plain text, whichever way it came (the bus and the API may write 8.3E-7)."""
    return dec_str(Decimal(str(value)))


def percent(weight: Any) -> str:
    """A weight (an exact decimal string) as a percentage with two decimals; "-" when there is none."""
    return percent_text(None if weight is None else str(weight))


def diff_tree(node: JsonDict, parent: RichTree | None = None) -> RichTree:
    """The diff tree of `rebal plan`'s JSON: per node, weights and values now and desired, the operation."""
    op = node["operation"]
    label = (
        f"[bold]{escape(node['name'])}[/] "
        f"{percent(node['current_weight'])} → {percent(node['desired_weight'])}  "
        f"{node['current_value']} → {node['desired_value']}  "
        f"[{OPERATION_STYLE[op]}]{op} {node['diff_value']}[/]"
    )
    if "asset" in node:
        label += f"  [cyan]{escape(node['asset'])}[/] {node['current_amount']} → {node['desired_amount']}"
        if Decimal(node["locked_amount"]):
            label += f" (locked {node['locked_amount']})"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node["children"]:
        diff_tree(child, branch)
    return branch


def real_tree(node: JsonDict, parent: RichTree | None = None) -> RichTree:
    """A real tree as `rebal tree show --json` gives it: assets, amounts, locks by owner and what is free."""
    label = f"[bold]{escape(node['name'])}[/]"
    if "kind" in node:
        label += f" [dim]({escape(node['kind'])})[/]"
    if "quote" in node:
        label += f" quote {escape(node['quote'])}"
    if "asset" in node:
        label += f"  [cyan]{escape(node['asset'])}[/] {node['amount']}"
        if "locks" in node:
            locks = escape(", ".join(f"{lock['owner']} {lock['amount']}" for lock in node["locks"]))
            label += f"  [yellow]locked {node['locked_amount']}[/] ({locks}), free {node['free_amount']}"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node.get("children", []):
        real_tree(child, branch)
    return branch


def run_line(status: str, counts: Mapping[str, Any], reasons: Sequence[str] = ()) -> str:
    """How a run ended: "completed: 3 placed, 3 filled, 0 skipped, 0 failed (reasons)"; green when it
    completed, yellow when it completed with adjustments, red for every other end."""
    style = "green" if status == "completed" else "yellow" if status.startswith("completed") else "red"
    return (
        f"[{style}]{status}[/]: {counts.get('placed', 0)} placed, {counts.get('filled', 0)} filled, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed"
        + (f" ({escape('; '.join(reasons))})" if reasons else "")
    )

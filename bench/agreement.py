"""Running the real planner on documents and comparing it with the reference (bench/reference.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import parse_tree

Doc = dict[str, Any]
OrderKey = tuple[str, str, str, Decimal]


def run_ours(
    real: Doc,
    target: Doc,
    prices: Doc,
    markets: Doc | None,
    band: Decimal = Decimal(0),
    invest: Decimal = Decimal(0),
    withdraw: Decimal = Decimal(0),
) -> tuple[DiffTree, Plan]:
    diff = diff_trees(
        parse_tree(real, "real"),
        parse_tree(target, "target"),
        Prices.parse(prices),
        band=float(band),
        invest=float(invest),
        withdraw=float(withdraw),
    )
    return diff, plan_rebalance(diff, Markets.parse(markets))


def our_orders(plan: Plan) -> list[OrderKey]:
    return [(o.account, o.symbol, o.side, o.amount) for o in plan.orders()]


def reference_orders(result: dict[str, Any]) -> list[OrderKey]:
    return [(o["account"], o["symbol"], o["side"], o["amount"]) for o in result["orders"]]


def scaled_steps(result: dict[str, Any]) -> dict[tuple[str, str, str], Decimal]:
    """The step of every reference buy that was scaled down to its account's budget."""
    return {(o["account"], o["symbol"], o["side"]): o["step"] for o in result["orders"] if o.get("scaled")}


def order_differences(
    ours: list[OrderKey],
    reference: list[OrderKey],
    slack: dict[tuple[str, str, str], Decimal] | None = None,
    limit: int = 10,
) -> list[str]:
    """Where the two order lists differ (same account, symbol, side; amounts equal as decimals).

    `slack` (see `scaled_steps`) lets a budget-scaled buy of ours be one step under the reference: the
    core scales to ``budget x (1 - BUDGET_SAFETY)`` (float sums must never overspend the exact budget),
    the reference to the exact budget, so a product landing just above a whole step rounds differently.
    """
    slack = slack or {}
    lines: list[str] = []
    mine = {key[:3]: key[3] for key in ours}
    theirs = {key[:3]: key[3] for key in reference}
    for key in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(key), theirs.get(key)
        if a is not None and b is not None and (a == b or (key in slack and a == b - slack[key])):
            continue
        lines.append(f"{' '.join(key)}: ours {a}, reference {b}")
    if not lines and [key[:3] for key in ours] != [key[:3] for key in reference]:
        lines.append("same orders in a different sequence")
    return lines[:limit] if limit else lines


def one_step_under(ours: list[OrderKey], reference: list[OrderKey]) -> int:
    """How many of our orders are not equal to the reference's (after `order_differences` accepted them)."""
    theirs = {key[:3]: key[3] for key in reference}
    return sum(1 for key in ours if key[:3] in theirs and theirs[key[:3]] != key[3])


def desired_differences(
    diff: DiffTree, reference_diff: dict[str, tuple[Decimal, Decimal]], rel: float = 1e-6, limit: int = 10
) -> list[str]:
    """Paths whose desired value differs by more than `rel` (relative; near zero, relative to the total)."""
    paths = diff.tree.paths()
    desired = diff.desired_value.tolist()
    floor = rel * 1e-3 * diff.scale
    lines: list[str] = []
    if set(paths) != set(reference_diff):
        lines.append(f"different node sets: {sorted(set(paths) ^ set(reference_diff))[:5]}")
    for path, value in zip(paths, desired, strict=True):
        if path not in reference_diff:
            continue
        expected = float(reference_diff[path][1])
        if abs(value - expected) > max(rel * abs(expected), floor):
            lines.append(f"{path}: desired ours {value!r}, reference {expected!r}")
    return lines[:limit] if limit else lines

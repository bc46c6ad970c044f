"""Small builders for tree documents and a one-call planner for tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.networks import Networks
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import parse_tree
from rebal.render import plan_json

Doc = dict[str, Any]


def wallet(name: str, asset: str, amount: str | None = None, **extra: Any) -> Doc:
    node: Doc = {"name": name, "asset": asset, **extra}
    if amount is not None:
        node["amount"] = amount
    return node


def folder(name: str, *children: Doc, **extra: Any) -> Doc:
    return {"name": name, "children": list(children), **extra}


def account(name: str, *children: Doc, quote: str = "USDT", exchange: str = "ex", **extra: Any) -> Doc:
    return {
        "name": name,
        "kind": "account",
        "quote": quote,
        "exchange": exchange,
        "children": list(children),
        **extra,
    }


def prices(**values: str) -> Doc:
    return {"quote": "USD", "prices": {"USDT": "1", **values}}


def run(
    real: Doc,
    target: Doc,
    price_doc: Doc,
    markets: Doc | None = None,
    *,
    band: float = 0.0,
    invest: float = 0.0,
    withdraw: float = 0.0,
    network: Doc | None = None,
) -> tuple[DiffTree, Plan, Doc]:
    diff = diff_trees(
        parse_tree(real, "real"),
        parse_tree(target, "target"),
        Prices.parse(price_doc),
        band=band,
        invest=invest,
        withdraw=withdraw,
    )
    networks = Networks.parse(network) if network is not None else None
    plan = plan_rebalance(diff, Markets.parse(markets), networks=networks)
    return diff, plan, plan_json(plan)


def nodes_by_path(node: Doc, out: dict[str, Doc] | None = None) -> dict[str, Doc]:
    out = {} if out is None else out
    out[node["path"]] = node
    for child in node["children"]:
        nodes_by_path(child, out)
    return out


def D(text: str) -> Decimal:
    return Decimal(text)

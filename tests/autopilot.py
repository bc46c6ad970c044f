"""The autopilot's worked portfolio (docs/formats.md): alice's binance spot account, 40% BTC, 30% ETH,
20% SOL and 10% USDT cash, at BTC 50,000, ETH 3,000 and SOL 200 (USD)."""

from __future__ import annotations

from typing import Any

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.policy import Bands, Decision, Policy, evaluate
from rebal.core.tree import parse_tree
from rebal.render import plan_json
from rebal.trigger import parse_instant

Doc = dict[str, Any]
PRICES: Doc = {"quote": "USD", "prices": {"BTC": "50000", "ETH": "3000", "SOL": "200", "USDT": "1"}}
TARGET: Doc = {
    "name": "alice",
    "children": [
        {
            "name": "spot",
            "weight": "100%",
            "children": [
                {"name": "btc", "asset": "BTC", "weight": "40%"},
                {"name": "eth", "asset": "ETH", "weight": "30%"},
                {"name": "sol", "asset": "SOL", "weight": "20%"},
                {"name": "usdt", "asset": "USDT", "weight": "10%"},
            ],
        }
    ],
}
ABSOLUTE_5 = Policy(bands=Bands(absolute=0.05))


def real(btc: str, eth: str, sol: str, usdt: str) -> Doc:
    """Alice's holdings (amounts of BTC, ETH, SOL and USDT)."""
    held = {"btc": ("BTC", btc), "eth": ("ETH", eth), "sol": ("SOL", sol), "usdt": ("USDT", usdt)}
    return {
        "name": "alice",
        "children": [
            {
                "name": "spot",
                "kind": "account",
                "exchange": "binance",
                "quote": "USDT",
                "children": [{"name": n, "asset": a, "amount": x} for n, (a, x) in held.items()],
            }
        ],
    }


def diff_of(real_doc: Doc, target: Doc = TARGET, prices: Doc = PRICES) -> DiffTree:
    return diff_trees(parse_tree(real_doc, "real"), parse_tree(target, "target"), Prices.parse(prices))


def decide(diff: DiffTree, policy: Policy, now: str, last: str | None = None) -> Decision:
    return evaluate(
        diff, policy, now=parse_instant(now), last_rebalance=None if last is None else parse_instant(last)
    )


def orders(diff: DiffTree | None, markets: Doc | None = None) -> list[tuple[str, str, str]]:
    """(symbol, side, amount) of every order the planner makes for the diff (there must be one)."""
    assert diff is not None, "nothing to plan"
    planned = plan_json(plan_rebalance(diff, Markets.parse(markets)))
    return [(o["symbol"], o["side"], o["amount"]) for o in planned["orders"]]

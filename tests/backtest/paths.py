"""Generated price paths and small portfolios for the backtest tests (fixed seeds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rebal.core.backtest import History
from rebal.core.market import Markets
from rebal.core.tree import Tree, parse_tree
from rebal.trigger import parse_instant

DAY = 86_400
START = parse_instant("2024-01-01T00:00:00Z")
ASSETS = ("BTC", "ETH", "SOL")


def history(rows: int = 240, seed: int = 5, vol: float = 0.04, assets: tuple[str, ...] = ASSETS) -> History:
    """Daily geometric Brownian motion from 100 per asset, prices rounded to 6 significant digits."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, vol, (rows, len(assets)))
    steps[0] = 0.0
    prices = np.array([[float(f"{p:.6g}") for p in row] for row in 100 * np.exp(np.cumsum(steps, axis=0))])
    times = START + DAY * np.arange(rows, dtype=np.int64)
    return History(times, assets, prices, "USDT")


def account(name: str, wallets: dict[str, str], exchange: str = "binance") -> dict[str, Any]:
    return {
        "name": name,
        "kind": "account",
        "exchange": exchange,
        "quote": "USDT",
        "children": [{"name": n.lower(), "asset": n, "amount": a} for n, a in wallets.items()],
    }


def real(wallets: dict[str, str]) -> dict[str, Any]:
    """Alice's one spot account holding these amounts (asset -> decimal text)."""
    return {"name": "alice", "children": [account("spot", wallets)]}


TARGET_DOC: dict[str, Any] = {
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


def target(doc: dict[str, Any] = TARGET_DOC) -> Tree:
    return parse_tree(doc, "target")


BINANCE: dict[str, Any] = {
    f"{asset}/USDT": {"amount_step": "0.0001", "min_cost": "5", "fee_rate": "0.001"} for asset in ASSETS
}
MARKETS = Markets.parse({"binance": BINANCE})

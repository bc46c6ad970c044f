"""Hypothesis strategies that generate consistent (real tree, desired tree, prices, markets) cases."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

ASSETS = ("AAA", "BBB", "CCC", "DDD", "EEE")
STEPS = ("0.0001", "0.001", "0.01", "0.1")
Doc = dict[str, Any]


@dataclass(frozen=True)
class Case:
    real: Doc
    target: Doc
    prices: Doc
    markets: Doc


def decimals(low: str, high: str, places: int) -> st.SearchStrategy[str]:
    return st.decimals(Decimal(low), Decimal(high), places=places, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d, "f")
    )


def split_weights(draw: st.DrawFn, count: int, floor_share: int = 0) -> list[str]:
    """`count` percentages in basis points that sum to exactly 100%."""
    if count == 0:
        return []
    cuts = sorted(
        draw(st.lists(st.integers(0, 10_000 - floor_share), min_size=count - 1, max_size=count - 1))
    )
    bounds = [0, *cuts, 10_000 - floor_share]
    parts = [bounds[i + 1] - bounds[i] for i in range(count)]
    parts[-1] += floor_share
    return [f"{part / 100}%" for part in parts]


@st.composite
def cases(
    draw: st.DrawFn,
    max_accounts: int = 3,
    fees: bool = True,
    minimums: bool = True,
    locks: bool = True,
    cash_share: int = 0,
) -> Case:
    """Accounts (quote USDT) with sectors of wallets; each asset at most once per account.

    `cash_share` (basis points) reserves at least that share of each account for its USDT wallet.
    """
    n_accounts = draw(st.integers(1, max_accounts))
    real_accounts: list[Doc] = []
    target_accounts: list[Doc] = []
    for a in range(n_accounts):
        assets = draw(st.lists(st.sampled_from(ASSETS), min_size=0, max_size=len(ASSETS), unique=True))
        wallets: list[Doc] = []
        for asset in assets:
            node: Doc = {"name": asset.lower(), "asset": asset, "amount": draw(decimals("0", "50", 4))}
            if locks and draw(st.booleans()) and Decimal(node["amount"]) > 0:
                if draw(st.booleans()):
                    node["locks"] = [{"owner": "bot", "share": draw(decimals("0", "0.9", 2))}]
                else:
                    node["locks"] = [{"owner": "bot", "amount": format(Decimal(node["amount"]) / 3, ".4f")}]
            wallets.append(node)
        cash = {"name": "cash", "asset": "USDT", "amount": draw(decimals("0", "5000", 2))}
        split = draw(st.integers(0, len(wallets)))
        real_children: list[Doc] = [
            {"name": "s1", "kind": "sector", "children": wallets[:split]},
            {"name": "s2", "kind": "sector", "children": wallets[split:]},
            cash,
        ]
        real_accounts.append(
            {
                "name": f"acc{a}",
                "kind": "account",
                "exchange": f"ex{a % 2}",
                "quote": "USDT",
                "children": real_children,
            }
        )
        # The desired tree: some wallets dropped (sold), some new assets bought.
        listed = [w for w in assets if draw(st.booleans()) or draw(st.booleans())]
        new = [x for x in ASSETS if x not in assets and draw(st.integers(0, 3)) == 0]
        chosen = listed + new
        half = (len(chosen) + 1) // 2
        s1: list[Doc] = [{"name": x.lower(), "asset": x} for x in chosen[:half]]
        s2: list[Doc] = [{"name": x.lower(), "asset": x} for x in chosen[half:]]
        s1_weights, s2_weights = split_weights(draw, len(s1)), split_weights(draw, len(s2))
        for node, w in zip(s1, s1_weights, strict=True):
            node["weight"] = w
        for node, w in zip(s2, s2_weights, strict=True):
            node["weight"] = w
        top = split_weights(draw, 3, floor_share=cash_share)
        target_children = [
            {"name": "s1", "weight": top[0] if s1 else "0%", "children": s1},
            {"name": "s2", "weight": top[1] if s2 else "0%", "children": s2},
            {"name": "cash", "asset": "USDT", "weight": top[2]},
        ]
        if not s1 or not s2:
            # Give the empty sector's share to cash so that the weights still sum to one.
            spare = sum(Decimal(top[i][:-1]) for i, kids in ((0, s1), (1, s2)) if not kids)
            target_children[2]["weight"] = f"{Decimal(top[2][:-1]) + spare}%"
        target_accounts.append({"name": f"acc{a}", "weight": "0%", "children": target_children})
    for node, w in zip(target_accounts, split_weights(draw, n_accounts), strict=True):
        node["weight"] = w
    prices = {
        "quote": "USD",
        "prices": {"USDT": "1", **{x: draw(decimals("0.5", "1000", 2)) for x in ASSETS}},
    }
    markets: Doc = {}
    for exchange in ("ex0", "ex1"):
        markets[exchange] = {
            f"{x}/USDT": {
                "amount_step": draw(st.sampled_from(STEPS)),
                "min_amount": "0",
                "min_cost": draw(st.sampled_from(("0", "1", "10"))) if minimums else "0",
                "fee_rate": draw(st.sampled_from(("0", "0.001", "0.01"))) if fees else "0",
            }
            for x in ASSETS
        }
    return Case(
        real={"name": "root", "children": real_accounts},
        target={"name": "root", "children": target_accounts},
        prices=prices,
        markets=markets,
    )


def mirror(real: Doc, prices: Doc) -> Doc:
    """The desired tree that says 'exactly what is held now' (weights from current free values)."""
    price = {k: Decimal(v) for k, v in prices["prices"].items()}

    def free(node: Doc) -> Decimal:
        if "asset" in node:
            amount = Decimal(node["amount"])
            locked = sum(
                (
                    Decimal(lk["amount"]) if "amount" in lk else Decimal(lk["share"]) * amount
                    for lk in node.get("locks", [])
                ),
                Decimal(0),
            )
            return (amount - locked) * price[node["asset"]]
        return sum((free(child) for child in node.get("children", [])), Decimal(0))

    def build(node: Doc, weight: Decimal | None) -> Doc:
        out: Doc = {"name": node["name"]}
        if weight is not None:
            out["weight"] = format(weight, "f")
        if "asset" in node:
            out["asset"] = node["asset"]
            return out
        kids = node.get("children", [])
        total = sum((free(k) for k in kids), Decimal(0))
        weights = [free(k) / total if total > 0 else Decimal(1) / len(kids) for k in kids] if kids else []
        out["children"] = [build(k, w) for k, w in zip(kids, weights, strict=True)]
        return out

    return build(real, None)


@dataclass(frozen=True)
class WhereCase:
    """A case with per-venue prices, a pool over accounts on different exchanges and maybe a network file."""

    real: Doc
    target: Doc
    prices: Doc
    markets: Doc
    network: Doc | None
    band: float = 0.0


@st.composite
def pool_cases(
    draw: st.DrawFn, max_accounts: int = 3, networked: bool = False, banded: bool = False
) -> WhereCase:
    """Accounts (quote USDT) on exchanges ex0, ex1, ... under a pool node `p`, maybe beside an account
    `solo` with plain weights; every exchange quotes its own bid and ask (spreads up to 2%, off the
    reference by up to 1%), charges its own fees, and maybe (`networked`: always) a network file moves
    the assets; `banded`: maybe a band (`--band`) holds wallets and accounts near their targets."""
    n_accounts = draw(st.integers(2, max_accounts))
    exchanges = [f"ex{a}" for a in range(n_accounts + 1)]
    ref = {x: Decimal(draw(decimals("0.5", "1000", 2))) for x in ASSETS}

    def holdings(name: str, exchange: str) -> Doc:
        assets = draw(st.lists(st.sampled_from(ASSETS), max_size=len(ASSETS), unique=True))
        wallets: list[Doc] = [
            {"name": x.lower(), "asset": x, "amount": draw(decimals("0", "50", 4))} for x in assets
        ]
        wallets.append({"name": "cash", "asset": "USDT", "amount": draw(decimals("0", "5000", 2))})
        return {"name": name, "kind": "account", "exchange": exchange, "quote": "USDT", "children": wallets}

    pooled = [holdings(f"acc{a}", exchanges[a]) for a in range(n_accounts)]
    real_children: list[Doc] = [{"name": "p", "children": pooled}]
    pool_assets = draw(st.lists(st.sampled_from((*ASSETS, "USDT")), min_size=1, max_size=4, unique=True))
    pool = dict(zip(pool_assets, split_weights(draw, len(pool_assets)), strict=True))
    solo = draw(st.booleans())
    top = split_weights(draw, 2) if solo else ["100%"]
    target_children: list[Doc] = [{"name": "p", "weight": top[0], "pool": pool}]
    if solo:
        real_children.append(holdings("solo", exchanges[-1]))
        held = [w["asset"] for w in real_children[-1]["children"] if w["asset"] != "USDT"]
        weights = split_weights(draw, len(held) + 1)
        target_children.append(
            {
                "name": "solo",
                "weight": top[1],
                "children": [
                    *(
                        {"name": x.lower(), "asset": x, "weight": w}
                        for x, w in zip(held, weights, strict=False)
                    ),
                    {"name": "cash", "asset": "USDT", "weight": weights[-1]},
                ],
            }
        )
    venues: Doc = {}
    markets: Doc = {}
    for exchange in exchanges:
        quotes: Doc = {}
        for x in ASSETS:
            if draw(st.booleans()):
                bias = Decimal(draw(st.integers(-100, 100))) / 10_000
                half = Decimal(draw(st.integers(0, 100))) / 10_000
                quotes[x] = {
                    "bid": format(ref[x] * (1 + bias - half), "f"),
                    "ask": format(ref[x] * (1 + bias + half), "f"),
                }
        venues[exchange] = quotes
        markets[exchange] = {
            f"{x}/USDT": {
                "amount_step": draw(st.sampled_from(STEPS)),
                "min_amount": "0",
                "min_cost": draw(st.sampled_from(("0", "1", "10"))),
                "fee_rate": draw(st.sampled_from(("0", "0.001", "0.0025", "0.01"))),
            }
            for x in ASSETS
        }
    network: Doc | None = None
    if networked or draw(st.booleans()):
        network = {"withdrawals": {}, "deposits": {}}
        for exchange in exchanges:
            network["withdrawals"][exchange] = {
                x: {
                    "fee": format(
                        Decimal(draw(st.integers(0, 50))) / (ref[x] if x in ref else Decimal(1)), ".8f"
                    ),
                    "min_amount": draw(st.sampled_from(("0", "0.01", "1"))),
                    "enabled": draw(st.integers(0, 4)) > 0,
                }
                for x in (*ASSETS, "USDT")
            }
            network["deposits"][exchange] = {
                x: {"enabled": draw(st.integers(0, 4)) > 0} for x in (*ASSETS, "USDT")
            }
    return WhereCase(
        real={"name": "root", "children": real_children},
        target={"name": "root", "children": target_children},
        prices={
            "quote": "USD",
            "prices": {"USDT": "1", **{x: format(v, "f") for x, v in ref.items()}},
            "venues": venues,
        },
        markets=markets,
        network=network,
        band=draw(st.sampled_from((0.0, 0.05, 0.2, 0.5))) if banded else 0.0,
    )

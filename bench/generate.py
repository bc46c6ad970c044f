"""Deterministic benchmark inputs: a realistic real tree, its desired tree, prices and markets.

Shape: ``fund`` → users (kind ``user``) → exchanges (kind ``exchange``) → accounts (kind ``account``, quote
USDT) → sectors (kind ``sector``) → wallets, plus one USDT cash wallet per account. Each asset is held at
most once per account, except a few duplicates across sectors (they exercise netting). The desired tree is
the real one with weights near the current ones (integer basis points, the last sibling takes the
remainder), a few wallets unlisted (sold), a few new wallets (bought), some ``keep_unlisted`` sectors and
some sectors that do not list their children (they scale). Same (size, seed) → same files.

    python bench/generate.py --wallets 1000000 --out bench/out/1m
"""

from __future__ import annotations

import argparse
import math
import random
import string
import sys
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import orjson

Doc = dict[str, Any]
QUOTE = "USDT"
BASIS = 10_000
EXCHANGES = ("binance", "bybit", "coinbase", "kraken", "okx")
SECTORS = ("l1", "l2", "defi", "gaming", "ai", "memes", "infra", "rwa", "privacy", "oracles")
MIN_COSTS = ("1", "5", "10")
FEE_RATES = ("0.001", "0.00075", "0.0005", "0.002", "0")


@dataclass(frozen=True)
class Shape:
    """Knobs of the generated tree (fractions are per node)."""

    assets: int = 200
    wallets_per_account: tuple[int, int] = (120, 200)
    duplicate: float = 0.02
    locked: float = 0.03
    empty: float = 0.002
    unlisted_wallet: float = 0.02
    unlisted_sector: float = 0.01
    new_wallet: float = 0.03
    keep_unlisted: float = 0.05
    scaled_sector: float = 0.05
    no_cash_target: float = 0.05
    missing_market: float = 0.03
    drift: float = 0.15
    upper_drift: float = 0.05


@dataclass
class _Wallet:
    name: str
    asset: str
    amount: Decimal
    locks: list[Doc]
    free_value: float


@dataclass
class _Sector:
    name: str
    wallets: list[_Wallet] = field(default_factory=list)


@dataclass
class _Account:
    name: str
    sectors: list[_Sector]
    cash: _Wallet


def plain(value: Decimal) -> str:
    """Decimal text without exponent or trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def asset_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 5)))
        if name not in (QUOTE, "USD"):
            names.add(name)
    return sorted(names)


def make_prices(rng: random.Random, assets: list[str]) -> dict[str, Decimal]:
    prices = {asset: Decimal(f"{10 ** rng.uniform(-4, 5):.6g}") for asset in assets}
    prices[QUOTE] = Decimal("0.9998")
    return prices


def make_markets(rng: random.Random, prices: dict[str, Decimal], shape: Shape) -> Doc:
    markets: Doc = {}
    for exchange in EXCHANGES:
        min_cost = rng.choice(MIN_COSTS)
        symbols: Doc = {}
        for asset, price in prices.items():
            if asset == QUOTE or rng.random() < shape.missing_market:
                continue
            exponent = math.floor(math.log10(10 ** rng.uniform(-3, -1) / float(price)))
            step = Decimal(1).scaleb(min(max(exponent, -8), 3))
            symbols[f"{asset}/{QUOTE}"] = {
                "amount_step": plain(step),
                "min_amount": plain(step * rng.choice((1, 1, 10))),
                "min_cost": min_cost,
                "fee_rate": rng.choice(FEE_RATES),
            }
        markets[exchange] = symbols
    return markets


def make_amount(rng: random.Random, value: float, price: Decimal) -> Decimal:
    """An amount worth about `value`, with 0 to 8 decimals (never 0 unless asked)."""
    raw = Decimal(repr(value)) / price
    for places in (rng.choice((0, 2, 4, 5, 6, 8, 8, 8)), 8):
        amount = raw.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
        if amount > 0:
            return amount
    return Decimal("0.00000001")


def make_locks(rng: random.Random, amount: Decimal) -> list[Doc]:
    kind = rng.random()
    if kind < 0.4:
        return [{"owner": "arb-bot", "share": rng.choice(("0.1", "0.25", "0.5", "20%", "1"))}]
    if kind < 0.7:
        locked = (amount * Decimal(str(round(rng.uniform(0.05, 0.9), 2)))).quantize(
            Decimal("0.00000001"), rounding=ROUND_DOWN
        )
        return [{"owner": "mm-bot", "amount": plain(locked)}]
    return [{"owner": "arb-bot", "share": "0.1"}, {"owner": "mm-bot", "share": "20%"}]


def locked_of(amount: Decimal, locks: list[Doc]) -> Decimal:
    total = Decimal(0)
    for lock in locks:
        if "amount" in lock:
            total += Decimal(lock["amount"])
        else:
            share = str(lock["share"])
            total += amount * (Decimal(share[:-1]) / 100 if share.endswith("%") else Decimal(share))
    return total


def make_wallet(rng: random.Random, name: str, asset: str, price: Decimal, shape: Shape) -> _Wallet:
    value = min(max(rng.lognormvariate(math.log(800), 1.5), 1.0), 5e6)
    amount = Decimal(0) if rng.random() < shape.empty else make_amount(rng, value, price)
    locks = make_locks(rng, amount) if amount > 0 and rng.random() < shape.locked else []
    free = amount - locked_of(amount, locks)
    return _Wallet(name, asset, amount, locks, float(free * price))


def make_account(
    rng: random.Random, name: str, size: int, assets: list[str], prices: dict[str, Decimal], shape: Shape
) -> _Account:
    held = rng.sample(assets, min(size, len(assets)))
    count = rng.randint(1, min(8, len(held))) if held else 0
    sectors = [_Sector(name) for name in rng.sample(SECTORS, count)]
    for position, asset in enumerate(held):
        sector = sectors[position % count] if position < count else rng.choice(sectors)
        sector.wallets.append(make_wallet(rng, asset.lower(), asset, prices[asset], shape))
    if count > 1:
        for asset in held[: int(len(held) * shape.duplicate)]:
            others = [s for s in sectors if all(w.asset != asset for w in s.wallets)]
            if others:
                rng.choice(others).wallets.append(
                    make_wallet(rng, asset.lower(), asset, prices[asset], shape)
                )
    value = sum(w.free_value for s in sectors for w in s.wallets)
    cash_value = max(value * rng.uniform(0.005, 0.06), 10.0)
    amount = (Decimal(repr(cash_value)) / prices[QUOTE]).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    locks = [{"owner": "arb-bot", "amount": plain(amount / 10)}] if rng.random() < 0.1 else []
    cash_free = amount - locked_of(amount, locks)
    return _Account(name, sectors, _Wallet("cash", QUOTE, amount, locks, float(cash_free * prices[QUOTE])))


def account_sizes(rng: random.Random, n_wallets: int, shape: Shape) -> list[int]:
    """Wallets per account (the cash wallet included), summing to exactly `n_wallets`."""
    low, high = shape.wallets_per_account
    high = min(high, shape.assets + 1)
    low = min(low, high)
    sizes: list[int] = []
    left = n_wallets
    while left > 0:
        size = min(rng.randint(low, high), left)
        sizes.append(size)
        left -= size
    return sizes


def layout(rng: random.Random, n_accounts: int) -> list[tuple[str, str, list[int]]]:
    """(user, exchange, account numbers) slots: about sqrt(accounts / 3) users on 1-5 exchanges each."""
    n_users = max(1, round(math.sqrt(n_accounts / 3)))
    slots = [
        (f"user{u:03d}", exchange, [])
        for u in range(n_users)
        for exchange in sorted(rng.sample(EXCHANGES, rng.randint(1, len(EXCHANGES))))
    ]
    slots = slots[: max(1, n_accounts)]
    for number in range(n_accounts):
        slots[number % len(slots)][2].append(number)
    return [slot for slot in slots if slot[2]]


def wallet_doc(wallet: _Wallet) -> Doc:
    doc: Doc = {"name": wallet.name, "asset": wallet.asset, "amount": plain(wallet.amount)}
    if wallet.locks:
        doc["locks"] = wallet.locks
    return doc


def real_doc(accounts: list[_Account], slots: list[tuple[str, str, list[int]]]) -> Doc:
    users: dict[str, list[Doc]] = {}
    for user, exchange, numbers in slots:
        children = [
            {
                "name": accounts[n].name,
                "kind": "account",
                "quote": QUOTE,
                "children": [
                    *(
                        {"name": s.name, "kind": "sector", "children": [wallet_doc(w) for w in s.wallets]}
                        for s in accounts[n].sectors
                    ),
                    wallet_doc(accounts[n].cash),
                ],
            }
            for n in numbers
        ]
        users.setdefault(user, []).append({"name": exchange, "kind": "exchange", "children": children})
    return {
        "name": "fund",
        "kind": "fund",
        "children": [{"name": u, "kind": "user", "children": ex} for u, ex in users.items()],
    }


def basis_points(rng: random.Random, values: list[float], drift: float) -> list[str]:
    """Weights near `values` (with noise), as decimal strings summing exactly to 1."""
    noisy = [max(v, 0.0) * rng.lognormvariate(0.0, drift) for v in values]
    total = sum(noisy)
    if total <= 0:
        noisy, total = [1.0] * len(values), float(len(values))
    points = [math.floor(v / total * BASIS) for v in noisy]
    points[-1] = BASIS - sum(points[:-1])
    return [plain(Decimal(p) / BASIS) for p in points]


def weigh(rng: random.Random, nodes: list[Doc], values: list[float], drift: float) -> list[Doc]:
    for node, weight in zip(nodes, basis_points(rng, values, drift), strict=True):
        node["weight"] = weight
    return nodes


@dataclass
class _Targets:
    rng: random.Random
    shape: Shape
    assets: list[str]
    markets: Doc
    # The exchange of the accounts being made (new positions only in assets it has a market for).
    exchange: str = ""

    def sector(self, sector: _Sector, held: set[str]) -> tuple[Doc | None, float]:
        rng, shape = self.rng, self.shape
        value = sum(w.free_value for w in sector.wallets)
        if rng.random() < shape.unlisted_sector:
            return None, 0.0
        if rng.random() < shape.scaled_sector and value > 0:  # nothing held cannot be scaled
            return {"name": sector.name}, value
        keep = rng.random() < shape.keep_unlisted
        nodes: list[Doc] = []
        values: list[float] = []
        for wallet in sector.wallets:
            if rng.random() < (0.2 if keep else shape.unlisted_wallet):
                continue
            nodes.append({"name": wallet.name, "asset": wallet.asset})
            values.append(wallet.free_value)
        if rng.random() < shape.new_wallet * max(1, len(sector.wallets) // 10):
            fresh = [a for a in self.assets if a not in held]
            for asset in rng.sample(fresh, min(len(fresh), rng.randint(1, 2))):
                held.add(asset)
                share = rng.uniform(0.2, 1.0) * value / max(len(sector.wallets), 1)
                if f"{asset}/{QUOTE}" not in self.markets.get(self.exchange, {}):
                    continue  # no market buys it: a target may not ask for it (the planner refuses)
                nodes.append({"name": asset.lower(), "asset": asset})
                values.append(share)
        if not nodes:
            return None, 0.0
        doc: Doc = {"name": sector.name, "children": weigh(rng, nodes, values, shape.drift)}
        if keep:
            doc["keep_unlisted"] = True
        return doc, value

    def account(self, account: _Account) -> tuple[Doc, float]:
        held = {w.asset for s in account.sectors for w in s.wallets}
        nodes: list[Doc] = []
        values: list[float] = []
        for sector in account.sectors:
            doc, value = self.sector(sector, held)
            if doc is not None:
                nodes.append(doc)
                values.append(value)
        cash = 0.0 if self.rng.random() < self.shape.no_cash_target else account.cash.free_value
        nodes.append({"name": "cash", "asset": QUOTE})
        values.append(cash)
        total = sum(w.free_value for s in account.sectors for w in s.wallets) + account.cash.free_value
        return {"name": account.name, "children": weigh(self.rng, nodes, values, self.shape.drift)}, total


def target_doc(targets: _Targets, accounts: list[_Account], slots: list[tuple[str, str, list[int]]]) -> Doc:
    drift = targets.shape.upper_drift
    users: dict[str, tuple[list[Doc], list[float]]] = {}
    for user, exchange, numbers in slots:
        targets.exchange = exchange
        made = [targets.account(accounts[n]) for n in numbers]
        docs = weigh(targets.rng, [doc for doc, _ in made], [value for _, value in made], drift)
        exchanges, values = users.setdefault(user, ([], []))
        exchanges.append({"name": exchange, "children": docs})
        values.append(sum(value for _, value in made))
    user_docs = [
        {"name": user, "children": weigh(targets.rng, docs, values, drift)}
        for user, (docs, values) in users.items()
    ]
    return {
        "name": "fund",
        "children": weigh(targets.rng, user_docs, [sum(v) for _, v in users.values()], drift),
    }


def generate(n_wallets: int, seed: int, shape: Shape | None = None) -> tuple[Doc, Doc, Doc, Doc]:
    """(real, target, prices, markets) documents for a tree of exactly `n_wallets` real wallets."""
    shape = shape or Shape()
    rng = random.Random(seed)
    assets = asset_names(rng, shape.assets)
    prices = make_prices(rng, assets)
    markets = make_markets(rng, prices, shape)
    sizes = account_sizes(rng, n_wallets, shape)
    accounts = [
        make_account(rng, f"acct{number:04d}", size - 1, assets, prices, shape)
        for number, size in enumerate(sizes)
    ]
    _trim(accounts, sizes)
    slots = layout(rng, len(accounts))
    real = real_doc(accounts, slots)
    target = target_doc(_Targets(rng, shape, assets, markets), accounts, slots)
    prices_doc: Doc = {"quote": "USD", "prices": {asset: plain(price) for asset, price in prices.items()}}
    return real, target, prices_doc, markets


def _trim(accounts: list[_Account], sizes: list[int]) -> None:
    """Drop the duplicate wallets beyond each account's size, so the total is exact."""
    for account, size in zip(accounts, sizes, strict=True):
        excess = sum(len(s.wallets) for s in account.sectors) + 1 - size
        for sector in reversed(account.sectors):
            while excess > 0 and sector.wallets:
                sector.wallets.pop()
                excess -= 1
        account.sectors = [s for s in account.sectors if s.wallets]


def write(out: Path, docs: tuple[Doc, Doc, Doc, Doc]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json" for name in ("real", "target", "prices", "markets")]
    for path, doc in zip(paths, docs, strict=True):
        path.write_bytes(orjson.dumps(doc))
    return paths


def count_wallets(node: Doc) -> int:
    return 1 if "asset" in node else sum(count_wallets(child) for child in node.get("children", ()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wallets", type=int, required=True, help="number of real wallets")
    parser.add_argument("--out", type=Path, required=True, help="directory for the four JSON files")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--assets", type=int, default=Shape.assets, help="size of the asset universe")
    args = parser.parse_args(argv)
    docs = generate(args.wallets, args.seed, Shape(assets=args.assets))
    for path in write(args.out, docs):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
    print(f"{count_wallets(docs[0])} wallets")
    return 0


if __name__ == "__main__":
    sys.exit(main())

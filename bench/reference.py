"""The obvious planner: node-by-node recursion over the nested documents, exact `Decimal` arithmetic.

Written straight from docs/formats.md, as a first implementation would be, to check and to time the real
planner against. It covers free values (locks carved out), desired values top-down (weights, unlisted
children sold, ``keep_unlisted``, portfolios that do not list their children, invest/withdraw), the band,
transfers between accounts, per-account per-asset netting, truncation to the amount step, the sell cap at
the free amount, the minimums, sells (phase 1) and buys (phase 2) within the budget, scaled down together
when over it. Transfers are capped at the quote a source has to spare after its own sells and buys (the
core's rule since commit d1885c2; docs/formats.md does not say it yet).

Not covered: routing through an intermediate market (an asset without a direct market is skipped
``no_market``) and input validation (the documents are assumed valid).

Run as a script it is the naive whole `rebal plan --json`: read the four files, plan, render the
documented JSON (docs/formats.md) with every number as a decimal string, and print it (compact), for
bench/cli.py to time against the real CLI:

    python bench/reference.py --real R.json --target T.json --prices P.json --markets M.json > plan.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import orjson

Doc = dict[str, Any]
ZERO = Decimal(0)
ONE = Decimal(1)
DEFAULT_STEP = Decimal("0.00000001")
DERIVED = Context(prec=18)


def to_decimal(raw: object) -> Decimal:
    return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw).strip())


def fraction(raw: object) -> Decimal:
    if isinstance(raw, str) and raw.strip().endswith("%"):
        return to_decimal(raw.strip()[:-1]) / 100
    return to_decimal(raw)


@dataclass(frozen=True)
class MarketInfo:
    step: Decimal = DEFAULT_STEP
    min_amount: Decimal = ZERO
    min_cost: Decimal = ZERO
    fee_rate: Decimal = ZERO


@dataclass
class Wallet:
    path: str
    asset: str
    free: Decimal
    price: Decimal
    desired_value: Decimal
    hold: bool


@dataclass
class Account:
    path: str
    exchange: str
    quote: str
    current: Decimal = ZERO
    desired: Decimal = ZERO
    hold: bool = False
    wallets: list[Wallet] = field(default_factory=list)


@dataclass
class Walk:
    """What the recursion fills in: values per path, and the accounts with their wallets."""

    prices: dict[str, Decimal]
    default_quote: str
    band: Decimal
    current: dict[str, Decimal] = field(default_factory=dict)
    diff: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    accounts: list[Account] = field(default_factory=list)


def parse_prices(doc: Doc) -> tuple[str, dict[str, Decimal]]:
    prices = {str(asset): to_decimal(value) for asset, value in doc["prices"].items()}
    prices.setdefault(doc["quote"], ONE)
    return doc["quote"], prices


def parse_markets(doc: Doc | None) -> dict[str, dict[str, MarketInfo]]:
    markets: dict[str, dict[str, MarketInfo]] = {}
    for exchange, symbols in (doc or {}).items():
        markets[exchange] = {}
        for symbol, params in symbols.items():
            params = params or {}  # noqa: PLW2901
            markets[exchange][symbol] = MarketInfo(
                step=to_decimal(params.get("amount_step", DEFAULT_STEP)),
                min_amount=to_decimal(params.get("min_amount", 0)),
                min_cost=to_decimal(params.get("min_cost", 0)),
                fee_rate=to_decimal(params.get("fee_rate", 0)),
            )
    return markets


def free_amount(node: Doc) -> Decimal:
    amount = to_decimal(node["amount"])
    locked = ZERO
    for lock in node.get("locks", ()):
        locked += to_decimal(lock["amount"]) if "amount" in lock else fraction(lock["share"]) * amount
    return amount - locked


def measure(node: Doc, path: str, prices: dict[str, Decimal], values: dict[str, Decimal]) -> Decimal:
    """The free value of every real node, by path (one bottom-up pass)."""
    if "asset" in node:
        value = free_amount(node) * prices[node["asset"]]
    else:
        value = sum(
            (measure(child, f"{path}/{child['name']}", prices, values) for child in node.get("children", ())),
            ZERO,
        )
    values[path] = value
    return value


def holds(current: Decimal, desired: Decimal, band: Decimal) -> bool:
    return abs(desired - current) <= band * desired


def visit(
    walk: Walk,
    real: Doc | None,
    target: Doc | None,
    path: str,
    desired: Decimal,
    account: Account | None,
    exchange: str | None,
) -> Decimal:
    """Record the node at `path` (and below) given its desired value; return its current value."""
    node = real if real is not None else target
    assert node is not None
    kind = node.get("kind")
    if kind == "exchange":
        exchange = node["name"]
    if kind == "account":
        name = node.get("exchange") or (target or {}).get("exchange") or exchange
        quote = node.get("quote") or (target or {}).get("quote") or walk.default_quote
        account = Account(path, str(name), quote)
        walk.accounts.append(account)
    if "asset" in node:
        current = visit_wallet(walk, real, node["asset"], path, desired, account)
    else:
        current = visit_children(walk, real, target, path, desired, account, exchange)
    walk.diff[path] = (current, desired)
    if kind == "account" and account is not None:
        account.current, account.desired = current, desired
        account.hold = holds(current, desired, walk.band)
    return current


def visit_wallet(
    walk: Walk, real: Doc | None, asset: str, path: str, desired: Decimal, account: Account | None
) -> Decimal:
    assert account is not None, f"{path}: wallet outside any account"
    price = walk.prices[asset]
    free = free_amount(real) if real is not None else ZERO
    current = free * price
    account.wallets.append(Wallet(path, asset, free, price, desired, holds(current, desired, walk.band)))
    return current


def visit_children(
    walk: Walk,
    real: Doc | None,
    target: Doc | None,
    path: str,
    desired: Decimal,
    account: Account | None,
    exchange: str | None,
) -> Decimal:
    real_children = {child["name"]: child for child in (real or {}).get("children", ())}
    listed = target is not None and "children" in target
    target_children = {child["name"]: child for child in target["children"]} if listed else {}
    values = {name: walk.current[f"{path}/{name}"] for name in real_children}
    current = walk.current.get(path, ZERO)
    keep = listed and bool(target.get("keep_unlisted", False))
    kept = sum((v for n, v in values.items() if n not in target_children), ZERO) if keep else ZERO
    share = max(desired - kept, ZERO)
    factor = desired / current if current > 0 else ZERO
    names = list(real_children) + [name for name in target_children if name not in real_children]
    for name in names:
        child_target = target_children.get(name)
        if child_target is not None:
            child_desired = fraction(child_target["weight"]) * share
        elif listed:
            child_desired = values[name] if keep else ZERO
        else:
            child_desired = values[name] * factor
        visit(walk, real_children.get(name), child_target, f"{path}/{name}", child_desired, account, exchange)
    return current


@dataclass
class Group:
    """One (account, asset): the net wanted amount of its non-held wallets, its free amount and its
    desired value (the small-buy policy raises buys in that order, largest first)."""

    asset: str
    net: Decimal = ZERO
    free: Decimal = ZERO
    desired: Decimal = ZERO
    active: list[str] = field(default_factory=list)


def groups_of(account: Account) -> tuple[Decimal, dict[str, Group]]:
    """The account's free quote (its cash) and its groups by asset."""
    cash = ZERO
    groups: dict[str, Group] = {}
    for wallet in account.wallets:
        if wallet.asset == account.quote:
            cash += wallet.free
            continue
        group = groups.setdefault(wallet.asset, Group(wallet.asset))
        group.free += wallet.free
        group.desired += wallet.desired_value
        if not wallet.hold:
            group.net += wallet.desired_value / wallet.price - wallet.free
            group.active.append(wallet.path)
    return cash, groups


Buy = tuple[Group, MarketInfo, int, Decimal]


@dataclass
class Sold:
    """An account after its sells: the quote it holds (free cash + net proceeds), the buys it wants, and
    the buys under a market's minimum (`small`, with the quote the target asks to spend on all buys)."""

    account: Account
    cash: Decimal
    buys: list[Buy]
    small: list[Buy] = field(default_factory=list)
    asked: Decimal = ZERO

    @property
    def wanted(self) -> Decimal:
        return sum((steps * m.step * price * (1 + m.fee_rate) for _, m, steps, price in self.buys), ZERO)


@dataclass
class Planner:
    walk: Walk
    markets: dict[str, dict[str, MarketInfo]]
    orders: list[Doc] = field(default_factory=list)
    buys: list[Doc] = field(default_factory=list)
    skipped: list[Doc] = field(default_factory=list)

    def market(self, account: Account, asset: str) -> MarketInfo | None:
        known = self.markets.get(account.exchange)
        if known is None:
            return MarketInfo()
        return known.get(f"{asset}/{account.quote}")

    def skip(self, account: Account, group: Group, side: str, reason: str) -> None:
        path = group.active[0] if len(group.active) == 1 else account.path
        symbol = f"{group.asset}/{account.quote}"
        wanted = abs(group.net)
        self.skipped.append(
            {"path": path, "symbol": symbol, "side": side, "amount": wanted, "reason": reason}
        )

    def reason(self, market: MarketInfo, steps: int, price: Decimal) -> str:
        amount = steps * market.step
        if steps <= 0:
            return "below_step"
        if amount < market.min_amount:
            return "below_min_amount"
        if amount * price < market.min_cost:
            return "below_min_cost"
        return ""

    def sell(self, account: Account) -> Sold:
        """Phase 1: the account's sells; the buys it wants are sized but not placed yet."""
        cash, groups = groups_of(account)
        sold = Sold(account, cash, [])
        for asset in sorted(groups):
            group = groups[asset]
            if group.net == 0:
                continue
            side = "sell" if group.net < 0 else "buy"
            market = self.market(account, asset)
            if market is None:
                self.skip(account, group, side, "no_market")
                continue
            steps = int(abs(group.net) // market.step)
            if side == "sell":
                steps = min(steps, int(group.free // market.step))
            price = self.walk.prices[asset] / self.walk.prices[account.quote]
            why = self.reason(market, steps, price)
            if side == "buy":
                sold.asked += group.net * price * (1 + market.fee_rate)
            if why and side == "buy":
                sold.small.append((group, market, steps, price))
            elif why:
                self.skip(account, group, side, why)
            elif side == "sell":
                amount = steps * market.step
                sold.cash += amount * price * (1 - market.fee_rate)
                self.orders.append(
                    order(account, asset, "sell", amount, 1, market, price) | {"step": market.step}
                )
            else:
                sold.buys.append((group, market, steps, price))
        return sold

    def buy(self, sold: Sold, budget: Decimal) -> None:
        """Phase 2: the buys, all scaled down by the same factor when they would cost more than `budget`;
        then the small-buy policy: buys under a minimum (or squeezed out) become orders of the minimum size,
        largest desired value first (then asset), while what the target asks to spend lasts."""
        cost = sold.wanted
        factor = max(budget, ZERO) / cost if cost > budget and cost > 0 else ONE
        small = list(sold.small)
        spent = ZERO
        made_buys: list[Doc] = []
        for group, market, steps, price in sold.buys:
            scaled = int(steps * factor) if factor < 1 else steps
            if self.reason(market, scaled, price):
                small.append((group, market, scaled, price))
                continue
            spent += scaled * market.step * price * (1 + market.fee_rate)
            made = order(sold.account, group.asset, "buy", scaled * market.step, 2, market, price)
            made_buys.append(made | {"step": market.step, "scaled": factor < 1})
        room = min(max(budget, ZERO), sold.asked) - spent
        lasting = True
        for group, market, steps, price in sorted(small, key=lambda b: (-b[0].desired, b[0].asset)):
            least = max(
                ceil_div(market.min_amount, market.step), ceil_div(market.min_cost, market.step * price), 1
            )
            price_of = least * market.step * price * (1 + market.fee_rate)
            if lasting and price_of <= room:
                room -= price_of
                made = order(sold.account, group.asset, "buy", least * market.step, 2, market, price)
                made_buys.append(made | {"step": market.step, "scaled": False})
                continue
            lasting = False
            self.skip(
                sold.account,
                group,
                "buy",
                self.reason(market, steps, price) or "insufficient_quote",
            )
        self.buys.extend(sorted(made_buys, key=lambda o: o["symbol"]))


def ceil_div(amount: Decimal, unit: Decimal) -> int:
    """The fewest whole `unit`s that reach `amount`."""
    whole = int(amount // unit)
    return whole + 1 if whole * unit < amount else whole


def order(
    account: Account, asset: str, side: str, amount: Decimal, phase: int, market: MarketInfo, price: Decimal
) -> Doc:
    symbol = f"{asset}/{account.quote}"
    est_price = DERIVED.plus(price)
    cost = DERIVED.multiply(amount, est_price)
    return {
        "account": account.path,
        "exchange": account.exchange,
        "symbol": symbol,
        "side": side,
        "amount": amount,
        "est_price": est_price,
        "est_cost": cost,
        "est_fee": DERIVED.multiply(cost, market.fee_rate),
        "phase": phase,
    }


@dataclass
class Transfers:
    """The transfers made, and per account path the quote that comes in and goes out."""

    made: list[Doc]
    moved_in: dict[str, Decimal]
    moved_out: dict[str, Decimal]


Match = tuple[Account, Account, Decimal]


def match(
    sources: list[Account], sinks: list[Account]
) -> tuple[list[Match], dict[str, Decimal], dict[str, Decimal]]:
    """Largest surplus to largest deficit; returns the matches and what is left unmatched per path."""
    out = {a.path: a.current - a.desired for a in sources}
    into = {a.path: a.desired - a.current for a in sinks}
    matched: list[Match] = []
    i = j = 0
    while i < len(sources) and j < len(sinks):
        source, sink = sources[i], sinks[j]
        value = min(out[source.path], into[sink.path])
        matched.append((source, sink, value))
        out[source.path] -= value
        into[sink.path] -= value
        if out[source.path] <= 0:
            i += 1
        if into[sink.path] <= 0:
            j += 1
    return matched, out, into


def transfers(walk: Walk, spare: dict[str, Decimal], invested: Decimal = ZERO) -> Transfers:
    """Surpluses go to deficits in the source's quote, never more than the quote it has to spare (its
    cash after its own sells and buys); what is unmatched is money entering or leaving (budget only):
    a deficit no surplus covers is funded by the money `invested` only (largest deficit first), never
    by more (an account the band holds keeps its gap, which is no money another account can spend)."""
    moving = [a for a in walk.accounts if not a.hold]
    sources = sorted((a for a in moving if a.current > a.desired), key=lambda a: a.desired - a.current)
    sinks = sorted((a for a in moving if a.current < a.desired), key=lambda a: a.current - a.desired)
    matched, out, into = match(sources, sinks)
    planned: dict[str, Decimal] = {}
    for source, _, value in matched:
        planned[source.path] = planned.get(source.path, ZERO) + value
    result = Transfers([], {a.path: ZERO for a in walk.accounts}, {a.path: ZERO for a in walk.accounts})
    for source, sink, value in matched:
        price = walk.prices[source.quote]
        room = max(spare[source.path], ZERO) * price
        sent = value * min(ONE, room / planned[source.path]) if planned[source.path] > 0 else ZERO
        amount = (sent / price // DEFAULT_STEP) * DEFAULT_STEP
        if amount > 0:
            result.made.append(
                {
                    "asset": source.quote,
                    "from": source.path,
                    "to": sink.path,
                    "amount": amount,
                    "est_value": amount * price,
                }
            )
            result.moved_out[source.path] += amount
            result.moved_in[sink.path] += amount * price / walk.prices[sink.quote]
    for account in sinks:
        funded = min(max(into[account.path], ZERO), invested)
        invested -= funded
        result.moved_in[account.path] += funded / walk.prices[account.quote]
    for account in sources:
        result.moved_out[account.path] += out[account.path] / walk.prices[account.quote]
    return result


def reference_plan(
    real_doc: Doc,
    target_doc: Doc,
    prices_doc: Doc,
    markets_doc: Doc | None,
    band: Decimal = ZERO,
    invest: Decimal = ZERO,
    withdraw: Decimal = ZERO,
) -> dict[str, Any]:
    """``{"diff": {path: (current, desired)}, "orders": [...], "transfers": [...], "skipped": [...],
    "walk": Walk}``.

    Orders are ``{account, symbol, side, amount, phase, step}`` with exact `Decimal` amounts (buys also say
    whether their account's buys were ``scaled`` to the budget), sells (phase 1) before buys (phase 2),
    accounts in tree order, assets by name.
    """
    quote, prices = parse_prices(prices_doc)
    walk = Walk(prices=prices, default_quote=quote, band=band)
    total = measure(real_doc, real_doc["name"], prices, walk.current)
    desired = max(total + invest - withdraw, ZERO)
    visit(walk, real_doc, target_doc, real_doc["name"], desired, None, None)
    planner = Planner(walk, parse_markets(markets_doc))
    sold = [planner.sell(account) for account in walk.accounts]
    moved = transfers(walk, {s.account.path: s.cash - s.wanted for s in sold}, max(desired - total, ZERO))
    for s in sold:
        path = s.account.path
        planner.buy(s, s.cash + moved.moved_in[path] - moved.moved_out[path])
    return {
        "diff": walk.diff,
        "orders": planner.orders + planner.buys,
        "transfers": moved.made,
        "skipped": planner.skipped,
        "walk": walk,
    }


# The whole `rebal plan --json`: the documented JSON, every number a decimal string.

MONEY = Decimal("1e-8")
FINE = Decimal("1e-12")  # amounts and weights


def text(value: Decimal, quantum: Decimal | None = None) -> str:
    """Plain decimal text (no exponent, no trailing zeros), rounded to `quantum` when given."""
    if quantum is not None:
        value = value.quantize(quantum)
    return "0" if value == 0 else format(value.normalize(), "f")


def render(
    walk: Walk, real: Doc | None, target: Doc | None, path: str, parent: tuple[Decimal, Decimal]
) -> Doc:
    """The diff node at `path` and everything below it, recursively."""
    node = real if real is not None else target
    assert node is not None
    current, desired = walk.diff[path]
    up_current, up_desired = parent
    out: Doc = {
        "path": path,
        "name": node["name"],
        "kind": node.get("kind"),
        "current_value": text(current, MONEY),
        "desired_value": text(desired, MONEY),
        "diff_value": text(desired - current, MONEY),
        "current_weight": text(current / up_current if up_current > 0 else ZERO, FINE),
        "desired_weight": text(desired / up_desired if up_desired > 0 else ZERO, FINE),
        "operation": "buy"
        if desired - current > walk.band * desired
        else "sell"
        if current - desired > walk.band * desired
        else "hold",
        "children": [],
    }
    if "asset" in node:
        amount = to_decimal(real["amount"]) if real is not None else ZERO
        locked = amount - free_amount(real) if real is not None else ZERO
        wanted = desired / walk.prices[node["asset"]] + locked
        out["asset"] = node["asset"]
        out["current_amount"] = text(amount)
        out["desired_amount"] = text(wanted, FINE)
        out["diff_amount"] = text(wanted - amount, FINE)
        out["locked_amount"] = text(locked)
        return out
    real_children = {child["name"]: child for child in (real or {}).get("children", ())}
    listed = target is not None and "children" in target
    target_children = {child["name"]: child for child in target["children"]} if listed else {}
    names = list(real_children) + [name for name in target_children if name not in real_children]
    out["children"] = [
        render(walk, real_children.get(name), target_children.get(name), f"{path}/{name}", (current, desired))
        for name in names
    ]
    return out


def reference_json(real_doc: Doc, target_doc: Doc, prices_doc: Doc, markets_doc: Doc | None) -> Doc:
    """What `rebal plan --json` prints, computed the naive way."""
    plan = reference_plan(real_doc, target_doc, prices_doc, markets_doc)
    walk: Walk = plan["walk"]
    total = walk.diff[real_doc["name"]]
    root = render(walk, real_doc, target_doc, real_doc["name"], (ZERO, ZERO))
    root["current_weight"] = "1" if total[0] > 0 else "0"
    root["desired_weight"] = "1" if total[1] > 0 else "0"
    orders = [
        {
            "account": o["account"],
            "exchange": o["exchange"],
            "symbol": o["symbol"],
            "side": o["side"],
            "amount": text(o["amount"]),
            "est_price": text(o["est_price"]),
            "est_cost": text(o["est_cost"]),
            "est_fee": text(o["est_fee"]),
            "phase": o["phase"],
        }
        for o in plan["orders"]
    ]
    moved = [
        {key: text(value) if isinstance(value, Decimal) else value for key, value in t.items()}
        for t in plan["transfers"]
    ]
    skipped = [{**s, "amount": text(s["amount"], FINE)} for s in plan["skipped"]]
    return {"diff": root, "orders": orders, "transfers": moved, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The naive `rebal plan --json`.")
    for name in ("real", "target", "prices", "markets"):
        parser.add_argument(f"--{name}", type=Path, required=name != "markets")
    args = parser.parse_args(argv)
    docs = [
        orjson.loads(path.read_bytes()) if path else None
        for path in (args.real, args.target, args.prices, args.markets)
    ]
    sys.stdout.buffer.write(orjson.dumps(reference_json(*docs)) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Strategies as nodes of the desired tree: the optimizer's output written into the operator's base tree.

Paths name nodes from the root, joined by ``/`` (``demo/paper/spot/trend``), as everywhere in Rebal.

- `set_strategy_weights`: the strategy nodes (siblings under one parent) share what the base tree gave
  them together, in the optimizer's proportions: with base weights 40% + 30% and optimizer weights
  0.25 / 0.75, they become 17.5% and 52.5%; every other node is unchanged.
- `positions_tree` (reconciler mode): each wallet's weight is set so that its desired value is the target
  of its asset; the quote wallet holds the rest; inner nodes get the sum of their children.
- `futures_positions_tree` (reconciler mode on a perpetual futures account): the account's desired
  ``positions`` are the targets, each instrument's linear perpetual at its signed notional, with the
  leverage and margin mode to set; every other node is unchanged.

Weights are written as decimal strings with `WEIGHT_PLACES` places; rounding is put on one sibling so
siblings still sum to exactly what they summed to.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from rebal.core.contracts import perpetual_of
from rebal.core.positions import FUTURES, MarginMode, TargetPosition

Node = dict[str, Any]
WEIGHT_QUANTUM = Decimal("1e-12")
NOTIONAL_QUANTUM = Decimal("1e-8")


class TreeShapeError(ValueError):
    """The base tree does not fit the allocation (a missing node, strategies under two parents...)."""


def parse_weight(raw: object) -> Decimal:
    text = str(raw).strip()
    try:
        return Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        raise TreeShapeError(f"weight {raw!r} is not a number") from None


def walk(node: Node, prefix: str = "") -> Iterator[tuple[str, Node, Node | None]]:
    """(path, node, parent) of every node, pre-order."""
    path = f"{prefix}/{node.get('name')}" if prefix else str(node.get("name"))
    yield path, node, None
    for child in node.get("children") or []:
        for inner_path, inner, parent in walk(child, path):
            yield inner_path, inner, node if parent is None else parent


def find_strategy_nodes(base: Node, strategies: list[str]) -> tuple[dict[str, str], list[str]]:
    """The path of the one node named after each strategy, and the strategies no node is named after.
    A strategy naming two nodes is a `TreeShapeError`."""
    by_name: dict[str, list[str]] = {}
    for path, node, _ in walk(base):
        by_name.setdefault(str(node.get("name")), []).append(path)
    found: dict[str, str] = {}
    missing: list[str] = []
    for strategy in sorted(strategies):
        paths = by_name.get(strategy, [])
        if len(paths) > 1:
            raise TreeShapeError(f"strategy {strategy} names {len(paths)} nodes: {', '.join(paths)}")
        if paths:
            found[strategy] = paths[0]
        else:
            missing.append(strategy)
    return found, missing


def _shares(total: Decimal, proportions: Mapping[str, float]) -> dict[str, Decimal]:
    """`total` split in these proportions, quantized, summing exactly to `total` (rounding on the
    largest)."""
    whole = sum(proportions.values())
    if whole <= 0:
        raise TreeShapeError("the weights sum to zero")
    shares = {
        name: (total * Decimal(repr(value)) / Decimal(repr(whole))).quantize(WEIGHT_QUANTUM)
        for name, value in proportions.items()
    }
    largest = max(sorted(shares), key=lambda name: shares[name])
    shares[largest] += total - sum(shares.values(), Decimal(0))
    return shares


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


def set_strategy_weights(base: Node, nodes: Mapping[str, str], weights: Mapping[str, float]) -> Node:
    """The base tree with the strategy nodes' weights replaced (see the module doc)."""
    if set(nodes) != set(weights):
        raise TreeShapeError(f"weights for {sorted(weights)} but nodes for {sorted(nodes)}")
    tree = copy.deepcopy(base)
    located = {path: (node, parent) for path, node, parent in walk(tree)}
    parents = set()
    together = Decimal(0)
    for strategy, path in sorted(nodes.items()):
        if path not in located:
            raise TreeShapeError(f"strategy {strategy}: no node {path} in the base tree")
        node, parent = located[path]
        if parent is None:
            raise TreeShapeError(f"strategy {strategy}: {path} is the root")
        parents.add(id(parent))
        together += parse_weight(node.get("weight", "0"))
    if len(parents) > 1:
        raise TreeShapeError("the strategy nodes must be siblings (one parent shares its weight among them)")
    for strategy, share in _shares(together, weights).items():
        located[nodes[strategy]][0]["weight"] = _text(share)
    return tree


def positions_tree(
    base: Node, targets: Mapping[str, Decimal], total: Decimal, quote_wallet: str
) -> tuple[Node, tuple[str, ...]]:
    """The base tree with wallet weights that give each asset its target value out of `total` (the
    portfolio's value); the quote wallet holds the rest. Notes name targets without a wallet."""
    tree = copy.deepcopy(base)
    located = {path: node for path, node, _ in walk(tree)}
    if quote_wallet not in located:
        raise TreeShapeError(f"no quote wallet {quote_wallet} in the base tree")
    if total <= 0:
        raise TreeShapeError("the portfolio has no value to allocate")
    wallets = {path: node for path, node in located.items() if "asset" in node and not node.get("children")}
    by_asset: dict[str, str] = {}
    for path, node in sorted(wallets.items()):
        if path != quote_wallet:
            if str(node["asset"]) in by_asset:
                raise TreeShapeError(
                    f"asset {node['asset']} is held by two wallets: reconciler mode needs one"
                )
            by_asset[str(node["asset"])] = path
    notes = tuple(
        f"{asset}: no wallet for it in the base tree: not traded"
        for asset in sorted(set(targets) - set(by_asset))
    )
    values: dict[int, Decimal] = {}
    invested = Decimal(0)
    for asset, path in by_asset.items():
        value = min(targets.get(asset, Decimal(0)), total - invested)
        values[id(wallets[path])] = value
        invested += value
    values[id(located[quote_wallet])] = total - invested

    def value_of(node: Node) -> Decimal:
        children = node.get("children") or []
        if not children:
            return values.get(id(node), Decimal(0))
        shares = [value_of(child) for child in children]
        whole = sum(shares, Decimal(0))
        if whole > 0:
            weights = _shares(Decimal(1), {str(i): float(s / whole) for i, s in enumerate(shares)})
            for i, child in enumerate(children):
                child["weight"] = _text(weights[str(i)])
        else:  # nothing wanted below: equal weights of nothing
            even = _shares(Decimal(1), {str(i): 1.0 for i in range(len(children))})
            for i, child in enumerate(children):
                child["weight"] = _text(even[str(i)])
        return whole

    value_of(tree)
    return tree, notes


def futures_positions_tree(
    base: Node, targets: Mapping[str, Decimal], account: str, leverage: int, margin_mode: MarginMode
) -> Node:
    """The base tree with the futures account at path `account` wanting `targets` (instrument -> signed
    notional in the account's quote): an asset is traded as its linear perpetual ``ASSET/QUOTE:QUOTE``, a
    symbol as it is; each at `leverage` in `margin_mode`. Positions it holds and no target names are
    closed (the account lists its positions)."""
    tree = copy.deepcopy(base)
    node = {path: node for path, node, _ in walk(tree)}.get(account)
    if node is None or node.get("kind") != FUTURES:
        raise TreeShapeError(f"no account of kind 'futures' at {account} in the base tree")
    quote = node.get("quote")
    if not isinstance(quote, str) or not quote:
        raise TreeShapeError(f"the futures account {account} needs its 'quote' (the asset it settles in)")
    wanted: dict[str, Decimal] = {}
    for instrument, value in targets.items():
        symbol = perpetual_of(instrument, quote)
        wanted[symbol] = wanted.get(symbol, Decimal(0)) + value
    node["positions"] = [
        TargetPosition(symbol, value.quantize(NOTIONAL_QUANTUM), leverage, margin_mode).document()
        for symbol, value in sorted(wanted.items())
    ]
    return tree

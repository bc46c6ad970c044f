"""The portfolio tree, parsed once into flat arrays.

A tree document is nested mappings: a *portfolio* has ``children``, a *wallet* has one ``asset`` (and, in a
real tree, an ``amount``). One iterative walk validates every node and lays the tree out in pre-order as
numpy arrays (a million wallets parse in well under a second); errors name the node path.

The same walk reads a *desired* tree: the same shape with a ``weight`` on every node, relative to its
parent, plus ``keep_unlisted`` on portfolios whose unlisted children keep their current value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError
from rebal.core.numbers import WEIGHT_SUM_TOLERANCE, parse_decimal, parse_fraction

Role = Literal["real", "target"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NODE_KEYS = frozenset(
    {"name", "kind", "children", "asset", "amount", "locks", "weight", "keep_unlisted", "quote", "exchange"}
)
LOCK_KEYS = frozenset({"owner", "share", "amount"})
ACCOUNT = "account"
EXCHANGE = "exchange"
PATH_SEP = "/"


@dataclass(frozen=True)
class Lock:
    """A part of a wallet reserved for an owner (a bot): a `share` of the amount, or a fixed `amount`."""

    owner: str
    share: Decimal | None = None
    amount: Decimal | None = None

    def locked(self, wallet_amount: Decimal) -> Decimal:
        return self.amount if self.amount is not None else (self.share or Decimal(0)) * wallet_amount


@dataclass(frozen=True, eq=False)
class Tree:
    """A parsed tree in pre-order: node 0 is the root and every parent precedes its children."""

    role: Role
    names: list[str]
    kinds: list[str | None]
    parent: IntArray
    depth: IntArray
    wallet: BoolArray
    assets: list[str | None]
    amount: FloatArray
    amount_text: list[str | None]
    locked: FloatArray
    locks: dict[int, tuple[Lock, ...]]
    weight: FloatArray
    keep_unlisted: BoolArray
    lists_children: BoolArray
    quote: dict[int, str]
    exchange: dict[int, str]
    _paths: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int) -> str:
        """The node's identity: the names from the root, joined by ``/``."""
        parts: list[str] = []
        node = index
        while node >= 0:
            parts.append(self.names[node])
            node = int(self.parent[node])
        return PATH_SEP.join(reversed(parts))

    def exact_amount(self, index: int) -> Decimal:
        text = self.amount_text[index]
        return Decimal(text) if text is not None else Decimal(0)

    def exact_locked(self, index: int) -> Decimal:
        total = self.exact_amount(index)
        return sum((lock.locked(total) for lock in self.locks.get(index, ())), Decimal(0))


def _path_of(names: list[str], parents: list[int], index: int) -> str:
    parts: list[str] = []
    while index >= 0:
        parts.append(names[index])
        index = parents[index]
    return PATH_SEP.join(reversed(parts))


def parse_tree(doc: object, role: Role) -> Tree:
    """Validate a tree document and lay it out flat. Raises `InputError` naming the node path."""
    names: list[str] = []
    kinds: list[str | None] = []
    parents: list[int] = []
    depths: list[int] = []
    is_wallet: list[bool] = []
    assets: list[str | None] = []
    amount_text: list[str | None] = []
    weights: list[float] = []
    keep: list[bool] = []
    lists_children: list[bool] = []
    locks: dict[int, tuple[Lock, ...]] = {}
    locked: dict[int, float] = {}
    quote: dict[int, str] = {}
    exchange: dict[int, str] = {}
    sibling_names: dict[tuple[int, str], int] = {}
    target = role == "target"

    stack: list[tuple[object, int, int, int]] = [(doc, -1, 0, 0)]
    while stack:
        raw, parent, depth, position = stack.pop()
        index = len(names)

        def where(index: int = index, parent: int = parent, position: int = position) -> str:
            if index < len(names):
                return _path_of(names, parents, index)
            base = _path_of(names, parents, parent) if parent >= 0 else ""
            return f"{base}[{position}]" if base else "[root]"

        if not isinstance(raw, dict):
            raise InputError(where(), f"a node must be a mapping, got {type(raw).__name__}")
        node: dict[str, object] = raw
        name = node.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(where(), "every node needs a non-empty string 'name'")
        if PATH_SEP in name:
            raise InputError(where(), f"node name {name!r} must not contain '{PATH_SEP}'")
        unknown = node.keys() - NODE_KEYS
        key = (parent, name)
        if key in sibling_names:
            names.append(name)
            parents.append(parent)
            raise InputError(where(), f"duplicate sibling name {name!r}")
        sibling_names[key] = index
        names.append(name)
        parents.append(parent)
        depths.append(depth)
        if unknown:
            raise InputError(where(), f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")

        kind = node.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise InputError(where(), "'kind' must be a string")
        kinds.append(kind)
        for key_name, target_map in (("quote", quote), ("exchange", exchange)):
            value = node.get(key_name)
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise InputError(where(), f"'{key_name}' must be a non-empty string")
                target_map[index] = value

        if parent < 0:
            weights.append(1.0)
        elif target:
            if "weight" not in node:
                raise InputError(where(), "every node of a desired tree needs a 'weight'")
            weight = parse_fraction(node["weight"])
            if weight is None:
                raise InputError(where(), f"weight {node['weight']!r} is not a fraction or a percentage")
            if weight < 0 or weight > 1:
                raise InputError(where(), f"weight {node['weight']!r} is outside 0..100%")
            weights.append(float(weight))
        else:
            weights.append(float("nan"))

        keep_flag = node.get("keep_unlisted", False)
        if not isinstance(keep_flag, bool):
            raise InputError(where(), "'keep_unlisted' must be true or false")
        keep.append(keep_flag)

        children = node.get("children")
        if "asset" in node:
            if children is not None:
                raise InputError(where(), "a node has either 'children' (portfolio) or 'asset' (wallet)")
            asset = node["asset"]
            if not isinstance(asset, str) or not asset.strip():
                raise InputError(where(), "'asset' must be a non-empty string")
            is_wallet.append(True)
            assets.append(asset)
            lists_children.append(False)
            if "amount" in node:
                amount = parse_decimal(node["amount"])
                if amount is None:
                    raise InputError(where(), f"amount {node['amount']!r} is not a decimal number")
                if amount < 0:
                    raise InputError(where(), f"negative amount {node['amount']}")
                amount_text.append(str(amount))
            elif target:
                amount = Decimal(0)
                amount_text.append(None)
            else:
                raise InputError(where(), "a wallet needs an 'amount'")
            if "locks" in node and not target:
                parsed = _parse_locks(node["locks"], amount, where())
                if parsed:
                    locks[index] = parsed
                    locked[index] = float(sum((lock.locked(amount) for lock in parsed), Decimal(0)))
        else:
            if children is not None and not isinstance(children, list):
                raise InputError(where(), "'children' must be a list")
            if "amount" in node or "locks" in node:
                raise InputError(where(), "'amount' and 'locks' belong to wallets (nodes with an 'asset')")
            is_wallet.append(False)
            assets.append(None)
            amount_text.append(None)
            lists_children.append(bool(children))
            if children:
                for position_in_parent in range(len(children) - 1, -1, -1):
                    stack.append((children[position_in_parent], index, depth + 1, position_in_parent))

    count = len(names)
    amount_array = np.zeros(count, dtype=np.float64)
    wallet_index = [i for i in range(count) if amount_text[i] is not None]
    if wallet_index:
        amount_array[wallet_index] = np.array([amount_text[i] for i in wallet_index], dtype=np.float64)
    locked_array = np.zeros(count, dtype=np.float64)
    for i, value in locked.items():
        locked_array[i] = value
    tree = Tree(
        role=role,
        names=names,
        kinds=kinds,
        parent=np.array(parents, dtype=np.int64),
        depth=np.array(depths, dtype=np.int64),
        wallet=np.array(is_wallet, dtype=np.bool_),
        assets=assets,
        amount=amount_array,
        amount_text=amount_text,
        locked=locked_array,
        locks=locks,
        weight=np.array(weights, dtype=np.float64),
        keep_unlisted=np.array(keep, dtype=np.bool_),
        lists_children=np.array(lists_children, dtype=np.bool_),
        quote=quote,
        exchange=exchange,
    )
    if target:
        check_weight_sums(tree)
    return tree


def _parse_locks(raw: object, amount: Decimal, where: str) -> tuple[Lock, ...]:
    if not isinstance(raw, list):
        raise InputError(where, "'locks' must be a list of {owner, share} or {owner, amount}")
    parsed: list[Lock] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InputError(where, f"lock #{position + 1} must be a mapping")
        unknown = item.keys() - LOCK_KEYS
        if unknown:
            raise InputError(where, f"lock #{position + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        owner = item.get("owner")
        if not isinstance(owner, str) or not owner:
            raise InputError(where, f"lock #{position + 1} needs a non-empty 'owner'")
        if ("share" in item) == ("amount" in item):
            raise InputError(
                where, f"lock #{position + 1} ({owner}) needs exactly one of 'share' or 'amount'"
            )
        if "share" in item:
            share = parse_fraction(item["share"])
            if share is None or share < 0 or share > 1:
                raise InputError(where, f"lock of {owner}: share {item['share']!r} is not within 0..1")
            parsed.append(Lock(owner=owner, share=share))
        else:
            locked_amount = parse_decimal(item["amount"])
            if locked_amount is None or locked_amount < 0:
                raise InputError(where, f"lock of {owner}: amount {item['amount']!r} is not a decimal >= 0")
            parsed.append(Lock(owner=owner, amount=locked_amount))
    total = sum((lock.locked(amount) for lock in parsed), Decimal(0))
    if total > amount:
        over = f"{total / amount:.1%}" if amount > 0 else "more than the wallet holds"
        raise InputError(where, f"locks total {total} which is over 100% of the amount {amount} ({over})")
    return tuple(parsed)


def check_weight_sums(tree: Tree) -> None:
    """Sibling weights must sum to 1 within `WEIGHT_SUM_TOLERANCE` (for portfolios that list children)."""
    if len(tree) <= 1:
        return
    children = np.arange(1, len(tree))
    sums = np.bincount(tree.parent[children], weights=tree.weight[children], minlength=len(tree))
    bad = np.flatnonzero(tree.lists_children & (np.abs(sums - 1.0) > WEIGHT_SUM_TOLERANCE))
    if bad.size:
        node = int(bad[0])
        total = sums[node]
        raise InputError(tree.path(node), f"weights of the children sum to {total * 100:.6g}%, expected 100%")


@dataclass(frozen=True, eq=False)
class UnionTree:
    """Real and desired trees matched by path: real nodes first (file order), then desired-only nodes.

    Parents always precede their children. `real_index`/`target_index` map back (-1 where absent).
    """

    names: list[str]
    kinds: list[str | None]
    parent: IntArray
    depth: IntArray
    wallet: BoolArray
    assets: list[str | None]
    amount: FloatArray
    locked: FloatArray
    real_index: IntArray
    target_index: IntArray
    account_of: IntArray
    accounts: dict[int, tuple[str, str]]
    real: Tree
    target: Tree

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int) -> str:
        parts: list[str] = []
        node = index
        while node >= 0:
            parts.append(self.names[node])
            node = int(self.parent[node])
        return PATH_SEP.join(reversed(parts))

    def paths(self) -> list[str]:
        """Every node's path, computed in one pass (parents precede children)."""
        out: list[str] = [""] * len(self.names)
        parent = self.parent.tolist()
        for i, name in enumerate(self.names):
            p = parent[i]
            out[i] = name if p < 0 else f"{out[p]}{PATH_SEP}{name}"
        return out

    def levels(self) -> list[IntArray]:
        """Node indices grouped by depth, root level first."""
        order = np.argsort(self.depth, kind="stable")
        bounds = np.searchsorted(self.depth[order], np.arange(int(self.depth.max()) + 2))
        return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]

    def children_csr(self) -> tuple[IntArray, IntArray]:
        """(offsets, child indices): the children of node i are ``child[offsets[i]:offsets[i+1]]``."""
        kids = np.arange(1, len(self.names))
        order = kids[np.argsort(self.parent[kids], kind="stable")]
        counts = np.bincount(self.parent[kids], minlength=len(self.names))
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return offsets, order.astype(np.int64)


def union(real: Tree, target: Tree, default_quote: str) -> UnionTree:
    """Match the desired tree onto the real one by path; resolve every wallet's account.

    Matching is level by level on integer keys (parent index x vocabulary + name id), so a million
    nodes match in a few numpy passes instead of a million dictionary probes.
    """
    n_real = len(real)
    ids = {name: i for i, name in enumerate(dict.fromkeys(real.names))}
    width = len(ids) + 1
    real_keys = real.parent[1:] * width + np.fromiter(
        map(ids.__getitem__, real.names[1:]), np.int64, n_real - 1
    )
    key_order = np.argsort(real_keys, kind="stable")
    sorted_keys = real_keys[key_order]
    lookup = ids.get
    target_ids = np.array([lookup(name, -1) for name in target.names], dtype=np.int64)

    target_to_union = np.zeros(len(target), dtype=np.int64)
    real_target = np.full(n_real, -1, dtype=np.int64)
    real_target[0] = 0
    new_levels: list[IntArray] = []
    next_new = n_real
    order = np.argsort(target.depth, kind="stable")
    bounds = np.searchsorted(target.depth[order], np.arange(int(target.depth.max(initial=0)) + 2))
    for d in range(1, len(bounds) - 1):
        level = order[bounds[d] : bounds[d + 1]]
        up = target_to_union[target.parent[level]]
        keys = up * width + target_ids[level]
        position = np.minimum(np.searchsorted(sorted_keys, keys), max(sorted_keys.size - 1, 0))
        found = (target_ids[level] >= 0) & (up < n_real)
        if sorted_keys.size:
            found &= sorted_keys[position] == keys
        else:
            found &= False
        matched = key_order[position[found]] + 1
        target_to_union[level[found]] = matched
        real_target[matched] = level[found]
        new = level[~found]
        target_to_union[new] = np.arange(next_new, next_new + new.size)
        next_new += new.size
        new_levels.append(new)
    _check_matches(real, target, real_target)
    new_nodes = np.concatenate(new_levels).tolist() if new_levels else []
    new_parent = target_to_union[target.parent[new_nodes]].tolist() if new_nodes else []

    new = np.array(new_nodes, dtype=np.int64)
    names = real.names + [target.names[j] for j in new_nodes]
    kinds = real.kinds + [target.kinds[j] for j in new_nodes]
    assets = real.assets + [target.assets[j] for j in new_nodes]
    parent = np.concatenate((real.parent, np.array(new_parent, dtype=np.int64)))
    depth = np.concatenate((real.depth, target.depth[new] if new.size else np.zeros(0, dtype=np.int64)))
    wallet = np.concatenate((real.wallet, target.wallet[new] if new.size else np.zeros(0, dtype=np.bool_)))
    count = len(names)
    amount = np.zeros(count, dtype=np.float64)
    amount[:n_real] = real.amount
    locked = np.zeros(count, dtype=np.float64)
    locked[:n_real] = real.locked
    target_index = np.concatenate((real_target, new))
    real_index = np.concatenate((np.arange(n_real, dtype=np.int64), np.full(new.size, -1, dtype=np.int64)))

    quotes = dict(real.quote)
    exchanges = dict(real.exchange)
    for offset, j in enumerate(new_nodes):
        if j in target.quote:
            quotes[n_real + offset] = target.quote[j]
        if j in target.exchange:
            exchanges[n_real + offset] = target.exchange[j]

    tree = UnionTree(
        names=names,
        kinds=kinds,
        parent=parent,
        depth=depth,
        wallet=wallet,
        assets=assets,
        amount=amount,
        locked=locked,
        real_index=real_index,
        target_index=target_index,
        account_of=np.full(count, -1, dtype=np.int64),
        accounts={},
        real=real,
        target=target,
    )
    _resolve_accounts(tree, quotes, exchanges, default_quote)
    return tree


def _check_matches(real: Tree, target: Tree, real_target: IntArray) -> None:
    """A matched pair must be two wallets of the same asset, or two portfolios."""
    both = np.flatnonzero(real_target >= 0)
    kinds = real.wallet[both] != target.wallet[real_target[both]]
    if kinds.any():
        node = int(both[np.argmax(kinds)])
        raise InputError(real.path(node), "is a wallet in one tree and a portfolio in the other", "target")
    wallets = both[real.wallet[both]].tolist()
    partner = real_target[wallets].tolist()
    for node, other in zip(wallets, partner, strict=True):
        if real.assets[node] != target.assets[other]:
            raise InputError(
                real.path(node),
                f"asset {real.assets[node]} in the real tree, {target.assets[other]} desired",
                "target",
            )


def _resolve_accounts(
    tree: UnionTree, quotes: dict[int, str], exchanges: dict[int, str], default_quote: str
) -> None:
    """Every wallet lies under exactly one account; the exchange is the nearest exchange ancestor."""
    count = len(tree)
    is_account = np.array([kind == ACCOUNT for kind in tree.kinds], dtype=np.bool_)
    is_exchange = np.array([kind == EXCHANGE for kind in tree.kinds], dtype=np.bool_)
    account_of = tree.account_of
    exchange_of = np.full(count, -1, dtype=np.int64)
    for level in tree.levels():
        parents = tree.parent[level]
        inherited = np.where(parents >= 0, account_of[np.maximum(parents, 0)], -1)
        nested = level[is_account[level] & (inherited >= 0)]
        if nested.size:
            node = int(nested[0])
            outer = tree.path(int(account_of[tree.parent[node]]))
            raise InputError(tree.path(node), f"account inside account {outer}", _source(tree, node))
        account_of[level] = np.where(is_account[level], level, inherited)
        up_exchange = np.where(parents >= 0, exchange_of[np.maximum(parents, 0)], -1)
        exchange_of[level] = np.where(is_exchange[level], level, up_exchange)

    orphans = np.flatnonzero(tree.wallet & (account_of < 0))
    if orphans.size:
        node = int(orphans[0])
        raise InputError(
            tree.path(node), "wallet is not under a node with kind 'account'", _source(tree, node)
        )
    for node in np.flatnonzero(is_account).tolist():
        name = exchanges.get(node)
        if name is None:
            ancestor = int(exchange_of[node])
            if ancestor < 0:
                raise InputError(
                    tree.path(node),
                    "account has no exchange: give it an 'exchange' or put it under a kind 'exchange' node",
                    _source(tree, node),
                )
            name = tree.names[ancestor]
        tree.accounts[node] = (name, quotes.get(node, default_quote))


def _source(tree: UnionTree, node: int) -> str:
    return "real" if tree.real_index[node] >= 0 else "target"

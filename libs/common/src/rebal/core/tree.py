"""The portfolio tree, parsed once into flat arrays.

A tree document is nested mappings: a *portfolio* has ``children``, a *wallet* has one ``asset`` (and, in a
real tree, an ``amount``). One iterative walk validates every node and lays the tree out in pre-order as
numpy arrays (a million wallets parse in well under a second); errors name the node path.

The same walk reads a *desired* tree: the same shape with a ``weight`` on every node, relative to its
parent, plus ``keep_unlisted`` on portfolios whose unlisted children keep their current value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError
from rebal.core.numbers import (
    LARGEST,
    RANGE,
    SMALLEST,
    WEIGHT_SUM_TOLERANCE,
    in_range,
    parse_decimal,
    parse_fraction,
)

Role = Literal["real", "target"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NODE_KEYS = frozenset(
    {"name", "kind", "children", "asset", "amount", "locks", "weight", "keep_unlisted", "quote", "exchange"}
)
LOCK_KEYS = frozenset({"owner", "share", "amount"})
# The deepest a tree may go (docs/formats.md): real portfolios are a handful of levels deep, and every
# writer of nested output (JSON encoders, the rich tree) has a nesting limit of its own above this.
MAX_DEPTH = 100
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
class Categorical:
    """A column of repeated strings as ids into a small vocabulary (-1 where a node has none)."""

    ids: IntArray
    vocabulary: list[str]

    @classmethod
    def of(cls, values: list[str] | list[str | None]) -> Categorical:
        index: dict[str | None, int] = {
            value: i for i, value in enumerate(dict.fromkeys(v for v in values if v is not None))
        }
        vocabulary = cast(list[str], list(index))
        index[None] = -1
        return cls(np.fromiter(map(index.__getitem__, values), np.int64, len(values)), vocabulary)

    def within(self, index: dict[str, int]) -> IntArray:
        """These ids translated into another vocabulary's ids (-1 where it lacks the value)."""
        table = np.array([index.get(value, -1) for value in self.vocabulary] + [-1], dtype=np.int64)
        return table[self.ids]

    def value(self, node: int) -> str | None:
        code = int(self.ids[node])
        return self.vocabulary[code] if code >= 0 else None


@dataclass(frozen=True, eq=False)
class Tree:
    """A parsed tree in pre-order: node 0 is the root and every parent precedes its children."""

    role: Role
    names: list[str]
    kinds: list[str | None]
    name_codes: Categorical
    kind_codes: Categorical
    asset_codes: Categorical
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
    """Validate a tree document and lay it out flat. Raises `InputError` naming the node path (and, as
    its source, which tree: "real" or "target").

    Two passes: a lean walk that only orders the nodes (pre-order, parent and depth), then column by
    column validation with comprehensions and numpy; a bad value is looked for only once a column fails.
    """
    try:
        return _parse_tree(doc, role)
    except InputError as exc:
        raise InputError(exc.where, exc.message, exc.source or role) from None


def _parse_tree(doc: object, role: Role) -> Tree:
    nodes, parents, depths, children = _walk(doc)
    count = len(nodes)
    target = role == "target"
    paths = _Paths(nodes, parents)

    names, name_codes = _names(nodes, parents, paths)
    bad = _first(nodes, lambda node: not NODE_KEYS.issuperset(node))
    if bad is not None:
        unknown = ", ".join(sorted(map(str, nodes[bad].keys() - NODE_KEYS)))
        raise InputError(paths.of(bad), f"unknown key(s) {unknown}")
    kinds = [node.get("kind") for node in nodes]
    if not set(map(type, kinds)) <= {str, type(None)}:
        raise InputError(
            paths.of(_first(kinds, lambda kind: not isinstance(kind, str | None)) or 0),
            "'kind' must be a string",
        )
    keep = [node.get("keep_unlisted", False) for node in nodes]
    if not set(map(type, keep)) <= {bool}:
        raise InputError(
            paths.of(_first(keep, lambda flag: type(flag) is not bool) or 0),
            "'keep_unlisted' must be true or false",
        )
    quote = _text_column(nodes, "quote", paths)
    exchange = _text_column(nodes, "exchange", paths)

    is_wallet = ["asset" in node for node in nodes]
    wallets = [i for i, wallet in enumerate(is_wallet) if wallet]
    portfolios = [i for i, wallet in enumerate(is_wallet) if not wallet]
    assets = [node.get("asset") for node in nodes]
    for index in wallets:
        if children[index] is not None:
            raise InputError(paths.of(index), "a node has either 'children' (portfolio) or 'asset' (wallet)")
    for asset in {assets[i] for i in wallets}:
        if type(asset) is not str or not asset.strip():
            where = paths.of(next(i for i in wallets if assets[i] == asset))
            raise InputError(where, "'asset' must be a non-empty string")
    for index in portfolios:
        if "amount" in nodes[index] or "locks" in nodes[index]:
            raise InputError(
                paths.of(index), "'amount' and 'locks' belong to wallets (nodes with an 'asset')"
            )

    amount_text, amounts = _amounts(nodes, wallets, target, paths)
    locks: dict[int, tuple[Lock, ...]] = {}
    locked = np.zeros(count, dtype=np.float64)
    if not target:
        for index in [i for i in wallets if "locks" in nodes[i]]:
            exact = Decimal(amount_text[index] or 0)
            parsed = _parse_locks(nodes[index]["locks"], exact, paths.of(index))
            if parsed:
                locks[index] = parsed
                locked[index] = float(sum((lock.locked(exact) for lock in parsed), Decimal(0)))

    weights = _weights(nodes, paths) if target else np.full(count, math.nan)
    weights[0] = 1.0
    lists_children = np.zeros(count, dtype=np.bool_)
    lists_children[[i for i in portfolios if children[i]]] = True
    tree = Tree(
        role=role,
        names=names,
        kinds=cast(list[str | None], kinds),
        name_codes=name_codes,
        kind_codes=Categorical.of(cast(list[str | None], kinds)),
        asset_codes=Categorical.of(cast(list[str | None], assets)),
        parent=np.array(parents, dtype=np.int64),
        depth=np.array(depths, dtype=np.int64),
        wallet=np.array(is_wallet, dtype=np.bool_),
        assets=cast(list[str | None], assets),
        amount=amounts,
        amount_text=amount_text,
        locked=locked,
        locks=locks,
        weight=weights,
        keep_unlisted=np.array(keep, dtype=np.bool_),
        lists_children=lists_children,
        quote=quote,
        exchange=exchange,
    )
    if target:
        check_weight_sums(tree)
    return tree


def _names(
    nodes: list[dict[str, object]], parents: list[int], paths: _Paths
) -> tuple[list[str], Categorical]:
    """Every node's name: a non-empty string without '/', unique among its siblings."""
    names = [node.get("name") for node in nodes]
    try:
        codes = Categorical.of(cast(list[str | None], names))
    except TypeError:  # an unhashable name: a list or a mapping
        bad = next(i for i, name in enumerate(names) if not isinstance(name, str | None))
        raise InputError(paths.unnamed(bad), "every node needs a non-empty string 'name'") from None
    for code, name in enumerate(codes.vocabulary):
        if type(name) is not str or not name.strip() or PATH_SEP in name:
            message = "every node needs a non-empty string 'name'"
            if isinstance(name, str) and PATH_SEP in name:
                message = f"node name {name!r} must not contain '{PATH_SEP}'"
            raise InputError(paths.unnamed(int(np.argmax(codes.ids == code))), message)
    if None in names:
        raise InputError(paths.unnamed(names.index(None)), "every node needs a non-empty string 'name'")
    valid = cast(list[str], names)
    if len(codes.vocabulary) < len(valid):
        keys = np.array(parents, dtype=np.int64) * (len(codes.vocabulary) + 1) + codes.ids
        unique, first = np.unique(keys, return_index=True)
        if unique.size < len(valid):
            twice = np.ones(len(valid), dtype=np.bool_)
            twice[first] = False
            index = int(np.flatnonzero(twice)[0])
            raise InputError(paths.of(index), f"duplicate sibling name {valid[index]!r}")
    return valid, codes


def _walk(doc: object) -> tuple[list[dict[str, object]], list[int], list[int], list[object]]:
    """Every node in pre-order with its parent index, depth and children; only mappings and lists
    are checked here."""
    nodes: list[dict[str, object]] = []
    parents: list[int] = []
    depths: list[int] = []
    children: list[object] = []
    stack: list[tuple[object, int, int, int]] = [(doc, -1, 0, 0)]
    pop, push = stack.pop, stack.extend
    while stack:
        raw, parent, depth, position = pop()
        if type(raw) is not dict:
            where = _Paths(nodes, parents).child(parent, position)
            raise InputError(where, f"a node must be a mapping, got {type(raw).__name__}")
        index = len(nodes)
        nodes.append(raw)
        parents.append(parent)
        depths.append(depth)
        kids = raw.get("children")
        children.append(kids)
        if kids:
            if type(kids) is not list:
                raise InputError(_Paths(nodes, parents).of(index), "'children' must be a list")
            below = depth + 1
            if below > MAX_DEPTH:
                where = _Paths(nodes, parents).of(index)
                raise InputError(where, f"the tree is deeper than {MAX_DEPTH} levels below its root")
            push((kids[i], index, below, i) for i in range(len(kids) - 1, -1, -1))
        elif kids is not None and type(kids) is not list:
            raise InputError(_Paths(nodes, parents).of(index), "'children' must be a list")
    return nodes, parents, depths, children


class _Paths:
    """Node paths for error messages, computed only when an error is raised."""

    def __init__(self, nodes: list[dict[str, object]], parents: list[int]) -> None:
        self._nodes = nodes
        self._parents = parents

    def _name(self, index: int) -> str:
        name = self._nodes[index].get("name")
        return name if isinstance(name, str) else f"[{index}]"

    def of(self, index: int) -> str:
        parts: list[str] = []
        while index >= 0:
            parts.append(self._name(index))
            index = self._parents[index]
        return PATH_SEP.join(reversed(parts))

    def child(self, parent: int, position: int) -> str:
        return f"{self.of(parent)}[{position}]" if parent >= 0 else "[root]"

    def unnamed(self, index: int) -> str:
        """A node whose own name is unusable: its parent's path and its position there."""
        parent = self._parents[index]
        if parent < 0:
            return "[root]"
        siblings = cast(list[object], self._nodes[parent].get("children"))
        position = next(i for i, node in enumerate(siblings) if node is self._nodes[index])
        return self.child(parent, position)


def _first(values: list[Any], bad: Callable[[Any], bool]) -> int | None:
    """The index of the first value that is bad, or None."""
    return next((i for i, value in enumerate(values) if bad(value)), None)


def _text_column(nodes: list[dict[str, object]], key: str, paths: _Paths) -> dict[int, str]:
    values = {i: node[key] for i, node in enumerate(nodes) if key in node}
    for index, value in values.items():
        if type(value) is not str or not value:
            raise InputError(paths.of(index), f"'{key}' must be a non-empty string")
    return values  # type: ignore[return-value]  # checked just above


def _amounts(
    nodes: list[dict[str, object]], wallets: list[int], target: bool, paths: _Paths
) -> tuple[list[str | None], FloatArray]:
    """Exact texts and floats of the wallets' amounts (decimal strings or JSON numbers, >= 0, in `RANGE`)."""
    texts: list[str | None] = [None] * len(nodes)
    values = np.zeros(len(nodes), dtype=np.float64)
    given = [i for i in wallets if "amount" in nodes[i]]
    if not target and len(given) != len(wallets):
        missing = next(i for i in wallets if "amount" not in nodes[i])
        raise InputError(paths.of(missing), "a wallet needs an 'amount'")
    raw = [nodes[i]["amount"] for i in given]
    if set(map(type, raw)) <= {str}:
        strings = cast(list[str], raw)
        try:
            parsed = np.array([float(text) for text in strings], dtype=np.float64)
        except ValueError:
            parsed = np.array([math.nan])
        # Strictly inside the range as floats, or exactly zero (not a tiny value that became 0.0); a
        # value at a bound is decided in exact decimals below.
        zero = parsed == 0
        inside = zero | ((parsed > float(SMALLEST)) & (parsed < float(LARGEST)))
        if inside.all() and all(Decimal(strings[i]) == 0 for i in np.flatnonzero(zero).tolist()):
            for i, text in zip(given, strings, strict=True):
                texts[i] = text
            values[given] = parsed
            return texts, values
    for i, value in zip(given, raw, strict=True):  # the slow path finds and names the bad one
        texts[i], values[i] = _amount(value, paths, i)
    return texts, values


def _amount(raw: object, paths: _Paths, index: int) -> tuple[str, float]:
    """An amount's exact text and its float; finite and >= 0."""
    value = parse_decimal(raw)
    if value is None:
        raise InputError(paths.of(index), f"amount {raw!r} is not a decimal number")
    if value < 0:
        raise InputError(paths.of(index), f"negative amount {raw}")
    if not in_range(value):
        raise InputError(paths.of(index), f"amount {raw} is outside the supported range ({RANGE})")
    text = str(value)
    return text, float(text)


def _weights(nodes: list[dict[str, object]], paths: _Paths) -> FloatArray:
    """Every non-root node's weight: a fraction or a percentage string, within 0..1."""
    count = len(nodes)
    missing = _first(nodes[1:], lambda node: "weight" not in node)
    if missing is not None:
        raise InputError(paths.of(missing + 1), "every node of a desired tree needs a 'weight'")
    raw = [node["weight"] for node in nodes[1:]]
    weights = np.full(count, math.nan)
    try:
        weights[1:] = [_fast_fraction(value) for value in raw]
    except (TypeError, ValueError):
        weights[1:] = math.nan
    bad = np.flatnonzero(~np.isfinite(weights[1:]) | (weights[1:] < 0) | (weights[1:] > 1))
    for index in bad.tolist():  # the exact parser names the problem
        value = raw[index]
        weight = parse_fraction(value)
        if weight is None:
            raise InputError(paths.of(index + 1), f"weight {value!r} is not a fraction or a percentage")
        if weight < 0 or weight > 1:
            raise InputError(paths.of(index + 1), f"weight {value!r} is outside 0..100%")
        weights[index + 1] = float(weight)
    return weights


def _fast_fraction(value: object) -> float:
    if type(value) is str:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    if type(value) is float or type(value) is int:
        return float(value)
    raise TypeError(value)


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
            if not in_range(locked_amount):
                outside = f"is outside the supported range ({RANGE})"
                raise InputError(where, f"lock of {owner}: amount {item['amount']} {outside}")
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
    asset_codes: Categorical
    parent: IntArray
    depth: IntArray
    wallet: BoolArray
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

    def asset(self, node: int) -> str | None:
        return self.asset_codes.value(node)

    @cached_property
    def levels(self) -> list[IntArray]:
        """Node indices grouped by depth, root level first."""
        return _levels(self.depth)

    def children_csr(self) -> tuple[IntArray, IntArray]:
        """(offsets, child indices): the children of node i are ``child[offsets[i]:offsets[i+1]]``."""
        kids = np.arange(1, len(self.names))
        order = kids[np.argsort(self.parent[kids], kind="stable")]
        counts = np.bincount(self.parent[kids], minlength=len(self.names))
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return offsets, order.astype(np.int64)


def _levels(depth: IntArray) -> list[IntArray]:
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max(initial=0)) + 2))
    return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]


def union(real: Tree, target: Tree, default_quote: str) -> UnionTree:
    """Match the desired tree onto the real one by path; resolve every wallet's account.

    Matching is level by level on integer keys (parent index x vocabulary + name id), so a million
    nodes match in a few numpy passes instead of a million dictionary probes.
    """
    n_real = len(real)
    vocabulary = {name: i for i, name in enumerate(real.name_codes.vocabulary)}
    width = len(vocabulary) + 1
    real_keys = real.parent[1:] * width + real.name_codes.ids[1:]
    key_order = np.argsort(real_keys, kind="stable")
    sorted_keys = real_keys[key_order]
    target_ids = target.name_codes.within(vocabulary)

    target_to_union = np.zeros(len(target), dtype=np.int64)
    real_target = np.full(n_real, -1, dtype=np.int64)
    real_target[0] = 0
    new_levels: list[IntArray] = []
    next_new = n_real
    for level in _levels(target.depth)[1:]:
        up = target_to_union[target.parent[level]]
        keys = up * width + target_ids[level]
        found = (target_ids[level] >= 0) & (up < n_real)
        if sorted_keys.size:
            position = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
            found &= sorted_keys[position] == keys
        else:
            position, found = np.zeros_like(keys), found & False
        matched = key_order[position[found]] + 1
        target_to_union[level[found]] = matched
        real_target[matched] = level[found]
        new = level[~found]
        target_to_union[new] = np.arange(next_new, next_new + new.size)
        next_new += new.size
        new_levels.append(new)
    new = np.concatenate(new_levels) if new_levels else np.zeros(0, dtype=np.int64)
    new_nodes = new.tolist()

    # Assets in one vocabulary: the real tree's, then what only the desired tree names.
    assets = {name: i for i, name in enumerate(real.asset_codes.vocabulary)}
    for name in target.asset_codes.vocabulary:
        assets.setdefault(name, len(assets))
    target_assets = target.asset_codes.within(assets)
    _check_matches(real, target, real_target, target_assets)
    asset_codes = Categorical(np.concatenate((real.asset_codes.ids, target_assets[new])), list(assets))

    count = n_real + new.size
    amount = np.zeros(count, dtype=np.float64)
    amount[:n_real] = real.amount
    locked = np.zeros(count, dtype=np.float64)
    locked[:n_real] = real.locked
    quotes = dict(real.quote)
    exchanges = dict(real.exchange)
    for offset, j in enumerate(new_nodes):
        if j in target.quote:
            quotes[n_real + offset] = target.quote[j]
        if j in target.exchange:
            exchanges[n_real + offset] = target.exchange[j]

    tree = UnionTree(
        names=real.names + [target.names[j] for j in new_nodes],
        kinds=real.kinds + [target.kinds[j] for j in new_nodes],
        asset_codes=asset_codes,
        parent=np.concatenate((real.parent, target_to_union[target.parent[new]])),
        depth=np.concatenate((real.depth, target.depth[new])),
        wallet=np.concatenate((real.wallet, target.wallet[new])),
        amount=amount,
        locked=locked,
        real_index=np.concatenate((np.arange(n_real, dtype=np.int64), np.full(new.size, -1, dtype=np.int64))),
        target_index=np.concatenate((real_target, new)),
        account_of=np.full(count, -1, dtype=np.int64),
        accounts={},
        real=real,
        target=target,
    )
    _resolve_accounts(tree, quotes, exchanges, default_quote, _kind_flags(real, target, new))
    return tree


def _kind_flags(real: Tree, target: Tree, new: IntArray) -> tuple[BoolArray, BoolArray]:
    """Which union nodes are accounts and which are exchanges (from the kind vocabularies)."""

    def flag(kind: str) -> BoolArray:
        in_real = real.kind_codes.within({kind: 0}) == 0
        in_target = target.kind_codes.within({kind: 0}) == 0
        return np.concatenate((in_real, in_target[new]))

    return flag(ACCOUNT), flag(EXCHANGE)


def _check_matches(real: Tree, target: Tree, real_target: IntArray, target_assets: IntArray) -> None:
    """A matched pair must be two wallets of the same asset, or two portfolios."""
    both = np.flatnonzero(real_target >= 0)
    partner = real_target[both]
    kinds = real.wallet[both] != target.wallet[partner]
    if kinds.any():
        node = int(both[np.argmax(kinds)])
        raise InputError(real.path(node), "is a wallet in one tree and a portfolio in the other", "target")
    differ = real.wallet[both] & (real.asset_codes.ids[both] != target_assets[partner])
    if differ.any():
        node, other = int(both[np.argmax(differ)]), int(partner[np.argmax(differ)])
        held, wanted = real.asset_codes.value(node), target.asset_codes.value(other)
        raise InputError(real.path(node), f"asset {held} in the real tree, {wanted} desired", "target")


def _resolve_accounts(
    tree: UnionTree,
    quotes: dict[int, str],
    exchanges: dict[int, str],
    default_quote: str,
    flags: tuple[BoolArray, BoolArray],
) -> None:
    """Every wallet lies under exactly one account; the exchange is the nearest exchange ancestor."""
    is_account, is_exchange = flags
    account_of = tree.account_of
    exchange_of = np.full(len(tree), -1, dtype=np.int64)
    for level in tree.levels:
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

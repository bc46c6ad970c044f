"""The portfolio tree, parsed once into flat arrays.

A tree document is nested mappings: a *portfolio* has ``children``, a *wallet* has one ``asset`` (and, in a
real tree, an ``amount``). One iterative walk validates every node and lays the tree out in pre-order as
numpy arrays (a million wallets parse in well under a second); errors name the node path.

The same walk reads a *desired* tree: the same shape with a ``weight`` on every node, relative to its
parent, plus ``keep_unlisted`` on portfolios whose unlisted children keep their current value, and
``pool`` on portfolios that say in which proportions their assets are held anywhere in the accounts below
them instead of weighting children (`rebal.core.pools`). A real and a desired tree are matched into one
by `rebal.core.union`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from operator import attrgetter, itemgetter
from typing import Any, Literal, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError, spelled
from rebal.core.numbers import (
    LARGEST,
    RANGE,
    SMALLEST,
    WEIGHT_SUM_TOLERANCE,
    in_range,
    parse_decimal,
    parse_fraction,
)
from rebal.core.positions import FUTURES, Position, TargetPosition, parse_positions

Role = Literal["real", "target"]
T = TypeVar("T")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def assembled(cls: type[T], **fields: Any) -> T:
    """`cls(**fields)` of a frozen dataclass given EVERY field (defaults included), without its generated
    `__init__`, which assigns field by field through `object.__setattr__` (~4 us for the fifteen fields
    of a `DiffTree` or a `Decision`, made thousands of times in a replay). None of these classes checks or
    converts a field on construction, so the object is the same."""
    made = object.__new__(cls)
    made.__dict__.update(fields)
    return made


NODE_KEYS = frozenset(
    {
        "name",
        "kind",
        "children",
        "asset",
        "amount",
        "locks",
        "weight",
        "keep_unlisted",
        "quote",
        "exchange",
        "positions",
        "pool",
    }
)
LOCK_KEYS = frozenset({"owner", "share", "amount"})
# The deepest a tree may go (docs/formats.md): real portfolios are a handful of levels deep, and every
# writer of nested output (JSON encoders, the rich tree) has a nesting limit of its own above this.
MAX_DEPTH = 100
ACCOUNT = "account"
# A bank or broker account without an API: an account like any other in the tree, where nothing trades;
# a transfer to or from it is an operator's task (docs/execution.md).
BANK = "bank"
EXCHANGE = "exchange"
PATH_SEP = "/"


class Lock(NamedTuple):
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
    def of(cls, values: list[str] | list[str | None], absent: object = None) -> Categorical:
        """Codes of `values` (`absent`, None by default, is -1)."""
        seen: dict[object, None] = dict.fromkeys(values)  # distinct values in order, at C speed
        seen.pop(absent, None)
        vocabulary = cast(list[str], list(seen))
        index: dict[object, int] = {value: i for i, value in enumerate(vocabulary)}
        index[absent] = -1
        return cls(np.fromiter(map(index.__getitem__, values), np.int64, len(values)), vocabulary)

    def within(self, index: dict[str, int]) -> IntArray:
        """These ids translated into another vocabulary's ids (-1 where it lacks the value)."""
        table = np.array([index.get(value, -1) for value in self.vocabulary] + [-1], dtype=np.int64)
        return table[self.ids]

    def joined(self, other: Categorical, rows: IntArray) -> tuple[Categorical, IntArray]:
        """These codes followed by `other`'s at `rows`, in one vocabulary (this one, then the values only
        `other` has), and all of `other`'s codes in that vocabulary."""
        index = {value: i for i, value in enumerate(self.vocabulary)}
        for value in other.vocabulary:
            index.setdefault(value, len(index))
        theirs = other.within(index)
        return Categorical(np.concatenate((self.ids, theirs[rows])), list(index)), theirs

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
    amount: FloatArray
    # Each node's amount as its document wrote it (None: no amount); any sequence (a replay's book writes
    # a float amount's text only when it is read).
    amount_text: Sequence[str | None]
    locked: FloatArray
    locks: dict[int, tuple[Lock, ...]]
    locked_total: dict[int, Decimal]  # what the locks of a wallet lock, exactly
    weight: FloatArray
    keep_unlisted: BoolArray
    lists_children: BoolArray
    quote: dict[int, str]
    exchange: dict[int, str]
    # The positions of futures accounts (`rebal.core.positions`): held (real) or wanted (target), by node.
    positions: dict[int, tuple[Position, ...] | tuple[TargetPosition, ...]] = field(default_factory=dict)
    # Desired portfolios holding a pool: node -> ((asset, weight), ...) in asset order, weights summing to 1.
    pools: dict[int, tuple[tuple[str, float], ...]] = field(default_factory=dict)
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

    @cached_property
    def assets(self) -> list[str | None]:
        """Every node's asset (None for portfolios)."""
        vocabulary = self.asset_codes.vocabulary
        return [vocabulary[code] if code >= 0 else None for code in self.asset_codes.ids.tolist()]

    def exact_amount(self, index: int) -> Decimal:
        text = self.amount_text[index]
        return Decimal(text) if text is not None else Decimal(0)

    def exact_locked(self, index: int) -> Decimal:
        return self.locked_total.get(index, Decimal(0))


class Missing:
    """The value of a key a node does not have."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = Missing()
# The keys a node may have, and what an absent one means where absent and null mean the same
# (the others: `MISSING`).
DEFAULTS: dict[str, object] = {"name": None, "kind": None, "children": None, "keep_unlisted": False}


def parse_tree(doc: object, role: Role) -> Tree:
    """Validate a tree document (nested mappings, as JSON or YAML give them) and lay it out flat.
    Raises `InputError` naming the node path (and, as its source, which tree: "real" or "target")."""
    return _parse(_Documents(), doc, role)


def parse_records(root: object, role: Role, missing: object) -> Tree:
    """The same from nodes with attributes instead of keys, as a typed decoder gives them: each of
    `NODE_KEYS`, absent ones at their `DEFAULTS` or else `missing`. What such a decoder checks (no
    other keys; names, kinds, children and flags of their types) is not checked again."""
    return _parse(_Records(missing), root, role)


def _parse(reader: _Nodes, root: object, role: Role) -> Tree:
    try:
        return _build(_walk(reader, root), role)
    except InputError as exc:
        raise InputError(exc.where, exc.message, exc.source or role) from None


class _Nodes(ABC):
    """How to read nodes: mappings (`_Documents`), or records with attributes (`_Records`)."""

    typed = False
    missing: object = MISSING

    @abstractmethod
    def is_node(self, values: list[object]) -> list[bool] | None:
        """None when every value is a node, else which are."""

    @abstractmethod
    def column(self, nodes: Sequence[Any], field: str) -> list[Any]:
        """Every node's value of `field` (its default, or `missing`, where it has none)."""


class _Documents(_Nodes):
    def is_node(self, values: list[object]) -> list[bool] | None:
        return None if set(map(type, values)) <= {dict} else [type(value) is dict for value in values]

    def column(self, nodes: Sequence[Any], field: str) -> list[Any]:
        default = DEFAULTS.get(field, MISSING)
        return [node.get(field, default) for node in nodes]


class _Records(_Nodes):
    typed = True

    def __init__(self, missing: object) -> None:
        self.missing = missing

    def is_node(self, values: list[object]) -> list[bool] | None:
        return None

    def column(self, nodes: Sequence[Any], field: str) -> list[Any]:
        return list(map(attrgetter(field), nodes))


@dataclass(eq=False)
class _Walked:
    """The nodes in pre-order, their parents and depths, and how many children each lists (-1: no
    'children' key, or null)."""

    reader: _Nodes
    nodes: list[Any]
    parent: IntArray
    depth: IntArray
    listed: IntArray

    def column(self, field: str, nodes: Sequence[Any] | None = None) -> list[Any]:
        return self.reader.column(self.nodes if nodes is None else nodes, field)


def _walk(reader: _Nodes, root: object) -> _Walked:
    """Every node in pre-order, with its parent and depth: level by level (a comprehension per level),
    then the pre-order from subtree sizes (`preorder`). Checks that nodes are mappings, children lists
    and the depth within `MAX_DEPTH`."""
    if reader.is_node([root]) is not None:
        raise InputError("[root]", f"a node must be a mapping, got {type(root).__name__}")
    found: list[Any] = [root]
    parents: list[IntArray] = [np.full(1, -1, dtype=np.int64)]
    listed: list[IntArray] = []
    sizes = [1]
    level: list[Any] = [root]
    first = 0  # the index of the level's first node

    def paths() -> _Paths:
        return _Paths(reader.column(found, "name"), np.concatenate(parents))

    while True:
        kids = reader.column(level, "children")
        if not reader.typed and not set(map(type, kids)) <= {list, type(None)}:
            bad = next(i for i, k in enumerate(kids) if type(k) not in (list, type(None)))
            raise InputError(paths().of(first + bad), "'children' must be a list")
        leaves = kids.count(None)  # a level of wallets lists no children at all (counted at C speed)
        if leaves == len(kids):
            counts, below = np.full(len(kids), -1, dtype=np.int64), []
        else:
            counts = np.array([-1 if k is None else len(k) for k in kids], dtype=np.int64)
            below = [child for k in kids if k for child in k]
        listed.append(counts)
        if not below:
            break
        if len(sizes) > MAX_DEPTH:
            deep = first + int(np.argmax(counts > 0))
            raise InputError(paths().of(deep), f"the tree is deeper than {MAX_DEPTH} levels below its root")
        up = np.repeat(np.arange(first, first + len(level), dtype=np.int64), np.maximum(counts, 0))
        nodes = reader.is_node(below)
        if nodes is not None:
            bad = nodes.index(False)
            slot = int(bad - np.searchsorted(up, up[bad]))
            raise InputError(
                paths().child(int(up[bad]), slot),
                f"a node must be a mapping, got {type(below[bad]).__name__}",
            )
        first += len(level)
        parents.append(up)
        sizes.append(len(below))
        found.extend(below)
        level = below
    parent = np.concatenate(parents)
    depth = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    position = preorder(parent, depth, grouped=True)
    order = np.empty_like(position)
    order[position] = np.arange(len(position))
    up = parent[order]
    return _Walked(
        reader,
        pick(found, order.tolist()),
        np.where(up >= 0, position[np.maximum(up, 0)], -1),
        depth[order],
        np.concatenate(listed)[order],
    )


def _build(walked: _Walked, role: Role) -> Tree:
    """Column by column validation with comprehensions and numpy; a bad value is looked for only once
    a column fails."""
    reader, column, missing = walked.reader, walked.column, walked.reader.missing
    count = len(walked.nodes)
    target = role == "target"
    parents = walked.parent
    raw_names = column("name")
    paths = _Paths(raw_names, parents)
    # Whether any node may carry `positions` (the keys given, or any with a typed decoder).
    may_hold_positions = reader.typed or "positions" in _check_keys(walked.nodes, paths)
    names, name_codes = _names(raw_names, parents, paths)
    kinds = column("kind")
    if not reader.typed and not set(map(type, kinds)) <= {str, type(None)}:
        raise InputError(
            paths.of(_first(kinds, lambda kind: not isinstance(kind, str | None)) or 0),
            "'kind' must be a string",
        )
    keep = column("keep_unlisted")
    if not reader.typed and not set(map(type, keep)) <= {bool}:
        raise InputError(
            paths.of(_first(keep, lambda flag: type(flag) is not bool) or 0),
            "'keep_unlisted' must be true or false",
        )
    # Keys most trees hold on few nodes or none: a column is looked into only when any node has it
    # (counted at C speed).
    quote = _text_column(column("quote"), "quote", paths, missing)
    exchange = _text_column(column("exchange"), "exchange", paths, missing)

    asset_codes = _assets(column("asset"), missing, paths)
    is_wallet = asset_codes.ids >= 0
    with_children = np.flatnonzero(is_wallet & (walked.listed >= 0))
    if with_children.size:
        where = paths.of(int(with_children[0]))
        raise InputError(where, "a node has either 'children' (portfolio) or 'asset' (wallet)")
    wallet_index = np.flatnonzero(is_wallet)
    wallets = wallet_index.tolist()
    portfolios = np.flatnonzero(~is_wallet).tolist()
    wallet_nodes = pick(walked.nodes, wallets)
    portfolio_nodes = pick(walked.nodes, portfolios)
    held = column("positions", wallet_nodes) if may_hold_positions else []
    if held.count(missing) != len(held):
        given = [i for i, value in zip(wallets, held, strict=True) if value is not missing]
        if given:
            raise InputError(paths.of(given[0]), "'positions' belong to accounts of kind 'futures'")
    for key in ("amount", "locks"):
        values = column(key, portfolio_nodes)
        given = [i for i, value in zip(portfolios, values, strict=True) if value is not missing]
        if given:
            where = paths.of(given[0])
            raise InputError(where, "'amount' and 'locks' belong to wallets (nodes with an 'asset')")

    amount_text, amounts = _amounts(
        column("amount", wallet_nodes), wallet_index, count, target, paths, missing
    )
    locks: dict[int, tuple[Lock, ...]] = {}
    locked_total: dict[int, Decimal] = {}
    locked = np.zeros(count, dtype=np.float64)
    wallet_locks = [] if target else column("locks", wallet_nodes)
    if wallet_locks.count(missing) != len(wallet_locks):
        for index, raw in zip(wallets, wallet_locks, strict=True):
            if raw is missing:
                continue
            try:
                parsed, total = _parse_locks(raw, Decimal(amount_text[index] or 0))
            except InputError as exc:
                raise InputError(paths.of(index), exc.message) from None
            if parsed:
                locks[index] = parsed
                locked_total[index] = total
                locked[index] = float(total)

    positions = (
        _positions(column("positions", portfolio_nodes), portfolios, kinds, paths, missing, target)
        if may_hold_positions
        else {}
    )
    weights = _weights(column("weight"), paths, missing) if target else np.full(count, math.nan)
    weights[0] = 1.0
    pools = _pools(column("pool"), walked.listed, is_wallet, target, paths, missing, walked.reader.typed)
    tree = Tree(
        role=role,
        names=names,
        kinds=kinds,
        name_codes=name_codes,
        kind_codes=Categorical.of(kinds)
        if kinds.count(None) != count
        else Categorical(np.full(count, -1), []),
        asset_codes=asset_codes,
        parent=parents,
        depth=walked.depth,
        wallet=is_wallet,
        amount=amounts,
        amount_text=amount_text,
        locked=locked,
        locks=locks,
        locked_total=locked_total,
        weight=weights,
        keep_unlisted=np.array(keep, dtype=np.bool_) if keep.count(False) != count else np.zeros(count, bool),
        lists_children=~is_wallet & (walked.listed > 0),
        quote=quote,
        exchange=exchange,
        positions=positions,
        pools=pools,
    )
    if target:
        check_weight_sums(tree)
    return tree


def _positions(
    values: list[object],
    portfolios: list[int],
    kinds: list[str | None],
    paths: _Paths,
    missing: object,
    target: bool,
) -> dict[int, tuple[Position, ...] | tuple[TargetPosition, ...]]:
    """The `positions` of futures accounts (`rebal.core.positions`), by node."""
    found: dict[int, tuple[Position, ...] | tuple[TargetPosition, ...]] = {}
    for index, raw in zip(portfolios, values, strict=True):
        if raw is missing or raw is None:
            continue
        if kinds[index] != FUTURES:
            raise InputError(paths.of(index), "'positions' belong to accounts of kind 'futures'")
        try:
            found[index] = parse_positions(raw, target)
        except InputError as exc:
            raise InputError(paths.of(index), exc.message) from None
    return found


def _pools(
    column: list[object],
    listed: IntArray,
    wallet: BoolArray,
    target: bool,
    paths: _Paths,
    missing: object,
    typed: bool,
) -> dict[int, tuple[tuple[str, float], ...]]:
    """The pools of a desired tree: on portfolios that list no children, ``{ASSET: weight}`` with weights
    (fractions or percentages) summing to 1 within `WEIGHT_SUM_TOLERANCE`. A file's ``"pool": null`` is
    refused (a typed record's None is its absent pool)."""
    absent = column.count(missing) + (column.count(None) if typed else 0)
    if absent == len(column):  # no pools (at C speed)
        return {}
    given = [i for i, value in enumerate(column) if value is not missing and (value is not None or not typed)]
    pools: dict[int, tuple[tuple[str, float], ...]] = {}
    for index in given:
        raw = column[index]
        where = paths.of(index)
        if not target:
            raise InputError(where, "'pool' belongs to a desired tree")
        if wallet[index]:
            raise InputError(where, "'pool' belongs to portfolios, not to wallets (nodes with an 'asset')")
        if listed[index] > 0:
            raise InputError(
                where, "a pool lists no children: its assets are held anywhere in the accounts below it"
            )
        if not isinstance(raw, dict) or not raw:
            raise InputError(
                where,
                f'\'pool\' must map assets to weights, e.g. {{"BTC": "50%", "USDT": "50%"}}; got '
                f"{spelled(raw)}",
            )
        weights: list[tuple[str, float]] = []
        for asset, value in raw.items():
            if not isinstance(asset, str) or not asset.strip():
                raise InputError(where, "a pool's assets must be non-empty strings")
            weight = parse_fraction(value)
            if weight is None or weight < 0 or weight > 1:
                raise InputError(where, f"pool weight of {asset} {spelled(value)} is not within 0..100%")
            weights.append((asset, float(weight)))
        total = sum(weight for _, weight in weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise InputError(where, f"pool weights sum to {total * 100:.6g}%, expected 100%")
        pools[index] = tuple(sorted(weights))
    return pools


def pick(nodes: Sequence[T], index: list[int]) -> list[T]:
    """The items at `index` (at C speed)."""
    if len(index) > 1:
        return list(itemgetter(*index)(nodes))
    return [nodes[i] for i in index]


def _assets(values: list[object], missing: object, paths: _Paths) -> Categorical:
    """The wallets' assets (a node with an 'asset' is a wallet): non-empty strings."""
    try:
        codes: Categorical | None = Categorical.of(cast(list[str | None], values), absent=missing)
    except TypeError:  # an unhashable asset
        codes = None
    if codes is not None and all(type(asset) is str and asset.strip() for asset in codes.vocabulary):
        return codes
    bad = next(
        i
        for i, asset in enumerate(values)
        if asset is not missing and (type(asset) is not str or not asset.strip())
    )
    raise InputError(paths.of(bad), "'asset' must be a non-empty string")


def _check_keys(nodes: list[dict[str, object]], paths: _Paths) -> set[str]:
    """Only the documented keys (a mapping's keys, at C speed; the slow search only on a failure); the
    keys the nodes use."""
    used: set[str] = set().union(*nodes)
    if NODE_KEYS.issuperset(used):
        return used
    bad = _first(nodes, lambda node: not NODE_KEYS.issuperset(node))
    assert bad is not None
    unknown = ", ".join(sorted(map(str, nodes[bad].keys() - NODE_KEYS)))
    raise InputError(paths.of(bad), f"unknown key(s) {unknown}")


def _names(raw: list[object], parents: IntArray, paths: _Paths) -> tuple[list[str], Categorical]:
    """Every node's name: a non-empty string without '/', unique among its siblings."""
    names = raw
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
    if (codes.ids < 0).any():
        raise InputError(
            paths.unnamed(int(np.argmax(codes.ids < 0))), "every node needs a non-empty string 'name'"
        )
    valid = cast(list[str], names)
    keys = np.sort(parents * (len(codes.vocabulary) + 1) + codes.ids)
    if (keys[1:] == keys[:-1]).any():  # a sibling name twice: find the first one
        keys = parents * (len(codes.vocabulary) + 1) + codes.ids
        unique, first = np.unique(keys, return_index=True)
        if unique.size < len(valid):
            twice = np.ones(len(valid), dtype=np.bool_)
            twice[first] = False
            index = int(np.flatnonzero(twice)[0])
            raise InputError(paths.of(index), f"duplicate sibling name {valid[index]!r}")
    return valid, codes


class _Paths:
    """Node paths for error messages, computed only when an error is raised."""

    def __init__(self, names: list[object], parents: IntArray) -> None:
        self._names = names
        self._parents = parents

    def _name(self, index: int) -> str:
        name = self._names[index]
        return name if isinstance(name, str) else f"[{index}]"

    def of(self, index: int) -> str:
        parts: list[str] = []
        while index >= 0:
            parts.append(self._name(index))
            index = int(self._parents[index])
        return PATH_SEP.join(reversed(parts))

    def child(self, parent: int, position: int) -> str:
        return f"{self.of(parent)}[{position}]" if parent >= 0 else "[root]"

    def unnamed(self, index: int) -> str:
        """A node whose own name is unusable: its parent's path and its position there."""
        parent = int(self._parents[index])
        if parent < 0:
            return "[root]"
        position = int(np.count_nonzero(self._parents[:index] == parent))
        return self.child(parent, position)


def _first(values: list[Any], bad: Callable[[Any], bool]) -> int | None:
    """The index of the first value that is bad, or None."""
    return next((i for i, value in enumerate(values) if bad(value)), None)


def _text_column(values: list[object], key: str, paths: _Paths, missing: object) -> dict[int, str]:
    if values.count(missing) == len(values):
        return {}
    given = {i: value for i, value in enumerate(values) if value is not missing}
    for index, value in given.items():
        if type(value) is not str or not value:
            raise InputError(paths.of(index), f"'{key}' must be a non-empty string")
    return cast(dict[int, str], given)


def _amounts(
    raw: list[object], wallets: IntArray, count: int, target: bool, paths: _Paths, missing: object
) -> tuple[list[str | None], FloatArray]:
    """Exact texts and floats of the wallets' amounts (`raw`, one per wallet): decimal strings or JSON
    numbers, >= 0, in `RANGE`."""
    texts: list[str | None] = [None] * count
    values = np.zeros(count, dtype=np.float64)
    types = set(map(type, raw))
    if type(missing) in types and any(value is missing for value in raw):
        present = np.array([value is not missing for value in raw], dtype=np.bool_)
        if not target:
            raise InputError(paths.of(int(wallets[np.argmin(present)])), "a wallet needs an 'amount'")
        wallets, raw = wallets[present], [value for value in raw if value is not missing]
        types = set(map(type, raw))
    if types <= {str}:
        strings = cast(list[str], raw)
        try:
            parsed = np.fromiter(map(float, strings), dtype=np.float64, count=len(strings))
        except ValueError:
            parsed = np.array([math.nan])
        # Strictly inside the range as floats, or exactly zero (not a tiny value that became 0.0); a
        # value at a bound is decided in exact decimals below.
        zero = parsed == 0
        inside = zero | ((parsed > float(SMALLEST)) & (parsed < float(LARGEST)))
        if inside.all() and all(Decimal(strings[i]) == 0 for i in np.flatnonzero(zero).tolist()):
            if len(wallets) == count:
                texts = list(strings)
            else:  # None for portfolios, each wallet's text in place (at C speed)
                given, placed = np.empty(len(strings), dtype=object), np.full(count, None, dtype=object)
                given[:] = strings  # the same objects (a list would be made an array of text first)
                placed[wallets] = given
                texts = placed.tolist()
            values[wallets] = parsed
            return texts, values
    for i, value in zip(wallets.tolist(), raw, strict=True):  # the slow path finds and names the bad one
        texts[i], values[i] = _amount(value, paths, i)
    return texts, values


def _amount(raw: object, paths: _Paths, index: int) -> tuple[str, float]:
    """An amount's exact text and its float; >= 0 and in `RANGE`."""
    value = parse_decimal(raw)
    if value is None:
        raise InputError(paths.of(index), f"amount {spelled(raw)} is not a decimal number")
    if value < 0:
        raise InputError(paths.of(index), f"negative amount {raw}")
    if not in_range(value):
        raise InputError(paths.of(index), f"amount {raw} is outside the supported range ({RANGE})")
    text = str(value)
    return text, float(text)


def _weights(column: list[object], paths: _Paths, missing: object) -> FloatArray:
    """Every non-root node's weight: a fraction or a percentage string, within 0..1."""
    count = len(column)
    raw = column[1:]
    types = set(map(type, raw))
    if type(missing) in types:
        absent = next(i for i, value in enumerate(raw) if value is missing)
        raise InputError(paths.of(absent + 1), "every node of a desired tree needs a 'weight'")
    weights = np.full(count, math.nan)
    try:
        if types <= {str} and "%" not in "".join(cast(list[str], raw)):  # fractions only
            weights[1:] = np.fromiter(map(float, cast(list[str], raw)), dtype=np.float64, count=count - 1)
        else:
            weights[1:] = [_fast_fraction(value) for value in raw]
    except (TypeError, ValueError):
        weights[1:] = math.nan
    bad = np.flatnonzero(~np.isfinite(weights[1:]) | (weights[1:] < 0) | (weights[1:] > 1))
    for index in bad.tolist():  # the exact parser names the problem
        value = raw[index]
        weight = parse_fraction(value)
        if weight is None:
            raise InputError(
                paths.of(index + 1), f"weight {spelled(value)} is not a fraction or a percentage"
            )
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


def _parse_locks(raw: object, amount: Decimal) -> tuple[tuple[Lock, ...], Decimal]:
    """A wallet's locks and what they lock in all; the caller names the wallet in an `InputError`."""
    if not isinstance(raw, list):
        raise InputError("", "'locks' must be a list of {owner, share} or {owner, amount}")
    parsed: list[Lock] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InputError("", f"lock #{position + 1} must be a mapping")
        unknown = item.keys() - LOCK_KEYS
        if unknown:
            raise InputError("", f"lock #{position + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        owner = item.get("owner")
        if not isinstance(owner, str) or not owner:
            raise InputError("", f"lock #{position + 1} needs a non-empty 'owner'")
        if ("share" in item) == ("amount" in item):
            raise InputError("", f"lock #{position + 1} ({owner}) needs exactly one of 'share' or 'amount'")
        if "share" in item:
            share = parse_fraction(item["share"])
            if share is None or share < 0 or share > 1:
                raise InputError("", f"lock of {owner}: share {item['share']!r} is not within 0..1")
            parsed.append(Lock(owner=owner, share=share))
        else:
            locked_amount = parse_decimal(item["amount"])
            if locked_amount is None or locked_amount < 0:
                raise InputError(
                    "", f"lock of {owner}: amount {spelled(item['amount'])} is not a decimal >= 0"
                )
            if not in_range(locked_amount):
                outside = f"is outside the supported range ({RANGE})"
                raise InputError("", f"lock of {owner}: amount {item['amount']} {outside}")
            parsed.append(Lock(owner=owner, amount=locked_amount))
    total = sum((lock.locked(amount) for lock in parsed), Decimal(0))
    if total > amount:
        over = f"{total / amount:.1%}" if amount > 0 else "more than the wallet holds"
        raise InputError("", f"locks total {total} which is over 100% of the amount {amount} ({over})")
    return tuple(parsed), total


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


def preorder(parent: IntArray, depth: IntArray, grouped: bool = False) -> IntArray:
    """Every node's position in pre-order (a node, then its children's subtrees in index order), level by
    level on arrays: subtree sizes bottom-up, then each child placed after its parent and the subtrees of
    its earlier siblings. `grouped`: each level's nodes already come by parent, then index (the nodes
    are numbered level by level)."""
    count = len(parent)
    levels = by_level(depth)
    size = np.ones(count, dtype=np.int64)
    for level in reversed(levels[1:]):
        size += np.bincount(parent[level], weights=size[level], minlength=count).astype(np.int64)
    position = np.zeros(count, dtype=np.int64)
    for level in levels[1:]:
        nodes = level if grouped else level[np.lexsort((level, parent[level]))]  # siblings together
        up = parent[nodes]
        before = np.cumsum(size[nodes]) - size[nodes]  # subtrees ahead in the level
        starts = np.flatnonzero(np.r_[True, up[1:] != up[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, len(nodes)]))
        position[nodes] = position[up] + 1 + before - before[first]
    return position


def by_level(depth: IntArray) -> list[IntArray]:
    """Node indices grouped by depth, root level first."""
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max(initial=0)) + 2))
    return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]


def contains(keys: IntArray, query: IntArray) -> BoolArray:
    """Per `query` value, whether `keys` (integers, any order, repeats allowed) hold it: `np.isin` by one
    sort of the keys and a binary search (numpy's own choice, sorting keys and query together or a table
    over the keys' whole range, is several times slower on the planner's wide composite keys)."""
    if not keys.size:
        return np.zeros(query.shape, dtype=np.bool_)
    ordered = np.sort(keys)
    found: BoolArray = ordered[np.minimum(np.searchsorted(ordered, query), ordered.size - 1)] == query
    return found


def unique_keys(values: IntArray) -> IntArray:
    """`np.unique(values)` (sorted, each once) by one sort: numpy's own, a hash table since numpy 2, is
    tens of times slower on the planner's wide composite keys (60 ms against 2 for 120,000 of them)."""
    ordered = np.sort(values, axis=None)
    if not ordered.size:
        return ordered
    found: IntArray = ordered[np.r_[True, ordered[1:] != ordered[:-1]]]
    return found


def with_wallets(tree: Tree, wallets: Sequence[tuple[int, str, str]]) -> Tree:
    """A real tree with empty wallets added: (parent node, name, asset), each holding 0, after the last
    node (parents still precede their children). A pool (`rebal.core.pools`) adds one where it decides
    to hold an asset in an account that has no wallet of it."""
    if not wallets:
        return tree
    count = len(wallets)
    parents = np.array([parent for parent, _, _ in wallets], dtype=np.int64)
    names = [name for _, name, _ in wallets]
    assets = [asset for _, _, asset in wallets]
    added_names = Categorical.of(names)
    added_assets = Categorical.of(assets)
    rows = np.arange(count, dtype=np.int64)
    name_codes = tree.name_codes.joined(added_names, rows)[0]
    asset_codes = tree.asset_codes.joined(added_assets, rows)[0]
    nan = np.full(count, math.nan)
    return Tree(
        role=tree.role,
        names=tree.names + names,
        kinds=tree.kinds + [None] * count,
        name_codes=name_codes,
        kind_codes=Categorical(
            np.concatenate((tree.kind_codes.ids, np.full(count, -1, np.int64))), tree.kind_codes.vocabulary
        ),
        asset_codes=asset_codes,
        parent=np.concatenate((tree.parent, parents)),
        depth=np.concatenate((tree.depth, tree.depth[parents] + 1)),
        wallet=np.concatenate((tree.wallet, np.ones(count, np.bool_))),
        amount=np.concatenate((tree.amount, np.zeros(count))),
        amount_text=[*tree.amount_text, *["0"] * count],
        locked=np.concatenate((tree.locked, np.zeros(count))),
        locks=tree.locks,
        locked_total=tree.locked_total,
        weight=np.concatenate((tree.weight, nan)),
        keep_unlisted=np.concatenate((tree.keep_unlisted, np.zeros(count, np.bool_))),
        lists_children=np.concatenate((tree.lists_children, np.zeros(count, np.bool_))),
        quote=tree.quote,
        exchange=tree.exchange,
        pools=tree.pools,
    )

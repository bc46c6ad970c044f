"""The real and the desired tree matched by path into one `UnionTree`, every wallet's account resolved:
what the diff, the plan and the policies walk."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import TypeVar, overload

import numpy as np

from rebal.core.errors import InputError
from rebal.core.positions import FUTURES
from rebal.core.tree import (
    ACCOUNT,
    BANK,
    EXCHANGE,
    PATH_SEP,
    BoolArray,
    Categorical,
    FloatArray,
    IntArray,
    Tree,
    by_level,
)

T = TypeVar("T")


class Appended(Sequence[T]):
    """A list followed by a few more items, without copying the list: the union's names and kinds are
    the real tree's (a million at a million wallets) and the desired-only nodes'. A copy would be a new
    million-slot list for the garbage collector to walk at every collection while it lives (some 30 ms
    each at a million nodes) and 8 MB of fresh memory per plan."""

    __slots__ = ("_head", "_tail")

    def __init__(self, head: Sequence[T], tail: list[T]) -> None:
        self._head = head
        self._tail = tail

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        try:  # nearly every node is the real tree's
            if index >= 0:
                return self._head[index]
        except IndexError:
            pass
        head = len(self._head)
        if index < 0:
            index += len(self)
        if 0 <= index < head:
            return self._head[index]
        if head <= index < head + len(self._tail):
            return self._tail[index - head]
        raise IndexError(index)

    def __iter__(self) -> Iterator[T]:
        return chain(self._head, self._tail)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class UnionTree:
    """Real and desired trees matched by path: real nodes first (file order), then desired-only nodes.

    Parents always precede their children. `real_index`/`target_index` map back (-1 where absent).
    """

    names: Sequence[str]
    kinds: Sequence[str | None]
    name_codes: Categorical
    kind_codes: Categorical
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
    _path_of: dict[int, str] = field(default_factory=dict, repr=False)
    # What is derived from the nodes alone (names, parents), shared with `with_real`'s copies.
    shape_memo: dict[Hashable, object] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.parent.size  # one per node (`names` may be a lazy sequence)

    @cached_property
    def bank_accounts(self) -> IntArray:
        """The accounts of kind ``bank`` (nothing trades there), in `accounts` order: read from the kinds'
        codes at once (a where plan asks for them per tree, thousands of accounts, `kinds` node by node)."""
        nodes = np.fromiter(self.accounts, dtype=np.int64, count=len(self.accounts))
        bank = self.kind_codes.within({BANK: 0}) == 0
        found: IntArray = nodes[bank[nodes]]
        return found

    def path(self, index: int) -> str:
        """The node's path: its parent's (remembered, accounts are asked for again and again) and its
        name."""
        known = self._path_of.get(index)
        if known is None:
            parent = int(self.parent[index])
            name = self.names[index]
            known = name if parent < 0 else f"{self.path(parent)}{PATH_SEP}{name}"
            self._path_of[index] = known
        return known

    def paths(self) -> list[str]:
        """Every node's path, computed in one pass (parents precede children), once per shape."""
        known = self.shape_memo.get("paths")
        if isinstance(known, list):
            return known
        out: list[str] = [""] * len(self.names)
        parent = self.parent.tolist()
        for i, name in enumerate(self.names):
            p = parent[i]
            out[i] = name if p < 0 else f"{out[p]}{PATH_SEP}{name}"
        self.shape_memo["paths"] = out
        return out

    def asset(self, node: int) -> str | None:
        return self.asset_codes.value(node)

    def with_real(self, real: Tree) -> UnionTree:
        """This union with `real`'s amounts and locks (`real` has the same nodes as this union's real
        tree: the same document with other amounts)."""
        n_real = len(real)
        amount, locked = self.amount.copy(), self.locked.copy()
        amount[:n_real], locked[:n_real] = real.amount, real.locked
        # A copy of the fields and of what is cached of the shape (`levels`); `dataclasses.replace` would
        # check and pass every field again (a replay takes hundreds of copies).
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.__dict__.update(amount=amount, locked=locked, real=real)
        return other

    @cached_property
    def parent_or_root(self) -> IntArray:
        """Each node's parent, the root's being the root: where every node reads its parent's values."""
        return np.maximum(self.parent, 0)

    @cached_property
    def levels(self) -> list[IntArray]:
        """Node indices grouped by depth, root level first."""
        return by_level(self.depth)

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
    for level in by_level(target.depth)[1:]:
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
    asset_codes, target_assets = real.asset_codes.joined(target.asset_codes, new)
    _check_matches(real, target, real_target, target_assets)

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
        names=Appended(real.names, [target.names[j] for j in new_nodes]),
        kinds=Appended(real.kinds, [target.kinds[j] for j in new_nodes]),
        name_codes=real.name_codes.joined(target.name_codes, new)[0],
        kind_codes=real.kind_codes.joined(target.kind_codes, new)[0],
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


def union_again(tree: UnionTree, real: Tree, default_quote: str) -> UnionTree:
    """`union(real, tree.target, default_quote)` for `real` = `tree`'s real tree with empty wallets added
    (`rebal.core.tree.with_wallets`: a pool's, `rebal.core.where`). Where every desired node matched a
    real one (no desired-only node, nothing to renumber), the union is `tree`'s with the wallets appended,
    each in its parent's account: nothing is matched or resolved again."""
    old = tree.real
    count = len(real)
    added = np.arange(len(old), count)
    parents = real.parent[added]
    if (
        len(tree) != len(old)
        or not (real.wallet[added].all() and (parents < len(old)).all())
        or (tree.account_of[parents] < 0).any()
    ):
        return union(real, tree.target, default_quote)
    target, none = tree.target, np.zeros(0, dtype=np.int64)
    amount = np.zeros(count, dtype=np.float64)
    amount[:] = real.amount
    locked = np.zeros(count, dtype=np.float64)
    locked[:] = real.locked
    return UnionTree(
        names=Appended(real.names, []),
        kinds=Appended(real.kinds, []),
        name_codes=real.name_codes.joined(target.name_codes, none)[0],
        kind_codes=real.kind_codes.joined(target.kind_codes, none)[0],
        asset_codes=real.asset_codes.joined(target.asset_codes, none)[0],
        parent=np.concatenate((real.parent, none)),
        depth=np.concatenate((real.depth, target.depth[none])),
        wallet=np.concatenate((real.wallet, target.wallet[none])),
        amount=amount,
        locked=locked,
        real_index=np.arange(count, dtype=np.int64),
        target_index=np.concatenate((tree.target_index, np.full(added.size, -1, dtype=np.int64))),
        account_of=np.concatenate((tree.account_of, tree.account_of[parents])),
        accounts=dict(tree.accounts),
        real=real,
        target=target,
        _path_of=dict(tree._path_of),
    )


def _kind_flags(real: Tree, target: Tree, new: IntArray) -> tuple[BoolArray, BoolArray, BoolArray]:
    """Which union nodes are accounts, which are exchanges and which accounts are banks (from the kind
    vocabularies)."""

    def flag(kind: str) -> BoolArray:
        in_real = real.kind_codes.within({kind: 0}) == 0
        in_target = target.kind_codes.within({kind: 0}) == 0
        return np.concatenate((in_real, in_target[new]))

    banks = flag(BANK)
    return flag(ACCOUNT) | flag(FUTURES) | banks, flag(EXCHANGE), banks


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
    flags: tuple[BoolArray, BoolArray, BoolArray],
) -> None:
    """Every wallet lies under exactly one account; the exchange is the nearest exchange ancestor (a bank
    account, where nothing trades, needs none: its own name stands for it)."""
    is_account, is_exchange, is_bank = flags
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
            tree.path(node),
            "wallet is not under a node with kind 'account' (or 'futures', 'bank')",
            _source(tree, node),
        )
    for node in np.flatnonzero(is_account).tolist():
        name = exchanges.get(node)
        if name is None:
            ancestor = int(exchange_of[node])
            if ancestor < 0 and is_bank[node]:
                ancestor = node
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

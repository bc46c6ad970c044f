"""The nodes operators are shown of a portfolio, and the weight a plan brings each one to.

A portfolio can hold a million wallets; an operator looks at its shape: the top level (exchanges or
accounts under the root) and its sectors and strategies wherever they sit. The planner computes each
shown node's projected weight from the diff it planned with, so the plan carries it and nothing computes
the diff again to show it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from rebal.core.diff import DiffTree
from rebal.core.numbers import weight_str
from rebal.core.tree import PATH_SEP, IntArray
from rebal.core.union import UnionTree

GROUP_KINDS = frozenset({"sector", "strategy"})


def shown_nodes(tree: UnionTree) -> IntArray:
    """Indices of the depth-1 nodes and the sector/strategy nodes, in tree order."""
    codes = tree.kind_codes
    grouped = np.isin(codes.ids, [code for code, kind in enumerate(codes.vocabulary) if kind in GROUP_KINDS])
    return np.flatnonzero((tree.depth == 1) | grouped)


class Projected(NamedTuple):
    """A shown node's weight in its parent now, and the diff's desired weight the plan brings it to;
    `affected_by_skips` when a skipped order lies at or below it (it ends short of that weight by what
    the skipped order would have moved)."""

    path: str
    current_weight: Decimal
    projected_weight: Decimal
    affected_by_skips: bool


def ancestors(paths: Iterable[str]) -> set[str]:
    """Every path given and each of its ancestors' paths."""
    found: set[str] = set()
    for path in paths:
        found.add(path)
        cut = path.find(PATH_SEP)
        while cut >= 0:
            found.add(path[:cut])
            cut = path.find(PATH_SEP, cut + 1)
    return found


def projected_weights(diff: DiffTree, skipped_paths: Iterable[str]) -> list[Projected]:
    """Each shown node's weight now and after the plan (weights to `WEIGHT_PLACES`, exact decimals)."""
    tree = diff.tree
    # Sorted, the paths at or below a node's path follow it: one look-up per shown node (a few dozen),
    # not every ancestor of every skipped path (thousands) into a set.
    skipped = sorted(skipped_paths)
    rows = []
    for node in shown_nodes(tree).tolist():
        path = tree.path(node)
        rows.append(
            Projected(
                path,
                Decimal(weight_str(float(diff.current_weight[node]))),
                Decimal(weight_str(float(diff.desired_weight[node]))),
                _at_or_below(skipped, path),
            )
        )
    return rows


def _at_or_below(paths: list[str], path: str) -> bool:
    """Whether sorted `paths` hold `path` or a path below it (``path/...``)."""
    at = bisect_left(paths, path)
    if at < len(paths) and paths[at] == path:
        return True
    below = bisect_left(paths, path + PATH_SEP, at)
    return below < len(paths) and paths[below].startswith(path + PATH_SEP)

"""What the API shows, computed from events with the pure core: weights, staleness, page cursors.

No I/O here: the API loads the events, calls one of these, and returns the result.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Prices
from rebal.core.numbers import dec_str, money_str, weight_str
from rebal.core.shown import shown_nodes
from rebal.core.tree import parse_tree
from rebal.events import ProjectedWeight

JsonDict = dict[str, Any]


def diff_of(snapshot: Mapping[str, Any], target: Mapping[str, Any], band: float = 0.0) -> DiffTree:
    """The diff of a `BalanceSnapshotTaken` payload and a `TargetWeightsComputed` payload (raises
    `InputError` for inconsistent input, as the planner would)."""
    real = parse_tree(snapshot["tree"], "real")
    desired = parse_tree(target["tree"], "target")
    return diff_trees(real, desired, Prices.parse(snapshot["prices"]), band=band)


def weights(diff: DiffTree) -> tuple[str, list[JsonDict]]:
    """(total value, rows of actual vs target weight of the shown nodes)."""
    tree = diff.tree
    paths = tree.paths()
    total_current = max(float(diff.current_value[0]), 0.0)
    total_desired = max(float(diff.desired_value[0]), 0.0)
    rows = []
    for i in shown_nodes(tree).tolist():
        current, desired = float(diff.current_value[i]), float(diff.desired_value[i])
        rows.append(
            {
                "path": paths[i],
                "name": tree.names[i],
                "kind": tree.kinds[i],
                "depth": int(tree.depth[i]),
                "actual_weight": weight_str(float(diff.current_weight[i])),
                "target_weight": weight_str(float(diff.desired_weight[i])),
                "actual_share": weight_str(current / total_current if total_current > 0 else 0.0),
                "target_share": weight_str(desired / total_desired if total_desired > 0 else 0.0),
                "actual_value": money_str(current),
                "target_value": money_str(desired),
            }
        )
    return money_str(total_current), rows


def projected(rows: Iterable[ProjectedWeight]) -> list[JsonDict]:
    """A plan's projected weights (the planner's, from the diff it planned with) as the API shows them."""
    return [
        {
            "path": row.path,
            "current_weight": dec_str(row.current_weight),
            "projected_weight": dec_str(row.projected_weight),
            "affected_by_skips": row.affected_by_skips,
        }
        for row in rows
    ]


@dataclass(frozen=True)
class Tolerances:
    price: float
    balance: float


def staleness(
    planned: Mapping[str, Any],
    latest: Mapping[str, Any],
    traded_symbols: Sequence[str],
    tolerances: Tolerances,
) -> str | None:
    """Why a plan made on snapshot `planned` should not run on the world of snapshot `latest`, or None.

    Prices: any traded market's base asset moved by more than `tolerances.price` (relative). Balances:
    the wallets' amounts moved by more than `tolerances.balance` of the planned portfolio's value, each
    change valued at the planned prices (the latest price for an asset the plan did not know).
    """
    old_prices = Prices.parse(planned["prices"])
    new_prices = Prices.parse(latest["prices"])
    moves = []
    for symbol in sorted(set(traded_symbols)):
        base = symbol.partition("/")[0]
        before, now = old_prices.get(base), new_prices.get(base)
        if before is None or now is None:
            return f"no price for {base} in the {'planned' if before is None else 'latest'} snapshot"
        change = abs(now / before - 1)
        if change > Decimal(str(tolerances.price)):
            moves.append(f"{base} {before} -> {now} ({float(change):.2%})")
    if moves:
        limit = f"{tolerances.price:.2%}"
        return f"prices moved more than {limit} since the plan was made: {', '.join(moves)}"
    old_amounts = _wallets(planned)
    new_amounts = _wallets(latest)
    total = Decimal(0)
    moved = Decimal(0)
    for path in sorted(old_amounts.keys() | new_amounts.keys()):
        asset, before = old_amounts.get(path, (None, Decimal(0)))
        asset_now, now = new_amounts.get(path, (None, Decimal(0)))
        name = asset or asset_now
        assert name is not None
        price = old_prices.get(name) or new_prices.get(name) or Decimal(0)
        total += before * price
        moved += abs(now - before) * price
    if total > 0 and moved / total > Decimal(str(tolerances.balance)):
        share = float(moved / total)
        return (
            f"balances moved by {share:.2%} of the portfolio's value since the plan was made"
            f" (tolerance {tolerances.balance:.2%})"
        )
    return None


def _wallets(snapshot: Mapping[str, Any]) -> dict[str, tuple[str, Decimal]]:
    tree = parse_tree(snapshot["tree"], "real")
    return {
        tree.path(i): (str(tree.assets[i]), tree.exact_amount(i)) for i in range(len(tree)) if tree.wallet[i]
    }


class BadCursor(ValueError):
    """A cursor this API did not give out."""


def encode_cursor(at: datetime, key: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, key = raw.partition("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, uuid.UUID(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor(f"cursor {cursor[:40]!r} is not one this API gave out") from None

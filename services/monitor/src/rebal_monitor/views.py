"""What the API shows, computed from events with the pure core: weights, staleness, page cursors.

No I/O here: the API loads the events, calls one of these, and returns the result.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.display import quote_places
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.numbers import dec_str, money_str, weight_str
from rebal.core.plan import plan_rebalance
from rebal.core.portfolio_performance import PortfolioPerformance, describe_span, describe_step, tree_value
from rebal.core.shown import shown_nodes
from rebal.core.tree import parse_tree
from rebal.events import ProjectedWeight
from rebal.render import plan_json

JsonDict = dict[str, Any]


def diff_of(snapshot: Mapping[str, Any], target: Mapping[str, Any], band: float = 0.0) -> DiffTree:
    """The diff of a `BalanceSnapshotTaken` payload and a `TargetWeightsComputed` payload (raises
    `InputError` for inconsistent input, as the planner would)."""
    real = parse_tree(snapshot["tree"], "real")
    desired = parse_tree(target["tree"], "target")
    return diff_trees(real, desired, Prices.parse(snapshot["prices"]), band=band)


def snapshot_value(snapshot: Mapping[str, Any]) -> tuple[float, str]:
    """The free value of a `BalanceSnapshotTaken` payload and its valuation currency (raises
    `InputError` for a snapshot that does not parse)."""
    prices = Prices.parse(snapshot["prices"])
    return tree_value(parse_tree(snapshot["tree"], "real"), prices), prices.quote


def valued_flows(flows: Sequence[Any], prices: Prices) -> tuple[list[float], list[float], list[JsonDict]]:
    """Flows (`queries.Flow`) in the valuation currency at `prices` (the latest snapshot's: the quote is
    exact, another asset is valued at its latest price): times, values, and the flows as the API shows
    them. A flow in an asset without a price is listed, not counted."""
    times: list[float] = []
    values: list[float] = []
    shown: list[JsonDict] = []
    for flow in flows:
        price = prices.get(flow.asset)
        value = None if price is None else flow.amount * price
        if value is not None:
            times.append(flow.at.timestamp())
            values.append(float(value))
        shown.append(
            {
                "at": flow.at.isoformat(),
                "kind": flow.kind,
                "asset": flow.asset,
                "amount": dec_str(flow.amount),
                "value": None if value is None else money_str(float(value)),
                "reference": flow.reference,
            }
        )
    return times, values, shown


def performance_json(result: PortfolioPerformance | None, quote: str | None) -> JsonDict:
    """The portfolio's own figures as the API gives them: values as decimal strings, ratios as numbers,
    the grid's step stated, and why nothing is annualised when it is not."""
    places = quote_places(quote)
    if result is None:
        return {"quote": quote, "money_places": places, "periods": 0,
                "not_annualised": "fewer than two valuations of the portfolio yet"}  # fmt: skip
    annual = result.annualised
    return {
        "quote": quote,
        "money_places": places,
        "frequency": {
            "step_seconds": result.step_seconds,
            "step": describe_step(result.step_seconds),
            "resampling": f"the last valuation in each {describe_step(result.step_seconds)} period",
        },
        "periods": result.periods,
        "observations": result.observations,
        "gaps": result.gaps,
        "gap_seconds": result.gap_seconds,
        "gap_span": describe_span(result.gap_seconds) if result.gaps else None,
        "from": datetime.fromtimestamp(result.first_at, UTC).isoformat(),
        "to": datetime.fromtimestamp(result.last_at, UTC).isoformat(),
        "first_value": money_str(result.first_value),
        "last_value": money_str(result.last_value),
        "net_flows": money_str(result.net_flows),
        "time_weighted_return": result.time_weighted_return,
        "max_drawdown": result.max_drawdown,
        "volatility_per_period": result.volatility_per_period,
        "annualised": None
        if annual is None
        else {
            "periods_per_year": annual.periods_per_year,
            "return": annual.annualised_return,
            "volatility": annual.volatility,
            "sharpe": annual.sharpe,
            "sortino": annual.sortino,
        },
        "not_annualised": result.not_annualised,
    }


def equity_points(result: PortfolioPerformance | None) -> list[JsonDict]:
    """The grid's points: time, value, and the growth of 1 net of flows; both null inside a gap (no
    valuation then), so a chart shows a break rather than a flat line."""
    if result is None:
        return []
    return [
        {
            "t": datetime.fromtimestamp(float(t), UTC).isoformat(),
            "value": money_str(float(v)) if math.isfinite(v) else None,
            "index": float(i) if math.isfinite(i) else None,
        }
        for t, v, i in zip(result.grid.tolist(), result.values.tolist(), result.index.tolist(), strict=True)
    ]


def money_of(snapshot: Mapping[str, Any]) -> JsonDict:
    """The valuation currency of a snapshot and the places its money is shown with."""
    prices = snapshot.get("prices")
    quote = prices.get("quote") if isinstance(prices, Mapping) else None
    return {"quote": quote, "money_places": quote_places(quote if isinstance(quote, str) else None)}


def amount_steps(snapshot: Mapping[str, Any]) -> dict[str, str]:
    """Each base asset's amount step in the snapshot's markets (the first market listing it)."""
    try:
        markets = Markets.parse(snapshot.get("markets"))
    except InputError:
        return {}
    steps: dict[str, str] = {}
    for exchange in sorted(markets.exchanges):
        for market in markets.exchanges[exchange].values():
            steps.setdefault(market.base, dec_str(market.amount_step))
    return dict(sorted(steps.items()))


def check_target(tree: Mapping[str, Any]) -> None:
    """A desired tree as `rebal plan` checks its target (raises `InputError` naming the node)."""
    parse_tree(tree, "target")


def target_preview(snapshot: Mapping[str, Any], tree: Mapping[str, Any]) -> JsonDict:
    """What setting `tree` as the target would trade now, from a `BalanceSnapshotTaken` payload: the
    orders, transfers and skips (as `rebal plan` gives them) and each shown node's share of the portfolio
    now and under the new target. Raises `InputError` when the tree is not a valid target or does not fit
    the snapshot."""
    diff = diff_of(snapshot, {"tree": tree})
    plan = plan_json(plan_rebalance(diff, Markets.parse(snapshot.get("markets"))))
    total, rows = weights(diff)
    return {
        "total_value": total,
        "orders": plan["orders"],
        "transfers": plan["transfers"],
        "skipped": plan["skipped"],
        "weights": [{k: row[k] for k in ("path", "kind", "actual_share", "target_share")} for row in rows],
    }


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

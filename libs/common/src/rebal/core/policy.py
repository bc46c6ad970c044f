"""The autopilot's trigger: whether a portfolio's policy asks for a rebalance now, of which kind, and why.

Values in, a `Decision` out: the diff tree, the policy, `now` and the end of the last completed rebalance.
Times are whole seconds since the epoch (UTC); the calendar (a cron expression in a time zone) comes in as
a `Schedule`, so nothing here reads a clock or a zone database. The rules (docs/formats.md, "The autopilot
policy"):

- **Drift.** Every node but the root, with the diff tree's weights (relative to the parent): it breaches
  its absolute band when |current - desired| > `drift_absolute`, its relative band when
  |current - desired| > `drift_relative` x desired. Strictly greater: a drift at its limit does not
  breach (float noise under `DRIFT_TOLERANCE` is forgiven). A per-node override replaces the bands it
  names for that node alone; ``None`` there means that node has no such band.
- **Schedule.** Due when a tick falls after the last completed rebalance and at or before `now` (a
  portfolio never rebalanced: any tick at or before `now`).
- **Cooldown.** No full rebalance while ``now < last + cooldown``: at exactly ``last + cooldown`` one is
  allowed again.
- **Cash.** The free cash above the target cash (`cash_above_target`) exceeding `invest_cash_above` asks
  for a buy-only rebalance, which the cooldown does not block.
- A full rebalance that is due and allowed includes the cash; `scope` decides how much a drift-triggered
  one moves (`rebal.core.partial`), while a scheduled tick brings the whole portfolio back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Prices
from rebal.core.numbers import VALUE_EPSILON
from rebal.core.partial import breaching_only, buy_only, cash_above_target
from rebal.core.tree import PATH_SEP, BoolArray, FloatArray, IntArray, Tree, assembled
from rebal.core.union import UnionTree

Scope = Literal["portfolio", "breaching"]
Mode = Literal["auto", "approve", "notify"]
Kind = Literal["full", "buy_only"]
Band = Literal["absolute", "relative"]
Blocker = Literal["cooldown"]
BANDS: tuple[Band, ...] = ("absolute", "relative")

# Weights are quotients of float sums: 0.55 - 0.5 is 0.05000000000000004. A drift this close to its limit
# is at the limit, which does not breach.
DRIFT_TOLERANCE = 1e-12

# Naming breaching nodes: walking up from each costs about this many nodes of one pass over the tree.
PATH_WALKS_PER_PASS = 8

# Reasons, in the order a decision lists them. What fired:
SCHEDULE = "schedule"  # a tick fell after the last rebalance
DRIFT = "drift"  # nodes outside their bands
CASH = "cash"  # cash above the target by more than invest_cash_above
COOLDOWN = "cooldown"  # a full rebalance is due but the cooldown blocks it
# Why a configured trigger did not fire (listed when there is no rebalance):
NO_TICK = "no_tick"
WITHIN_BANDS = "within_bands"
CASH_WITHIN = "cash_within"
NO_TRIGGER = "no_trigger"  # the policy has no schedule, no band and no cash threshold


class Schedule(Protocol):
    """Calendar ticks as instants (epoch seconds); `rebal.schedule.CronSchedule` is the cron one."""

    def previous(self, at: int) -> int | None:
        """The latest tick at or before `at`."""

    def following(self, after: int) -> int | None:
        """The earliest tick strictly after `after`."""


@dataclass(frozen=True)
class Bands:
    """Drift limits of a node's weight: absolute (weight points) and relative (share of its target)."""

    absolute: float | None = None
    relative: float | None = None


@dataclass(frozen=True)
class Policy:
    """A portfolio's autopilot policy, ready to evaluate (`rebal.policy` reads and checks the file)."""

    bands: Bands = Bands()
    # Per node path, the bands it overrides: a value, or None for "no such band on this node".
    overrides: Mapping[str, Mapping[Band, float | None]] = field(default_factory=dict)
    schedule: Schedule | None = None
    scope: Scope = "portfolio"
    cooldown: int = 0  # seconds
    invest_cash_above: float | None = None  # valuation currency
    min_trade_value: float | None = None  # valuation currency
    mode: Mode = "notify"
    replan_on_price_move: int = 0

    @property
    def has_bands(self) -> bool:
        bands = self.bands  # (not `!= Bands()`: a new Bands and a comparison of tuples per question)
        return bands.absolute is not None or bands.relative is not None or bool(self.overrides)


class Breach(NamedTuple):
    """A node outside a band: `limit` is the largest |current - desired| the band allows."""

    node: int
    path: str
    current_weight: float
    desired_weight: float
    limit: float
    band: Band


@dataclass(frozen=True)
class Decision:
    """Whether to rebalance, how, and the facts behind the reasons (times in epoch seconds)."""

    rebalance: bool
    kind: Kind | None
    reasons: tuple[str, ...]
    blocked_by: Blocker | None
    breaches: tuple[Breach, ...]
    next_scheduled: int | None
    # What a full rebalance moves: the whole portfolio, or the breaching nodes and what funds them.
    scope: Scope
    now: int
    last_rebalance: int | None
    tick: int | None  # the latest tick at or before now
    cooldown_until: int | None
    cash_above_target: float
    invest_cash_above: float | None
    quote: str


def evaluate_trees(
    real: Tree, target: Tree, prices: Prices, policy: Policy, *, now: int, last_rebalance: int | None
) -> Decision:
    """`evaluate` on the diff of `real` against `target` at `prices`."""
    return evaluate(diff_trees(real, target, prices), policy, now=now, last_rebalance=last_rebalance)


def evaluate(diff: DiffTree, policy: Policy, *, now: int, last_rebalance: int | None) -> Decision:
    """The policy's decision for this diff at `now` (see the module's docstring for the rules)."""
    breaches = find_breaches(diff, policy)
    schedule = policy.schedule
    tick = schedule.previous(now) if schedule is not None else None
    scheduled = tick is not None and (last_rebalance is None or tick > last_rebalance)
    cooldown_until = last_rebalance + policy.cooldown if last_rebalance is not None else None
    cooling = policy.cooldown > 0 and cooldown_until is not None and now < cooldown_until
    cash = cash_above_target(diff)
    threshold = policy.invest_cash_above
    cash_due = threshold is not None and cash > threshold + VALUE_EPSILON * diff.scale

    full = scheduled or bool(breaches)
    fired = [reason for reason, on in ((SCHEDULE, scheduled), (DRIFT, bool(breaches))) if on]
    blocked_by: Blocker | None = "cooldown" if full and cooling else None
    if blocked_by:
        fired.append(COOLDOWN)
    if cash_due:
        fired.append(CASH)
    kind: Kind | None = "full" if full and not cooling else "buy_only" if cash_due else None
    if kind is None:
        fired += _why_not(policy, scheduled, bool(breaches), cash_due)
    return assembled(
        Decision,
        rebalance=kind is not None,
        kind=kind,
        reasons=tuple(fired),
        blocked_by=blocked_by,
        breaches=breaches,
        next_scheduled=schedule.following(now) if schedule is not None else None,
        scope="breaching"
        if kind == "full" and policy.scope == "breaching" and not scheduled
        else "portfolio",
        now=now,
        last_rebalance=last_rebalance,
        tick=tick,
        cooldown_until=cooldown_until if cooling else None,
        cash_above_target=cash,
        invest_cash_above=threshold,
        quote=diff.prices.quote,
    )


def _why_not(policy: Policy, scheduled: bool, breached: bool, cash_due: bool) -> list[str]:
    """For a decision not to rebalance: each configured trigger that did not fire."""
    if policy.schedule is None and not policy.has_bands and policy.invest_cash_above is None:
        return [NO_TRIGGER]
    quiet = (
        (NO_TICK, policy.schedule is not None and not scheduled),
        (WITHIN_BANDS, policy.has_bands and not breached),
        (CASH_WITHIN, policy.invest_cash_above is not None and not cash_due),
    )
    return [reason for reason, on in quiet if on]


def _limits(diff: DiffTree, policy: Policy) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per node: |current - desired| weight, and the largest the absolute and the relative band allow
    (inf where a node has no such band)."""
    absolute, relative, finite = _bands(diff.tree, policy)
    drift = np.abs(diff.current_weight - diff.desired_weight)
    desired = diff.desired_weight
    relative_limit = np.multiply(relative, desired, out=np.full(desired.size, math.inf), where=finite)
    return drift, absolute, relative_limit


def _bands(tree: UnionTree, policy: Policy) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Per node: the absolute and the relative band (inf: none) and where the relative one is finite;
    found once per tree shape and policy (a replay evaluates one shape at many rows). Read only."""
    key = ("bands", id(policy))
    known = tree.shape_memo.get(key)
    if isinstance(known, tuple) and known[0] is policy:
        kept: tuple[FloatArray, FloatArray, BoolArray] = known[1]
        return kept
    count = len(tree)
    absolute = np.full(count, _limit(policy.bands.absolute))
    relative = np.full(count, _limit(policy.bands.relative))
    for node, bands in _overridden(tree, policy.overrides):
        if "absolute" in bands:
            absolute[node] = _limit(bands["absolute"])
        if "relative" in bands:
            relative[node] = _limit(bands["relative"])
    found = (absolute, relative, np.isfinite(relative))
    tree.shape_memo[key] = (policy, found)  # the policy kept: its id stays its own
    return found


def _band_lists(tree: UnionTree, policy: Policy) -> tuple[list[float], list[float], list[bool]]:
    """`_bands` as lists (`_small_over`'s), kept beside them per tree shape and policy."""
    key = ("band lists", id(policy))
    known = tree.shape_memo.get(key)
    if isinstance(known, tuple) and known[0] is policy:
        kept: tuple[list[float], list[float], list[bool]] = known[1]
        return kept
    absolute, relative, finite = _bands(tree, policy)
    found = (absolute.tolist(), relative.tolist(), finite.tolist())
    tree.shape_memo[key] = (policy, found)  # the policy kept: its id stays its own
    return found


class BandUse(NamedTuple):
    """How much of a band a node's drift uses: `used` is drift / limit (above 1: outside the band)."""

    path: str
    current_weight: float
    desired_weight: float
    drift: float
    limit: float
    band: Band
    used: float


def band_use(diff: DiffTree, policy: Policy, top: int) -> tuple[BandUse, ...]:
    """Each node's drift against each of its bands, the nearest to its limit first (at most `top`; the
    root has no band). What an operator watches: which node breaches next."""
    if not policy.has_bands or len(diff.tree) < 2:
        return ()
    drift, absolute, relative = _limits(diff, policy)
    rows: list[tuple[float, int, Band, float]] = []
    limits: tuple[tuple[Band, FloatArray], ...] = (("absolute", absolute), ("relative", relative))
    for band, limit in limits:
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.where(limit > 0, drift / limit, np.where(drift > DRIFT_TOLERANCE, math.inf, 0.0))
        used[0] = -1.0
        used[~np.isfinite(limit)] = -1.0
        nodes = np.flatnonzero(used >= 0)
        rows += [(float(used[n]), int(n), band, float(limit[n])) for n in nodes.tolist()]
    rows.sort(key=lambda row: (-round(row[0], 9), row[1], row[2]))  # float noise is no order
    current, desired = diff.current_weight, diff.desired_weight
    return tuple(
        BandUse(
            diff.tree.path(node),
            float(current[node]),
            float(desired[node]),
            float(drift[node]),
            limit,
            band,
            used,
        )
        for used, node, band, limit in rows[:top]
    )


def find_breaches(diff: DiffTree, policy: Policy) -> tuple[Breach, ...]:
    """Every node outside a band, by path; a node outside both names the tighter band (absolute on a tie)."""
    if not policy.has_bands:
        return ()
    tree = diff.tree
    count = len(tree)
    current, desired = diff.current_weight, diff.desired_weight
    if count <= SMALL_NODES:
        over = _small_over(diff, policy)
        if over is None:
            return ()
        nodes_of, limit_of, absolute_of = over
        current_of, desired_of = current.tolist(), desired.tolist()
        weights = [current_of[node] for node in nodes_of]
        wanted = [desired_of[node] for node in nodes_of]
    else:
        found = _over(diff, policy)
        if found is None:
            return ()
        nodes, limit_of, absolute_of = found
        nodes_of = nodes.tolist()
        weights, wanted = current[nodes].tolist(), desired[nodes].tolist()
    # One pass over the tree names many breaching nodes at once; a few are cheaper walked up alone.
    if len(nodes_of) * PATH_WALKS_PER_PASS > count:
        every = tree.paths()
        paths = [every[node] for node in nodes_of]
    else:
        paths = [tree.path(node) for node in nodes_of]
    breaches = [
        Breach(node, path, weight, wanted, bound, "absolute" if by_absolute else "relative")
        for node, path, weight, wanted, bound, by_absolute in zip(
            nodes_of, paths, weights, wanted, limit_of, absolute_of, strict=True
        )
    ]
    return tuple(sorted(breaches, key=lambda breach: breach.path))


def _over(diff: DiffTree, policy: Policy) -> tuple[IntArray, list[float], list[bool]] | None:
    """`find_breaches`' arrays for a tree of any size: the nodes outside a band (ascending), the limit
    each breaches and whether it is the absolute one; None: none. Where no node has a finite band of one
    kind, its limits are inf (or NaN) everywhere and never exceeded: only the other kind is compared."""
    absolute_tolerant, any_absolute, any_relative = _band_kinds(diff.tree, policy)
    if any_absolute and not any_relative:
        drift = np.abs(diff.current_weight - diff.desired_weight)
        over = drift > absolute_tolerant
        over[0] = False
        nodes = over.nonzero()[0]
        if not nodes.size:
            return None
        absolute = _bands(diff.tree, policy)[0]
        return nodes, absolute[nodes].tolist(), [True] * nodes.size
    drift, absolute, relative_limit = _limits(diff, policy)
    if any_relative and not any_absolute:
        over = drift > relative_limit + DRIFT_TOLERANCE
        over[0] = False
        nodes = over.nonzero()[0]
        if not nodes.size:
            return None
        return nodes, relative_limit[nodes].tolist(), [False] * nodes.size
    over_absolute = drift > absolute_tolerant
    over_relative = drift > relative_limit + DRIFT_TOLERANCE
    over_absolute[0] = over_relative[0] = False
    nodes = (over_absolute | over_relative).nonzero()[0]
    if not nodes.size:
        return None
    use_absolute = over_absolute[nodes] & (~over_relative[nodes] | (absolute[nodes] <= relative_limit[nodes]))
    limit = np.where(use_absolute, absolute[nodes], relative_limit[nodes])
    return nodes, limit.tolist(), use_absolute.tolist()


def _band_kinds(tree: UnionTree, policy: Policy) -> tuple[FloatArray, bool, bool]:
    """Per node its absolute band plus `DRIFT_TOLERANCE`, and whether any node has a finite absolute and
    a finite relative band: per tree shape and policy, as `_bands`. Read only."""
    key = ("band kinds", id(policy))
    known = tree.shape_memo.get(key)
    if isinstance(known, tuple) and known[0] is policy:
        kept: tuple[FloatArray, bool, bool] = known[1]
        return kept
    absolute, _, finite = _bands(tree, policy)
    found = (absolute + DRIFT_TOLERANCE, bool(np.isfinite(absolute[1:]).any()), bool(finite[1:].any()))
    tree.shape_memo[key] = (policy, found)  # the policy kept: its id stays its own
    return found


# Trees up to this many nodes are checked against their bands in Python floats (`_small_over`): a
# replay evaluates a small portfolio thousands of times, and numpy's per-call cost dominates there.
SMALL_NODES = 48


def _small_over(diff: DiffTree, policy: Policy) -> tuple[list[int], list[float], list[bool]] | None:
    """`find_breaches`' arrays for a small tree, the same operations on the same floats: the nodes
    outside a band (ascending), the limit each breaches and whether it is the absolute one; None: none."""
    absolute, relative, finite = _band_lists(diff.tree, policy)
    current, desired = diff.current_weight.tolist(), diff.desired_weight.tolist()
    nodes: list[int] = []
    limits: list[float] = []
    by_absolute: list[bool] = []
    for node in range(1, len(current)):
        drift = abs(current[node] - desired[node])
        relative_limit = relative[node] * desired[node] if finite[node] else math.inf
        over_absolute = drift > absolute[node] + DRIFT_TOLERANCE
        over_relative = drift > relative_limit + DRIFT_TOLERANCE
        if over_absolute or over_relative:
            use_absolute = over_absolute and (not over_relative or absolute[node] <= relative_limit)
            nodes.append(node)
            limits.append(absolute[node] if use_absolute else relative_limit)
            by_absolute.append(use_absolute)
    return (nodes, limits, by_absolute) if nodes else None


def _overridden(
    tree: UnionTree, overrides: Mapping[str, Mapping[Band, float | None]]
) -> list[tuple[int, Mapping[Band, float | None]]]:
    """The nodes the overrides name (a path in neither tree names none), matched name by name upwards;
    found once per tree shape and overrides (a replay evaluates one shape at many rows)."""
    if not overrides:
        return []
    key = ("overridden", id(overrides))
    known = tree.shape_memo.get(key)
    if isinstance(known, tuple) and known[0] is overrides:
        return list(known[1])
    found = _match_overrides(tree, overrides)
    tree.shape_memo[key] = (overrides, tuple(found))  # the overrides kept: their id stays their own
    return found


def _match_overrides(
    tree: UnionTree, overrides: Mapping[str, Mapping[Band, float | None]]
) -> list[tuple[int, Mapping[Band, float | None]]]:
    by_last: dict[str, list[tuple[list[str], Mapping[Band, float | None]]]] = {}
    for path, bands in overrides.items():
        parts = path.split(PATH_SEP)
        by_last.setdefault(parts[-1], []).append((parts, bands))
    names, parent = tree.names, tree.parent.tolist()
    found = []
    for node, name in enumerate(names):
        for parts, bands in by_last.get(name, ()):
            up, depth = node, len(parts) - 1
            while depth >= 0 and up >= 0 and names[up] == parts[depth]:
                up, depth = parent[up], depth - 1
            if depth < 0 and up < 0:
                found.append((node, bands))
    return found


def _limit(value: float | None) -> float:
    return math.inf if value is None else value


def planned_diff(diff: DiffTree, decision: Decision) -> DiffTree | None:
    """What the planner should plan for this decision: the whole diff, the breaching part, the buy-only
    part, or None when there is nothing to do."""
    if decision.kind is None:
        return None
    if decision.kind == "buy_only":
        return buy_only(diff)
    if decision.scope == "breaching":
        return breaching_only(diff, [breach.node for breach in decision.breaches])
    return diff

"""From a snapshot and a target to a plan event: the pure core call, and its result as an event."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import numpy as np

from rebal.core.contracts import Contracts
from rebal.core.diff import DiffTree, diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.networks import Networks
from rebal.core.numbers import MONEY_PLACES, shown_str
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.position_plan import PositionPlan, plan_positions
from rebal.core.shown import projected_weights
from rebal.core.tree import Tree, parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    PlanCosts,
    PlanFailed,
    PlannedPositionOrder,
    PlannedPositionSetting,
    PlannedTransfer,
    RebalancePlanned,
    TargetWeightsComputed,
    derive_run_id,
)
from rebal.payloads import Body, plan_orders
from rebal.render import costs_json

log = logging.getLogger("rebal.planner")
E = TypeVar("E", BalanceSnapshotTaken, TargetWeightsComputed)
SOURCES = {"real": "snapshot tree", "target": "target tree", "prices": "snapshot prices", "options": "band"}


@dataclass(frozen=True)
class ParsedSnapshot:
    real: Tree
    prices: Prices
    markets: Markets
    # When the venues were read: the plan carries it, so the executor can refuse a plan made from facts
    # an earlier run has since changed.
    taken_at: datetime | None = None
    contracts: Contracts = field(default_factory=Contracts)
    # How assets move between the snapshot's venues (the planner's network file; None: as without one).
    networks: Networks | None = None


def parse_snapshot(snapshot: BalanceSnapshotTaken, networks: Networks | None = None) -> ParsedSnapshot:
    """The snapshot's tree, prices, markets and contracts, validated (raises `InputError`), with the
    networks assets move on between its venues."""
    return ParsedSnapshot(
        parse_tree(snapshot.tree, "real"),
        Prices.parse(snapshot.prices),
        Markets.parse(snapshot.markets),
        snapshot.occurred_at,
        Contracts.parse(snapshot.contracts),
        networks,
    )


def parse_target(target: TargetWeightsComputed) -> Tree:
    return parse_tree(target.tree, "target")


Parsed = TypeVar("Parsed", ParsedSnapshot, Tree)


def parsed_or_error(parse: Callable[[E], Parsed], event: E) -> Parsed | InputError:
    try:
        return parse(event)
    except InputError as exc:
        return exc


# The nodes whose weights are reported as gauges: the top levels only (bounded labels), at most this many.
WEIGHT_DEPTH = 3
MAX_WEIGHT_NODES = 64


@dataclass(frozen=True)
class Weights:
    """What the planner saw of the portfolio: its free value, each top-level node's actual and target
    share of the whole (paths below the root, to `WEIGHT_DEPTH` levels), and the drift: the largest gap
    between actual and target share over every node of the tree, wallets included."""

    value: float
    actual: dict[str, float]
    target: dict[str, float]
    drift: float

    @classmethod
    def of(cls, diff: DiffTree) -> Weights:
        current = (
            diff.current_value / diff.current_value[0]
            if diff.current_value[0] > 0
            else diff.current_value * 0
        )
        desired = (
            diff.desired_value / diff.desired_value[0]
            if diff.desired_value[0] > 0
            else diff.desired_value * 0
        )
        tree = diff.tree
        shown = np.flatnonzero((tree.depth >= 1) & (tree.depth <= WEIGHT_DEPTH))[:MAX_WEIGHT_NODES]
        names = {int(node): tree.path(int(node)).split("/", 1)[1] for node in shown}
        return cls(
            value=float(diff.current_value[0]),
            actual={name: float(current[node]) for node, name in names.items()},
            target={name: float(desired[node]) for node, name in names.items()},
            drift=float(np.max(np.abs(current - desired))) if len(current) else 0.0,
        )


@dataclass(frozen=True)
class Planned:
    """What planning made: the event (a plan whose orders, skips, weights and budgets are in `body`, as
    the core made them, or why there is none) and the weights the planner saw."""

    event: RebalancePlanned | PlanFailed
    body: Body | None = None
    weights: Weights | None = None

    def whole(self) -> RebalancePlanned | PlanFailed:
        """The event with its body in it (what a consumer receives)."""
        return self.event if self.body is None else self.body.attach(self.event)


def plan_event(
    cause: Event,
    *,
    snapshot_id: uuid.UUID,
    target_id: uuid.UUID,
    snapshot: ParsedSnapshot | InputError,
    target: Tree | InputError,
    band: Decimal,
    dry_run: bool,
    now: datetime,
) -> RebalancePlanned | PlanFailed:
    """The whole plan event alone (see `plan_with_weights`)."""
    return plan_with_weights(
        cause,
        snapshot_id=snapshot_id,
        target_id=target_id,
        snapshot=snapshot,
        target=target,
        band=band,
        dry_run=dry_run,
        now=now,
    ).whole()


def plan_with_weights(
    cause: Event,
    *,
    snapshot_id: uuid.UUID,
    target_id: uuid.UUID,
    snapshot: ParsedSnapshot | InputError,
    target: Tree | InputError,
    band: Decimal,
    dry_run: bool,
    now: datetime,
) -> Planned:
    """The plan for a parsed snapshot → target, caused by `cause` (a command or a new snapshot/target).

    The run id (correlation) is derived from the cause, so a redelivered cause yields the same plan id
    and run id, and the bus drops the second publish. Inputs that did not parse make a `PlanFailed`
    (and no weights). The orders and the rest stay the core's rows (`Planned.body`): the bus puts a
    small plan's into the event and encodes a large one's straight into the Object Store (a model per
    order took 0.6 s of a 100k-wallet plan).
    """
    run_id = derive_run_id(cause)
    try:
        for parsed in (snapshot, target):
            if isinstance(parsed, InputError):
                raise parsed
        assert isinstance(snapshot, ParsedSnapshot) and isinstance(target, Tree)
        diff = diff_trees(snapshot.real, target, snapshot.prices, band=float(band))
        plan = plan_rebalance(diff, snapshot.markets, networks=snapshot.networks)
        for dear in plan.dear_conversions():  # planned all the same: the operator is told
            log.warning("plan of run %s: %s", run_id, dear.line(snapshot.prices.quote))
        positions = plan_positions(diff.tree, snapshot.contracts, band)
    except InputError as exc:
        where = SOURCES.get(exc.source, "input")
        failed = cause.caused(
            PlanFailed, now=now, correlation_id=run_id, reason=f"{where}: {exc}", dry_run=dry_run
        )
        return Planned(failed)
    return planned_of(
        cause,
        run_id=run_id,
        diff=diff,
        plan=plan,
        snapshot_id=snapshot_id,
        target_id=target_id,
        taken_at=snapshot.taken_at,
        band=band,
        dry_run=dry_run,
        now=now,
        positions=positions,
    )


NO_POSITIONS = PositionPlan()


def planned_of(
    cause: Event,
    *,
    run_id: uuid.UUID,
    diff: DiffTree,
    plan: Plan,
    snapshot_id: uuid.UUID,
    target_id: uuid.UUID,
    taken_at: datetime | None,
    band: Decimal,
    dry_run: bool,
    now: datetime,
    positions: PositionPlan = NO_POSITIONS,
) -> Planned:
    """The plan of `diff` as the event the executor runs (and operators are shown), caused by `cause`,
    with the futures accounts' position orders (`positions`) when there are any. The orders and the rest
    stay the core's rows (`Planned.body`): the bus puts a small plan's into the event and encodes a large
    one's straight into the Object Store (a model per order took 0.6 s of a 100k-wallet plan)."""
    skips = plan.skipped()
    planned = cause.caused(
        RebalancePlanned,
        now=now,
        correlation_id=run_id,
        dry_run=dry_run,
        band=band,
        snapshot_id=snapshot_id,
        target_id=target_id,
        total_value=Decimal(str(round(float(diff.current_value[0]), 8))),
        orders=(),
        snapshot_taken_at=taken_at,
        position_orders=PlannedPositionOrder.trusted(positions.orders),
        position_settings=PlannedPositionSetting.trusted(positions.settings),
        costs=None if plan.notes is None else PlanCosts.model_validate(costs_json(plan)),
    )
    notes = plan.notes
    # The core's exact rows as they are (models made from them are trusted, not validated again:
    # validating 10k orders took a third of a 10k-wallet plan's time).
    body = Body(
        {
            "orders": plan_orders(plan),
            "transfers": [
                PlannedTransfer(
                    asset=t.asset,
                    from_account=t.source,
                    to_account=t.destination,
                    amount=t.amount,
                    est_value=t.value,
                    network=t.network,
                    fee=t.fee,
                    manual=manual,
                    reason=None if notes is None else notes.transfer_reason[index],
                    est_saving=None
                    if notes is None
                    else Decimal(shown_str(notes.transfer_saving[index], MONEY_PLACES)),
                )
                for index, (t, manual) in enumerate(zip(plan.transfers, plan.manual(), strict=True))
            ],
            "skipped": [*skips, *positions.skips],
            "projected_weights": projected_weights(diff, (s.path for s in skips)),
            "budgets": plan.budgets(),
        }
    )
    return Planned(planned, body, Weights.of(diff))

"""From a snapshot and a target to a plan event: the pure core call, and its result as an event."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    PlanFailed,
    PlannedOrder,
    PlannedTransfer,
    RebalancePlanned,
    SkippedOrder,
    TargetWeightsComputed,
    derive_id,
)

SOURCES = {"real": "snapshot tree", "target": "target tree", "prices": "snapshot prices", "options": "band"}


def plan_event(
    cause: Event,
    snapshot: BalanceSnapshotTaken,
    target: TargetWeightsComputed,
    *,
    band: Decimal,
    dry_run: bool,
    now: datetime,
) -> RebalancePlanned | PlanFailed:
    """The plan for `snapshot` → `target`, caused by `cause` (a command or a new snapshot/target).

    The run id (correlation) is derived from the cause, so a redelivered cause yields the same plan id
    and run id, and the bus drops the second publish.
    """
    run_id = derive_id("run", cause.event_id)
    try:
        diff = diff_trees(
            parse_tree(snapshot.tree, "real"),
            parse_tree(target.tree, "target"),
            Prices.parse(snapshot.prices),
            band=float(band),
        )
        plan = plan_rebalance(diff, Markets.parse(snapshot.markets))
    except InputError as exc:
        where = SOURCES.get(exc.source, "input")
        return cause.caused(
            PlanFailed, now=now, correlation_id=run_id, reason=f"{where}: {exc}", dry_run=dry_run
        )
    return cause.caused(
        RebalancePlanned,
        now=now,
        correlation_id=run_id,
        dry_run=dry_run,
        band=band,
        snapshot_id=snapshot.event_id,
        target_id=target.event_id,
        total_value=Decimal(str(round(float(diff.current_value[0]), 8))),
        orders=tuple(
            PlannedOrder(
                account=o.account,
                exchange=o.exchange,
                symbol=o.symbol,
                side=o.side,
                amount=o.amount,
                est_price=o.est_price,
                est_cost=o.est_cost,
                est_fee=o.est_fee,
                phase=o.phase,
            )
            for o in plan.orders()
        ),
        transfers=tuple(
            PlannedTransfer(
                asset=t.asset,
                from_account=t.source,
                to_account=t.destination,
                amount=t.amount,
                est_value=t.value,
            )
            for t in plan.transfers
        ),
        skipped=tuple(
            SkippedOrder(path=s.path, symbol=s.symbol, side=s.side, amount=s.amount, reason=s.reason)
            for s in plan.skipped()
        ),
    )

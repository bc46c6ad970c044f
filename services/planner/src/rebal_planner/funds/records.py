"""What a fund cycle keeps and recomputes from: its stored inputs, the fills of its runs, ledger changes.

No I/O here. A cycle stores its inputs once (the ledger, what was due, the quotes it priced them at) and
every phase is recomputed from them and the fills known so far (`recompute`), so a redelivered message or
a restarted planner computes the same numbers.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from rebal.core.fund_checks import apply_split, check_split
from rebal.core.funds import (
    CyclePlan,
    Due,
    Execution,
    NeedsAdjustment,
    Quote,
    Settlement,
    plan_cycle,
    resize_buys,
    settle,
)
from rebal.core.ledger import LEDGER_QUANTUM, Fund, Ledger, from_units
from rebal.core.market import Market
from rebal.events import Event, FundCommandRejected


def encode_inputs(
    ledger: Ledger, due: Due, quotes: Mapping[str, Quote], snapshot_id: uuid.UUID
) -> dict[str, Any]:
    return {
        "assets": list(ledger.assets),
        "users": list(ledger.users),
        "units": ledger.units.tolist(),
        "deposits": {u: str(a) for u, a in due.deposits.items()},
        "withdrawals": {u: None if a is None else str(a) for u, a in due.withdrawals.items()},
        "rebalance": due.rebalance,
        "snapshot_id": str(snapshot_id),
        "quotes": {
            asset: {
                "price": str(q.price),
                "active": q.active,
                "amount_step": str(q.market.amount_step),
                "min_amount": str(q.market.min_amount),
                "min_cost": str(q.market.min_cost),
                "fee_rate": str(q.market.fee_rate),
            }
            for asset, q in quotes.items()
        },
    }


def decode_inputs(fund: Fund, doc: Mapping[str, Any]) -> tuple[Ledger, Due, dict[str, Quote]]:
    units = np.array(doc["units"], dtype=np.int64).reshape(len(doc["users"]), len(doc["assets"]))
    ledger = Ledger(tuple(doc["assets"]), tuple(doc["users"]), units)
    due = Due(
        {u: Decimal(a) for u, a in doc["deposits"].items()},
        {u: None if a is None else Decimal(a) for u, a in doc["withdrawals"].items()},
        bool(doc["rebalance"]),
    )
    quotes = {
        asset: Quote(
            Market(
                asset,
                fund.quote,
                Decimal(q["amount_step"]),
                Decimal(q["min_amount"]),
                Decimal(q["min_cost"]),
                Decimal(q["fee_rate"]),
            ),
            Decimal(q["price"]),
            bool(q["active"]),
        )
        for asset, q in doc["quotes"].items()
    }
    return ledger, due, quotes


def due_of(flows: Sequence[Mapping[str, Any]], rebalance: bool) -> Due:
    """What the pending flows ask of a cycle: deposits summed per user, withdrawals summed (None, a full
    withdrawal, wins over any amount)."""
    deposits: dict[str, Decimal] = defaultdict(Decimal)
    withdrawals: dict[str, Decimal | None] = {}
    for flow in flows:
        user = flow["user_id"]
        if flow["kind"] == "deposit":
            deposits[user] += flow["amount"]
        elif flow["amount"] is None or withdrawals.get(user, Decimal(0)) is None:
            withdrawals[user] = None
        else:
            withdrawals[user] = (withdrawals.get(user) or Decimal(0)) + flow["amount"]
    return Due(dict(deposits), withdrawals, rebalance)


@dataclass(frozen=True)
class Chain:
    """A cycle recomputed from its inputs and the executions known so far."""

    plan: CyclePlan
    first: Settlement | None = None
    phase2: CyclePlan | None = None


def recompute(
    fund: Fund, inputs: Mapping[str, Any], first: Mapping[str, Execution] | None
) -> Chain | NeedsAdjustment:
    ledger, due, quotes = decode_inputs(fund, inputs)
    raw_free = inputs.get("free")
    free = None if raw_free is None else {asset: Decimal(amount) for asset, amount in raw_free.items()}
    plan = plan_cycle(fund, ledger, due, quotes, free=free, frozen=frozenset(inputs.get("frozen", ())))
    if isinstance(plan, NeedsAdjustment) or first is None:
        return plan if isinstance(plan, NeedsAdjustment) else Chain(plan)
    settled = settle(plan, plan.ledger, 1, first)
    return Chain(plan, settled, resize_buys(plan, settled.ledger, free=free))


@dataclass(frozen=True)
class Executions:
    """A run's fills per asset, and the fees the venue took in an asset the ledgers cannot charge."""

    by_asset: dict[str, Execution]
    unallocated_fees: dict[str, Decimal]


def executions(rows: Sequence[Mapping[str, Any]], quote: str) -> Executions:
    """A run's fills summed per asset: amount, gross cost (each fill's amount x price to 1e-8, as the
    venue books it), the fee in the quote, and a buy's fee taken in the asset bought (the buyers receive
    that much less). A fee in any other asset (a third asset such as BNB, or a sell's fee in the asset
    sold) is not allocated to the users: it is reported with the cycle (and, if the fund holds that
    asset, shows as a shortfall in the account's reconciliation)."""
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
    others: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        base = row["symbol"].split("/")[0]
        total = totals[base]
        total[0] += row["amount"]
        total[1] += (row["amount"] * row["price"]).quantize(LEDGER_QUANTUM)
        if row["fee_asset"] == quote:
            total[2] += row["fee"]
        elif row["fee_asset"] == base and row["side"] == "buy":
            total[3] += row["fee"]
        elif row["fee"]:
            others[row["fee_asset"]] += row["fee"]
    return Executions({asset: Execution(*values) for asset, values in totals.items()}, dict(others))


def ledger_rows(before: Ledger, after: Ledger) -> list[tuple[str, str, Decimal]]:
    """(user, asset, change) for every amount the cycle changed (the same users and assets)."""
    delta = after.units - before.units
    return [
        (before.users[i], before.assets[j], from_units(int(delta[i, j])))
        for i, j in zip(*np.nonzero(delta), strict=True)
    ]


def rejection(command: Event, reason: str, user: str, now: datetime) -> FundCommandRejected:
    """Why a fund command changed nothing, as the event the operator sees."""
    return command.caused(FundCommandRejected, now=now, command=command.type, user_id=user, reason=reason)


@dataclass(frozen=True)
class Splits:
    """What the venue's holdings say of the fund's assets since the last cycle (see `check_splits`)."""

    frozen: dict[str, Decimal]
    ledger: Ledger
    notes: tuple[str, ...]


def check_splits(
    last_inputs: Mapping[str, Any], ledger: Ledger, venue: Mapping[str, Decimal], quotes: Mapping[str, Quote]
) -> Splits:
    """With the account's holdings in a snapshot taken after the last cycle ended (no fund fills since):
    an asset whose quantity x price jumped is frozen for this cycle, at the price it had before the jump
    (its reference until the split shows); one whose quantity moved by the inverse of its price has
    split, and every user's amount is scaled to the venue's, exactly."""
    references = {a: Decimal(p) for a, p in last_inputs.get("split_reference", {}).items()}
    references |= {a: Decimal(q["price"]) for a, q in last_inputs["quotes"].items() if a not in references}
    frozen: dict[str, Decimal] = {}
    notes: list[str] = []
    totals = ledger.totals()
    for asset in ledger.assets[1:]:
        if asset not in references or asset not in quotes:
            continue
        check = check_split(
            totals[asset], venue.get(asset, Decimal(0)), references[asset], quotes[asset].price, False
        )
        if check.status == "frozen":
            notes.append(f"{asset} frozen ({check.reason})")
            frozen[asset] = references[asset]
        elif check.status == "split":
            notes.append(f"{asset} split ({check.reason})")
            ledger = apply_split(ledger, asset, venue[asset])
    return Splits(frozen, ledger, tuple(notes))

"""The obvious way to make a plan's JSON and exact orders, one node and one order at a time.

Written from docs/formats.md with the scalar helpers of `rebal.core.numbers` (and `decimal`), as the
planner did before it printed and priced in bulk: the reference that `rebal.render` and
`Plan.order_columns` must match byte for byte.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from rebal.core.diff import OPERATION_NAMES, SELL, DiffTree
from rebal.core.numbers import AMOUNT_PLACES, MONEY_PLACES, amount_str, dec_str, shown_str, weight_str
from rebal.core.plan import Order, Plan

Doc = dict[str, Any]
DERIVED = Context(prec=18)


def diff_json(diff: DiffTree) -> Doc:
    tree = diff.tree
    offsets, kids = tree.children_csr()
    paths = tree.paths()
    real = tree.real
    nodes: list[Doc] = []
    for i in range(len(tree)):
        current, desired = float(diff.current_value[i]), float(diff.desired_value[i])
        node: Doc = {
            "path": paths[i],
            "name": tree.names[i],
            "kind": tree.kinds[i],
            "current_value": shown_str(current, MONEY_PLACES),
            "desired_value": shown_str(desired, MONEY_PLACES),
            "diff_value": shown_str(desired - current, MONEY_PLACES, max(abs(current), abs(desired))),
            "current_weight": weight_str(float(diff.current_weight[i])),
            "desired_weight": weight_str(float(diff.desired_weight[i])),
            "operation": OPERATION_NAMES[int(diff.operation[i])],
            "children": [],
        }
        if tree.wallet[i]:
            r = int(tree.real_index[i])
            text = real.amount_text[r] if r >= 0 else None
            wanted = float(diff.desired_amount[i])
            node["asset"] = tree.asset(i)
            node["current_amount"] = dec_str(Decimal(text)) if text else "0"
            held = float(tree.amount[i])
            node["desired_amount"] = shown_str(wanted, AMOUNT_PLACES)
            node["diff_amount"] = shown_str(wanted - held, AMOUNT_PLACES, max(abs(wanted), abs(held)))
            node["locked_amount"] = (
                dec_str(real.exact_locked(r))
                if r >= 0 and r in real.locks
                else amount_str(float(tree.locked[i]))
            )
        nodes.append(node)
    for i, node in enumerate(nodes):
        node["children"] = [nodes[k] for k in kids[offsets[i] : offsets[i + 1]].tolist()]
    return nodes[0]


def orders(plan: Plan) -> list[Order]:
    """Every order with its exact decimals made one by one: ``step * steps``, then cost and fee at 18
    significant digits; direct orders in their order, routed legs sorted in by (phase, account, asset,
    leg)."""
    tree = plan.diff.tree
    accounts = {node: (tree.path(node), exchange) for node, (exchange, _) in tree.accounts.items()}
    rank = {node: r for r, node in enumerate(sorted(tree.accounts))}
    asset_rank = {name: i for i, name in enumerate(plan.diff.asset_names)}
    rows = [
        (
            (1 if side == SELL else 2, rank[account], asset_rank[plan.direct_markets[market].base], 0),
            account,
            plan.direct_markets[market],
            side,
            steps,
        )
        for account, market, side, steps in zip(
            plan.direct_account[plan.direct_order].tolist(),
            plan.direct_market[plan.direct_order].tolist(),
            plan.direct_side[plan.direct_order].tolist(),
            plan.direct_steps[plan.direct_order].tolist(),
            strict=True,
        )
    ]
    rows += [(leg.sort_key, leg.account, leg.market, leg.side, leg.steps) for leg in plan.legs]
    rows.sort(key=lambda row: row[0])
    made = []
    for _, account, market, side, steps in rows:
        base, quote = plan.diff.prices.get(market.base), plan.diff.prices.get(market.quote)
        assert base is not None and quote is not None
        price = DERIVED.divide(base, quote)
        amount = market.amount_step * steps
        cost = DERIVED.multiply(amount, price)
        sell = side == SELL
        made.append(
            Order(
                *accounts[account],
                market.symbol,
                "sell" if sell else "buy",
                amount.normalize(),
                price,
                cost,
                DERIVED.multiply(cost, market.fee_rate),
                1 if sell else 2,
            )
        )
    return made


def plan_json(plan: Plan) -> Doc:
    return {
        "diff": diff_json(plan.diff),
        "orders": [
            {
                "account": o.account,
                "exchange": o.exchange,
                "symbol": o.symbol,
                "side": o.side,
                "amount": dec_str(o.amount),
                "est_price": dec_str(o.est_price),
                "est_cost": dec_str(o.est_cost),
                "est_fee": dec_str(o.est_fee),
                "phase": o.phase,
            }
            for o in orders(plan)
        ],
        "transfers": [
            {
                "asset": t.asset,
                "from": t.source,
                "to": t.destination,
                "amount": dec_str(t.amount),
                "est_value": dec_str(t.value),
            }
            for t in plan.transfers
        ],
        "skipped": [
            {
                "path": s.path,
                "symbol": s.symbol,
                "side": s.side,
                "amount": dec_str(s.amount),
                "reason": s.reason,
            }
            for s in plan.skipped()
        ],
    }

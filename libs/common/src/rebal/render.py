"""Diff trees, plans and trees as the documented JSON (docs/formats.md): `rebal plan --json`, the API's
diff, and what the CLI's renderer (`rebal_cli.render`) draws for people."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from rebal.core.diff import OPERATION_NAMES, DiffTree
from rebal.core.numbers import amount_str, dec_str, money_str, weight_str
from rebal.core.plan import Order, Plan, Skip, Transfer
from rebal.core.tree import Tree

JsonDict = dict[str, Any]


def diff_json(diff: DiffTree) -> JsonDict:
    """The diff tree as nested nodes (see docs/formats.md)."""
    tree = diff.tree
    offsets, kids = tree.children_csr()
    paths = tree.paths()
    cur, des = diff.current_value.tolist(), diff.desired_value.tolist()
    cur_w, des_w = diff.current_weight.tolist(), diff.desired_weight.tolist()
    ops = diff.operation.tolist()
    wallet = tree.wallet.tolist()
    amount, locked = tree.amount.tolist(), tree.locked.tolist()
    desired_amount = diff.desired_amount.tolist()
    real = tree.real
    real_index = tree.real_index.tolist()
    nodes: list[JsonDict] = []
    for i in range(len(tree)):
        node: JsonDict = {
            "path": paths[i],
            "name": tree.names[i],
            "kind": tree.kinds[i],
            "current_value": money_str(cur[i]),
            "desired_value": money_str(des[i]),
            "diff_value": money_str(des[i] - cur[i]),
            "current_weight": weight_str(cur_w[i]),
            "desired_weight": weight_str(des_w[i]),
            "operation": OPERATION_NAMES[ops[i]],
            "children": [],
        }
        if wallet[i]:
            r = real_index[i]
            current_text = real.amount_text[r] if r >= 0 else None
            node["asset"] = tree.asset(i)
            node["current_amount"] = dec_str(Decimal(current_text)) if current_text else "0"
            node["desired_amount"] = amount_str(desired_amount[i])
            node["diff_amount"] = amount_str(desired_amount[i] - amount[i])
            node["locked_amount"] = (
                dec_str(real.exact_locked(r)) if r >= 0 and r in real.locks else amount_str(locked[i])
            )
        nodes.append(node)
    offsets_list, kids_list = offsets.tolist(), kids.tolist()
    for i, node in enumerate(nodes):
        node["children"] = [nodes[k] for k in kids_list[offsets_list[i] : offsets_list[i + 1]]]
    return nodes[0]


def order_json(order: Order) -> JsonDict:
    return {
        "account": order.account,
        "exchange": order.exchange,
        "symbol": order.symbol,
        "side": order.side,
        "amount": dec_str(order.amount),
        "est_price": dec_str(order.est_price),
        "est_cost": dec_str(order.est_cost),
        "est_fee": dec_str(order.est_fee),
        "phase": order.phase,
    }


def transfer_json(transfer: Transfer) -> JsonDict:
    return {
        "asset": transfer.asset,
        "from": transfer.source,
        "to": transfer.destination,
        "amount": dec_str(transfer.amount),
        "est_value": dec_str(transfer.value),
    }


def skip_json(skip: Skip) -> JsonDict:
    return {
        "path": skip.path,
        "symbol": skip.symbol,
        "side": skip.side,
        "amount": dec_str(skip.amount),
        "reason": skip.reason,
    }


def plan_json(plan: Plan) -> JsonDict:
    return {
        "diff": diff_json(plan.diff),
        "orders": [order_json(o) for o in plan.orders()],
        "transfers": [transfer_json(t) for t in plan.transfers],
        "skipped": [skip_json(s) for s in plan.skipped()],
    }


def tree_json(tree: Tree, owner: str | None = None) -> JsonDict | None:
    """A real tree, or one owner's virtual tree (only wallets where it holds locks, at its locked amount)."""
    count = len(tree)
    keep = np.ones(count, dtype=np.bool_)
    owned: dict[int, Decimal] = {}
    if owner is not None:
        for index, locks in tree.locks.items():
            total = tree.exact_amount(index)
            mine = sum((lock.locked(total) for lock in locks if lock.owner == owner), Decimal(0))
            if any(lock.owner == owner for lock in locks):
                owned[index] = mine
        keep[:] = False
        for index in owned:
            up = index
            while up >= 0 and not keep[up]:
                keep[up] = True
                up = int(tree.parent[up])
        if not owned:
            return None
    nodes: dict[int, JsonDict] = {}
    for i in range(count):
        if not keep[i]:
            continue
        node: JsonDict = {"name": tree.names[i]}
        if tree.kinds[i] is not None:
            node["kind"] = tree.kinds[i]
        if i in tree.quote:
            node["quote"] = tree.quote[i]
        if i in tree.exchange:
            node["exchange"] = tree.exchange[i]
        if tree.wallet[i]:
            node["asset"] = tree.assets[i]
            if owner is not None:
                node["amount"] = dec_str(owned[i])
            else:
                node["amount"] = dec_str(tree.exact_amount(i))
                if i in tree.locks:
                    node["locked_amount"] = dec_str(tree.exact_locked(i))
                    node["free_amount"] = dec_str(tree.exact_amount(i) - tree.exact_locked(i))
                    node["locks"] = [
                        {"owner": lock.owner, "amount": dec_str(lock.locked(tree.exact_amount(i)))}
                        for lock in tree.locks[i]
                    ]
        else:
            node["children"] = []
        nodes[i] = node
        parent = int(tree.parent[i])
        if parent >= 0:
            nodes[parent]["children"].append(node)
    return nodes[0]

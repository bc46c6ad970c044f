"""The columns encoding of large payloads: exact round trips, and refusals that name what is wrong."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal import payloads
from rebal.core.diff import diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    PayloadRef,
    PlannedBudget,
    PlannedOrder,
    RebalancePlanned,
    SkippedOrder,
    StartRebalance,
    TargetWeightsComputed,
    derive_id,
    new_event,
)
from rebal.payloads import Body, PayloadError
from tests.strategies import Case, cases

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
Doc = dict[str, Any]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8),
    st.sampled_from(["0.1", "1e3"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> Doc:
    """Nodes of any keys (a `children` list, or none, or an empty one), values of any JSON."""
    node: Doc = draw(
        st.dictionaries(st.text(max_size=6).filter(lambda k: k != "children"), json_values, max_size=4)
    )
    if depth > 0 and draw(st.booleans()):
        node["children"] = draw(st.lists(trees(depth - 1), max_size=3))
    return node


def ref_of(data: bytes, name: str = "demo/x/0") -> PayloadRef:
    return PayloadRef(
        bucket="REBAL_PLANS",
        name=name,
        digest=payloads.digest_of(data),
        size=len(data),
        encoding=payloads.ENCODING,
    )


@given(trees())
def test_any_tree_of_objects_comes_back_equal(tree: Doc) -> None:
    table = payloads.tree_table(tree)
    assert "document" not in table
    assert payloads.tree_of(orjson.loads(orjson.dumps(table))) == tree


@pytest.mark.parametrize(
    "document",
    [
        {"name": "root", "children": [1, 2]},
        {"name": "root", "children": [{"name": "a", "children": ["x"]}]},
    ],
)
def test_a_document_that_is_no_tree_of_objects_is_sent_as_it_is(document: Doc) -> None:
    assert payloads.tree_table(document) == {"document": document}
    assert payloads.tree_of(payloads.tree_table(document)) == document


def test_a_tree_table_is_columns_of_the_nodes_in_preorder() -> None:
    tree = {
        "name": "root",
        "children": [
            {"name": "a", "kind": "account", "children": [{"name": "btc", "asset": "BTC", "amount": "1.5"}]},
            {"name": "cash", "asset": "USDT", "amount": "10"},
        ],
    }
    assert payloads.tree_table(tree) == {
        "n": 4,
        "up": [0, 1, 1, 3],  # a's parent is 1 row back, btc's 1 (a), cash's 3 (root)
        "children": [1, 1],  # rows 0 and 1 have children lists
        "keys": {
            "name": {"values": ["root", "a", "btc", "cash"]},
            "kind": {"gaps": [2], "values": ["account"]},
            "asset": {"gaps": [3, 1], "values": ["BTC", "USDT"]},
            "amount": {"gaps": [3, 1], "values": ["1.5", "10"]},
        },
    }


def a_plan(case: Case) -> RebalancePlanned:
    diff = diff_trees(
        parse_tree(case.real, "real"), parse_tree(case.target, "target"), Prices.parse(case.prices)
    )
    plan = plan_rebalance(diff, Markets.parse(case.markets))
    command = new_event(StartRebalance, key="plan", now=NOW, portfolio_id="demo")
    return command.caused(
        RebalancePlanned,
        now=NOW,
        dry_run=True,
        band=Decimal(0),
        snapshot_id=derive_id("snapshot"),
        target_id=derive_id("target"),
        total_value=Decimal("1000.5"),
        orders=tuple(PlannedOrder.model_validate(o._asdict()) for o in plan.orders()),
        skipped=tuple(SkippedOrder.model_validate(s._asdict()) for s in plan.skipped()),
        budgets=tuple(PlannedBudget.model_validate(b._asdict()) for b in plan.budgets()),
    )


@given(cases())
def test_a_plan_sent_by_reference_comes_back_whole_and_exact(case: Case) -> None:
    plan = a_plan(case)
    data = payloads.encode(plan)
    ref = ref_of(data)
    travelling = payloads.slim(plan, ref)
    assert travelling.orders == () and travelling.skipped == () and travelling.payload_ref == ref
    whole = payloads.hydrate(travelling, payloads.decode(RebalancePlanned, data, ref))
    assert whole.payload_ref == ref
    assert whole.model_copy(update={"payload_ref": None}) == plan
    assert whole.model_dump_json(exclude={"payload_ref"}) == plan.model_dump_json(exclude={"payload_ref"})


@given(cases())
def test_snapshots_and_targets_sent_by_reference_come_back_equal(case: Case) -> None:
    snapshot = new_event(
        BalanceSnapshotTaken,
        key=1,
        now=NOW,
        portfolio_id="demo",
        tree=case.real,
        prices=case.prices,
        markets=case.markets,
    )
    target = new_event(TargetWeightsComputed, key=1, now=NOW, portfolio_id="demo", tree=case.target)
    for event in (snapshot, target):
        data = payloads.encode(event)
        ref = ref_of(data)
        whole = payloads.hydrate(payloads.slim(event, ref), payloads.decode(type(event), data, ref))
        assert whole.model_copy(update={"payload_ref": None}) == event


@given(cases())
def test_the_core_s_rows_make_the_same_event_and_the_same_bytes_as_the_models(case: Case) -> None:
    diff = diff_trees(
        parse_tree(case.real, "real"), parse_tree(case.target, "target"), Prices.parse(case.prices)
    )
    core = plan_rebalance(diff, Markets.parse(case.markets))
    plan = a_plan(case)
    body = Body(
        {
            "orders": core.orders(),
            "transfers": (),
            "skipped": core.skipped(),
            "projected_weights": (),
            "budgets": core.budgets(),
        }
    )
    empty = plan.model_copy(update={"orders": (), "skipped": (), "budgets": ()})
    assert body.attach(empty) == plan
    assert body.rows == len(plan.orders) + len(plan.skipped) + len(plan.budgets)
    assert body.encode(RebalancePlanned) == payloads.encode(plan)


def test_a_payload_is_refused_when_its_digest_kind_encoding_or_shape_is_wrong() -> None:
    plan = new_event(
        RebalancePlanned,
        key=1,
        now=NOW,
        portfolio_id="demo",
        dry_run=True,
        band=Decimal(0),
        snapshot_id=derive_id("s"),
        target_id=derive_id("t"),
        total_value=Decimal(1),
        orders=(),
    )
    data = payloads.encode(plan)
    other = payloads.encode(
        plan.model_copy(
            update={"budgets": (PlannedBudget(exchange="x", account="a", asset="BTC", amount=Decimal(1)),)}
        )
    )
    with pytest.raises(PayloadError, match="does not match its digest"):
        payloads.decode(RebalancePlanned, other, ref_of(data))
    with pytest.raises(PayloadError, match="is a RebalancePlanned, not a TargetWeightsComputed"):
        payloads.decode(TargetWeightsComputed, data, ref_of(data))
    with pytest.raises(PayloadError, match="unknown payload encoding"):
        payloads.decode(RebalancePlanned, data, ref_of(data).model_copy(update={"encoding": "gzip"}))
    garbage = b"not deflate"
    with pytest.raises(PayloadError, match="is not rebal-columns-v1"):
        payloads.decode(RebalancePlanned, garbage, ref_of(garbage))

    def packed(document: Any) -> bytes:
        return zlib.compress(orjson.dumps(document))

    for document, reason in [
        ({"format": "other"}, "is not rebal-columns v1"),
        (
            {
                "format": "rebal-columns",
                "version": 1,
                "kind": "RebalancePlanned",
                "fields": {"dry_run": False},
            },
            "holds other fields",
        ),
        (
            {
                "format": "rebal-columns",
                "version": 1,
                "kind": "RebalancePlanned",
                "fields": {"orders": {"n": 2, "columns": {"account": ["a"]}}},
            },
            "another length",
        ),
        (
            {
                "format": "rebal-columns",
                "version": 1,
                "kind": "TargetWeightsComputed",
                "fields": {"tree": {"n": 2, "up": [0, 0], "children": [1], "keys": {}}},
            },
            "names no earlier node",
        ),
    ]:
        data = packed(document)
        kind = TargetWeightsComputed if document.get("kind") == "TargetWeightsComputed" else RebalancePlanned
        with pytest.raises(PayloadError, match=reason):
            payloads.decode(kind, data, ref_of(data))


@given(cases())
def test_a_plan_s_orders_written_from_the_core_s_columns_read_back_as_its_orders(case: Case) -> None:
    diff = diff_trees(
        parse_tree(case.real, "real"), parse_tree(case.target, "target"), Prices.parse(case.prices)
    )
    core = plan_rebalance(diff, Markets.parse(case.markets))
    records = payloads.plan_orders(core)
    table = orjson.loads(orjson.dumps(records.table, option=orjson.OPT_SERIALIZE_NUMPY))
    read = [PlannedOrder.model_validate(row) for row in payloads.records_of(table)]
    made = [PlannedOrder.model_validate(order._asdict()) for order in core.orders()]
    assert [o.model_dump_json() for o in read] == [o.model_dump_json() for o in made]
    assert len(records) == len(made) and records.rows() == core.orders()

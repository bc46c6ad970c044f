"""The plan's JSON printed in bulk (`rebal.render`) is, byte for byte, what the obvious node-by-node
rendering gives (tests/core/naive_render.py), in slices of any size; exact orders made in bulk are the
ones made one `Decimal` at a time."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from rebal import render
from rebal.core.plan import Plan
from rebal.core.tree import MAX_DEPTH
from tests.core import naive_render
from tests.strategies import Case, cases
from tests.support import account, folder, prices, run, wallet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def planned(case: Case) -> Plan:
    return run(case.real, case.target, case.prices, case.markets)[1]


def assert_same_json(plan: Plan) -> None:
    expected = naive_render.plan_json(plan)
    streamed = b"".join(render.plan_chunks(plan))
    assert streamed == orjson.dumps(expected)  # compact: the same text, whitespace and all
    assert render.plan_json(plan) == expected
    out = io.BytesIO()
    render.write_plan_json(plan, out, pretty=True)
    assert out.getvalue() == orjson.dumps(expected, option=INDENTED)
    out = io.BytesIO()
    render.write_plan_json(plan, out, pretty=False)
    assert out.getvalue() == orjson.dumps(expected) + b"\n"


def assert_same_orders(plan: Plan) -> None:
    made, expected = plan.orders(), naive_render.orders(plan)
    assert [tuple(map(str, o)) for o in made] == [tuple(map(str, o)) for o in expected]


@SETTINGS
@given(cases())
def test_generated_plans_print_as_the_naive_rendering(case: Case) -> None:
    plan = planned(case)
    assert_same_json(plan)
    assert_same_orders(plan)


@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_any_slice_size_gives_the_same_text(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    plan = example_plan()
    monkeypatch.setattr(render, "CHUNK_ROWS", rows)
    assert_same_json(plan)


class ClosedPipe(io.BytesIO):
    """Standard output piped into a reader that has gone (`rebal plan --json | head`): the second
    write fails."""

    def write(self, data: Any) -> int:
        if self.tell():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(data)


def test_a_write_that_fails_behind_is_raised_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "CHUNK_ROWS", 2)  # many chunks, written one by one by the writer thread
    with pytest.raises(BrokenPipeError):
        render.write_plan_json(example_plan(), ClosedPipe(), pretty=False)


def example_plan(**changes: Any) -> Plan:
    docs = {
        name: json.loads((EXAMPLES / f"{name}.json").read_text()) for name in ("real", "target", "prices")
    }
    docs.update(changes)
    markets = json.loads((EXAMPLES / "markets.json").read_text())
    return run(docs["real"], docs["target"], docs["prices"], markets)[1]


def test_the_worked_example_with_routed_legs_transfers_and_skips() -> None:
    plan = example_plan()
    assert plan.legs and plan.transfers and len(plan.skips)
    assert_same_json(plan)
    assert_same_orders(plan)


@pytest.mark.parametrize(
    "name",
    ['quo"te', "back\\slash", "tab\tand\nnewline", "bell\x07", "ünïcødé", "emoji 💰", "a" * 300],
)
def test_names_are_escaped_as_json_escapes_them(name: str) -> None:
    real = folder(
        "root",
        account(name, wallet("btc", "BTC", "1"), wallet(name, "USDT", "100"), exchange="ex"),
        folder("empty"),
        kind=name,
    )
    target = folder(
        "root",
        account(name, wallet("btc", "BTC", weight="30%"), wallet(name, "USDT", weight="70%"), weight="1"),
    )
    plan = run(real, target, prices(BTC="100"))[1]
    assert_same_json(plan)


def test_a_real_tree_without_wallets_prints_as_the_naive_rendering() -> None:
    real = folder("root", account("acc", exchange="ex"))
    target = folder("root", account("acc", wallet("btc", "BTC", weight="100%"), weight="1"))
    assert_same_json(run(real, target, prices(BTC="100"))[1])


def test_a_tree_at_the_depth_limit_prints_its_paths_whole() -> None:
    leaf = wallet("btc", "BTC", "1")
    real: dict[str, Any] = account("acc", leaf)
    target: dict[str, Any] = {"name": "acc", "weight": "1", "children": [{**leaf, "weight": "1"}]}
    for level in range(MAX_DEPTH - 2):
        real = folder(f"n{level}", real)
        target = {"name": f"n{level}", "weight": "1", "children": [target]}
    plan = run(folder("root", real), {"name": "root", "children": [target]}, prices(BTC="10"))[1]
    assert int(plan.diff.tree.depth.max()) == MAX_DEPTH
    assert_same_json(plan)

"""Trees read from JSON files through the typed decoder (`rebal.io.load_tree`) are the trees the generic
parser makes of the same documents, and a bad file gets the same one-line message either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal.core.tree import MAX_DEPTH, Role, Tree, parse_tree
from rebal.io import FileError, load, load_tree
from tests.strategies import Case, cases

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def both(path: Path, role: Role) -> tuple[Tree, Tree]:
    return load_tree(path, role), load(path, lambda doc: parse_tree(doc, role))


def assert_same(typed: Tree, generic: Tree) -> None:
    for field in ("names", "kinds", "amount_text", "locks", "locked_total", "quote", "exchange", "assets"):
        assert getattr(typed, field) == getattr(generic, field), field
    for field in ("parent", "depth", "wallet", "amount", "locked", "keep_unlisted", "lists_children"):
        assert np.array_equal(getattr(typed, field), getattr(generic, field)), field
    assert np.array_equal(typed.weight, generic.weight, equal_nan=True)


def as_numbers(node: dict[str, Any]) -> dict[str, Any]:
    """The same tree with its amounts and weights as JSON numbers instead of strings."""
    out = {key: value for key, value in node.items() if key != "children"}
    for key in ("amount", "weight"):
        if isinstance(out.get(key), str) and not out[key].endswith("%"):
            out[key] = float(out[key])
    if "children" in node:
        out["children"] = [as_numbers(child) for child in node["children"]]
    return out


@SETTINGS
@given(cases(), st.booleans())
def test_generated_trees_are_the_same_either_way(tmp_path: Path, case: Case, numbers: bool) -> None:
    change = as_numbers if numbers else (lambda node: node)
    for role, document in (("real", change(case.real)), ("target", change(case.target))):
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(document))
        assert_same(*both(path, role))


def chain(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "leaf", "asset": "BTC", "amount": "1"}
    for level in range(depth):
        node = {"name": f"n{level}", "children": [node]}
    return node


ACCOUNT = {"name": "acc", "kind": "account", "exchange": "ex"}
BAD: list[tuple[str, object]] = [
    ("unknown key", {"name": "r", "colour": "red"}),
    ("null name", {"name": "r", "children": [{"name": None, "asset": "BTC", "amount": "1"}]}),
    ("missing name", {"name": "r", "children": [{"asset": "BTC", "amount": "1"}]}),
    ("name with slash", {"name": "r", "children": [{"name": "a/b", "asset": "BTC", "amount": "1"}]}),
    ("numeric name", {"name": "r", "children": [{"name": 7, "asset": "BTC", "amount": "1"}]}),
    ("list name", {"name": "r", "children": [{"name": [1], "asset": "BTC", "amount": "1"}]}),
    ("kind not a string", {"name": "r", "kind": 3}),
    ("children not a list", {"name": "r", "children": {"a": 1}}),
    ("child not a mapping", {"name": "r", "children": [{"name": "a", "children": ["x"]}]}),
    ("root not a mapping", ["r"]),
    (
        "wallet with children",
        {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": "1", "children": []}]},
    ),
    ("null asset", {"name": "r", "children": [{"name": "a", "asset": None, "amount": "1"}]}),
    ("blank asset", {"name": "r", "children": [{"name": "a", "asset": " ", "amount": "1"}]}),
    ("list asset", {"name": "r", "children": [{"name": "a", "asset": ["BTC"], "amount": "1"}]}),
    ("amount on a portfolio", {"name": "r", "amount": "1", "children": []}),
    ("locks on a portfolio", {"name": "r", "locks": []}),
    ("no amount", {"name": "r", "children": [{"name": "a", "asset": "BTC"}]}),
    ("null amount", {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": None}]}),
    ("boolean amount", {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": True}]}),
    ("text amount", {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": "lots"}]}),
    ("huge amount", {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": 1e300}]}),
    ("negative amount", {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": "-1"}]}),
    ("null keep", {"name": "r", "keep_unlisted": None}),
    ("null quote", {"name": "r", "quote": None}),
    ("empty exchange", {"name": "r", "exchange": ""}),
    (
        "locks not a list",
        {"name": "r", "children": [{"name": "a", "asset": "BTC", "amount": "1", "locks": {}}]},
    ),
    (
        "lock over 100%",
        {
            "name": "r",
            "children": [
                {"name": "a", "asset": "BTC", "amount": "1", "locks": [{"owner": "b", "share": "2"}]}
            ],
        },
    ),
    (
        "duplicate siblings",
        {"name": "r", "children": [{"name": "a", "children": []}, {"name": "a", "children": []}]},
    ),
    ("too deep", chain(MAX_DEPTH + 1)),
    ("wallet outside an account is fine here", {"name": "r", "children": [{**ACCOUNT, "children": []}]}),
]


@pytest.mark.parametrize(("case", "document"), BAD, ids=[case for case, _ in BAD])
def test_a_bad_tree_gets_the_same_message_either_way(tmp_path: Path, case: str, document: object) -> None:
    path = tmp_path / "real.json"
    path.write_text(json.dumps(document))
    outcomes = []
    for read in (lambda: load_tree(path, "real"), lambda: load(path, lambda doc: parse_tree(doc, "real"))):
        try:
            read()
            outcomes.append("accepted")
        except FileError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == "accepted" if case.endswith("fine here") else outcomes[0].startswith(f"{path}: ")


def test_a_weightless_target_node_gets_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "target.json"
    path.write_text(json.dumps({"name": "r", "children": [{"name": "a", "asset": "BTC"}]}))
    with pytest.raises(FileError) as typed:
        load_tree(path, "target")
    with pytest.raises(FileError) as generic:
        load(path, lambda doc: parse_tree(doc, "target"))
    assert str(typed.value) == str(generic.value) and "needs a 'weight'" in str(typed.value)


def test_malformed_json_and_yaml_take_the_generic_path(tmp_path: Path) -> None:
    broken = tmp_path / "real.json"
    broken.write_text('{"name": "r", "children": [')
    with pytest.raises(FileError, match="malformed JSON"):
        load_tree(broken, "real")
    yaml_file = tmp_path / "real.yaml"
    yaml_file.write_text("name: r\nchildren:\n  - {name: a, kind: account, exchange: ex, children: []}\n")
    assert load_tree(yaml_file, "real").names == ["r", "a"]

"""docs/formats.md's autopilot examples, reproduced: each JSON block after ``<!-- example: NAME -->`` is
what the code answers for that example's inputs (stated beside it in the document)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from rebal.core.policy import evaluate, planned_diff
from rebal.io import FileError
from rebal.policy import load_policy, parse_policy
from rebal.trigger import decision_json, parse_instant
from tests.autopilot import diff_of, orders, real

DOC = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text()
BLOCKS = dict(re.findall(r"<!-- example: ([\w-]+) -->\n```json\n(.*?)\n```", DOC, flags=re.DOTALL))
STATES = {
    "under": ("0.0898", "1", "7.55", "1000"),
    "over": ("0.0902", "1", "7.45", "1000"),
    "relative": ("0.074", "1", "10", "1300"),
    "deposit": ("0.08", "0.9", "9", "2500"),
    "proportional": ("0.1", "0.8", "8", "2000"),
    "breaching": ("0.1", "0.9", "8", "700"),
}
NOW, LAST = "2024-06-05T12:00:00Z", "2024-06-03T08:00:00Z"


def documented_policy() -> dict[str, Any]:
    """The policy at the top of "The autopilot policy", without drift_relative, scope and bands."""
    section = DOC[DOC.index("## The autopilot policy") :]
    policy = tomllib.loads(re.search(r"```toml\n(.*?)\n```", section, flags=re.DOTALL)[1])
    for key in ("drift_relative", "scope", "bands"):
        policy.pop(key)
    return policy


CASES: dict[str, tuple[str, dict[str, Any], str, str | None]] = {
    "under": ("under", {"drift_absolute": 0.05}, NOW, None),
    "over": ("over", {"drift_absolute": 0.05}, NOW, None),
    "relative": ("relative", {"drift_absolute": 0.05, "drift_relative": 0.2}, NOW, None),
    "cooldown": ("over", documented_policy(), NOW, LAST),
    "cash": ("deposit", documented_policy(), NOW, LAST),
}
PLANS: dict[str, tuple[str, dict[str, Any]]] = {
    "buy-only-fits": ("deposit", documented_policy()),
    "buy-only-proportional": ("proportional", {"invest_cash_above": "500"}),
    "breaching": ("breaching", {"drift_absolute": 0.05, "scope": "breaching"}),
}


def test_every_example_in_the_document_is_checked() -> None:
    assert set(BLOCKS) == set(CASES) | set(PLANS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trigger_examples(name: str) -> None:
    state, policy, now, last = CASES[name]
    decision = evaluate(
        diff_of(real(*STATES[state])),
        parse_policy(policy).to_policy(),
        now=parse_instant(now),
        last_rebalance=None if last is None else parse_instant(last),
    )
    assert decision_json(decision) == orjson.loads(BLOCKS[name])


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_examples(name: str) -> None:
    state, policy = PLANS[name]
    diff = diff_of(real(*STATES[state]))
    decision = evaluate(
        diff, parse_policy(policy).to_policy(), now=parse_instant(NOW), last_rebalance=parse_instant(LAST)
    )
    assert [list(order) for order in orders(planned_diff(diff, decision))] == orjson.loads(BLOCKS[name])


def test_the_cooldown_example_ends_on_its_second() -> None:
    diff = diff_of(real(*STATES["over"]))
    policy = parse_policy(documented_policy()).to_policy()
    ended = evaluate(
        diff, policy, now=parse_instant("2024-06-10T08:00:00Z"), last_rebalance=parse_instant(LAST)
    )
    assert (ended.kind, ended.blocked_by) == ("full", None)
    assert [reason.split(":")[0] for reason in decision_json(ended)["reasons"]] == ["schedule", "drift"]
    assert orders(planned_diff(diff, ended)) == [("BTC/USDT", "sell", "0.0102"), ("SOL/USDT", "buy", "2.55")]


def test_the_documented_error_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[bands."alice/spot/sol"]\ndrift_absolute = -0.02\n')
    with pytest.raises(FileError) as caught:
        load_policy(path)
    line = str(caught.value).replace(str(tmp_path) + "/", "")
    assert f"`{line}`" in DOC


def test_the_documented_policy_file_reads() -> None:
    section = DOC[DOC.index("## The autopilot policy") :]
    text = re.search(r"```toml\n(.*?)\n```", section, flags=re.DOTALL)[1]
    policy = parse_policy(tomllib.loads(text)).to_policy()
    assert (policy.scope, policy.mode, policy.replan_on_price_move, policy.min_trade_value) == (
        "portfolio",
        "approve",
        2,
        10.0,
    )
    assert policy.overrides == {"alice/spot/sol": {"absolute": 0.02}}

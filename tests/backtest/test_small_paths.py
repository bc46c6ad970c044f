"""The small-portfolio paths a replay takes (the planner's one-account plan, the book's one-account fill,
in Python floats) against the array paths they stand in for: the same replay, float for float."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal.core import plan as planner
from rebal.core.backtest import History, replay
from rebal.core.backtest import book as books
from rebal.core.backtest.replay import Run
from rebal.core.backtest.screen import Screen
from rebal.core.diff import DiffShape
from rebal.core.errors import InputError
from rebal.core.market import Markets
from rebal.core.policy import Bands, Policy
from rebal.core.tree import parse_tree
from rebal.schedule import CronSchedule

# The module (the package exports its function `replay` under the same name).
replays_module = sys.modules["rebal.core.backtest.replay"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAY = 86_400
STEPS = ("0.00000001", "0.001", "0.1", "1")


@contextmanager
def array_paths() -> Iterator[None]:
    """Plans and fills made by the array paths alone."""
    groups, fill = planner.SMALL_GROUPS, books.SMALL_FILL
    planner.SMALL_GROUPS = books.SMALL_FILL = 0
    try:
        yield
    finally:
        planner.SMALL_GROUPS, books.SMALL_FILL = groups, fill


@st.composite
def replays(draw: st.DrawFn) -> dict[str, Any]:
    assets = draw(st.integers(2, 12))
    rows = draw(st.integers(20, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    moves = rng.standard_normal((rows, assets)) * rng.uniform(0.005, 0.06, assets)
    prices = rng.uniform(0.05, 5000, assets) * np.exp(np.cumsum(moves, axis=0))
    names = [f"A{i}" for i in range(assets)]
    weights = rng.dirichlet(np.ones(assets + 1))
    target = {
        "name": "p",
        "children": [
            {
                "name": "spot",
                "weight": 1,
                "children": [
                    *(
                        {"name": n.lower(), "asset": n, "weight": float(w)}
                        for n, w in zip(names, weights, strict=False)
                    ),
                    {"name": "usd", "asset": "USD", "weight": float(weights[-1])},
                ],
            }
        ],
    }
    held: list[dict[str, Any]] = [
        {"name": n.lower(), "asset": n, "amount": repr(float(rng.uniform(0, 3000) / prices[0, i]))}
        for i, n in enumerate(names)
        if draw(st.booleans())
    ]
    for wallet in held:  # some held by a bot in part (a lock: never traded, carved out of the free part)
        lock = draw(st.sampled_from((None, None, "amount", "share")))
        if lock == "amount":
            wallet["locks"] = [{"owner": "bot", "amount": repr(float(wallet["amount"]) / 3)}]
        elif lock == "share":
            wallet["locks"] = [{"owner": "bot", "share": "0.5"}]
    start = {
        "name": "p",
        "children": [
            {
                "name": "spot",
                "kind": "account",
                "exchange": "x",
                "quote": "USD",
                "children": [
                    {"name": "usd", "asset": "USD", "amount": repr(draw(st.sampled_from((0.0, 500.0, 1e5))))},
                    *held,
                ],
            }
        ],
    }
    fee = draw(st.sampled_from(("0", "0.001", "0.01")))
    markets = {
        "x": {
            f"{n}/USD": {
                "fee_rate": fee,
                "amount_step": draw(st.sampled_from(STEPS)),
                "min_cost": draw(st.sampled_from(("0", "0", "5"))),
            }
            for n in names
        }
    }
    policy = Policy(
        bands=Bands(
            absolute=draw(st.sampled_from((None, 0.01, 0.05))), relative=draw(st.sampled_from((None, 0.2)))
        ),
        schedule=draw(st.sampled_from((None, CronSchedule("0 0 * * MON")))),
        cooldown=draw(st.sampled_from((0, 3 * DAY))),
        invest_cash_above=draw(st.sampled_from((None, 100.0))),
        min_trade_value=draw(st.sampled_from((None, 20.0))),
        scope=draw(st.sampled_from(("portfolio", "breaching"))),
    )
    flows = np.zeros(rows)
    for row in range(5, rows, draw(st.integers(7, 40))):
        flows[row] = draw(st.sampled_from((1000.0, 250.0, -100.0)))
    history = History(np.arange(rows, dtype=np.int64) * DAY, tuple(names), prices, "USD")
    return {
        "history": history,
        "start": start,
        "target": parse_tree(target, "target"),
        "markets": Markets.parse(markets),
        "policy": policy,
        "flows": flows if draw(st.booleans()) else None,
    }


def replayed(case: dict[str, Any]) -> Run | str:
    """The replay, or the input error it stops at (a withdrawal the portfolio cannot pay)."""
    try:
        return replay(
            case["history"],
            case["start"],
            case["target"],
            case["markets"],
            case["policy"],
            flows=case["flows"],
        )
    except InputError as exc:
        return str(exc)


@SETTINGS
@given(replays())
def test_the_small_paths_replay_as_the_array_paths(case: dict[str, Any]) -> None:
    small = replayed(case)
    with array_paths():
        general = replayed(case)
    if isinstance(small, str) or isinstance(general, str):
        assert small == general
        return
    for name in ("value", "flow", "fees", "traded", "orders", "drift", "kind"):
        assert np.array_equal(getattr(small, name), getattr(general, name)), name
    assert small.evaluations == general.evaluations


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), max_size=300))
def test_numpy_sum_is_the_float_numpy_sums(values: list[float]) -> None:
    values += [0.1 * i for i in range(len(values) % 17)]
    total = books.numpy_sum(values)
    expected = float(np.sum(np.array(values, dtype=np.float64)))
    assert total == expected and str(total) == str(expected)


@SETTINGS
@given(replays(), st.integers(-1, 12), st.sampled_from((0.0, 5e-10, 2e-9, -1e-3)))
def test_the_small_disagreement_check_is_the_array_one(case: dict[str, Any], node: int, nudge: float) -> None:
    """The replay's check that the screen read the target's weights right (`_disagrees`), on Python
    floats for a small tree, answers as the array check: on the diff as it is and with one node's
    desired weight moved (within and beyond the margin)."""
    history, policy = case["history"], case["policy"]
    book = books.Book.of(case["start"])
    prices = history.row_prices(0)
    shape = DiffShape.of(book.tree(), case["target"], prices)
    screen = Screen.build(book, case["target"], history, 0, policy, shape)
    diff = shape.diff(book.tree(), prices, shape.price_table(prices))
    if 0 <= node < len(diff.tree):
        weight = diff.desired_weight.copy()
        weight[node] += nudge
        diff = dataclasses.replace(diff, desired_weight=weight)
    small = replays_module._disagrees(screen, diff)
    saved = replays_module.SMALL_NODES
    replays_module.SMALL_NODES = 0
    try:
        assert small == replays_module._disagrees(screen, diff)
    finally:
        replays_module.SMALL_NODES = saved

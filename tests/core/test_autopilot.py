"""The autopilot's coalescing rules with worked times: one run per portfolio whatever fires."""

from __future__ import annotations

import pytest

from rebal.core.autopilot import (
    Hold,
    Memory,
    Trigger,
    approved,
    awaiting,
    finished,
    hold,
    started,
)

T0 = 1_000_000
FULL = Trigger("full")
RETRY = {"replans_allowed": 2, "retry_base": 60, "retry_max": 600}


def held(memory: Memory, snapshot: str = "s2", taken: int = T0 + 100, now: int = T0 + 100) -> Hold | None:
    return hold(memory, snapshot_id=snapshot, snapshot_taken=taken, now=now, active_timeout=900)


def test_a_fresh_portfolio_may_start() -> None:
    assert held(Memory()) is None


def test_while_a_run_is_active_nothing_starts_and_a_run_that_never_reports_is_given_up() -> None:
    running = started(Memory(), run_id="r1", kind="full", now=T0, snapshot_id="s1", trigger=FULL)
    assert held(running) == Hold("run_active", T0 + 900, "r1")
    assert held(running, now=T0 + 899) == Hold("run_active", T0 + 900, "r1")
    assert held(running, snapshot="s3", now=T0 + 900) is None


def test_a_snapshot_taken_before_the_last_run_ended_waits_for_a_newer_one() -> None:
    running = started(Memory(), run_id="r1", kind="full", now=T0, snapshot_id="s1", trigger=FULL)
    done = finished(running, run_id="r1", status="completed", ended=T0 + 30, **RETRY)
    assert (done.active_run, done.last_run_end, done.last_rebalance) == (None, T0 + 30, T0 + 30)
    assert held(done, snapshot="s2", taken=T0 + 30) == Hold("fills_pending")
    assert held(done, snapshot="s2", taken=T0 + 31) is None


def test_a_second_trigger_from_the_same_snapshot_does_nothing() -> None:
    # The run was refused before it started (live off): no fills, so no newer snapshot is needed, but
    # the same snapshot never triggers twice.
    running = started(Memory(), run_id="r1", kind="full", now=T0, snapshot_id="s1", trigger=FULL)
    refused = finished(running, run_id="r1", status="cancelled", ended=T0 + 1, **RETRY)
    assert refused.last_run_end is None
    assert held(refused, snapshot="s1", taken=T0, now=T0 + 5000) == Hold("same_snapshot", None, "s1")


def test_a_failed_run_backs_off_doubling_up_to_the_maximum() -> None:
    memory = Memory()
    waits = []
    for n in range(6):
        run = f"r{n}"
        memory = started(memory, run_id=run, kind="full", now=T0, snapshot_id=run, trigger=FULL)
        memory = finished(memory, run_id=run, status="error", ended=T0, **RETRY)
        assert memory.retry_after is not None
        waits.append(memory.retry_after - T0)
    assert waits == [60, 120, 240, 480, 600, 600]
    assert held(memory, snapshot="new", taken=T0 + 1, now=T0 + 599) == Hold("retry_backoff", T0 + 600)
    assert held(memory, snapshot="new", taken=T0 + 1, now=T0 + 600) is None
    done = started(memory, run_id="ok", kind="full", now=T0 + 600, snapshot_id="new", trigger=FULL)
    done = finished(done, run_id="ok", status="completed", ended=T0 + 610, **RETRY)
    assert (done.failures, done.retry_after) == (0, None)


def test_prices_moving_between_legs_ask_for_a_fresh_plan_at_most_as_often_as_the_policy_allows() -> None:
    memory = started(Memory(), run_id="r1", kind="full", now=T0, snapshot_id="s1", trigger=FULL)
    replans = []
    for n in range(3):
        memory = finished(memory, run_id=f"r{n + 1}", status="replan_needed", ended=T0 + 10 * n, **RETRY)
        replans.append((memory.replan_due, memory.replans))
        if memory.replan_due:  # a fresh plan from a snapshot newer than the stop; no backoff
            assert held(memory, snapshot=f"x{n}", taken=T0 + 10 * n + 1, now=T0 + 10 * n + 1) is None
            memory = started(
                memory, run_id=f"r{n + 2}", kind="full", now=T0, snapshot_id=f"x{n}", trigger=memory.trigger
            )
    assert replans == [(True, 1), (True, 2), (False, 0)]
    assert memory.failures == 1 and memory.retry_after == T0 + 20 + 60


def test_an_operators_run_that_stops_on_a_price_move_is_not_replanned_by_the_autopilot() -> None:
    operators = started(Memory(), run_id="op", kind="full", now=T0, snapshot_id=None, trigger=None)
    after = finished(operators, run_id="op", status="replan_needed", ended=T0, **RETRY)
    assert not after.replan_due and after.failures == 1


def test_a_completed_buy_only_run_is_not_the_last_rebalance() -> None:
    # The cooldown and the schedule count from the last completed *full* rebalance.
    memory = Memory(last_rebalance=T0 - 86400)
    cash = started(memory, run_id="c", kind="buy_only", now=T0, snapshot_id="s1", trigger=Trigger("buy_only"))
    done = finished(cash, run_id="c", status="completed_with_adjustments", ended=T0 + 5, **RETRY)
    assert (done.last_rebalance, done.last_run_end) == (T0 - 86400, T0 + 5)


def test_a_plan_waiting_for_approval_holds_until_it_expires_and_its_approval_runs_its_kind() -> None:
    waiting = awaiting(
        Memory(), plan_id="p1", kind="buy_only", until=T0 + 300, snapshot_id="s1", trigger=FULL
    )
    assert held(waiting, now=T0 + 299) == Hold("awaiting_approval", T0 + 300, "p1")
    assert held(waiting, now=T0 + 300) is None
    running = approved(waiting, preview_id="p1", run_id="r9", now=T0 + 10)
    assert (running.active_run, running.active_kind, running.awaiting_plan) == ("r9", "buy_only", None)
    other = approved(waiting, preview_id="another", run_id="r8", now=T0 + 10)
    assert other.active_kind == "full" and other.trigger is None


@pytest.mark.parametrize(
    "memory",
    [
        Memory(),
        Memory(
            active_run="r",
            active_kind="buy_only",
            active_since=5,
            trigger=Trigger("full", "breaching", ("a/b", "a/c")),
            breaches=("a/b",),
        ),
    ],
)
def test_the_memory_reads_back_from_json_equal(memory: Memory) -> None:
    import json

    assert Memory.from_json(json.loads(json.dumps(memory.to_json()))) == memory


def test_a_snapshot_in_the_same_second_after_the_run_ended_has_its_fills() -> None:
    # Whole seconds made a snapshot taken 0.5 s after the end wait for another (the benchmark's second
    # round waited forever: no snapshot came).
    running = started(Memory(), run_id="r1", kind="full", now=T0, snapshot_id="s1", trigger=FULL)
    done = finished(running, run_id="r1", status="completed", ended=T0 + 20.25, **RETRY)
    assert held(done, taken=T0 + 20.1) == Hold("fills_pending")
    assert held(done, taken=T0 + 20.5) is None
    assert done.last_rebalance == T0 + 20

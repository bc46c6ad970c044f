"""The executor's pure rules: state machines, guardrails, sizing from facts, coalescing; exact numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebal.core.execution import (
    ABOVE_ORDER_NOTIONAL,
    ABOVE_RUN_NOTIONAL,
    BALANCE_QUOTE_TOLERANCE,
    ORDER_FINAL,
    ORDER_STAGES,
    ORDER_TRANSITIONS,
    RUN_FINAL,
    RUN_STATES,
    BalanceDiscrepancy,
    IllegalTransition,
    OpenLock,
    Queued,
    Release,
    TradedFill,
    balance_discrepancies,
    balance_tolerances,
    coalesce,
    expected_change,
    locked_by,
    notional_refusal,
    order_transition,
    price_moved,
    received,
    routed_sell,
    run_transition,
    sell_amount,
    stage_of,
    to_release,
)

D = Decimal


def test_a_run_goes_sells_then_buys_then_ends() -> None:
    assert run_transition("queued", "sells_in_progress") == "sells_in_progress"
    assert run_transition("sells_in_progress", "buys_in_progress") == "buys_in_progress"
    assert run_transition("buys_in_progress", "completed_with_adjustments") == "completed_with_adjustments"
    assert run_transition("sells_in_progress", "cancelled_mid_run") == "cancelled_mid_run"
    assert run_transition("queued", "cancelled") == "cancelled"


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("queued", "buys_in_progress"),  # sells are never skipped over
        ("queued", "completed"),
        ("buys_in_progress", "sells_in_progress"),  # never back
        ("sells_in_progress", "completed"),  # a run completes only after its buys
        ("completed", "error"),  # a finished run is final
        ("cancelled", "queued"),
        ("sells_in_progress", "cancelled"),  # once orders may exist: cancelled_mid_run
    ],
)
def test_illegal_run_transitions_are_values(current: str, wanted: str) -> None:
    result = run_transition(current, wanted)  # type: ignore[arg-type]
    assert result == IllegalTransition("run", current, wanted)
    assert isinstance(result, IllegalTransition)
    assert result.reason == f"illegal run transition {current} -> {wanted}"


def test_final_states_go_nowhere_and_every_state_has_a_row() -> None:
    for state in RUN_STATES:
        for wanted in RUN_STATES:
            if state in RUN_FINAL and wanted != state:
                assert isinstance(run_transition(state, wanted), IllegalTransition)
    assert set(ORDER_TRANSITIONS) == set(ORDER_STAGES)
    assert all(not ORDER_TRANSITIONS[stage] for stage in ORDER_FINAL)


def test_an_order_goes_created_submitted_accepted_filled() -> None:
    assert order_transition("created", "submitted") == "submitted"
    assert order_transition("submitted", "accepted") == "accepted"
    assert order_transition("accepted", "partially_filled") == "partially_filled"
    assert order_transition("partially_filled", "filled") == "filled"
    # A market order is often filled by the time the venue answers.
    assert order_transition("submitted", "filled") == "filled"
    # A submit without an answer is resolved by a look-up, or sent again under the same id.
    assert order_transition("submitted", "outcome_unknown") == "outcome_unknown"
    assert order_transition("outcome_unknown", "filled") == "filled"
    assert order_transition("outcome_unknown", "submitted") == "submitted"


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("created", "filled"),  # never filled without having been sent
        ("created", "outcome_unknown"),
        ("filled", "cancelled"),  # a cancel that loses to a fill does not undo it
        ("partially_filled", "accepted"),
        ("rejected", "submitted"),  # a rejected attempt is final: a new attempt is a new order
        ("expired", "filled"),
    ],
)
def test_illegal_order_transitions_are_values(current: str, wanted: str) -> None:
    result = order_transition(current, wanted)  # type: ignore[arg-type]
    assert result == IllegalTransition("order", current, wanted)


@given(st.lists(st.sampled_from(ORDER_STAGES), max_size=12))
def test_orders_never_leave_a_final_stage(path: list[str]) -> None:
    stage = "created"
    for wanted in path:
        result = order_transition(stage, wanted)  # type: ignore[arg-type]
        if isinstance(result, IllegalTransition):
            continue
        if stage in ORDER_FINAL:
            assert result == stage
        stage = result


def test_venue_statuses_map_to_stages() -> None:
    assert stage_of("open", D(0)) == "accepted"
    assert stage_of("open", D("0.5")) == "partially_filled"
    assert stage_of("expired", D("0.5")) == "expired"
    assert stage_of("filled", D(1)) == "filled"
    with pytest.raises(ValueError, match="unknown venue order status 'weird'"):
        stage_of("weird", D(0))


def test_notional_limits_per_order_and_per_run() -> None:
    assert notional_refusal(D("999.99"), D(0), D(1000), None) == ""
    assert notional_refusal(D("1000.01"), D(0), D(1000), None) == ABOVE_ORDER_NOTIONAL
    assert notional_refusal(D(600), D(400), D(1000), D(1000)) == ""  # exactly at the run's limit
    assert notional_refusal(D(600), D("400.01"), D(1000), D(1000)) == ABOVE_RUN_NOTIONAL
    assert notional_refusal(D(10**9), D(10**9), None, None) == ""


def test_a_sell_all_sells_what_is_held_in_whole_steps() -> None:
    assert sell_amount(D("0.5"), D("0.8"), D("0.001")) == D("0.5")
    # Planned 0.5 on a snapshot; 0.49987 is free now: 0.499 (truncated, never rounded up past the balance).
    assert sell_amount(D("0.5"), D("0.49987"), D("0.001")) == D("0.499")
    assert sell_amount(D("0.5"), D(0), D("0.001")) == D(0)


def test_fees_deducted_from_the_received_asset() -> None:
    # Buy 0.5 BTC, fee 0.0005 BTC taken from the coins: 0.4995 BTC received.
    assert received("buy", D("0.5"), D(60000), D("0.0005"), "BTC", "BTC", "USDT") == D("0.4995")
    # Buy with the fee in the quote (paid on top): the full 0.5 BTC arrives.
    assert received("buy", D("0.5"), D(60000), D(30), "USDT", "BTC", "USDT") == D("0.5")
    # Sell 0.5 BTC at 60000, fee 30 USDT: 29970 USDT received.
    assert received("sell", D("0.5"), D(60000), D(30), "USDT", "BTC", "USDT") == D(29970)
    # Sell with the fee in a third asset (a venue token): the full proceeds.
    assert received("sell", D("0.5"), D(60000), D("0.1"), "BNB", "BTC", "USDT") == D(30000)


def test_price_moved_beyond_the_tolerance() -> None:
    assert not price_moved(D(3000), D(3030), D("0.01"))  # exactly 1%: within
    assert price_moved(D(3000), D("3030.01"), D("0.01"))
    assert price_moved(D(3000), D("2969.99"), D("0.01"))
    assert not price_moved(D(0), D(5), D("0.01"))  # no planned price: nothing to compare


def test_the_newest_plan_of_a_portfolio_supersedes_the_older_queued_ones() -> None:
    queue = (
        Queued("r1", "demo", "2025-01-01T00:00:01"),
        Queued("r2", "other", "2025-01-01T00:00:02"),
        Queued("r3", "demo", "2025-01-01T00:00:03"),
        Queued("r4", "demo", "2025-01-01T00:00:02"),  # arrived late, planned earlier than r3
    )
    keep, superseded = coalesce(queue)
    assert keep == (queue[1], queue[2])
    assert superseded == {"r1": "r3", "r4": "r3"}
    assert coalesce(()) == ((), {})


def test_a_routed_sell_is_recognised_by_what_its_first_leg_delivers() -> None:
    # 100 XYZ at 0.0000083333 BTC yield 0.00083333 BTC: selling 0.00083 BTC next is the route's second leg.
    assert routed_sell("XYZ/BTC", D(100), D("0.0000083333"), "BTC/USDT", D("0.00083"))
    assert not routed_sell("XYZ/BTC", D(100), D("0.0000083333"), "BTC/USDT", D("0.5"))  # a sell of its own
    assert not routed_sell("XYZ/BTC", D(100), D("0.0000083333"), "ETH/USDT", D("0.0008"))  # not the BTC
    assert not routed_sell("XYZ/BTC", D(100), D(0), "BTC/USDT", D("0.00083"))  # no estimate: no claim


# -- balances against fills --------------------------------------------------------------------------------


def test_expected_change_takes_each_fee_from_its_own_asset() -> None:
    fills = [
        # Binance: a buy's fee comes out of the coins received, a sell's out of the quote received.
        TradedFill("ETH/USDT", "buy", D("0.1"), D("3000"), D("0.0001"), "ETH"),
        TradedFill("BTC/USDT", "sell", D("0.01"), D("60000"), D("0.6"), "USDT"),
    ]
    # ETH +0.1 - 0.0001; USDT -300 + 600 - 0.6; BTC -0.01.
    assert expected_change(fills) == {"BTC": D("-0.01"), "ETH": D("0.0999"), "USDT": D("299.4")}
    # The paper exchange: a buy of 2 ETH at 3000 costs 6000 + a 6 USDT fee.
    assert expected_change([TradedFill("ETH/USDT", "buy", D("2"), D("3000"), D("6"), "USDT")]) == {
        "ETH": D("2"),
        "USDT": D("-6006"),
    }
    # A buy and a sell that cancel out, without fees, leave nothing.
    assert (
        expected_change(
            [
                TradedFill("SOL/USDT", "buy", D("1"), D("150"), D(0), ""),
                TradedFill("SOL/USDT", "sell", D("1"), D("150"), D(0), ""),
            ]
        )
        == {}
    )


def test_a_deposit_during_the_run_is_what_the_fills_do_not_explain() -> None:
    explained = {"BTC": D("-0.01"), "ETH": D("0.0999"), "USDT": D("299.4")}
    before = {"BTC": D("0.05"), "USDT": D("1000")}
    tolerances = balance_tolerances([("BTC", D("0.00001")), ("ETH", D("0.001")), ("ETH", D("0.0001"))])
    assert tolerances == {"BTC": D("0.00001"), "ETH": D("0.0001")}
    # Exactly what the fills say: nothing to report.
    clean = {"BTC": D("0.04"), "ETH": D("0.0999"), "USDT": D("1299.4")}
    assert balance_discrepancies(before, clean, explained, tolerances) == ()
    # 1000 USDT arrived from outside during the run: USDT moved 1299.4, the fills explain 299.4.
    deposited = {**clean, "USDT": D("2299.4")}
    [found] = balance_discrepancies(before, deposited, explained, tolerances)
    assert found == BalanceDiscrepancy("USDT", D("1299.4"), D("299.4"))
    assert found.difference == D("1000")
    # Someone sold all the BTC left and it is gone: -0.05 moved, -0.01 explained.
    sold = {**clean, "BTC": D(0)}
    assert balance_discrepancies(before, sold, explained, tolerances) == (
        BalanceDiscrepancy("BTC", D("-0.05"), D("-0.01")),
    )


def test_rounding_within_one_step_or_the_quote_tolerance_is_not_reported() -> None:
    explained = {"ETH": D("0.0999"), "USDT": D("-300")}
    before = {"USDT": D("1000")}
    tolerances = {"ETH": D("0.0001")}
    assert D("0.000001") == BALANCE_QUOTE_TOLERANCE
    within = {"ETH": D("0.09995"), "USDT": D("700.0000005")}  # half a step; half the quote tolerance
    assert balance_discrepancies(before, within, explained, tolerances) == ()
    beyond = {"ETH": D("0.09979"), "USDT": D("700.000002")}  # 1.1 steps; twice the quote tolerance
    assert balance_discrepancies(before, beyond, explained, tolerances) == (
        BalanceDiscrepancy("ETH", D("0.09979"), D("0.0999")),
        BalanceDiscrepancy("USDT", D("-299.999998"), D("-300")),
    )


# -- releasing what our own open orders lock ------------------------------------------------------------


def test_an_open_order_locks_the_unfilled_base_of_a_sell_and_the_unfilled_cost_of_a_buy() -> None:
    assert locked_by("sell", "BTC/USDT", D("0.3"), D("0.1"), D("60000")) == ("BTC", D("0.2"))
    assert locked_by("buy", "ETH/USDT", D("0.5"), D("0.2"), D("3000")) == ("USDT", D("900.0"))
    assert locked_by("sell", "BTC/USDT", D("0.3"), D("0.3"), D("60000")) == ("BTC", D(0))


def test_nothing_is_released_when_enough_is_free() -> None:
    ours = [OpenLock("rb-a", "BTC", D("0.3"))]
    assert to_release(D("0.5"), D("0.5"), ours) == Release((), D(0), D(0))


def test_the_largest_of_our_locks_are_released_first_until_the_leg_is_covered() -> None:
    a, b, c = (
        OpenLock("rb-a", "BTC", D("0.1")),
        OpenLock("rb-b", "BTC", D("0.25")),
        OpenLock("rb-c", "BTC", D("0.25")),
    )
    # 0.2 free, 0.5 needed: rb-b (0.25, first of the two largest by id) leaves 0.05 short, rb-c covers it;
    # rb-a stays open.
    assert to_release(D("0.5"), D("0.2"), [a, b, c]) == Release((b, c), D("0.5"), D(0))
    # 0.45 free: one lock is enough.
    assert to_release(D("0.5"), D("0.45"), [a, b, c]) == Release((b,), D("0.25"), D(0))


def test_what_our_orders_cannot_cover_stays_short_and_empty_locks_are_never_cancelled() -> None:
    a, empty = OpenLock("rb-a", "BTC", D("0.3")), OpenLock("rb-z", "BTC", D(0))
    # 1 needed, 0.2 free, 0.3 ours: everything of ours is released and 0.5 is still short (locked by orders
    # that are not ours, or not held at all): the leg is sized to what is free, never to 1.
    assert to_release(D("1"), D("0.2"), [empty, a]) == Release((a,), D("0.3"), D("0.5"))
    assert to_release(D("1"), D("0.2"), []) == Release((), D(0), D("0.8"))

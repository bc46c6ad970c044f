"""The autopilot's trigger with worked numbers: bands, overrides, scope, cooldown, schedule and cash."""

from __future__ import annotations

import pytest

from rebal.core.policy import (
    CASH,
    CASH_WITHIN,
    COOLDOWN,
    DRIFT,
    NO_TICK,
    NO_TRIGGER,
    SCHEDULE,
    WITHIN_BANDS,
    Bands,
    Breach,
    Policy,
    find_breaches,
    planned_diff,
)
from rebal.schedule import CronSchedule
from rebal.trigger import parse_instant
from tests.autopilot import ABSOLUTE_5, PRICES, TARGET, decide, diff_of, orders, real

NOW = "2024-06-05T12:00:00Z"


def breaches(policy: Policy, *holdings: str) -> list[tuple[str, float, float, float, str]]:
    found = find_breaches(diff_of(real(*holdings)), policy)
    return [
        (b.path.rpartition("/")[2], round(b.current_weight, 9), b.desired_weight, round(b.limit, 9), b.band)
        for b in found
    ]


def test_an_absolute_band_breaches_only_past_its_limit() -> None:
    # 10,000 USD: BTC 4,490 (0.449 for 0.4) and SOL 1,510 (0.151 for 0.2) drift 0.049: inside 5 points.
    assert breaches(ABSOLUTE_5, "0.0898", "1", "7.55", "1000") == []
    # Exactly 5 points (BTC 4,500, SOL 1,500): at the limit, which does not breach (0.45 - 0.4 in floats
    # is 0.05000000000000004).
    assert breaches(ABSOLUTE_5, "0.09", "1", "7.5", "1000") == []
    # 0.051: both breach, each against the 0.05 limit.
    assert breaches(ABSOLUTE_5, "0.0902", "1", "7.45", "1000") == [
        ("btc", 0.451, 0.4, 0.05, "absolute"),
        ("sol", 0.149, 0.2, 0.05, "absolute"),
    ]


def test_a_relative_band_fires_where_the_absolute_one_does_not() -> None:
    # USDT at 1,300 of 10,000: 0.13 for 0.1 drifts 3 points (inside 5) but 30% of its target (over 20%).
    both = Policy(bands=Bands(absolute=0.05, relative=0.2))
    assert breaches(both, "0.074", "1", "10", "1300") == [("usdt", 0.13, 0.1, 0.02, "relative")]
    # BTC drifts as much (0.37 for 0.4) but 20% of 0.4 allows 0.08.
    assert breaches(ABSOLUTE_5, "0.074", "1", "10", "1300") == []


def test_a_node_outside_both_bands_names_the_tighter() -> None:
    # BTC 5,000 of 10,000: 0.5 for 0.4 drifts 0.1; absolute 0.05 < relative 20% x 0.4 = 0.08.
    holdings = ("0.1", "0.8", "7", "1200")
    assert breaches(Policy(bands=Bands(absolute=0.05, relative=0.2)), *holdings)[0] == (
        "btc",
        0.5,
        0.4,
        0.05,
        "absolute",
    )
    assert breaches(Policy(bands=Bands(absolute=0.09, relative=0.2)), *holdings)[0] == (
        "btc",
        0.5,
        0.4,
        0.08,
        "relative",
    )


def test_an_override_tightens_or_removes_a_band_for_one_node() -> None:
    # SOL 1,700: 0.17 for 0.2 drifts 3 points, and so does USDT at 1,300 (0.13 for 0.1).
    holdings = ("0.08", "1", "8.5", "1300")
    assert breaches(ABSOLUTE_5, *holdings) == []
    tight = Policy(bands=Bands(absolute=0.05), overrides={"alice/spot/sol": {"absolute": 0.02}})
    assert breaches(tight, *holdings) == [("sol", 0.17, 0.2, 0.02, "absolute")]
    # The relative band taken off the cash: its 0.13 for 0.1 no longer breaches 20% (0.02).
    both = Policy(bands=Bands(absolute=0.05, relative=0.2))
    assert [b[0] for b in breaches(both, *holdings)] == ["usdt"]
    untied = Policy(
        bands=Bands(absolute=0.05, relative=0.2), overrides={"alice/spot/usdt": {"relative": None}}
    )
    assert breaches(untied, *holdings) == []
    # A path in neither tree changes nothing.
    elsewhere = Policy(bands=Bands(absolute=0.05), overrides={"alice/spot/doge": {"absolute": 0.0}})
    assert breaches(elsewhere, *holdings) == []


def test_weights_are_relative_to_the_parent_at_every_level() -> None:
    wallet = {"name": "usdt", "asset": "USDT"}
    accounts = [
        {"name": name, "kind": "account", "exchange": "ex", "children": [{**wallet, "amount": amount}]}
        for name, amount in (("a", "6000"), ("b", "4000"))
    ]
    target = {
        "name": "root",
        "children": [
            {"name": name, "weight": "50%", "children": [{**wallet, "weight": "100%"}]} for name in ("a", "b")
        ],
    }
    found = find_breaches(diff_of({"name": "root", "children": accounts}, target), ABSOLUTE_5)
    # The accounts are 0.6 and 0.4 of the root; each wallet is all of its account.
    assert [(b.path, b.current_weight, b.desired_weight) for b in found] == [
        ("root/a", 0.6, 0.5),
        ("root/b", 0.4, 0.5),
    ]


def test_a_new_position_breaches_from_nothing() -> None:
    target = {
        "name": "alice",
        "children": [
            {
                "name": "spot",
                "weight": 1,
                "children": [
                    *TARGET["children"][0]["children"][:3],
                    {"name": "ada", "asset": "ADA", "weight": "10%"},
                ],
            }
        ],
    }
    prices = {"quote": "USD", "prices": {**PRICES["prices"], "ADA": "0.5"}}
    found = find_breaches(diff_of(real("0.08", "1", "10", "1000"), target, prices), ABSOLUTE_5)
    assert [(b.path, b.current_weight, b.desired_weight) for b in found] == [
        ("alice/spot/ada", 0.0, 0.1),
        ("alice/spot/usdt", 0.1, 0.0),  # not in the target: all of it is drift
    ]


COOLING = Policy(bands=Bands(absolute=0.05), cooldown=7 * 86_400, invest_cash_above=500.0)
OVER = real("0.0902", "1", "7.45", "1000")  # BTC and SOL 0.1 point past the 5-point band
LAST = "2024-06-03T08:00:00Z"


def test_the_cooldown_blocks_a_full_rebalance_until_the_second_it_ends() -> None:
    diff = diff_of(OVER)
    blocked = decide(diff, COOLING, "2024-06-10T07:59:59Z", LAST)
    assert (blocked.rebalance, blocked.kind, blocked.blocked_by) == (False, None, "cooldown")
    assert blocked.reasons == (DRIFT, COOLDOWN, CASH_WITHIN)
    assert blocked.cooldown_until == parse_instant("2024-06-10T08:00:00Z")
    assert len(blocked.breaches) == 2
    # At exactly last + 7 days the cooldown is over.
    allowed = decide(diff, COOLING, "2024-06-10T08:00:00Z", LAST)
    assert (allowed.rebalance, allowed.kind, allowed.blocked_by, allowed.reasons) == (
        True,
        "full",
        None,
        (DRIFT,),
    )
    # Without a cooldown nothing blocks, even a second after the last rebalance.
    assert decide(diff, ABSOLUTE_5, "2024-06-03T08:00:01Z", LAST).kind == "full"


def test_cash_arriving_in_the_cooldown_buys_only() -> None:
    # A 2,000 USDT deposit: 11,000 in all, the target cash is 1,100 and 2,500 are held: 1,400 above.
    deposit = diff_of(real("0.08", "0.9", "9", "2500"))
    cooling = decide(deposit, COOLING, "2024-06-05T12:00:00Z", LAST)
    assert (cooling.rebalance, cooling.kind, cooling.blocked_by) == (True, "buy_only", "cooldown")
    assert cooling.reasons == (DRIFT, COOLDOWN, CASH)
    assert cooling.cash_above_target == pytest.approx(1400)
    assert orders(planned_diff(deposit, cooling)) == [
        ("BTC/USDT", "buy", "0.008"),
        ("ETH/USDT", "buy", "0.2"),
        ("SOL/USDT", "buy", "2"),
    ]
    # After the cooldown the same state rebalances in full (the cash included).
    later = decide(deposit, COOLING, "2024-06-10T08:00:00Z", LAST)
    assert (later.kind, later.blocked_by, later.reasons) == ("full", None, (DRIFT, CASH))


def test_cash_must_be_more_than_the_threshold() -> None:
    # 900 above the target cash (a 1,000 deposit on 10,000), no band.
    deposit = diff_of(real("0.1", "0.8", "8", "2000"))
    for threshold, kind in ((899.99, "buy_only"), (900.0, None), (1000.0, None)):
        decision = decide(deposit, Policy(invest_cash_above=threshold), NOW)
        assert decision.kind == kind
        assert decision.reasons == ((CASH,) if kind else (CASH_WITHIN,))


WEEKLY = Policy(schedule=CronSchedule("0 0 * * MON", "Europe/Berlin"))


def test_a_schedule_is_due_when_a_tick_falls_after_the_last_rebalance() -> None:
    diff = diff_of(real("0.08", "1", "10", "1000"))  # at target
    # Monday 3 June 00:00 in Berlin is 2 June 22:00Z.
    due = decide(diff, WEEKLY, NOW, "2024-06-01T00:00:00Z")
    assert (due.rebalance, due.kind, due.reasons) == (True, "full", (SCHEDULE,))
    assert due.tick == parse_instant("2024-06-02T22:00:00Z")
    assert due.next_scheduled == parse_instant("2024-06-09T22:00:00Z")
    # A rebalance that ended at the tick or after it leaves nothing due until the next one.
    for last in ("2024-06-02T22:00:00Z", LAST):
        quiet = decide(diff, WEEKLY, NOW, last)
        assert (quiet.rebalance, quiet.reasons) == (False, (NO_TICK,))
    assert decide(diff, WEEKLY, "2024-06-09T22:00:00Z", LAST).reasons == (SCHEDULE,)
    # Never rebalanced: the latest tick is due.
    assert decide(diff, WEEKLY, NOW).kind == "full"


def test_a_nightly_schedule_across_the_spring_forward_night_in_berlin() -> None:
    nightly = Policy(schedule=CronSchedule("0 2 * * *", "Europe/Berlin"))
    diff = diff_of(real("0.08", "1", "10", "1000"))
    last = "2024-03-30T01:00:00Z"  # Saturday's 02:00 CET
    # 02:00 is skipped on Sunday 31 March: the tick falls at the jump, 03:00 CEST = 01:00Z.
    before = decide(diff, nightly, "2024-03-31T00:59:59Z", last)
    assert (before.rebalance, before.next_scheduled) == (False, parse_instant("2024-03-31T01:00:00Z"))
    at_jump = decide(diff, nightly, "2024-03-31T01:00:00Z", last)
    assert (at_jump.rebalance, at_jump.tick) == (True, parse_instant("2024-03-31T01:00:00Z"))
    assert at_jump.next_scheduled == parse_instant("2024-04-01T00:00:00Z")  # 02:00 CEST


def test_a_policy_without_triggers_says_so() -> None:
    decision = decide(diff_of(OVER), Policy(), NOW)
    assert (decision.rebalance, decision.reasons, decision.breaches) == (False, (NO_TRIGGER,), ())


def test_a_quiet_decision_names_each_trigger_that_did_not_fire() -> None:
    full = Policy(
        bands=Bands(absolute=0.05), schedule=WEEKLY.schedule, cooldown=86_400, invest_cash_above=500.0
    )
    decision = decide(diff_of(real("0.08", "1", "10", "1000")), full, NOW, LAST)
    assert decision.reasons == (NO_TICK, WITHIN_BANDS, CASH_WITHIN)
    assert decision.blocked_by is None


def test_scope_breaching_moves_only_the_breaching_nodes_unless_the_calendar_ticked() -> None:
    # BTC 5,000 (0.5 for 0.4) breaches 5 points; ETH 0.27, SOL 0.16 and USDT 0.07 are inside.
    diff = diff_of(real("0.1", "0.9", "8", "700"))
    partial = Policy(bands=Bands(absolute=0.05), scope="breaching", schedule=WEEKLY.schedule)
    drift = decide(diff, partial, NOW, LAST)
    assert (drift.kind, drift.scope, [b.path for b in drift.breaches]) == (
        "full",
        "breaching",
        ["alice/spot/btc"],
    )
    # BTC gives up 1,000; ETH, SOL and USDT take it in proportion to what they hold (2,700 : 1,600 : 700).
    assert orders(planned_diff(diff, drift)) == [
        ("BTC/USDT", "sell", "0.02"),
        ("ETH/USDT", "buy", "0.18"),
        ("SOL/USDT", "buy", "1.6"),
    ]
    ticked = decide(diff, partial, NOW, "2024-06-01T00:00:00Z")
    assert (ticked.kind, ticked.scope) == ("full", "portfolio")
    assert orders(planned_diff(diff, ticked)) == [
        ("BTC/USDT", "sell", "0.02"),
        ("ETH/USDT", "buy", "0.1"),
        ("SOL/USDT", "buy", "2"),
    ]


def test_nothing_to_plan_without_a_rebalance() -> None:
    diff = diff_of(OVER)
    assert planned_diff(diff, decide(diff, Policy(), NOW)) is None


def test_breaches_carry_their_node() -> None:
    diff = diff_of(OVER)
    [btc, sol] = find_breaches(diff, ABSOLUTE_5)
    assert isinstance(btc, Breach)
    assert diff.tree.path(btc.node) == btc.path == "alice/spot/btc"
    assert diff.tree.path(sol.node) == "alice/spot/sol"


def test_band_use_lists_the_nodes_nearest_to_their_limits_first() -> None:
    from rebal.core.policy import band_use
    from tests.autopilot import diff_of, real

    # BTC 0.449 and SOL 0.151 (for 0.4 and 0.2): 0.049 of a 0.05 band each, 98% used; the relative band
    # of 25% allows BTC 0.1 and SOL 0.05: SOL's drift uses 98% of it too, BTC's 49%.
    diff = diff_of(real("0.0898", "1", "7.55", "1000"))
    used = band_use(diff, Policy(bands=Bands(absolute=0.05, relative=0.25)), top=4)
    assert [(u.path, u.band, round(u.used, 4)) for u in used] == [
        ("alice/spot/btc", "absolute", 0.98),
        ("alice/spot/sol", "absolute", 0.98),
        ("alice/spot/sol", "relative", 0.98),
        ("alice/spot/btc", "relative", 0.49),
    ]
    assert (used[0].current_weight, used[0].desired_weight, used[0].limit) == (
        pytest.approx(0.449),
        pytest.approx(0.4),
        0.05,
    )
    assert band_use(diff, Policy(), top=4) == ()

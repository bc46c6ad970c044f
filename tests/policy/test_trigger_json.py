"""The `rebal trigger --json` answer: its exact keys, ISO 8601 UTC times, decimal-string weights and a
sentence per reason that starts with its code."""

from __future__ import annotations

from rebal.core.policy import Bands, Policy
from rebal.schedule import CronSchedule
from rebal.trigger import decision_json, instant_text, parse_instant
from tests.autopilot import decide, diff_of, real

KEYS = ["rebalance", "kind", "reasons", "blocked_by", "breaches", "next_scheduled"]
BREACH_KEYS = ["path", "current_weight", "desired_weight", "limit", "band"]


def test_the_keys_and_their_types() -> None:
    policy = Policy(bands=Bands(absolute=0.05), schedule=CronSchedule("0 0 * * MON", "Europe/Berlin"))
    answer = decision_json(
        decide(diff_of(real("0.0902", "1", "7.45", "1000")), policy, "2024-06-05T12:00:00Z")
    )
    assert list(answer) == KEYS
    assert answer["next_scheduled"] == "2024-06-09T22:00:00Z"
    [btc, sol] = answer["breaches"]  # type: ignore[misc]
    assert list(btc) == BREACH_KEYS
    assert btc == {
        "path": "alice/spot/btc",
        "current_weight": "0.451",  # 4,510 / 10,000 in floats is 0.45099999999999996
        "desired_weight": "0.4",
        "limit": "0.05",
        "band": "absolute",
    }
    assert sol["current_weight"] == "0.149"


def test_every_reason_reads_as_a_sentence_after_its_code() -> None:
    quiet = Policy(
        bands=Bands(absolute=0.05), schedule=CronSchedule("0 0 1 1 *"), invest_cash_above=100.0, cooldown=60
    )
    # The cash 100 short of its target (900 for 1,000); no tick of 1 January since the last rebalance.
    short = diff_of(real("0.082", "1", "10", "900"))
    answer = decision_json(decide(short, quiet, "1970-06-01T00:00:00Z", "1970-01-01T00:00:00Z"))
    assert answer["reasons"] == [
        "no_tick: no tick since the last rebalance (1970-01-01T00:00:00Z); next 1971-01-01T00:00:00Z",
        "within_bands: every node is within its bands",
        "cash_within: 100 USD below the target cash, not more than invest_cash_above 100",
    ]
    assert decision_json(decide(short, Policy(), "2024-06-05T12:00:00Z"))["reasons"] == [
        "no_trigger: the policy has no schedule, no band and no invest_cash_above"
    ]
    assert decision_json(decide(short, quiet, "1971-01-01T00:00:00Z"))["reasons"] == [
        "schedule: the tick at 1971-01-01T00:00:00Z falls with no rebalance before it"
    ]


def test_the_drift_reason_gives_weights_as_percents() -> None:
    # 0.451 and 0.149 for targets of 0.4 and 0.2: the furthest is SOL, 5.1 points under for a 5-point band.
    policy = Policy(bands=Bands(absolute=0.05))
    answer = decision_json(
        decide(diff_of(real("0.0902", "1", "7.45", "1000")), policy, "2024-06-05T12:00:00Z")
    )
    assert answer["reasons"] == [
        "drift: 2 nodes outside their bands; furthest: alice/spot/sol, weight 14.90% for a target of 20.00%, "
        "absolute limit 5.00%"
    ]


def test_times_are_iso_8601_utc() -> None:
    assert instant_text(parse_instant("2024-03-31T03:00:00+02:00")) == "2024-03-31T01:00:00Z"
    assert instant_text(0) == "1970-01-01T00:00:00Z"

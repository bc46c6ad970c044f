"""Cron schedules in a time zone: ticks as instants, across daylight-saving changes, and bad expressions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter_range
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.schedule import CronSchedule
from rebal.trigger import instant_text, parse_instant


def at(text: str) -> int:
    return parse_instant(text)


def ticks(schedule: CronSchedule, start: str, count: int) -> list[str]:
    out, moment = [], at(start)
    for _ in range(count):
        following = schedule.following(moment)
        assert following is not None
        out.append(instant_text(following))
        moment = following
    return out


def test_a_utc_weekly_schedule_ticks_on_mondays_at_midnight() -> None:
    weekly = CronSchedule("0 0 * * MON")
    assert ticks(weekly, "2024-06-05T12:00:00Z", 2) == ["2024-06-10T00:00:00Z", "2024-06-17T00:00:00Z"]
    assert weekly.previous(at("2024-06-05T12:00:00Z")) == at("2024-06-03T00:00:00Z")
    # A tick is at or before itself, and strictly before the next one.
    assert weekly.previous(at("2024-06-10T00:00:00Z")) == at("2024-06-10T00:00:00Z")
    assert weekly.previous(at("2024-06-09T23:59:59Z")) == at("2024-06-03T00:00:00Z")
    assert weekly.following(at("2024-06-10T00:00:00Z")) == at("2024-06-17T00:00:00Z")


def test_berlin_two_oclock_on_the_spring_forward_night_falls_at_the_jump() -> None:
    # 31 March 2024: Berlin's clocks go from 02:00 CET (01:00Z) straight to 03:00 CEST; 02:00 never shows.
    nightly = CronSchedule("0 2 * * *", "Europe/Berlin")
    assert ticks(nightly, "2024-03-29T12:00:00Z", 4) == [
        "2024-03-30T01:00:00Z",  # 02:00 CET
        "2024-03-31T01:00:00Z",  # the jump: 03:00 CEST, the first instant the clock shows 02:00 or later
        "2024-04-01T00:00:00Z",  # 02:00 CEST
        "2024-04-02T00:00:00Z",
    ]
    assert nightly.previous(at("2024-03-31T00:59:59Z")) == at("2024-03-30T01:00:00Z")
    assert nightly.previous(at("2024-03-31T01:00:00Z")) == at("2024-03-31T01:00:00Z")


def test_half_hours_in_the_skipped_hour_fall_once_at_the_jump() -> None:
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Berlin")
    assert ticks(half_hourly, "2024-03-31T00:00:00Z", 4) == [
        "2024-03-31T00:30:00Z",  # 01:30 CET
        "2024-03-31T01:00:00Z",  # 02:00, 02:30 (skipped) and 03:00 CEST all fall at the jump
        "2024-03-31T01:30:00Z",  # 03:30 CEST
        "2024-03-31T02:00:00Z",
    ]


def test_a_time_shown_twice_when_the_clocks_go_back_ticks_once() -> None:
    # 27 October 2024: 03:00 CEST (01:00Z) becomes 02:00 CET; 02:00-02:59 shows twice.
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert ticks(nightly, "2024-10-26T12:00:00Z", 2) == ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
    # At 02:40 CET (the second 02:40), the latest tick is still the first 02:30.
    assert nightly.previous(at("2024-10-27T01:40:00Z")) == at("2024-10-27T00:30:00Z")
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Berlin")
    assert ticks(half_hourly, "2024-10-26T23:45:00Z", 4) == [
        "2024-10-27T00:00:00Z",  # 02:00 CEST
        "2024-10-27T00:30:00Z",  # 02:30 CEST
        "2024-10-27T02:00:00Z",  # 03:00 CET: the second 02:00 and 02:30 do not tick again
        "2024-10-27T02:30:00Z",
    ]
    # Asked during the repeated hour (02:10 CET): the latest tick is 02:30 CEST, which came before it.
    assert half_hourly.previous(at("2024-10-27T01:10:00Z")) == at("2024-10-27T00:30:00Z")
    assert half_hourly.following(at("2024-10-27T01:10:00Z")) == at("2024-10-27T02:00:00Z")


def test_new_york_schedules_follow_its_own_changes() -> None:
    nine = CronSchedule("0 9 * * 1-5", "America/New_York")
    assert ticks(nine, "2024-03-08T15:00:00Z", 2) == ["2024-03-11T13:00:00Z", "2024-03-12T13:00:00Z"]
    assert nine.previous(at("2024-03-10T12:00:00Z")) == at("2024-03-08T14:00:00Z")  # EST, a Friday


def test_rare_days_and_the_month_end() -> None:
    assert ticks(CronSchedule("0 0 29 2 *"), "2097-03-01T00:00:00Z", 1) == ["2104-02-29T00:00:00Z"]
    assert ticks(CronSchedule("0 12 L * *"), "2024-02-01T00:00:00Z", 2) == [
        "2024-02-29T12:00:00Z",
        "2024-03-31T12:00:00Z",
    ]
    third_friday = CronSchedule("0 0 * * 5#3")
    assert ticks(third_friday, "2024-06-01T00:00:00Z", 1) == ["2024-06-21T00:00:00Z"]


def test_answers_do_not_depend_on_what_was_asked_before() -> None:
    def fresh(moment: int) -> tuple[int | None, int | None]:
        schedule = CronSchedule("15 */6 * * MON-FRI", "Europe/Berlin")
        return schedule.previous(moment), schedule.following(moment)

    kept = CronSchedule("15 */6 * * MON-FRI", "Europe/Berlin")
    moments = [at("2024-03-01T00:00:00Z") + k * 873_171 for k in range(16)]
    for moment in [*moments, *reversed(moments), at("2019-01-01T00:00:00Z"), at("2031-07-04T09:00:00Z")]:
        assert (kept.previous(moment), kept.following(moment)) == fresh(moment)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 * *", "5 fields"),
        ("0 0 * * * *", "5 fields"),
        ("@daily", "5 fields"),
        ("0 25 * * *", "out of range"),
        ("x * * * *", "not a valid cron expression"),
        ("H 0 * * *", "hashed or random"),
        ("0 R * * *", "hashed or random"),
        ("0 0 30 2 *", "never ticks"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronSchedule(expression)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "europe/berlin", "Europe", "", "../etc/passwd", "localtime"]
)
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="zone"):
        CronSchedule("0 0 * * *", name)


def brute_force(expression: str, zone: str, start: datetime, minutes: int) -> list[int]:
    """The rule, minute by minute: a tick falls when the local clock first reaches a matching time."""
    tz = ZoneInfo(zone)
    first_local = start.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
    matching = set(croniter_range(first_local, first_local + timedelta(minutes=minutes + 360), expression))
    out: list[int] = []
    highest: datetime | None = None  # the latest local time the clock has shown
    for step in range(minutes):
        instant = start + timedelta(minutes=step)
        local = instant.astimezone(tz).replace(tzinfo=None)
        low = highest if highest is not None else local - timedelta(minutes=1)
        if local > low:
            skipped = int((local - low).total_seconds()) // 60
            if any(low + timedelta(minutes=k) in matching for k in range(1, skipped + 1)):
                out.append(int(instant.timestamp()))
            highest = local
    return out


@settings(max_examples=40, deadline=None)
@given(
    expression=st.sampled_from(
        ["*/20 * * * *", "0 2 * * *", "30 1-3 * * *", "45 2 * * SUN", "0,15 3 * * *", "5 */2 * * *"]
    ),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]),
    transition=st.sampled_from(
        ["2024-03-31", "2024-10-27", "2024-03-10", "2024-11-03", "2024-04-07", "2024-10-06"]
    ),
)
def test_ticks_match_a_minute_by_minute_reading_of_the_rule(
    expression: str, zone: str, transition: str
) -> None:
    start = datetime.fromisoformat(transition).replace(tzinfo=UTC) - timedelta(hours=14)
    minutes = 36 * 60
    expected = brute_force(expression, zone, start, minutes)
    schedule = CronSchedule(expression, zone)
    first = int(start.timestamp())
    got: list[int] = []
    moment = first - 1
    while (following := schedule.following(moment)) is not None and following < first + minutes * 60:
        got.append(following)
        moment = following
    assert [instant_text(t) for t in got] == [instant_text(t) for t in expected]
    for index, tick in enumerate(got):
        assert schedule.previous(tick) == tick
        before = schedule.previous(tick - 1)
        assert before == got[index - 1] if index else before is None or before < first


@pytest.mark.parametrize(
    "days",
    [
        "1 * *",
        "1 1,4,7,10 *",
        "* * MON",
        "1 1 *",
        "29 2 *",
        "31 * *",
        "*/2 * *",
        "1-7 * 1",  # both day fields: a day matching either
        "13 * FRI",
        "15,31 2,4,12 0,6",
        "10-20/3 5-9/2 *",
        "* */2 2-4",
        "* * 7",
    ],
)
def test_plain_day_fields_match_the_days_croniter_steps_to(days: str) -> None:
    """Day fields without L, W or # are read from the calendar; the days are croniter's, step by step."""
    schedule = CronSchedule(f"0 0 {days}")
    assert schedule._plain is not None
    start = datetime(1999, 12, 1, tzinfo=UTC)
    expected = [
        int(moment.timestamp()) // 86_400
        for moment in croniter_range(start, start + timedelta(days=3 * 366), f"0 0 {days}")
    ]
    low = int(start.timestamp()) // 86_400
    assert schedule._plain.days_in(low, low + 3 * 366 + 1) == expected


@pytest.mark.parametrize("days", ["L * *", "15W * *", "* * MON#1"])
def test_day_fields_beyond_plain_lists_are_left_to_croniter(days: str) -> None:
    schedule = CronSchedule(f"0 0 {days}")
    assert schedule._plain is None
    assert (
        schedule.following(at("2024-06-05T12:00:00Z"))
        == {
            "L * *": at("2024-06-30T00:00:00Z"),
            "15W * *": at("2024-06-14T00:00:00Z"),
            "* * MON#1": at("2024-07-01T00:00:00Z"),
        }[days]
    )

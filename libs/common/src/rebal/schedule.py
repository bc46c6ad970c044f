"""Cron schedules in a time zone: the ticks of a 5-field cron expression as instants (UTC epoch seconds).

The expression is read by croniter: ``minute hour day-of-month month day-of-week``, with names
(``MON``, ``JAN``), ranges, steps, lists, ``L``, ``W`` and ``#``; when both day fields are restricted a day
matching either matches (Vixie cron). Hashed and random fields (``H``, ``R``) are refused: a schedule
must tick at the same instants on every machine.

Ticks are local wall-clock times in the schedule's IANA time zone. A tick falls at the first instant at
which the local clock shows its time or later, so across daylight-saving changes:

- a time the clocks skip (02:30 on the night they go forward) falls at the jump (03:00 local), as cron
  runs a job of the skipped hour right after the change;
- a time the clocks show twice (when they go back) falls once, at its first occurrence.

`CronSchedule` answers `previous(at)` and `following(after)` for the pure core's trigger evaluation
(`rebal.core.policy.Schedule`). It is built once per policy: the matching days are found with croniter a
year at a time and kept, so a backtest asking about consecutive instants pays a bisection, not a parse.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from calendar import monthrange
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

SECONDS_PER_DAY = 86_400
NAIVE_EPOCH = datetime(1970, 1, 1)
FIELDS = "minute hour day-of-month month day-of-week"
# Matching days are found this many at a time; a search for the next or previous one gives up after
# HORIZON_DAYS (croniter itself looks no further than 50 years between two matches).
BLOCK_DAYS = 366
HORIZON_DAYS = 60 * 366
# A fresh known range starts this far before the day asked about (a monthly schedule's previous tick).
LOOK_BACK_DAYS = 32
# Beyond every instant a schedule is asked about (seconds).
UNBOUNDED = 1 << 62
# Zones whose clock is UTC all year.
UTC_ZONES = frozenset({"UTC", "Etc/UTC"})
# Zone names that are links to the machine's own zone: a policy must mean the same everywhere.
MACHINE_ZONES = frozenset({"localtime", "posixrules"})
# The days a calendar can name (days since 1970-01-01): year 1 to year 9999.
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
FIRST_DAY = date.min.toordinal() - EPOCH_ORDINAL
LAST_DAY = date.max.toordinal() - EPOCH_ORDINAL
# A hashed (H) or random (R) field token; month and day names (MAR, THU, FRI) are not tokens of one letter.
_DRAWN = re.compile(r"(?<![A-Z])[HR](?![A-Z])", re.IGNORECASE)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (``Europe/Berlin``, ``UTC``); ValueError naming it when there is none."""
    if name in MACHINE_ZONES:
        raise ValueError(f"time zone {name!r} is this machine's own zone: name an IANA zone (Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: name an IANA zone (Europe/Berlin, UTC)") from None


def check_expression(expression: str) -> str:
    """The expression with its fields single-spaced, or ValueError saying what is wrong with it."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields ({FIELDS}), got {len(fields)}: {expression!r}")
    text = " ".join(fields)
    if _DRAWN.search(text):
        raise ValueError(f"{text!r}: hashed or random fields (H, R) are not allowed in a schedule")
    try:
        croniter.expand(text)
    except CroniterError as exc:
        detail = str(exc).strip().splitlines()[-1].rpartition("is not acceptable")[2].strip(" ,")
        raise ValueError(f"{text!r} is not a valid cron expression{': ' if detail else ''}{detail}") from None
    return text


class CronSchedule:
    """The ticks of `expression` in time zone `timezone` (see the module's docstring for the rules)."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = check_expression(expression)
        self.timezone = timezone
        self._zone = zone(timezone)
        self._utc = self._zone.key in UTC_ZONES  # local time is UTC: instants and wall times are one
        fields = self.expression.split()
        minutes, hours = croniter.expand(self.expression)[0][:2]
        self._times = sorted(
            hour * 3600 + minute * 60
            for hour in (range(24) if hours == ["*"] else hours)
            for minute in (range(60) if minutes == ["*"] else minutes)
            if isinstance(hour, int) and isinstance(minute, int)
        )
        # The days whose date matches: the same day fields at midnight, one croniter step per day.
        self._day_expression = " ".join(["0", "0", *fields[2:]])
        self._days: list[int] = []  # days since 1970-01-01 (local calendar), sorted
        self._low = self._high = 0  # every matching day in [low, high) is in _days
        self._every_day = fields[2:] == ["*", "*", "*"]
        self._plain = _DayFields.of(self._day_expression)
        self._known: tuple[int | None, int | None] = (None, None)
        self._known_within = (0, 0)  # the instants [start, end) that the kept answer holds for
        if self.following(0) is None:
            raise ValueError(f"{self.expression!r} never ticks (no such date)")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronSchedule):
            return NotImplemented
        return (self.expression, self.timezone) == (other.expression, other.timezone)

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone))

    def previous(self, at: int) -> int | None:
        """The latest tick at or before `at`, or None when there is none."""
        return self._bracket(at)[0]

    def following(self, after: int) -> int | None:
        """The earliest tick strictly after `after`, or None when there is none."""
        return self._bracket(after)[1]

    def _bracket(self, at: int) -> tuple[int | None, int | None]:
        """The ticks around `at`: the latest at or before it and the earliest after it. The last answer
        is kept: it holds for every instant up to the next tick, so consecutive asks cost nothing."""
        start, end = self._known_within
        if start <= at < end:
            return self._known
        wall = self._wall(at)
        tick = self._tick_at_or_before(wall)
        earlier = None if tick is None else self._instant(tick)
        after = self._tick_after(wall if tick is None else tick)
        later = None
        while after is not None:
            instant = self._instant(after)
            if instant > at:
                later = instant
                break
            # After the clocks went back, a tick with a later wall time may still fall at or before `at`.
            earlier, after = instant, self._tick_after(after)
        self._known = (earlier, later)
        self._known_within = (
            -UNBOUNDED if earlier is None else earlier,
            UNBOUNDED if later is None else later,
        )
        return self._known

    # Local wall-clock times are seconds since 1970-01-01 00:00 of the local calendar (naive).

    def _wall(self, instant: int) -> int:
        if self._utc:
            return instant
        offset = datetime.fromtimestamp(instant, self._zone).utcoffset()
        return instant + (int(offset.total_seconds()) if offset is not None else 0)

    def _instant(self, wall: int) -> int:
        """The first instant at which the local clock shows `wall` or later."""
        if self._utc:
            return wall
        naive = NAIVE_EPOCH + timedelta(seconds=wall)
        first = int(naive.replace(tzinfo=self._zone).timestamp())  # fold 0: the earlier of two
        if self._wall(first) == wall:
            return first
        # A skipped time: the jump lies between the readings with the offsets after and before it.
        low = int(naive.replace(tzinfo=self._zone, fold=1).timestamp())
        high = first
        while low < high:
            middle = (low + high) // 2
            if self._wall(middle) >= wall:
                high = middle
            else:
                low = middle + 1
        return low

    def _tick_after(self, wall: int) -> int | None:
        day, second = divmod(wall, SECONDS_PER_DAY)
        index = bisect_right(self._times, second)
        if index < len(self._times) and self._matches(day):
            return day * SECONDS_PER_DAY + self._times[index]
        later = self._next_day(day)
        return None if later is None else later * SECONDS_PER_DAY + self._times[0]

    def _tick_at_or_before(self, wall: int) -> int | None:
        day, second = divmod(wall, SECONDS_PER_DAY)
        index = bisect_right(self._times, second)
        if index > 0 and self._matches(day):
            return day * SECONDS_PER_DAY + self._times[index - 1]
        earlier = self._previous_day(day)
        return None if earlier is None else earlier * SECONDS_PER_DAY + self._times[-1]

    def _matches(self, day: int) -> bool:
        if self._every_day:
            return True
        self._cover(day, day + 1)
        index = bisect_right(self._days, day)
        return index > 0 and self._days[index - 1] == day

    def _next_day(self, day: int) -> int | None:
        if self._every_day:
            return day + 1
        span = BLOCK_DAYS
        while span <= HORIZON_DAYS * 2:
            self._cover(day + 1, day + 1 + span)
            index = bisect_right(self._days, day)
            if index < len(self._days) and self._days[index] < day + 1 + span:
                return self._days[index]
            span *= 2
        return None

    def _previous_day(self, day: int) -> int | None:
        if self._every_day:
            return day - 1
        span = BLOCK_DAYS
        while span <= HORIZON_DAYS * 2:
            self._cover(day - span, day)
            index = bisect_right(self._days, day - 1)
            if index > 0 and self._days[index - 1] >= day - span:
                return self._days[index - 1]
            span *= 2
        return None

    def _cover(self, low: int, high: int) -> None:
        """Know every matching day in [low, high): the known range grows a block at a time, and starts
        afresh around a query far from it."""
        if self._low <= low and high <= self._high:
            return
        if self._low == self._high or low > self._high + BLOCK_DAYS or high < self._low - BLOCK_DAYS:
            low, high = low - LOOK_BACK_DAYS, high + BLOCK_DAYS
            self._days, self._low, self._high = self._scan(low, high), low, high
            return
        if low < self._low:
            low = min(low, self._low - BLOCK_DAYS)
            self._days[:0] = self._scan(low, self._low)
            self._low = low
        if high > self._high:
            high = max(high, self._high + BLOCK_DAYS)
            self._days.extend(self._scan(self._high, high))
            self._high = high

    def _scan(self, low: int, high: int) -> list[int]:
        """The matching days in [low, high), found by croniter on the calendar alone (no zone)."""
        if self._plain is not None:
            return self._plain.days_in(low, high)
        found: list[int] = []
        start = datetime.fromtimestamp(low * SECONDS_PER_DAY, UTC) - timedelta(seconds=1)
        days = croniter(self._day_expression, start)
        while True:
            try:
                midnight = days.get_next(float)
            except CroniterBadDateError:
                return found
            day = int(midnight) // SECONDS_PER_DAY
            if day >= high:
                return found
            found.append(day)


class _DayFields(NamedTuple):
    """The day fields of a schedule whose days are plain lists (no ``L``, ``W`` or ``#``), as croniter
    expands them: the matching days follow from the calendar alone, where croniter steps from match to
    match (a tenth of a millisecond a step: a weekly schedule over ten years took 30 ms). As croniter,
    when both the day of the month and the day of the week are restricted, a day matching either
    matches. None: any."""

    days: frozenset[int] | None  # of the month
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 is Sunday

    @classmethod
    def of(cls, expression: str) -> _DayFields | None:
        parsed = croniter(expression)
        if parsed.nth_weekday_of_month or parsed.nearest_weekday:
            return None
        fields: list[frozenset[int] | None] = []
        for values in parsed.expanded[2:5]:
            listed: list[object] = list(values)  # numbers, or ``*`` and ``l`` (its stubs say text)
            numbers = {value for value in listed if type(value) is int}
            if listed == ["*"]:
                fields.append(None)
            elif len(numbers) == len(set(listed)):
                fields.append(frozenset(numbers))
            else:  # ``L``
                return None
        return cls(*fields)

    def days_in(self, low: int, high: int) -> list[int]:
        """The matching days in [low, high) (days since 1970-01-01), within the years 1-9999."""
        low, high = max(low, FIRST_DAY), min(high, LAST_DAY + 1)
        found: list[int] = []
        if low >= high:
            return found
        days, weekdays = self.days, self.weekdays
        either = days is not None and weekdays is not None
        first = date.fromordinal(low + EPOCH_ORDINAL)
        year, month = first.year, first.month
        start = date(year, month, 1).toordinal() - EPOCH_ORDINAL
        while start < high:
            length = monthrange(year, month)[1]
            if self.months is None or month in self.months:
                for day_of_month in range(1, length + 1):
                    day = start + day_of_month - 1
                    on_day = days is None or day_of_month in days
                    on_weekday = weekdays is None or (day + 4) % 7 in weekdays  # 1970-01-01: Thursday
                    if (on_day or on_weekday) if either else (on_day and on_weekday):
                        found.append(day)
            start += length
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            if year > date.max.year:
                break
        return [day for day in found if low <= day < high]

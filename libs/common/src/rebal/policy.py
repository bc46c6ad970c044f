"""The autopilot policy file and the `rebal trigger` answer: reading, checking and showing what
`rebal.core.policy` evaluates.

A policy is a small document (TOML, YAML or JSON; docs/formats.md, "The autopilot policy"), checked
here with pydantic: unknown keys, NaN or infinite numbers, negative bands, a bad cron expression or an
unknown time zone are refused with one line naming the file and the key. The checked document compiles
once into the core's `Policy` (its cron schedule built and kept), which a service or a backtest then
evaluates as often as it likes.

Times cross this edge as ISO 8601 text and enter the core as whole seconds since the epoch (UTC).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError, model_validator

from rebal import io
from rebal.core.errors import InputError
from rebal.core.numbers import money_str, parse_decimal, parse_fraction, weight_str
from rebal.core.policy import (
    CASH,
    CASH_WITHIN,
    COOLDOWN,
    DRIFT,
    NO_TICK,
    NO_TRIGGER,
    SCHEDULE,
    WITHIN_BANDS,
    Band,
    Bands,
    Breach,
    Decision,
    Mode,
    Policy,
    Scope,
)
from rebal.schedule import CronSchedule, zone

# How often a run may make a fresh plan after prices moved between its legs: more would follow a market
# that runs away from the plan.
MAX_REPLANS = 3
# A cooldown longer than this is a typo (and would silence the autopilot for good).
MAX_COOLDOWN_DAYS = 3650
DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _fraction(raw: object) -> float:
    value = parse_fraction(raw)
    if value is None or not math.isfinite(float(value)):
        raise ValueError(f"expected a fraction (0.05, '0.05') or a percentage ('5%'), got {raw!r}")
    if value < 0:
        raise ValueError(f"a band cannot be negative, got {raw!r}")
    return float(value)


def _absolute(raw: object) -> float:
    value = _fraction(raw)
    if value > 1:
        raise ValueError(f"an absolute band is a weight difference within 0..1, got {raw!r}")
    return value


def _money(raw: object) -> Decimal:
    value = parse_decimal(raw)
    if value is None or not math.isfinite(float(value)):
        raise ValueError(f"expected a decimal amount ('500', 500), got {raw!r}")
    if value < 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _replans(raw: object) -> int:
    if type(raw) is not int or not 0 <= raw <= MAX_REPLANS:
        raise ValueError(
            f"expected a whole number 0..{MAX_REPLANS} (fresh plans a run may make after prices moved), "
            f"got {raw!r}"
        )
    return raw


def duration_seconds(text: str) -> int:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` or a combination (``"1d12h"``) in seconds."""
    match = _DURATION.fullmatch(text) if text else None
    if match is None:
        raise ValueError(f"expected a duration such as '7d', '12h', '30m' or '1d12h', got {text!r}")
    counts = zip(match.groups(), DURATION_UNITS.values(), strict=True)
    seconds = sum(int(count) * unit for count, unit in counts if count is not None)
    if seconds > MAX_COOLDOWN_DAYS * DURATION_UNITS["d"]:
        raise ValueError(f"{text!r} is longer than {MAX_COOLDOWN_DAYS}d")
    return seconds


def _node_path(text: str) -> None:
    if not text or any(not part.strip() for part in text.split("/")):
        raise ValueError(f"expected a node path such as 'alice/binance/spot/crypto/sol', got {text!r}")


def _text(expected: str, check: Callable[[str], object]) -> BeforeValidator:
    """A text field that `check` accepts (it raises ValueError saying what is wrong)."""

    def validate(raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError(f"expected {expected}, got {raw!r}")
        check(raw)
        return raw

    return BeforeValidator(validate)


Fraction = Annotated[float, BeforeValidator(_fraction)]
AbsoluteBand = Annotated[float, BeforeValidator(_absolute)]
Money = Annotated[Decimal, BeforeValidator(_money)]
Replans = Annotated[int, BeforeValidator(_replans)]
NodePath = Annotated[str, _text("a node path such as 'alice/binance/spot/crypto/sol'", _node_path)]
Duration = Annotated[str, _text("a duration such as '7d', '12h', '30m' or '1d12h'", duration_seconds)]
# A schedule is built to check it: the expression, and that it ever ticks (whatever the time zone).
Cron = Annotated[str, _text("a cron expression such as '0 0 * * MON'", CronSchedule)]
ZoneName = Annotated[str, _text("an IANA time zone name such as 'Europe/Berlin'", zone)]


class BandOverride(BaseModel):
    """One node's own bands; a key given as null removes that band from the node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drift_absolute: AbsoluteBand | None = None
    drift_relative: Fraction | None = None

    @model_validator(mode="after")
    def _some_band(self) -> BandOverride:
        if not self.model_fields_set:
            raise ValueError("an override names drift_absolute and/or drift_relative")
        return self

    def bands(self) -> dict[Band, float | None]:
        given = self.model_fields_set
        named: tuple[tuple[Band, str, float | None], ...] = (
            ("absolute", "drift_absolute", self.drift_absolute),
            ("relative", "drift_relative", self.drift_relative),
        )
        return {band: value for band, key, value in named if key in given}


class PolicyDocument(BaseModel):
    """A portfolio's autopilot policy as written (docs/formats.md, "The autopilot policy")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: Cron | None = None
    timezone: ZoneName = "UTC"
    drift_absolute: AbsoluteBand | None = None
    drift_relative: Fraction | None = None
    bands: dict[NodePath, BandOverride] = {}
    scope: Scope = "portfolio"
    cooldown: Duration | None = None
    invest_cash_above: Money | None = None
    min_trade_value: Money | None = None
    mode: Mode = "notify"
    replan_on_price_move: Replans = 0

    _schedule: CronSchedule | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _build_schedule(self) -> PolicyDocument:
        if self.schedule is not None:  # both checked: this cannot fail
            self._schedule = CronSchedule(self.schedule, self.timezone)
        return self

    def document(self) -> dict[str, Any]:
        """The policy as written (JSON-able, defaults left out), to store or show; it reads back equal."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_policy(self) -> Policy:
        """The core's policy: bands as floats, the cooldown in seconds, the schedule built."""
        return Policy(
            bands=Bands(self.drift_absolute, self.drift_relative),
            overrides={path: override.bands() for path, override in self.bands.items()},
            schedule=self._schedule,
            scope=self.scope,
            cooldown=duration_seconds(self.cooldown) if self.cooldown else 0,
            invest_cash_above=_float(self.invest_cash_above),
            min_trade_value=_float(self.min_trade_value),
            mode=self.mode,
            replan_on_price_move=self.replan_on_price_move,
        )


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def parse_policy(doc: object) -> PolicyDocument:
    """A checked policy document; `InputError` naming the key (``bands.a/b.drift_absolute``) otherwise."""
    if not isinstance(doc, dict):
        raise InputError("", f"a policy is a mapping of keys ({', '.join(PolicyDocument.model_fields)})")
    try:
        return PolicyDocument.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if part != "[key]")
        raise InputError(where, _message(error)) from None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        parent = PolicyDocument if len(error["loc"]) == 1 else BandOverride
        return f"unknown key (the keys are {', '.join(parent.model_fields)})"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def load_policy(path: Path) -> PolicyDocument:
    """Read and check a policy file; `rebal.io.FileError` (``FILE: KEY: what``) for bad input."""
    return io.load(path, parse_policy)


def parse_instant(text: str) -> int:
    """ISO 8601 text (``2024-06-03T00:00:00Z``, an offset, or no offset for UTC) in whole seconds since
    the epoch; fractions of a second are dropped. ValueError saying what is expected otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2024-06-03T00:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() // 1)


def instant_text(instant: int) -> str:
    """Seconds since the epoch as ISO 8601 UTC: ``2024-06-03T00:00:00Z``."""
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decision_json(decision: Decision) -> dict[str, object]:
    """The `rebal trigger --json` answer: times ISO 8601 UTC, weights decimal strings."""
    return {
        "rebalance": decision.rebalance,
        "kind": decision.kind,
        "reasons": [reason_text(decision, reason) for reason in decision.reasons],
        "blocked_by": decision.blocked_by,
        "breaches": [breach_json(breach) for breach in decision.breaches],
        "next_scheduled": _time(decision.next_scheduled),
    }


def breach_json(breach: Breach) -> dict[str, str]:
    return {
        "path": breach.path,
        "current_weight": weight_str(breach.current_weight),
        "desired_weight": weight_str(breach.desired_weight),
        "limit": weight_str(breach.limit),
        "band": breach.band,
    }


def _time(instant: int | None) -> str | None:
    return None if instant is None else instant_text(instant)


def reason_text(decision: Decision, reason: str) -> str:
    """One reason as a sentence that starts with its code (``cooldown: ...``)."""
    last = "never" if decision.last_rebalance is None else instant_text(decision.last_rebalance)
    since = "at or before now" if decision.last_rebalance is None else f"since the last rebalance ({last})"
    after = (
        "with no rebalance before it"
        if decision.last_rebalance is None
        else f"after the last rebalance ({last})"
    )
    cash = f"{money_str(abs(decision.cash_above_target))} {decision.quote}"
    cash = f"{cash} {'above' if decision.cash_above_target >= 0 else 'below'} the target cash"
    threshold = money_str(decision.invest_cash_above or 0.0)
    texts: dict[str, Callable[[], str]] = {
        SCHEDULE: lambda: f"the tick at {_time(decision.tick)} falls {after}",
        DRIFT: lambda: _drift_text(decision.breaches),
        COOLDOWN: lambda: f"no full rebalance until {_time(decision.cooldown_until)} (last rebalance {last})",
        CASH: lambda: f"{cash}, more than invest_cash_above {threshold}",
        NO_TICK: lambda: f"no tick {since}; next {_time(decision.next_scheduled)}",
        WITHIN_BANDS: lambda: "every node is within its bands",
        CASH_WITHIN: lambda: f"{cash}, not more than invest_cash_above {threshold}",
        NO_TRIGGER: lambda: "the policy has no schedule, no band and no invest_cash_above",
    }
    return f"{reason}: {texts[reason]()}"


def _drift_text(breaches: tuple[Breach, ...]) -> str:
    worst = max(breaches, key=lambda b: abs(b.current_weight - b.desired_weight) - b.limit)
    count = "1 node outside its band" if len(breaches) == 1 else f"{len(breaches)} nodes outside their bands"
    return (
        f"{count}; furthest: {worst.path}, weight {weight_str(worst.current_weight)} for a target of "
        f"{weight_str(worst.desired_weight)}, {worst.band} limit {weight_str(worst.limit)}"
    )

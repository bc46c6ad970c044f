"""The autopilot policy file: reading and checking what `rebal.core.policy` evaluates.

A policy is a small document (TOML, YAML or JSON; docs/formats.md, "The autopilot policy"), checked
here with pydantic: unknown keys, NaN or infinite numbers, negative bands, a bad cron expression or an
unknown time zone are refused with one line naming the file and the key. The checked document compiles
once into the core's `Policy` (its cron schedule built and kept), which a service or a backtest then
evaluates as often as it likes; `rebal.trigger` shows the decision.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError, model_validator

from rebal import io
from rebal.core.errors import InputError
from rebal.core.numbers import parse_decimal, parse_fraction
from rebal.core.policy import Band, Bands, Mode, Policy, Scope
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


class FundCyclePolicy(BaseModel):
    """When a fund's cycle runs by itself (docs/funds.md): at each tick of `schedule` in `timezone` after
    the schedule was set, the planner runs the fund's cycle (netting what is due), and with `rebalance`
    also brings the fund's holdings back to its weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: Cron
    timezone: ZoneName = "UTC"
    rebalance: bool = False

    def document(self) -> dict[str, Any]:
        """The schedule as written (JSON-able, defaults left out), to store or show."""
        return self.model_dump(mode="json", exclude_unset=True)

    def cron(self) -> CronSchedule:
        return CronSchedule(self.schedule, self.timezone)


def parse_policy(doc: object) -> PolicyDocument:
    """A checked policy document; `InputError` naming the key (``bands.a/b.drift_absolute``) otherwise."""
    return _parse(PolicyDocument, doc)


def parse_fund_policy(doc: object) -> FundCyclePolicy:
    """A checked fund cycle schedule; `InputError` naming the key otherwise."""
    return _parse(FundCyclePolicy, doc)


Checked = TypeVar("Checked", PolicyDocument, FundCyclePolicy)


def _parse(kind: type[Checked], doc: object) -> Checked:
    if not isinstance(doc, dict):
        raise InputError(
            "",
            f"a policy is a mapping of keys ({', '.join(kind.model_fields)}); {io.FORMATS_BY_SUFFIX}",
        )
    try:
        return kind.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if part != "[key]")
        raise InputError(where, _message(kind, error)) from None


def _message(kind: type[BaseModel], error: Any) -> str:
    if error["type"] == "extra_forbidden":
        parent = kind if len(error["loc"]) == 1 else BandOverride
        return f"unknown key (the keys are {', '.join(parent.model_fields)})"
    if error["type"] == "missing":
        return "missing (a required key)"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def load_policy(path: Path) -> PolicyDocument:
    """Read and check a policy file; `rebal.io.FileError` (``FILE: KEY: what``) for bad input."""
    return io.load(path, parse_policy)


def load_fund_policy(path: Path) -> FundCyclePolicy:
    """Read and check a fund's cycle schedule file (``FILE: KEY: what`` for bad input)."""
    return io.load(path, parse_fund_policy)

"""The `rebal trigger` answer: a `rebal.core.policy.Decision` as the documented JSON (docs/formats.md,
"rebal trigger"), and the ISO 8601 times that cross this edge as whole seconds since the epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rebal.core.display import percent_text
from rebal.core.numbers import MONEY_PLACES, shown_str, weight_str
from rebal.core.policy import (
    CASH,
    CASH_WITHIN,
    COOLDOWN,
    DRIFT,
    NO_TICK,
    NO_TRIGGER,
    SCHEDULE,
    WITHIN_BANDS,
    Breach,
    Decision,
)

# The times a policy is evaluated at: a schedule looks decades ahead and a month back from them, which
# the calendar's ends (years 1 and 9999) would cut short.
EARLIEST = int(datetime(1000, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(9000, 1, 1, tzinfo=UTC).timestamp())


def parse_instant(text: str) -> int:
    """ISO 8601 text (``2024-06-03T00:00:00Z``, an offset, or no offset for UTC) in whole seconds since
    the epoch; fractions of a second are dropped. ValueError saying what is expected otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2024-06-03T00:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    instant = int(moment.timestamp() // 1)
    if not EARLIEST <= instant < LATEST:
        raise ValueError(
            f"expected a time from {instant_text(EARLIEST)} to before {instant_text(LATEST)}, got {text!r}"
        )
    return instant


def instant_text(instant: int) -> str:
    """Seconds since the epoch as ISO 8601 UTC: ``2024-06-03T00:00:00Z``."""
    moment = datetime.fromtimestamp(instant, UTC)
    return f"{moment.year:04d}{moment:-%m-%dT%H:%M:%SZ}"  # the year padded, as ISO 8601 has it


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
    cash = f"{shown_str(abs(decision.cash_above_target), MONEY_PLACES)} {decision.quote}"  # computed
    cash = f"{cash} {'above' if decision.cash_above_target >= 0 else 'below'} the target cash"
    threshold = shown_str(decision.invest_cash_above or 0.0, MONEY_PLACES)
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
        f"{count}; furthest: {worst.path}, weight {percent_text(worst.current_weight)} for a target of "
        f"{percent_text(worst.desired_weight)}, {worst.band} limit {percent_text(worst.limit)}"
    )

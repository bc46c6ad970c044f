"""Every NATS subject and stream name Rebal uses, built in this one module.

Events are past-tense facts: ``rebal.evt.<aggregate>.<action>.v<N>.<portfolio>``; commands are
imperative: ``rebal.cmd.<aggregate>.<action>.v<N>.<portfolio>``; bots report on
``rebal.evt.strategy.return_reported.v1.<strategy>``; messages no consumer could read go to
``rebal.dlq.<service>``. Only bounded values (portfolio and strategy ids) go into a subject, never
order ids or timestamps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

PREFIX = "rebal"
VERSION = 1
# A subject token: no dots, spaces or wildcards.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

EVENTS_STREAM = "REBAL_EVENTS"
COMMANDS_STREAM = "REBAL_COMMANDS"
DLQ_STREAM = "REBAL_DLQ"
# JetStream Object Store buckets for the large part of events sent by reference (`rebal.payloads`), one
# per producer so that each service writes only its own; a bucket's stream is ``OBJ_<bucket>``.
SNAPSHOTS_BUCKET = "REBAL_SNAPSHOTS"
TARGETS_BUCKET = "REBAL_TARGETS"
PLANS_BUCKET = "REBAL_PLANS"


def check_token(value: str, what: str) -> str:
    """A portfolio or strategy id usable as one subject token; ValueError names what is wrong."""
    if not TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 letters, digits, '_' or '-'")
    return value


@dataclass(frozen=True)
class Topic:
    """One kind of message: its family (evt/cmd), aggregate and action; subjects add version and id."""

    family: str
    aggregate: str
    action: str

    def subject(self, key: str, version: int = VERSION) -> str:
        """The concrete subject for one portfolio (or strategy)."""
        return f"{PREFIX}.{self.family}.{self.aggregate}.{self.action}.v{version}.{check_token(key, 'id')}"

    def any_version(self, key: str = "*") -> str:
        """A filter matching every version: consumers see v2 messages too and dead-letter them."""
        return f"{PREFIX}.{self.family}.{self.aggregate}.{self.action}.*.{key}"

    @property
    def name(self) -> str:
        return f"{self.aggregate}.{self.action}"


BALANCE_SNAPSHOT_TAKEN = Topic("evt", "balances", "snapshot_taken")
TARGET_WEIGHTS_COMPUTED = Topic("evt", "targets", "weights_computed")
REBALANCE_PLANNED = Topic("evt", "rebalance", "planned")
PLAN_FAILED = Topic("evt", "rebalance", "plan_failed")
REBALANCE_TRIGGERED = Topic("evt", "rebalance", "triggered")
RUN_STARTED = Topic("evt", "run", "started")
ORDER_PLACED = Topic("evt", "order", "placed")
ORDER_FILLED = Topic("evt", "order", "filled")
RUN_FINISHED = Topic("evt", "run", "finished")
# The executor's acknowledgement of a halt (under `run`: the executor publishes `rebal.evt.run.>`).
HALT_APPLIED = Topic("evt", "run", "halt_applied")
# A transfer to or from a bank account (no API) is an operator's task (under `run`: the executor's).
TRANSFER_TASK_OPENED = Topic("evt", "run", "transfer_task_opened")
TRANSFER_CONFIRMED = Topic("evt", "run", "transfer_confirmed")
TRANSFER_TASK_EXPIRED = Topic("evt", "run", "transfer_task_expired")
FUND_DEFINED = Topic("evt", "fund", "defined")
FUND_DEPOSITED = Topic("evt", "fund", "deposited")
FUND_WITHDRAWAL_REQUESTED = Topic("evt", "fund", "withdrawal_requested")
FUND_COMMAND_REJECTED = Topic("evt", "fund", "command_rejected")
FUND_CYCLE_PLANNED = Topic("evt", "fund", "cycle_planned")
FUND_CYCLE_SETTLED = Topic("evt", "fund", "cycle_settled")
FUND_NEEDS_ADJUSTMENT = Topic("evt", "fund", "needs_adjustment")
STRATEGY_RETURN_REPORTED = Topic("evt", "strategy", "return_reported")
OPTIMIZATION_FAILED = Topic("evt", "targets", "optimization_failed")

START_REBALANCE = Topic("cmd", "rebalance", "start")
APPROVE_PLAN = Topic("cmd", "rebalance", "approve")
TAKE_SNAPSHOT = Topic("cmd", "balances", "take_snapshot")
HALT_TRADING = Topic("cmd", "trading", "halt")
RESUME_TRADING = Topic("cmd", "trading", "resume")
DEFINE_FUND = Topic("cmd", "fund", "define")
RECORD_DEPOSIT = Topic("cmd", "fund", "deposit")
REQUEST_WITHDRAWAL = Topic("cmd", "fund", "withdraw")
RUN_FUND_CYCLE = Topic("cmd", "fund", "run_cycle")
SET_TARGET = Topic("cmd", "targets", "set")
RUN_OPTIMIZATION = Topic("cmd", "optimizer", "run")
CONFIRM_TRANSFER = Topic("cmd", "transfer", "confirm")

EVENT_TOPICS = (
    BALANCE_SNAPSHOT_TAKEN,
    TARGET_WEIGHTS_COMPUTED,
    REBALANCE_PLANNED,
    PLAN_FAILED,
    REBALANCE_TRIGGERED,
    RUN_STARTED,
    ORDER_PLACED,
    ORDER_FILLED,
    RUN_FINISHED,
    HALT_APPLIED,
    TRANSFER_TASK_OPENED,
    TRANSFER_CONFIRMED,
    TRANSFER_TASK_EXPIRED,
    FUND_DEFINED,
    FUND_DEPOSITED,
    FUND_WITHDRAWAL_REQUESTED,
    FUND_COMMAND_REJECTED,
    FUND_CYCLE_PLANNED,
    FUND_CYCLE_SETTLED,
    FUND_NEEDS_ADJUSTMENT,
    STRATEGY_RETURN_REPORTED,
    OPTIMIZATION_FAILED,
)
FUND_COMMAND_TOPICS = (DEFINE_FUND, RECORD_DEPOSIT, REQUEST_WITHDRAWAL, RUN_FUND_CYCLE)
COMMAND_TOPICS = (
    START_REBALANCE,
    APPROVE_PLAN,
    TAKE_SNAPSHOT,
    HALT_TRADING,
    RESUME_TRADING,
    RUN_OPTIMIZATION,
    SET_TARGET,
    CONFIRM_TRANSFER,
)

# The bucket an event of each topic puts its large part in (topics without one always travel whole).
PAYLOAD_BUCKETS = {
    BALANCE_SNAPSHOT_TAKEN: SNAPSHOTS_BUCKET,
    TARGET_WEIGHTS_COMPUTED: TARGETS_BUCKET,
    REBALANCE_PLANNED: PLANS_BUCKET,
}


def bucket_stream(bucket: str) -> str:
    """The stream a JetStream Object Store bucket keeps its objects in."""
    return f"OBJ_{bucket}"


ALL_EVENTS = f"{PREFIX}.evt.>"
ALL_COMMANDS = f"{PREFIX}.cmd.>"
ALL_DEAD_LETTERS = f"{PREFIX}.dlq.>"


def dead_letter(service: str) -> str:
    """Where a service puts a message it could not read (with the raw payload and the reason)."""
    return f"{PREFIX}.dlq.{check_token(service, 'service')}"


KNOWN = frozenset(EVENT_TOPICS + COMMAND_TOPICS + FUND_COMMAND_TOPICS)


@lru_cache(maxsize=4096)
def parse(subject: str) -> tuple[Topic, int, str] | None:
    """(topic, version, id) of a Rebal subject, or None when it is not one of ours (cached: the set of
    subjects in use is small and every message asks)."""
    parts = subject.split(".")
    if len(parts) != 6 or parts[0] != PREFIX or not parts[4].startswith("v") or not parts[4][1:].isdigit():
        return None
    topic = Topic(parts[1], parts[2], parts[3])
    if topic not in KNOWN:
        return None
    return topic, int(parts[4][1:]), parts[5]

"""Writes docs/events.md from the event models: `python docs/events.py > docs/events.md`.

tests/test_docs.py fails when the committed document differs from what this prints, so the list of
subjects, fields and examples cannot drift from the code.
"""

from __future__ import annotations

import functools
import inspect
import json
import operator
import sys
import types
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from rebal import bus, payloads, subjects
from rebal.core import bounds
from rebal.events import (
    ApprovePlan,
    BalanceSnapshotTaken,
    ConfirmTransfer,
    DeadLettered,
    DefineFund,
    Event,
    FundCommandRejected,
    FundCyclePlanned,
    FundCycleSettled,
    FundDefined,
    FundDeposited,
    FundNeedsAdjustment,
    FundWithdrawalRequested,
    HaltApplied,
    HaltTrading,
    OptimizationFailed,
    OrderFilled,
    OrderPlaced,
    PayloadRef,
    PlanFailed,
    PlannedOrder,
    ProjectedWeight,
    RebalancePlanned,
    RebalanceTriggered,
    RecordDeposit,
    RequestWithdrawal,
    ResumeTrading,
    RunFinished,
    RunFundCycle,
    RunOptimization,
    RunStarted,
    SetTarget,
    StartRebalance,
    StrategyReturnReported,
    TakeSnapshot,
    TargetWeightsComputed,
    TransferConfirmed,
    TransferTaskExpired,
    TransferTaskOpened,
    TriggerBreach,
    derive_id,
    derive_run_id,
    new_event,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    kind: type[Event]
    producer: str
    consumers: tuple[str, ...]
    example: Event


def examples() -> list[Entry]:
    command = new_event(StartRebalance, key="operator-1", now=NOW, portfolio_id="demo", dry_run=False)
    snapshot = new_event(
        BalanceSnapshotTaken,
        key=NOW.isoformat(),
        now=NOW,
        portfolio_id="demo",
        tree={
            "name": "demo",
            "children": [
                {
                    "name": "spot",
                    "kind": "account",
                    "exchange": "paper",
                    "quote": "USDT",
                    "children": [
                        {"name": "btc", "asset": "BTC", "amount": "0.5"},
                        {"name": "usdt", "asset": "USDT", "amount": "20000"},
                    ],
                }
            ],
        },
        prices={"quote": "USDT", "prices": {"BTC": "60000", "USDT": "1"}},
        markets={"paper": {"BTC/USDT": {"amount_step": "0.00001", "min_cost": "5", "fee_rate": "0.001"}}},
    )
    target = new_event(
        TargetWeightsComputed,
        key="sha256-of-the-file",
        now=NOW,
        portfolio_id="demo",
        tree={
            "name": "demo",
            "children": [
                {
                    "name": "spot",
                    "weight": "100%",
                    "children": [
                        {"name": "btc", "asset": "BTC", "weight": "50%"},
                        {"name": "usdt", "asset": "USDT", "weight": "50%"},
                    ],
                }
            ],
        },
        source="examples/demo/target.json",
    )
    order = PlannedOrder(
        account="demo/spot",
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=Decimal("0.08333"),
        est_price=Decimal("60000"),
        est_cost=Decimal("4999.8"),
        est_fee=Decimal("4.9998"),
        phase=1,
    )
    plan = command.caused(
        RebalancePlanned,
        now=NOW,
        correlation_id=bus_run_id(command),
        dry_run=False,
        band=Decimal(0),
        snapshot_id=snapshot.event_id,
        target_id=target.event_id,
        total_value=Decimal("50000"),
        orders=(order,),
        projected_weights=(
            ProjectedWeight(
                path="demo/spot",
                current_weight=Decimal(1),
                projected_weight=Decimal(1),
                affected_by_skips=False,
            ),
        ),
    )
    preview_id = derive_id("RebalancePlanned", "a dry-run plan")
    placed = plan.caused(
        OrderPlaced,
        now=NOW,
        key=0,
        client_order_id="rb-3f2a9c1d7e4b-0",
        account="demo/spot",
        exchange="paper",
        symbol="BTC/USDT",
        side="sell",
        amount=Decimal("0.08333"),
        phase=1,
    )
    return [
        Entry(
            StartRebalance,
            "operators: `rebal rebalance`",
            ("planner (`planner-commands`)", "monitor"),
            command,
        ),
        Entry(
            ApprovePlan,
            "operators: `rebal approve`, `POST /portfolio/plans/{id}/approve`",
            ("planner (`planner-approvals`)", "monitor"),
            new_event(
                ApprovePlan,
                key=preview_id,
                now=NOW,
                portfolio_id="demo",
                plan_id=preview_id,
                expires_at=NOW + timedelta(minutes=5),
                requested_by="api",
            ),
        ),
        Entry(
            TakeSnapshot,
            "the executor after a run; operators",
            ("tracker (`tracker-take-snapshot`)", "monitor"),
            plan.caused(TakeSnapshot, now=NOW),
        ),
        Entry(
            HaltTrading,
            "operators: `rebal halt`, `POST /halt`",
            ("executor", "monitor"),
            new_event(
                HaltTrading,
                key="operator-2",
                now=NOW,
                portfolio_id="demo",
                reason="exchange maintenance",
            ),
        ),
        Entry(
            ResumeTrading,
            "operators: `rebal resume`, `POST /resume`",
            ("executor", "monitor"),
            new_event(ResumeTrading, key="operator-3", now=NOW, portfolio_id="demo"),
        ),
        Entry(
            RunOptimization,
            "operators: `rebal optimize`",
            ("optimizer (`optimizer-commands`)", "monitor"),
            new_event(RunOptimization, key="operator-4", now=NOW, portfolio_id="demo"),
        ),
        Entry(
            SetTarget,
            "operators: `rebal target set|rollback`, `PUT /portfolio/targets` (stored as `target_version`)",
            ("optimizer (`optimizer-targets`)", "monitor"),
            new_event(
                SetTarget,
                key="operator-5",
                now=NOW,
                portfolio_id="demo",
                target_version=3,
                tree=target.tree,
                author="alice@desk",
                note="more cash",
                requested_by="api",
            ),
        ),
        Entry(
            OptimizationFailed,
            "optimizer",
            ("monitor",),
            new_event(
                OptimizationFailed,
                key="tick|2026-11-21T00:00:00+00:00",
                now=NOW,
                portfolio_id="demo",
                method="max_sharpe",
                reason="no strategy has a mean return above the risk-free rate",
                trigger="schedule",
            ),
        ),
        Entry(BalanceSnapshotTaken, "tracker", ("planner (`planner-snapshots`)", "monitor"), snapshot),
        Entry(TargetWeightsComputed, "optimizer", ("planner (`planner-targets`)", "monitor"), target),
        Entry(RebalancePlanned, "planner", ("executor (`executor-plans`)", "monitor"), plan),
        Entry(
            PlanFailed,
            "planner",
            ("monitor",),
            command.caused(
                PlanFailed,
                now=NOW,
                correlation_id=bus_run_id(command),
                reason="target tree: demo/spot: weights of the children sum to 90%, expected 100%",
                dry_run=False,
            ),
        ),
        Entry(
            RebalanceTriggered,
            "planner (the autopilot: a portfolio's policy on each snapshot, target and clock tick)",
            ("monitor (notifications; a plan to approve)",),
            RebalanceTriggered(
                type="RebalanceTriggered",
                event_id=derive_id("RebalanceTriggered", "demo", snapshot.event_id),
                occurred_at=NOW,
                emitted_at=NOW,
                portfolio_id="demo",
                causation_id=snapshot.event_id,
                correlation_id=derive_id("run", derive_id("RebalanceTriggered", "demo", snapshot.event_id)),
                mode="auto",
                kind="full",
                scope="portfolio",
                reasons=(
                    "drift: 1 node outside its band; furthest: demo/spot/btc, weight 62.00% for a target of "
                    "50.00%, absolute limit 10.00%",
                ),
                breaches=(
                    TriggerBreach(
                        path="demo/spot/btc",
                        current_weight=Decimal("0.62"),
                        desired_weight=Decimal("0.5"),
                        limit=Decimal("0.1"),
                        band="absolute",
                    ),
                ),
                snapshot_id=snapshot.event_id,
                target_id=target.event_id,
                policy_version=1,
                next_scheduled=NOW + timedelta(hours=1),
            ),
        ),
        Entry(
            RunStarted,
            "executor",
            ("monitor",),
            plan.caused(RunStarted, now=NOW, plan_id=plan.event_id, orders=1),
        ),
        Entry(OrderPlaced, "executor", ("monitor",), placed),
        Entry(
            OrderFilled,
            "executor",
            ("monitor",),
            placed.caused(
                OrderFilled,
                now=NOW,
                key="t-1",
                client_order_id=placed.client_order_id,
                trade_id="pt-5b1e0c2a9f3d",
                symbol="BTC/USDT",
                side="sell",
                amount=Decimal("0.08333"),
                price=Decimal("60012.5"),
                fee=Decimal("5.00084"),
                fee_asset="USDT",
            ),
        ),
        Entry(
            RunFinished,
            "executor",
            ("monitor",),
            plan.caused(
                RunFinished,
                now=NOW,
                plan_id=plan.event_id,
                status="completed",
                placed=1,
                filled=1,
                skipped=0,
                failed=0,
            ),
        ),
        Entry(
            HaltApplied,
            "executor",
            ("monitor (`POST /halt` waits for it)",),
            new_event(
                HaltTrading, key="operator-2", now=NOW, portfolio_id="demo", reason="exchange maintenance"
            ).caused(HaltApplied, now=NOW, reason="exchange maintenance"),
        ),
        Entry(
            StrategyReturnReported,
            "bots (see the bot contract)",
            ("tracker (`tracker-strategy-returns`, batched)", "monitor"),
            new_event(
                StrategyReturnReported,
                key="trend|2026-11-21T12:00:00Z",
                now=NOW,
                portfolio_id="demo",
                strategy_id="trend",
                timestamp=NOW,
                period_return=Decimal("0.0012"),
                equity=Decimal("101234.5"),
            ),
        ),
        *transfer_entries(),
        *fund_entries(),
    ]


def transfer_entries() -> list[Entry]:
    """A transfer from a bank account (no API): the operator's task, its confirmation and its expiry."""
    plan_id = derive_id("plan")
    opened = new_event(
        TransferTaskOpened,
        key="bt-0123456789ab",
        now=NOW,
        portfolio_id="demo",
        correlation_id=derive_id("run", "plan"),
        task_id="bt-0123456789ab",
        plan_id=plan_id,
        transfer=0,
        asset="USD",
        from_account="demo/bank",
        to_account="demo/broker",
        amount=Decimal(1000),
        expires_at=NOW + timedelta(days=7),
    )
    confirm = new_event(
        ConfirmTransfer,
        key="operator-5",
        now=NOW,
        portfolio_id="demo",
        task_id="bt-0123456789ab",
        received=Decimal("999.5"),
    )
    return [
        Entry(
            TransferTaskOpened,
            "executor",
            (
                "monitor (notification, `GET /transfers`)",
                "tracker (`tracker-bank-tasks`: a transfer out of a bank counts once until confirmed)",
            ),
            opened,
        ),
        Entry(
            ConfirmTransfer,
            "operators: `rebal transfer confirm ID`, `POST /transfers/{id}/confirm`",
            ("executor (`executor-transfer-confirm`)", "monitor"),
            confirm,
        ),
        Entry(
            TransferConfirmed,
            "executor",
            (
                "monitor (`POST /transfers/{id}/confirm` waits for it)",
                "tracker (`tracker-bank-ledger`: the bank accounts' balances)",
            ),
            confirm.caused(
                TransferConfirmed,
                now=NOW,
                correlation_id=opened.correlation_id,
                task_id="bt-0123456789ab",
                plan_id=plan_id,
                received=Decimal("999.5"),
                confirmed_at=NOW,
                requested_by="operator",
                asset="USD",
                from_account="demo/bank",
                to_account="demo/paper/spot",
                amount=Decimal("1000"),
            ),
        ),
        Entry(
            TransferTaskExpired,
            "executor",
            ("monitor (alert notification)", "tracker (`tracker-bank-expiries`)"),
            opened.caused(
                TransferTaskExpired,
                now=NOW + timedelta(days=7),
                task_id="bt-0123456789ab",
                plan_id=plan_id,
                reason="transfer of 1000 USD from demo/bank to demo/broker not confirmed within 604800 s",
            ),
        ),
    ]


def fund_entries() -> list[Entry]:
    """Funds (issue 6, docs/funds.md): the portfolio id is the fund's."""
    define = new_event(
        DefineFund,
        key="operator-5",
        now=NOW,
        portfolio_id="growth",
        exchange="paper",
        account="growth/paper/main",
        quote="USDT",
        weights={"BTC": Decimal("0.5"), "ETH": Decimal("0.3"), "USDT": Decimal("0.2")},
        prices_from="demo",
    )
    deposit = new_event(
        RecordDeposit,
        key="transfer-8812",
        now=NOW,
        portfolio_id="growth",
        user_id="alice",
        amount=Decimal("1000"),
        reference="transfer-8812",
    )
    withdraw = new_event(
        RequestWithdrawal,
        key="request-17",
        now=NOW,
        portfolio_id="growth",
        user_id="bob",
        amount=Decimal("250"),
        reference="request-17",
    )
    cycle = new_event(RunFundCycle, key="operator-6", now=NOW, portfolio_id="growth")
    cycle_id = derive_id("fund-cycle", cycle.event_id)
    planned = cycle.caused(
        FundCyclePlanned,
        now=NOW,
        key=f"{cycle_id}|1",
        correlation_id=derive_id("fund-run", cycle_id, 1),
        cycle_id=cycle_id,
        phase=1,
        deposits=1,
        withdrawals=1,
        rebalance=False,
        orders=2,
        user_orders=4,
        user_fees=Decimal("1.4925"),
        net_fees=Decimal("0.4925"),
    )
    return [
        Entry(DefineFund, "operators", ("planner (`planner-fund-define`)", "monitor"), define),
        Entry(
            RecordDeposit,
            "operators: `rebal fund deposit`, `POST /funds/{fund}/deposits`",
            ("planner (`planner-fund-deposits`)", "monitor"),
            deposit,
        ),
        Entry(
            RequestWithdrawal,
            "operators: `rebal fund withdraw`, `POST /funds/{fund}/withdrawals`",
            ("planner (`planner-fund-withdrawals`)", "monitor"),
            withdraw,
        ),
        Entry(RunFundCycle, "operators", ("planner (`planner-fund-cycles`)", "monitor"), cycle),
        Entry(
            FundDefined,
            "planner",
            ("monitor",),
            define.caused(
                FundDefined,
                now=NOW,
                exchange=define.exchange,
                account=define.account,
                quote=define.quote,
                weights=define.weights,
                prices_from=define.prices_from,
            ),
        ),
        Entry(
            FundDeposited,
            "planner",
            ("monitor",),
            deposit.caused(FundDeposited, now=NOW, user_id="alice", amount=Decimal(1000), cash=Decimal(1000)),
        ),
        Entry(
            FundWithdrawalRequested,
            "planner",
            ("monitor",),
            withdraw.caused(FundWithdrawalRequested, now=NOW, user_id="bob", amount=Decimal(250)),
        ),
        Entry(
            FundCommandRejected,
            "planner",
            ("monitor",),
            withdraw.caused(
                FundCommandRejected,
                now=NOW,
                command="RequestWithdrawal",
                user_id="bob",
                reason="asks 250, the holdings fetch 199.8 after fees",
            ),
        ),
        Entry(FundCyclePlanned, "planner", ("monitor",), planned),
        Entry(
            FundCycleSettled,
            "planner",
            ("monitor",),
            planned.caused(
                FundCycleSettled,
                now=NOW,
                key=cycle_id,
                cycle_id=cycle_id,
                paid={"bob": Decimal(250)},
                fees=Decimal("0.4925"),
            ),
        ),
        Entry(
            FundNeedsAdjustment,
            "planner",
            ("monitor",),
            cycle.caused(
                FundNeedsAdjustment, now=NOW, reasons=("ETH: market ETH/USDT is inactive",), cancelled=1
            ),
        ),
    ]


def bus_run_id(command: Event) -> Any:
    """The run id the planner gives a command's run."""
    return derive_run_id(command)


def without_checks(annotation: Any) -> Any:
    """The type without its `Annotated` checks (`rebal.events.Text` is shown as `str`)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return without_checks(args[0])
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, [without_checks(arg) for arg in args])
    if origin in (dict, tuple, list):
        return origin[tuple(without_checks(arg) for arg in args)]
    return annotation


def type_name(annotation: Any) -> str:
    annotation = without_checks(annotation)
    text = getattr(annotation, "__name__", None) if not get_args(annotation) else None
    if text is None:
        text = str(annotation)
    for prefix in ("typing.", "rebal.events.", "decimal.", "uuid.", "datetime.", "pydantic.types."):
        text = text.replace(prefix, "")
    return text.replace("|", "\\|")


def field_rows(model: type[BaseModel], skip: set[str]) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        required = "required" if info.is_required() else f"default `{info.default!r}`"
        rows.append(f"| `{name}` | `{type_name(info.annotation)}` | {required} |")
    return rows


ENVELOPE = set(Event.model_fields)


INTRO = """# Events and subjects

<!-- Generated by `python docs/events.py > docs/events.md`; tests/test_docs.py keeps it current. -->

Every message on the bus is a frozen, versioned pydantic model (`rebal.events`) serialised as
JSON; money, quantities and prices are decimal strings. Subjects are built only by
`rebal.subjects`:

- events: `rebal.evt.<aggregate>.<action>.v<N>.<portfolio>` (bots: `.<strategy>`);
- commands: `rebal.cmd.<aggregate>.<action>.v<N>.<portfolio>`;
- dead letters: `rebal.dlq.<service>`.

## Streams

| stream | subjects | duplicate window | max age |
| --- | --- | --- | --- |
{streams}

Every publish sets `Nats-Msg-Id` to the event id. Ids derive from the cause (uuid5 of the
cause's id and what the event is about), so a redelivered trigger recomputes the same id and the
server drops the second publish. Streams are declared in code (`rebal.bus.declare_streams`):
every service creates a missing one at start; `python -m rebal.migrate` (as the NATS user
`migrate` on a secured bus, the only one allowed to) brings an existing one's configuration up
to date.

## Message size: large payloads by reference

NATS runs with its default `max_payload` of {max_mib} MiB, and every stream refuses a larger
message. Why not raise it, as Rebal once did (8 MB): a snapshot, a target and a plan grow with the
portfolio without bound (a 100k-wallet plan is 22 MB of JSON, a million-wallet one some 200 MB),
so any limit is met one day, and met silently (the publish fails inside a retry loop); and one
large message holds up everything behind it on the connection and in a batch consumer's buffer
(up to 4 x 500 messages). So no message is larger than {inline_kib} KiB plus its envelope:

- An event whose JSON exceeds {inline_kib} KiB sends its large part by reference: the fields in
  the table below go, in the compact columnar encoding `{encoding}` (`rebal.payloads`: trees as
  tables of nodes in preorder, records as one column per field, decimals as exact text, the whole
  deflated: a 100k-wallet plan is 2.8 MB, a snapshot 1.1 MB), into a JetStream Object Store
  bucket of the producer's own, as one object of {chunk_kib} KiB chunks. The event travels with
  those fields empty and `payload_ref`: the bucket, the object's name
  (`<portfolio>/<event id>/<digest prefix>`: a redelivered cause that makes the same event stores
  it once), its SHA-256 digest as NATS writes it (`SHA-256=<base64url>`), its size and encoding.
- Every consumer path (durable consumers, batch consumers, the latest event read back from the
  stream, the CLI following a run) fetches the object once (a process keeps the last
  {kept} by digest), checks the digest, and hands its handler the whole event, validated like any
  other. An object that is gone or does not match is the message's fault: dead-lettered with the
  reason. NATS being away while fetching is an outage: the consumer holds its message.
- A bucket keeps its objects {grace:g} day longer than `REBAL_EVENTS` keeps the events pointing
  to them ({payload_days:g} days against {event_days:g}): every event in the stream can be read
  whole. The monitor's journal keeps events whole, beyond both.
- A publish that cannot succeed fails loudly: an event over the limit with no large part to send
  by reference, a server whose `max_payload` is below Rebal's messages, or an object the server
  refuses for good raises `rebal.bus.PublishFailed` at once. The planner answers with a
  `PlanFailed` naming the reason (and logs it), so `rebal rebalance` exits 1 with it. A store
  without room (JetStream answers 503, as for a full disk) is an outage like NATS being away: the
  consumer that was publishing holds its message, and `/readyz` names it, until there is room. A
  dead letter's raw payload is cut to {inline_kib} KiB (the stream it came from keeps it whole).
- Events published before payloads went by reference, inline whatever their size, are still
  read as they are (`payload_ref` is optional); a service of an earlier version cannot read a
  by-reference event (it dead-letters it): upgrade consumers before producers.

| event | fields sent by reference | bucket (stream) | written by | read by |
| --- | --- | --- | --- | --- |
{buckets}

## Values

Every field is checked where a message enters (`rebal.core.bounds`), so that what is accepted can
be stored and computed with; a message that breaks one of these is refused on its own content:

- text (every string, and every key and string inside the `tree`, `prices` and `markets`
  documents) holds no NUL character (U+0000) and no lone surrogate: Postgres cannot store them;
- decimals are finite, below {decimal_limit} in size, with at most {decimal_places} decimal places;
- times (`occurred_at`, `emitted_at`, a return's `timestamp`) lie in 1970-01-01..2100-01-01 UTC
  (the end excluded);
- a period return is at least -1.

## Consumers

Every consumer is durable (replicas of a service share it) and acks explicitly after its handler
(`AckPolicy.NACK_ON_ERROR`); most pull one message at a time, the high-rate ones (the tracker's
returns, the monitor's journal) take batches, and all report progress while a handler runs (ack
wait {ack_wait:g} s).

- A message that cannot be read (malformed JSON, a schema violation or a value out of bounds, a
  subject version the service does not know, a subject naming another portfolio than the
  payload) goes at once to `rebal.dlq.<service>` and is counted in
  `rebal_messages_dead_lettered_total{{service,topic}}`; the service keeps serving.
- A handler that fails on a message is retried with backoff ({backoff} s) up to {max_deliver}
  deliveries, then dead-lettered. A batch that fails is split in halves until the messages that
  fail alone are found: only those are retried and dead-lettered, every other one is stored once.
- A dependency that is unavailable (Postgres or NATS: connection refused or lost, the server
  starting or shutting down; `rebal.outage`, by exception class) is not the message's fault:
  the consumer keeps the messages it holds (extending their ack deadline, so nothing is
  redelivered or counted), takes no new ones, tries again every {hold:g} s at most, and goes on
  when the dependency is back, however long that takes while the stream keeps the messages.
  Meanwhile `/readyz` answers 503 naming the consumer (`consumers`) and
  `rebal_consumer_waiting{{consumer}}` is 1.

## The envelope

| field | type | |
| --- | --- | --- |
"""


# Who writes and reads each payload bucket (deploy/nats/auth.conf grants exactly these).
BUCKET_USERS = {
    subjects.SNAPSHOTS_BUCKET: ("tracker", "planner, optimizer, monitor"),
    subjects.TARGETS_BUCKET: ("optimizer", "planner, monitor"),
    subjects.PLANS_BUCKET: ("planner", "executor, monitor, operators (`rebal rebalance`)"),
}


def bucket_row(kind: type[Event], fields: tuple[str, ...]) -> str:
    bucket = subjects.PAYLOAD_BUCKETS[kind.topic]
    writer, readers = BUCKET_USERS[bucket]
    names = ", ".join(f"`{field}`" for field in fields)
    where = f"`{bucket}` (`{subjects.bucket_stream(bucket)}`)"
    return f"| `{kind.__name__}` | {names} | {where} | {writer} | {readers} |"


def render() -> str:
    streams = "\n".join(
        f"| `{spec.name}` | `{', '.join(spec.subjects)}` | {bus.DUPLICATE_WINDOW_SECONDS:g} s |"
        f" {spec.max_age / 86400:g} days |"
        for spec in bus.STREAMS
    )
    buckets = "\n".join(bucket_row(kind, fields) for kind, fields in payloads.LARGE_FIELDS.items())
    intro = INTRO.format(
        streams=streams,
        buckets=buckets,
        inline_kib=bus.INLINE_LIMIT_BYTES // 2**10,
        chunk_kib=bus.CHUNK_BYTES // 2**10,
        encoding=payloads.ENCODING,
        kept=bus.FETCHED_KEPT,
        grace=bus.PAYLOAD_GRACE_SECONDS / 86400,
        payload_days=bus.BUCKETS[0].max_age / 86400,
        event_days=bus.EVENTS_MAX_AGE_SECONDS / 86400,
        max_mib=bus.MAX_MESSAGE_BYTES // 2**20,
        ack_wait=bus.ACK_WAIT_SECONDS,
        backoff=", ".join(f"{b:g}" for b in bus.BACKOFF_SECONDS),
        max_deliver=bus.MAX_DELIVER,
        hold=bus.HOLD_RETRY_SECONDS[-1],
        decimal_limit=f"1e{bounds.DECIMAL_LIMIT.adjusted()}",
        decimal_places=bounds.DECIMAL_PLACES,
    )
    out = [intro.rstrip("\n"), *field_rows(Event, set()), ""]
    for entry in examples():
        kind = entry.kind
        subject = kind.topic.subject("demo" if kind is not StrategyReturnReported else "trend")
        out += [
            f"## {kind.__name__}",
            "",
            inspect.cleandoc(kind.__doc__ or ""),
            "",
            f"- subject: `{subject}`",
            f"- producer: {entry.producer}",
            f"- consumers: {', '.join(entry.consumers)}",
            "",
        ]
        rows = field_rows(kind, ENVELOPE)
        if rows:
            out += ["| field | type | |", "| --- | --- | --- |", *rows, ""]
        out += ["```json", json.dumps(json.loads(entry.example.model_dump_json()), indent=2), "```", ""]
    out += [
        "## DeadLettered",
        "",
        inspect.cleandoc(DeadLettered.__doc__ or ""),
        "",
        "- subject: `rebal.dlq.<service>` (stream `REBAL_DLQ`)",
        "- producer: every service; consumers: operators (`nats sub 'rebal.dlq.>'`)",
        "",
        "| field | type | |",
        "| --- | --- | --- |",
        *field_rows(DeadLettered, set()),
        "",
        "Shared payload parts:",
        "",
        "| PlannedOrder field | type | |",
        "| --- | --- | --- |",
        *field_rows(PlannedOrder, set()),
        "",
        "| ProjectedWeight field | type | |",
        "| --- | --- | --- |",
        *field_rows(ProjectedWeight, set()),
        "",
        "| PayloadRef field | type | |",
        "| --- | --- | --- |",
        *field_rows(PayloadRef, set()),
        "",
        "Topics in code: "
        + ", ".join(f"`{t.name}`" for t in subjects.EVENT_TOPICS + subjects.COMMAND_TOPICS)
        + ".",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())

"""The messages Rebal services exchange: one envelope, frozen pydantic models, versioned.

Every event carries an envelope: its id (derived from its cause, so a redelivered trigger recomputes
the same id and the bus drops the duplicate), when it happened and when it was emitted (UTC), the
correlation id (the rebalance run), the causation id (the message that caused it) and the portfolio.
Breaking changes get a new `version` and a new subject (see `rebal.subjects`).

Quantities, prices and money are decimals, carried as strings in JSON.

Every value is checked where it enters (`rebal.core.bounds`): text that Postgres can store (no NUL, no
lone surrogate; in the trees too), finite decimals below 1e30 with at most 100 decimal places, times in
1970..2100 UTC, period returns of at least -1. A message that breaks one is refused on its own content.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from rebal import subjects
from rebal.core import bounds
from rebal.io import document_text_problem
from rebal.subjects import Topic

NAMESPACE = uuid.UUID("6f0c8f0e-6a43-5f7b-9a57-2d0cb1f3e0a1")
PortfolioId = Annotated[str, AfterValidator(lambda v: subjects.check_token(v, "portfolio"))]
StrategyId = Annotated[str, AfterValidator(lambda v: subjects.check_token(v, "strategy"))]
Side = Literal["buy", "sell"]
# An operator's transfer task (`rebal_executor.execution.bank.task_id`): ``bt-`` and 12 hex digits.
TaskId = Annotated[str, StringConstraints(pattern=r"^bt-[0-9a-f]{12}$")]
E = TypeVar("E", bound="Event")
# The bounds of `rebal.core.bounds`, as pydantic's own constraints (checked in its compiled core: a
# Python validator per field made a 10k-order plan 4x slower to read). tests/bus/test_entry_values.py
# holds these and the bounds' functions (used by the returns files) to the same answers.
TIME_FROM = datetime.fromtimestamp(bounds.TIME_FROM, UTC)
TIME_UNTIL = datetime.fromtimestamp(bounds.TIME_UNTIL, UTC)
Text = Annotated[str, StringConstraints(pattern=bounds.TEXT_PATTERN)]
Moment = Annotated[AwareDatetime, Field(ge=TIME_FROM, lt=TIME_UNTIL)]
# A decimal a service computed from checked inputs: finite and within the size bound.
Number = Annotated[Decimal, Field(gt=-bounds.DECIMAL_LIMIT, lt=bounds.DECIMAL_LIMIT)]  # finite: the default
# A decimal from outside (a bot, an operator): also at most `bounds.DECIMAL_PLACES` decimal places.
Entered = Annotated[Number, Field(decimal_places=bounds.DECIMAL_PLACES)]
PeriodReturn = Annotated[Entered, Field(ge=bounds.MIN_RETURN)]


def _check_document(document: dict[str, Any]) -> dict[str, Any]:
    problem = document_text_problem(document)
    if problem is not None:
        raise ValueError(f"a string in it {problem}")
    return document


Document = Annotated[dict[str, Any], AfterValidator(_check_document)]


def derive_id(*parts: object) -> uuid.UUID:
    """A deterministic id from what caused it: the same cause gives the same id."""
    return uuid.uuid5(NAMESPACE, "|".join(str(part) for part in parts))


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def trusted(cls, rows: Iterable[Sequence[Any]]) -> tuple[Self, ...]:
        """Models from rows of field values in declaration order that the pure core made (already exact
        and typed), without validating them again: what `model_construct` does, ~3x faster than
        validation for the 10k-order plans. Events made this way are checked against validated ones in
        tests (`tests/planner/test_planning.py`); a consumer validates every event it receives."""
        names = tuple(cls.model_fields)
        fields_set = frozenset(names)
        new, assign = object.__new__, object.__setattr__
        made = []
        for row in rows:
            model = new(cls)
            assign(model, "__dict__", dict(zip(names, row, strict=True)))
            assign(model, "__pydantic_fields_set__", set(fields_set))  # each its own, as validation gives
            assign(model, "__pydantic_extra__", None)
            assign(model, "__pydantic_private__", None)
            made.append(model)
        return tuple(made)


class Event(Frozen):
    """The envelope. Subclasses set `topic` and a literal `type`."""

    topic: ClassVar[Topic]

    type: str  # a literal in every subclass
    version: Literal[1] = 1
    event_id: uuid.UUID
    occurred_at: Moment
    emitted_at: Moment
    portfolio_id: PortfolioId
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None

    @property
    def subject(self) -> str:
        return self.topic.subject(self.subject_key)

    @property
    def subject_key(self) -> str:
        return self.portfolio_id

    def caused(self, kind: builtins.type[E], *, now: datetime, key: object = "", **fields: Any) -> E:
        """A follow-up event: same portfolio and run, caused by this one, id derived from this one."""
        return kind(
            type=kind.__name__,
            event_id=caused_id(kind, self.event_id, key),
            occurred_at=fields.pop("occurred_at", now),
            emitted_at=now,
            portfolio_id=self.portfolio_id,
            correlation_id=fields.pop("correlation_id", self.correlation_id),
            causation_id=self.event_id,
            **fields,
        )


def caused_id(kind: builtins.type[Event], cause_id: uuid.UUID, key: object = "") -> uuid.UUID:
    """The id of the `kind` event caused by event `cause_id` (`Event.caused`): whoever waits for the answer
    to a command finds it by this id."""
    return derive_id(kind.__name__, cause_id, key)


def derive_run_id(cause: Event) -> uuid.UUID:
    """The run a message starts, derived from it: a command (`StartRebalance`, `ApprovePlan`), or the new
    snapshot or target a preview is made for. A redelivered cause gives the same run, and the planner,
    the CLI and the API that wait for the run all name it with this one rule."""
    return derive_id("run", cause.event_id)


# Commands (operators, the CLI, the API).


class StartRebalance(Event):
    """Plan a rebalance now; execute it unless `dry_run`."""

    topic = subjects.START_REBALANCE
    type: Literal["StartRebalance"] = "StartRebalance"
    dry_run: bool = True
    band: Entered = Field(default=Decimal(0), ge=0)
    requested_by: Text = "operator"


class ApprovePlan(Event):
    """Execute exactly the preview `plan_id` (a dry-run `RebalancePlanned`): the planner publishes it again
    as a live plan, its run derived from this command, or a `PlanFailed` naming why not (unknown, not a
    preview, or taken after `expires_at`)."""

    topic = subjects.APPROVE_PLAN
    type: Literal["ApprovePlan"] = "ApprovePlan"
    plan_id: uuid.UUID
    expires_at: AwareDatetime
    requested_by: str = "operator"


class SetTarget(Event):
    """An operator's desired tree for the portfolio (`rebal target set`, `PUT /portfolio/targets`), stored
    by the API as `target_version`: the optimizer publishes it as the portfolio's `TargetWeightsComputed` and,
    for a portfolio with an allocation, applies the allocation's weights to its strategy nodes from then
    on. A manual target takes precedence over the optimizer's target file."""

    topic = subjects.SET_TARGET
    type: Literal["SetTarget"] = "SetTarget"
    target_version: int = Field(ge=1)
    tree: dict[str, Any]
    author: str = Field(min_length=1, max_length=128)
    note: str = ""
    requested_by: str = "operator"


class TakeSnapshot(Event):
    """Read the venues' balances now and publish a snapshot."""

    topic = subjects.TAKE_SNAPSHOT
    type: Literal["TakeSnapshot"] = "TakeSnapshot"


class HaltTrading(Event):
    """The kill switch: cancel our open orders and refuse new runs for the portfolio until resumed."""

    topic = subjects.HALT_TRADING
    type: Literal["HaltTrading"] = "HaltTrading"
    reason: Text = ""
    requested_by: Text = "operator"


class ResumeTrading(Event):
    """Lift a halt: runs are accepted again."""

    topic = subjects.RESUME_TRADING
    type: Literal["ResumeTrading"] = "ResumeTrading"
    requested_by: Text = "operator"


class HaltApplied(Event):
    """The executor's acknowledgement of the `HaltTrading` named by `causation_id`: the halt is recorded
    (it survives restarts), new runs are refused and a running one stops before its next leg; our open
    orders are being cancelled. `in_force` is false when a newer resume was recorded first. The API's
    `POST /halt` waits for it; `/status` shows a halt without it as pending."""

    topic = subjects.HALT_APPLIED
    type: Literal["HaltApplied"] = "HaltApplied"
    reason: Text = ""
    in_force: bool = True


class ConfirmTransfer(Event):
    """An operator says a transfer task is done (`rebal transfer confirm ID`, `POST /transfers/{id}/confirm`):
    the money of transfer task `task_id` arrived, `received` of it (None: the planned amount). The executor
    answers with a `TransferConfirmed` caused by this command and resumes the run's buys that waited."""

    topic = subjects.CONFIRM_TRANSFER
    type: Literal["ConfirmTransfer"] = "ConfirmTransfer"
    task_id: TaskId
    received: Annotated[Entered, Field(ge=0)] | None = None
    requested_by: Text = "operator"


class RunOptimization(Event):
    """Allocate the portfolio's capital across its strategies now (the optimizer answers with a
    `TargetWeightsComputed` or an `OptimizationFailed` caused by this command)."""

    topic = subjects.RUN_OPTIMIZATION
    type: Literal["RunOptimization"] = "RunOptimization"
    requested_by: Text = "operator"


# Facts.


class PayloadRef(Frozen):
    """Where the large part of an event travels when it is too big for a message (`rebal.payloads`): an
    object of a JetStream Object Store bucket, its SHA-256 digest (as NATS writes it) and size, and its
    encoding. The event's large fields are empty on the wire; a consumer fetches the object once, checks
    the digest and reads the fields from it. The bucket keeps it as long as the stream keeps the event."""

    bucket: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    name: Annotated[str, StringConstraints(pattern=r"^[-/_=.A-Za-z0-9]{1,255}$")]
    digest: Annotated[str, StringConstraints(pattern=r"^SHA-256=[A-Za-z0-9_-]{43}=$")]
    size: int = Field(ge=0)
    encoding: Literal["rebal-columns-v1+deflate"]


class BalanceSnapshotTaken(Event):
    """The real tree as the venues report it, with the prices and markets used to value it (by reference
    in `payload_ref` when large); `contracts` the perpetual contracts of the venues of its futures
    accounts (`rebal.core.contracts`), with their mark prices."""

    topic = subjects.BALANCE_SNAPSHOT_TAKEN
    type: Literal["BalanceSnapshotTaken"] = "BalanceSnapshotTaken"
    tree: Document
    prices: Document
    markets: Document | None = None
    contracts: Document | None = None
    payload_ref: PayloadRef | None = None


class Optimization(Frozen):
    """How the optimizer allocated the portfolio across its strategies (the `portfolio_config.json`
    numbers, with the method and its inputs). Weights are of the strategies (sum 1, before leverage);
    volatilities are annualised. In reconciler mode, `targets` is the value wanted per instrument and
    `notes` says what could not be followed (a short on spot, more than the account holds)."""

    method: Text
    parameters: dict[Text, float] = Field(default_factory=dict)
    weights: dict[Text, float]
    realised_volatility: float | None
    target_volatility: float
    leverage: float
    account_value: Number
    status: Text
    observations: int
    trigger: Text
    mode: Literal["weights", "reconciler"] = "weights"
    targets: dict[Text, Number] | None = None
    notes: tuple[Text, ...] = ()


class TargetWeightsComputed(Event):
    """The desired tree (weights at any level) the portfolio should be brought to; `optimization` when
    the optimizer allocated it across strategies (the strategies are nodes of the tree)."""

    topic = subjects.TARGET_WEIGHTS_COMPUTED
    type: Literal["TargetWeightsComputed"] = "TargetWeightsComputed"
    tree: Document
    source: Text = "file"
    optimization: Optimization | None = None
    payload_ref: PayloadRef | None = None


class OptimizationFailed(Event):
    """No allocation: too little data, an infeasible problem or a solver failure (the reason says which).
    The previous target stays in force."""

    topic = subjects.OPTIMIZATION_FAILED
    type: Literal["OptimizationFailed"] = "OptimizationFailed"
    method: Text
    reason: Text
    trigger: Text


class PlannedOrder(Frozen):
    """One order of a plan; `after_transfer` the index in the plan's `transfers` of the transfer whose
    arrival it waits for (a sell of what is moved to a better venue: the executor runs it once that
    transfer is credited and sells at most what arrived), or None. A where-mode plan's order says why it
    trades there (`reason`) and what that saves against the plain choice (`est_saving`, valuation
    currency); None in other plans (and in plans made before the fields)."""

    account: Text
    exchange: Text
    symbol: Text
    side: Side
    amount: Number
    est_price: Number
    est_cost: Number
    est_fee: Number
    phase: int
    after_transfer: int | None = Field(default=None, ge=0)
    reason: Text | None = None
    est_saving: Number | None = None


class PlannedTransfer(Frozen):
    """`amount` of `asset` from one account to another; the destination receives `amount - fee`
    (`network` the network the planner chose with a network file, its `fee` in the asset; None and 0
    without one). `manual`: one side is a bank or broker account without an API (`"kind": "bank"`): the
    transfer is an operator's task, not a withdrawal (plans made before the field read false). A
    where-mode plan's transfer says why it moves (`reason`) and what that saves (`est_saving`)."""

    asset: Text
    from_account: Text
    to_account: Text
    amount: Number
    est_value: Number
    network: Text | None = None
    fee: Number = Decimal(0)
    manual: bool = False
    reason: Text | None = None
    est_saving: Number | None = None


class PlanCosts(Frozen):
    """A where-mode plan's estimated costs in the valuation currency (docs/formats.md): trading fees,
    spreads against the reference prices, the transfers' network fees, and their total."""

    fees: Number
    spread: Number
    withdrawal_fees: Number
    total: Number


class PlannedPositionOrder(Frozen):
    """An order on a futures account's perpetual (`rebal.core.position_plan`): `reduce_only` ones (phase 1)
    only reduce or close a position; the others (phase 2) open or increase one."""

    account: Text
    exchange: Text
    symbol: Text
    side: Side
    amount: Number
    reduce_only: bool
    est_price: Number
    est_notional: Number
    est_fee: Number
    phase: int


class PlannedPositionSetting(Frozen):
    """What the executor sets on a symbol before its opening order (None: left as it is)."""

    account: Text
    exchange: Text
    symbol: Text
    leverage: int | None
    margin_mode: Literal["cross", "isolated"] | None


class SkippedOrder(Frozen):
    path: Text
    symbol: Text
    side: Side
    amount: Number
    reason: Text


class ProjectedWeight(Frozen):
    """A node operators are shown (the top level, sectors, strategies): its weight in its parent now, and
    the weight the plan brings it to; `affected_by_skips` when a skipped order below it leaves it short."""

    path: Text
    current_weight: Number
    projected_weight: Number
    affected_by_skips: bool


class PlannedBudget(Frozen):
    """What a run may spend of `asset` on an account: the free amount the snapshot showed, less what the
    owners' locks hold, with the plan's transfers in and out. The executor adds what the run's own fills
    yield and never spends beyond it, whatever the venue shows free (a deposit mid-run, a bot's quote)."""

    exchange: Text
    account: Text
    asset: Text
    amount: Number


class RebalancePlanned(Event):
    """An order plan. A dry-run plan is shown, never executed. `correlation_id` is the run.
    `projected_weights` are the shown nodes' weights before and after (none for a fund's phase).
    `position_orders` and `position_settings` are the futures accounts' part (their skips are in
    `skipped`, the account's path as theirs).

    What it was made from: the snapshot (`snapshot_id`, taken at `snapshot_taken_at`) and the target
    (`target_id`, its version). The executor refuses a plan whose snapshot is not newer than the end of the
    portfolio's last run (a second trigger on the same facts would trade again). `budgets`: what each
    account may spend. Plans without them (older plans, fund cycles) are executed as before. A large plan
    travels with its orders, transfers, skips, weights and budgets by reference (`payload_ref`)."""

    topic = subjects.REBALANCE_PLANNED
    type: Literal["RebalancePlanned"] = "RebalancePlanned"
    dry_run: bool
    band: Number
    snapshot_id: uuid.UUID
    target_id: uuid.UUID
    total_value: Number
    orders: tuple[PlannedOrder, ...]
    transfers: tuple[PlannedTransfer, ...] = ()
    skipped: tuple[SkippedOrder, ...] = ()
    projected_weights: tuple[ProjectedWeight, ...] = ()
    snapshot_taken_at: AwareDatetime | None = None
    budgets: tuple[PlannedBudget, ...] = ()
    position_orders: tuple[PlannedPositionOrder, ...] = ()
    position_settings: tuple[PlannedPositionSetting, ...] = ()
    payload_ref: PayloadRef | None = None
    # A where-mode plan's estimated costs (None: any other plan, and plans made before the field).
    costs: PlanCosts | None = None

    @model_validator(mode="after")
    def _waits_for_a_transfer_it_has(self) -> Self:
        count = len(self.transfers)
        for leg, order in enumerate(self.orders):
            if order.after_transfer is not None and order.after_transfer >= count:
                raise ValueError(
                    f"orders[{leg}].after_transfer: {order.after_transfer} names no transfer "
                    f"(the plan has {count})"
                )
        return self


class TriggerBreach(Frozen):
    """A node outside its band when the autopilot fired: weights of its parent, `limit` the largest
    |current - desired| the band allows (docs/formats.md, "rebal trigger")."""

    path: Text
    current_weight: Number
    desired_weight: Number
    limit: Number
    band: Literal["absolute", "relative"]


class RebalanceTriggered(Event):
    """The autopilot decided to rebalance the portfolio: its policy (version `policy_version`) fired on
    snapshot `snapshot_id` and target `target_id`, for `reasons` (sentences starting with their code, as
    `rebal trigger` gives them). `correlation_id` is the run it starts; the run follows `mode`: `auto` (the
    plan that follows executes), `approve` (the plan is a preview an operator approves with `ApprovePlan`
    before `approval_expires_at`), `notify` (no plan: operators are told). `replan` counts the fresh plans
    made after a run of this trigger stopped because prices moved (0: the first plan)."""

    topic = subjects.REBALANCE_TRIGGERED
    type: Literal["RebalanceTriggered"] = "RebalanceTriggered"
    mode: Literal["auto", "approve", "notify"]
    kind: Literal["full", "buy_only"]
    scope: Literal["portfolio", "breaching"]
    reasons: tuple[Text, ...]
    breaches: tuple[TriggerBreach, ...] = ()
    snapshot_id: uuid.UUID
    target_id: uuid.UUID
    policy_version: int = Field(ge=1)
    next_scheduled: Moment | None = None
    replan: int = Field(default=0, ge=0)
    approval_expires_at: Moment | None = None


class PlanFailed(Event):
    """No plan could be made: bad input (the reason names the node path) or a missing snapshot/target.
    `correlation_id` is the run that failed (always set: the journal keeps the failure as that run).
    `unknown_portfolio`: no service is configured for the portfolio and nothing was ever published for it
    (the CLI exits 2 and the API answers 404 for it)."""

    topic = subjects.PLAN_FAILED
    type: Literal["PlanFailed"] = "PlanFailed"
    correlation_id: uuid.UUID
    reason: Text
    dry_run: bool
    unknown_portfolio: bool = False


class RunStarted(Event):
    topic = subjects.RUN_STARTED
    type: Literal["RunStarted"] = "RunStarted"
    plan_id: uuid.UUID
    orders: int


class OrderPlaced(Event):
    """An order sent to a venue; `client_order_id` is derived from the run and the leg."""

    topic = subjects.ORDER_PLACED
    type: Literal["OrderPlaced"] = "OrderPlaced"
    client_order_id: Text
    account: Text
    exchange: Text
    symbol: Text
    side: Side
    amount: Number
    phase: int


class OrderFilled(Event):
    """A fill, recorded once by its trade id."""

    topic = subjects.ORDER_FILLED
    type: Literal["OrderFilled"] = "OrderFilled"
    client_order_id: Text
    trade_id: Text
    symbol: Text
    side: Side
    amount: Number
    price: Number
    fee: Number
    fee_asset: Text


RunStatus = Literal[
    "completed",
    "completed_with_adjustments",
    "cancelled",
    "cancelled_mid_run",
    "replan_needed",
    "error",
    "timed_out",
]


class RunFinished(Event):
    """How a run ended, with every order's outcome; `skipped` counts the orders the plan itself skipped
    (below a minimum, no market) too. Those are listed, each with its reason, in the plan
    (`RebalancePlanned.skipped`); `reasons` are the executor's own."""

    topic = subjects.RUN_FINISHED
    type: Literal["RunFinished"] = "RunFinished"
    plan_id: uuid.UUID
    status: RunStatus
    placed: int
    filled: int
    skipped: int
    failed: int
    reasons: tuple[Text, ...] = ()


class TransferTaskOpened(Event):
    """A run's transfer to or from a bank account waits for an operator (`task_id`, the plan's transfer
    `transfer`): move `amount` of `asset` from `from_account` to `to_account`, then confirm it before
    `expires_at`; the buys it funds wait. `correlation_id` is the run."""

    topic = subjects.TRANSFER_TASK_OPENED
    type: Literal["TransferTaskOpened"] = "TransferTaskOpened"
    task_id: TaskId
    plan_id: uuid.UUID
    transfer: int = Field(ge=0)
    asset: Text
    from_account: Text
    to_account: Text
    amount: Number
    expires_at: Moment


class TransferConfirmed(Event):
    """The executor's answer to the `ConfirmTransfer` named by `causation_id`: task `task_id` is confirmed
    with `received` (spent at most by the buys that waited). `already_confirmed`: it was confirmed before,
    and this command changed nothing (the first confirmation's amount stands).

    The transfer itself (`asset`, `from_account`, `to_account`, `amount`: what was asked to move, so what
    left the sender; `received`: what arrived) keeps the tracker's ledger of bank accounts; events of
    executors before these fields read None and move no bank balance."""

    topic = subjects.TRANSFER_CONFIRMED
    type: Literal["TransferConfirmed"] = "TransferConfirmed"
    task_id: TaskId
    plan_id: uuid.UUID
    received: Number
    confirmed_at: Moment
    requested_by: Text
    already_confirmed: bool = False
    asset: Text | None = None
    from_account: Text | None = None
    to_account: Text | None = None
    amount: Number | None = None


class TransferTaskExpired(Event):
    """Transfer task `task_id` was not confirmed in time (or its run was halted): the buys it funded were
    not placed and the run ended partial. An alert."""

    topic = subjects.TRANSFER_TASK_EXPIRED
    type: Literal["TransferTaskExpired"] = "TransferTaskExpired"
    task_id: TaskId
    plan_id: uuid.UUID
    reason: Text


class StrategyReturnReported(Event):
    """A bot's return for one period (its idempotency key is strategy + timestamp)."""

    topic = subjects.STRATEGY_RETURN_REPORTED
    type: Literal["StrategyReturnReported"] = "StrategyReturnReported"
    strategy_id: StrategyId
    timestamp: Moment
    period_return: PeriodReturn
    equity: Entered | None = None
    positions: dict[Text, Entered] | None = None

    @property
    def subject_key(self) -> str:
        return self.strategy_id


# Funds: users' deposits and withdrawals on a fund, and the fund's cycles. The portfolio id of these
# events is the fund's id.


class DefineFund(Event):
    """Create or change a fund: the account it trades on, its cash (`quote`) and its target weights
    (asset -> weight, summing to 1; the quote's weight stays cash). `prices_from` is the portfolio whose
    balance snapshots price the fund's assets (its markets and prices)."""

    topic = subjects.DEFINE_FUND
    type: Literal["DefineFund"] = "DefineFund"
    exchange: Text
    account: Text
    quote: Text
    weights: dict[Text, Entered]
    prices_from: PortfolioId
    requested_by: Text = "operator"


class RecordDeposit(Event):
    """A user's deposit arrived on the fund's account: credit it (`reference` names the transfer; the
    command's id derives from it, so recording the same transfer twice credits it once)."""

    topic = subjects.RECORD_DEPOSIT
    type: Literal["RecordDeposit"] = "RecordDeposit"
    user_id: Text = Field(min_length=1, max_length=128)
    amount: Entered = Field(gt=0)
    reference: Text
    requested_by: Text = "operator"


class RequestWithdrawal(Event):
    """A user asks for `amount` of the fund's quote (after fees), or for everything (`amount` None)."""

    topic = subjects.REQUEST_WITHDRAWAL
    type: Literal["RequestWithdrawal"] = "RequestWithdrawal"
    user_id: Text = Field(min_length=1, max_length=128)
    amount: Entered | None = Field(default=None, gt=0)
    reference: Text
    requested_by: Text = "operator"


class RunFundCycle(Event):
    """Net what is due on the fund now (deposits to invest, withdrawals; a rebalance when `rebalance`)."""

    topic = subjects.RUN_FUND_CYCLE
    type: Literal["RunFundCycle"] = "RunFundCycle"
    rebalance: bool = False
    requested_by: Text = "operator"


class FundDefined(Event):
    topic = subjects.FUND_DEFINED
    type: Literal["FundDefined"] = "FundDefined"
    exchange: Text
    account: Text
    quote: Text
    weights: dict[Text, Number]
    prices_from: PortfolioId


class FundDeposited(Event):
    """The deposit is on the user's ledger as cash at once; a later cycle invests it."""

    topic = subjects.FUND_DEPOSITED
    type: Literal["FundDeposited"] = "FundDeposited"
    user_id: Text
    amount: Number
    cash: Number


class FundWithdrawalRequested(Event):
    topic = subjects.FUND_WITHDRAWAL_REQUESTED
    type: Literal["FundWithdrawalRequested"] = "FundWithdrawalRequested"
    user_id: Text
    amount: Number | None


class FundCommandRejected(Event):
    """A fund command that could not be carried out, and why (unknown fund, more than the holdings...)."""

    topic = subjects.FUND_COMMAND_REJECTED
    type: Literal["FundCommandRejected"] = "FundCommandRejected"
    command: Text
    user_id: Text = ""
    reason: Text


class FundCyclePlanned(Event):
    """One phase of a fund cycle (1: net sells, 2: net buys sized from the actual cash) sent as the
    `RebalancePlanned` of run `correlation_id`, with what netting saved."""

    topic = subjects.FUND_CYCLE_PLANNED
    type: Literal["FundCyclePlanned"] = "FundCyclePlanned"
    cycle_id: uuid.UUID
    phase: int
    deposits: int
    withdrawals: int
    rebalance: bool
    orders: int
    user_orders: int
    user_fees: Number
    net_fees: Number
    skipped: tuple[Text, ...] = ()


class FundCycleSettled(Event):
    """A cycle allocated to the users: what each withdrawal paid out (and any shortfall), the venue fees."""

    topic = subjects.FUND_CYCLE_SETTLED
    type: Literal["FundCycleSettled"] = "FundCycleSettled"
    cycle_id: uuid.UUID
    paid: dict[Text, Number]
    short: dict[Text, Number] = Field(default_factory=dict)
    fees: Number
    # Fees the venue took in an asset the users' ledgers are not charged in (a third asset such as BNB).
    unallocated_fees: dict[Text, Number] = Field(default_factory=dict)


class FundNeedsAdjustment(Event):
    """The fund cannot trade (a delisted or inactive market, no price): its running cycle is cancelled."""

    topic = subjects.FUND_NEEDS_ADJUSTMENT
    type: Literal["FundNeedsAdjustment"] = "FundNeedsAdjustment"
    reasons: tuple[Text, ...]
    cancelled: int


class DeadLettered(Frozen):
    """A message a service could not read: the raw payload, where it came from and why."""

    service: str
    subject: str
    payload: str
    encoding: Literal["utf-8", "base64"]
    headers: dict[str, str]
    error: str
    received_at: AwareDatetime


EVENT_TYPES: dict[str, type[Event]] = {
    kind.__name__: kind
    for kind in (
        StartRebalance,
        ApprovePlan,
        TakeSnapshot,
        HaltTrading,
        ResumeTrading,
        BalanceSnapshotTaken,
        TargetWeightsComputed,
        RebalancePlanned,
        PlanFailed,
        RebalanceTriggered,
        RunStarted,
        OrderPlaced,
        OrderFilled,
        RunFinished,
        HaltApplied,
        DefineFund,
        RecordDeposit,
        RequestWithdrawal,
        RunFundCycle,
        FundDefined,
        FundDeposited,
        FundWithdrawalRequested,
        FundCommandRejected,
        FundCyclePlanned,
        FundCycleSettled,
        FundNeedsAdjustment,
        StrategyReturnReported,
        RunOptimization,
        OptimizationFailed,
        SetTarget,
        ConfirmTransfer,
        TransferTaskOpened,
        TransferConfirmed,
        TransferTaskExpired,
    )
}


def new_event(kind: type[E], *, key: object, now: datetime, portfolio_id: str, **fields: Any) -> E:
    """A first event (no cause on the bus): its id is derived from `key`, which names what it is about."""
    return kind(
        type=kind.__name__,
        event_id=derive_id(kind.__name__, portfolio_id, key),
        occurred_at=fields.pop("occurred_at", now),
        emitted_at=now,
        portfolio_id=portfolio_id,
        **fields,
    )

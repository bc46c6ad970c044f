"""One policy replayed over a price history, through the same core as the live system.

At every row, in this order: the row's cash flow lands (a deposit in the first cash wallet; a
withdrawal from the cash wallets, what they lack raised by selling every other wallet pro rata through
the planner); the policy's trigger is evaluated on the diff at the row's prices (`evaluate`, as
`rebal trigger` does), with `now` the row's time and `last_rebalance` the time of the last row that
rebalanced; when it fires, the planner (`plan_rebalance` on `planned_diff`: the whole diff, the
breaching part or the buy-only part) plans at the row's prices and the plan fills at those prices
(`rebal.core.backtest.book`). Nothing looks ahead: a row sees its own prices and the past.

Between trades the screen (`rebal.core.backtest.screen`) values whole blocks of rows at once and
proposes the rows where the trigger may fire; only those reach `evaluate` and, when it fires, the planner.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rebal.core.backtest.book import Book, Filled, Layout, deposit, fill_plan, withdraw_cash
from rebal.core.backtest.history import History
from rebal.core.backtest.references import FillRule, fill_like
from rebal.core.backtest.screen import BLOCK_CELLS, MARGIN, Batch, Block, Screen, cash_due, drift_of
from rebal.core.diff import SMALL_NODES, DiffShape, DiffTree, roll_up, with_desired
from rebal.core.errors import InputError
from rebal.core.market import Markets, Route
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.policy import Decision, Policy, evaluate, planned_diff
from rebal.core.tree import FloatArray, IntArray, Tree, assembled

NONE, FULL, BUY_ONLY = 0, 1, 2
KINDS = {"full": FULL, "buy_only": BUY_ONLY}
# A withdrawal the cash cannot pay sells this much more than it lacks, so that fees and steps do not
# leave it short (what is left over stays cash).
WITHDRAWAL_SLACK = 0.01
# Rows the screen values first, and after a proposal as many as the last interval between proposals
# (at least LEAST_SPAN); doubled after each block where nothing fires. A trigger tends to fire again
# after about as long as last time: the rows valued past the next proposal are wasted.
FIRST_SPAN = 16
LEAST_SPAN = 4
Int8Array = npt.NDArray[np.int8]
# Results `_Shared` keeps of each kind (the policies side by side meet at a row within a few rounds);
# then the oldest goes.
SHARED_KEPT = 32


class Overdrawn(InputError):
    """A withdrawal larger than the portfolio's free value at its row: nothing could pay it, and the
    figures after it (a portfolio worth nothing or less) could not be true. Bad flows, not an outcome."""

    def __init__(self, row: int, wanted: float, held: float, name: str = "") -> None:
        self.row, self.wanted, self.held, self.name = row, wanted, held, name
        held_by = f"{name}: " if name else ""
        super().__init__(
            f"row {row}",
            f"withdrawing {wanted:,.2f} takes more than the portfolio holds ({held_by}{held:,.2f})",
            "flows",
        )

    def under(self, name: str) -> Overdrawn:
        """The same error, naming the policy (or reference) whose portfolio could not pay it."""
        return Overdrawn(self.row, self.wanted, self.held, name)


@dataclass(frozen=True)
class Trade:
    """A rebalance: its row, the core's decision, and (when recorded) the real tree before and after."""

    row: int
    decision: Decision
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Run:
    """A policy's replay, per row: free value after the row's flow and trades, the flow, what trading
    cost, the largest wallet drift (a share of the portfolio) and what kind of rebalance happened."""

    value: FloatArray
    flow: FloatArray
    fees: FloatArray
    traded: FloatArray
    orders: IntArray
    drift: FloatArray
    kind: Int8Array
    trades: tuple[Trade, ...]
    evaluations: int  # rows the core evaluated (the screen's proposals, or every row)

    @property
    def rebalances(self) -> int:
        return int(np.count_nonzero(self.kind))


@dataclass(eq=False)
class _Shared:
    """What the policies replayed side by side (`replay_all`) work out once for all of them. Their books
    start from the same document and often hold the same amounts at a row (every policy starts at the
    target; two whose triggers fire at the same rows trade the same): the same book at the same row
    makes the same diff, a plan of that diff is the same plan, and its fill leaves the same amounts.
    Each result is kept under what makes it (the book's parsed tree and amounts, the row; the diff;
    the plan and the fill's minimum), with the object its key names by identity."""

    parses: dict[str, Tree] = field(default_factory=dict)
    shapes: dict[int, tuple[Tree, DiffShape]] = field(default_factory=dict)
    layouts: dict[int, tuple[Tree, Layout]] = field(default_factory=dict)
    diffs: dict[tuple[int, int, bool, bytes], tuple[Tree, DiffTree]] = field(default_factory=dict)
    plans: dict[int, tuple[DiffTree, Plan]] = field(default_factory=dict)
    fills: dict[tuple[int, float | None], tuple[Plan, FloatArray, Filled]] = field(default_factory=dict)


def _keep(kept: dict[Any, Any], key: Any, value: Any) -> None:
    if len(kept) >= SHARED_KEPT:
        del kept[next(iter(kept))]
    kept[key] = value


@dataclass
class _State:
    history: History
    target: Tree
    markets: Markets
    policy: Policy
    book: Book
    fill_rule: FillRule
    record: bool
    last: int | None
    shared: _Shared
    value: FloatArray = field(init=False)
    flow: FloatArray = field(init=False)
    fees: FloatArray = field(init=False)
    traded: FloatArray = field(init=False)
    orders: IntArray = field(init=False)
    drift: FloatArray = field(init=False)
    kind: Int8Array = field(init=False)
    trades: list[Trade] = field(default_factory=list)
    evaluations: int = 0
    _layout: tuple[int, Layout] | None = None
    _shape: tuple[int, DiffShape] | None = None
    _due: tuple[int, int | None, int] | None = None  # `_due_after_last`, for the last rebalance

    def __post_init__(self) -> None:
        rows = len(self.history)
        self.value, self.flow = np.zeros(rows), np.zeros(rows)
        self.fees, self.traded = np.zeros(rows), np.zeros(rows)
        self.orders = np.zeros(rows, dtype=np.int64)
        self.drift = np.zeros(rows)
        self.kind = np.zeros(rows, dtype=np.int8)

    def price_of(self, row: int) -> Mapping[str, float]:
        return self.history.row_values(row)

    def diff(self, row: int) -> DiffTree:
        """`diff_trees` of the book at the row's prices, the book's shape matched to the target once
        (another policy's when its book was the same at this row: `_Shared`)."""
        book = self.book
        real = book.tree()
        parsed = book.parsed
        key = (row, id(parsed), real is parsed, book.amount.tobytes())
        known = self.shared.diffs.get(key)
        if known is not None and known[0] is parsed:
            return known[1]
        shape, history = self.shape(row), self.history
        made = shape.diff(real, history.row_prices(row), history.price_table(shape.asset_names, row))
        _keep(self.shared.diffs, key, (parsed, made))
        return made

    def shape(self, row: int) -> DiffShape:
        """The book's shape matched to the target (once per shape; `row` prices every asset)."""
        if self._shape is None or self._shape[0] != self.book.version:
            parsed = self.book.parsed
            known = self.shared.shapes.get(id(parsed))
            if known is None or known[0] is not parsed:
                prices = self.history.row_prices(row)
                known = (parsed, DiffShape.of(self.book.tree(), self.target, prices))
                _keep(self.shared.shapes, id(parsed), known)
            self._shape = (self.book.version, known[1])
        return self._shape[1]

    def layout(self, diff: DiffTree | None, row: int) -> Layout:
        if self._layout is None or self._layout[0] != self.book.version:
            parsed = self.book.parsed
            known = self.shared.layouts.get(id(parsed))
            if known is None or known[0] is not parsed:
                known = (parsed, Layout.of(diff or self.diff(row), self.book))
                _keep(self.shared.layouts, id(parsed), known)
            self._layout = (self.book.version, known[1])
        return self._layout[1]

    def plan(self, planned: DiffTree) -> Plan:
        """`plan_rebalance` of `planned` (another policy's plan of the same diff: `_Shared`)."""
        known = self.shared.plans.get(id(planned))
        if known is not None and known[0] is planned:
            return known[1]
        plan = plan_rebalance(planned, self.markets)
        _keep(self.shared.plans, id(planned), (planned, plan))
        return plan

    def fill(self, layout: Layout, plan: Plan, prices: Mapping[str, float]) -> Filled:
        """`fill_plan` of `plan` in the book (the amounts another policy's book was left with by the same
        plan from the same amounts, when the fill added no wallet: `_Shared`)."""
        book, minimum = self.book, self.policy.min_trade_value
        key = (id(plan), minimum)
        known = self.shared.fills.get(key)
        if known is not None and known[0] is plan:
            book.amount[:] = known[1]
            book.changed()
            return known[2]
        version = book.version
        filled = fill_plan(book, layout, plan, prices, minimum)
        if book.version == version:
            _keep(self.shared.fills, key, (plan, book.amount.copy(), filled))
        return filled

    def paid(self, row: int, filled: Filled) -> None:
        self.orders[row] += filled.orders
        self.traded[row] += filled.traded
        self.fees[row] += filled.fees

    def apply_flow(self, row: int, amount: float) -> None:
        prices = self.price_of(row)
        if amount >= 0:
            deposit(self.book, self.layout(None, row), amount, prices)
            self.flow[row] += amount
            return
        held = float(self.diff(row).current_value[0])
        if -amount > held:
            raise Overdrawn(row, -amount, held)
        short = withdraw_cash(self.book, self.layout(None, row), -amount, prices)
        if short > 0:
            diff = self.diff(row)
            others = diff.tree.wallet & ~diff.cash
            held = float(diff.current_value[others].sum())
            keep = max(0.0, 1.0 - short * (1 + WITHDRAWAL_SLACK) / held) if held > 0 else 1.0
            desired = np.where(others, diff.current_value * keep, diff.current_value)
            plan = plan_rebalance(with_desired(diff, roll_up(diff.tree, desired)), self.markets)
            self.paid(row, fill_plan(self.book, self.layout(diff, row), plan, prices, None))
            short = withdraw_cash(self.book, self.layout(None, row), short, prices)
        self.flow[row] -= -amount - short

    def decide(self, row: int) -> tuple[Decision, DiffTree]:
        self.evaluations += 1
        diff = self.diff(row)
        now = int(self.history.times[row])
        return evaluate(diff, self.policy, now=now, last_rebalance=self.last), diff

    def rebalance(self, row: int, decision: Decision, diff: DiffTree) -> None:
        planned = planned_diff(diff, decision)
        assert planned is not None and decision.kind is not None, "a rebalance has a kind"
        before = self.book.copy().doc if self.record else None
        layout = self.layout(diff, row)
        prices = self.price_of(row)
        if self.fill_rule == "rebal":
            filled = self.fill(layout, self.plan(planned), prices)
        else:
            filled = fill_like(self.fill_rule, self.book, layout, planned, self.markets, prices)
        self.paid(row, filled)
        self.kind[row] = KINDS[decision.kind]
        self.last = int(self.history.times[row])
        after = self.book.copy().doc if self.record else None
        self.trades.append(assembled(Trade, row=row, decision=decision, before=before, after=after))

    def record_block(self, block: Block, stop: int) -> None:
        count = stop - block.start
        self.value[block.start : stop] = block.value[:count]
        self.drift[block.start : stop] = block.drift[:count]

    def record_diff(self, row: int, diff: DiffTree) -> None:
        self.value[row] = float(diff.current_value[0])
        self.drift[row] = drift_of(diff)

    def due(self, at: int) -> int | None:
        """When the schedule is next due, seen from the row time `at` (None: never)."""
        schedule = self.policy.schedule
        if schedule is None:
            return None
        if self.last is None:
            return at if schedule.previous(at) is not None else schedule.following(at)
        return self._due_after_last()[0]

    def _due_after_last(self) -> tuple[int | None, int]:
        """When the schedule is next due after the last rebalance, and the first row at or after that
        (the rows' count when never): the same until the next rebalance, asked at every scan."""
        if self._due is None or self._due[0] != self.last:
            schedule = self.policy.schedule
            assert schedule is not None and self.last is not None, "a schedule and a last rebalance"
            due = schedule.following(self.last)
            at = len(self.history) if due is None else int(np.searchsorted(self.history.times, due))
            self._due = (self.last, due, at)
        return self._due[1], self._due[2]

    def due_row(self, row: int) -> int:
        """The first row at or after `row` when the schedule is due (the last row when never)."""
        if self.policy.schedule is None:
            return len(self.history)
        if self.last is not None:
            return max(row, self._due_after_last()[1])
        due = self.due(int(self.history.times[row]))
        if due is None:
            return len(self.history)
        return max(row, int(np.searchsorted(self.history.times, due)))

    def candidates(self, block: Block, screen: Screen) -> npt.NDArray[np.bool_]:
        """The rows of `block` where the trigger may fire (see `rebal.core.backtest.screen`)."""
        policy = self.policy
        times = self.history.times[block.start : block.start + block.value.size]
        due = self.due(int(times[0]))
        full = block.breach | (times >= due) if due is not None else block.breach.copy()
        if policy.cooldown > 0 and self.last is not None:
            full &= times >= self.last + policy.cooldown
        if policy.invest_cash_above is None:  # no cash trigger: nothing to add
            return full
        due_cash: npt.NDArray[np.bool_] = cash_due(block, policy.invest_cash_above)
        return full | due_cash


# A screen's scan the replay asks for: (screen, the wallets' free amounts, first row, row after the last).
ScanRequest = tuple[Screen, FloatArray, int, int]


def replay(
    history: History,
    start: dict[str, Any],
    target: Tree,
    markets: Markets,
    policy: Policy,
    *,
    flows: FloatArray | None = None,
    last_rebalance: int | None = None,
    fill_rule: FillRule = "rebal",
    every_row: bool = False,
    record: bool = False,
) -> Run:
    """Replay `policy` over `history` from the real tree document `start` (see the module's docstring).

    `flows` (one amount per row, valuation currency; + deposit, - withdrawal) are optional;
    `last_rebalance` is when the starting portfolio was last rebalanced (None: never). `every_row` makes
    the core evaluate every row instead of the screen's proposals (the screen's check); `record` keeps the
    real tree before each rebalance. Raises `InputError` for input the core refuses."""
    shared = _Shared()
    steps = _replaying(
        history, start, target, markets, policy, flows, last_rebalance, fill_rule, every_row, record, shared
    )
    try:
        request = next(steps)
        while True:
            screen, free, first, stop = request
            request = steps.send(screen.scan(history, free, first, stop))
    except StopIteration as done:
        run: Run = done.value
        return run


def replay_all(
    history: History,
    start: dict[str, Any],
    target: Tree,
    markets: Markets,
    policies: Sequence[tuple[str, Policy]],
    *,
    flows: FloatArray | None = None,
    last_rebalance: int | None = None,
    fill_rule: FillRule = "rebal",
) -> list[Run]:
    """`replay` of each named policy, side by side: the same runs, but the policies' screens scan
    their rows together (`Batch.scan_many`: one pass over the rows every policy waits for, where each
    policy's scan of a few rows cost what numpy's calls cost, whatever the rows). Raises what the first
    policy (in order) that fails raises, an `Overdrawn` naming it."""
    batch, shared, routes = Batch(), _Shared(), RememberedRoutes.of(markets)
    steps = [
        _replaying(
            history, start, target, routes, policy, flows, last_rebalance, fill_rule, False, False, shared
        )
        for _, policy in policies
    ]
    runs: list[Run | None] = [None] * len(steps)
    failed: dict[int, Exception] = {}
    waiting: dict[int, ScanRequest] = {}

    def advance(index: int, block: Block | None) -> None:
        try:
            step = steps[index]
            waiting[index] = next(step) if block is None else step.send(block)
        except StopIteration as done:
            runs[index] = done.value
        except Exception as exc:  # noqa: BLE001 -- raised below, in the policies' order
            failed[index] = exc

    for index in range(len(steps)):
        advance(index, None)
    while waiting:
        together: dict[int, list[int]] = {}
        for index, (screen, *_) in waiting.items():
            together.setdefault(batch.kind(screen), []).append(index)
        asked = dict(waiting)
        waiting.clear()
        for indices in together.values():
            for part in _cache_sized(indices, asked):
                blocks = batch.scan_many(history, [asked[index] for index in part])
                for index, block in zip(part, blocks, strict=True):
                    advance(index, block)
    for index, exc in sorted(failed.items()):
        if isinstance(exc, Overdrawn):
            raise exc.under(policies[index][0]) from None
        raise exc
    return [run for run in runs if run is not None]


def _cache_sized(indices: list[int], asked: dict[int, ScanRequest]) -> list[list[int]]:
    """`indices` in runs whose scans together stay within `BLOCK_CELLS` (a scan alone may be larger):
    the screen's passes stay the cache-sized blocks it is measured fastest on (at 500 assets twelve
    policies' rows together would be ten times as many cells)."""
    runs: list[list[int]] = []
    cells = 0
    for index in indices:
        screen, _, first, stop = asked[index]
        size = (stop - first) * screen.n_union
        if not runs or cells + size > BLOCK_CELLS:
            runs.append([])
            cells = 0
        runs[-1].append(index)
        cells += size
    return runs


def _replaying(
    history: History,
    start: dict[str, Any],
    target: Tree,
    markets: Markets,
    policy: Policy,
    flows: FloatArray | None,
    last_rebalance: int | None,
    fill_rule: FillRule,
    every_row: bool,
    record: bool,
    shared: _Shared,
) -> Generator[ScanRequest, Block, Run]:
    """`replay`, asking for each scan of its screen (a `ScanRequest`) and sent the `Block`; `shared`
    what it works out with the policies replayed beside it."""
    markets = RememberedRoutes.of(markets)
    book = Book.of(start, shared.parses)
    state = _State(history, target, markets, policy, book, fill_rule, record, last_rebalance, shared)
    rows = len(history)
    flow_rows = np.flatnonzero(flows).tolist() if flows is not None else []
    flow_at = {r: float(flows[r]) for r in flow_rows} if flows is not None else {}
    screen: Screen | None = None
    shape = -1  # the book's shape the screen was built for
    span = FIRST_SPAN
    proposed_at = -1  # the last row the screen proposed
    fast = not every_row
    row = 0
    evaluated = -1  # the last row whose trigger was evaluated
    flowed = -1  # the last row whose flow landed
    while row < rows:
        if row in flow_at and flowed < row:
            state.apply_flow(row, flow_at[row])
            flowed = row
        if fast and (screen is None or shape != state.book.version):
            screen = Screen.build(state.book, target, history, row, policy, state.shape(row))
            shape, fast = state.book.version, screen.fast
        if not fast or screen is None:
            if evaluated < row:
                evaluated = row
                decision, diff = state.decide(row)
                if decision.rebalance:
                    state.rebalance(row, decision, diff)
                    diff = state.diff(row)
                state.record_diff(row, diff)
            row += 1
            continue
        later = bisect_right(flow_rows, row)  # the next flow's row
        stop = min(
            rows, row + span, flow_rows[later] if later < len(flow_rows) else rows, state.due_row(row) + 1
        )
        free = state.book.amount - state.book.locked()
        block = yield screen, free, row, stop
        proposed = state.candidates(block, screen)
        if evaluated >= row:
            proposed[: evaluated - row + 1] = False
        hits = proposed.nonzero()[0]
        if not hits.size:
            state.record_block(block, stop)
            row = stop
            span = min(span * 2, screen.block_rows())  # quiet: look further ahead at once
            continue
        at = row + int(hits[0])
        # The next look reaches as far as the last interval between proposals, and half as far again.
        gap = at - proposed_at if proposed_at >= 0 else FIRST_SPAN
        span = max(LEAST_SPAN, min(gap + 1 + gap // 2, screen.block_rows()))
        proposed_at = at
        state.record_block(block, at + 1)
        evaluated = at
        decision, diff = state.decide(at)
        if _disagrees(screen, diff):
            fast = False  # the screen misread this tree: the core evaluates every row from here
        if decision.rebalance:
            state.rebalance(at, decision, diff)
            row = at  # valued again with the new holdings, not evaluated again
        else:
            row = at + 1
    return Run(
        value=state.value,
        flow=state.flow,
        fees=state.fees,
        traded=state.traded,
        orders=state.orders,
        drift=state.drift,
        kind=state.kind,
        trades=tuple(state.trades),
        evaluations=state.evaluations,
    )


@dataclass(frozen=True)
class RememberedRoutes(Markets):
    """The same markets, each route found once: the planner asks for every (exchange, asset, quote) of
    the portfolio at every plan, and a replay plans hundreds of times with the same markets."""

    _routes: dict[tuple[str, str, str], Route | None] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, markets: Markets) -> RememberedRoutes:
        return markets if isinstance(markets, RememberedRoutes) else cls(exchanges=markets.exchanges)

    def route(self, exchange: str, asset: str, quote: str) -> Route | None:
        key = (exchange, asset, quote)
        if key not in self._routes:
            self._routes[key] = super().route(exchange, asset, quote)
        return self._routes[key]


def _disagrees(screen: Screen, diff: DiffTree) -> bool:
    """The core's desired weights differ from what the screen took for fixed (a shape it misread)."""
    if len(diff.tree) != screen.n_union:
        return True
    if screen.n_union <= SMALL_NODES:  # a few Python floats: numpy's cost per call outweighs them
        desired = diff.desired_weight.tolist()
        return any(abs(desired[node] - weight) > MARGIN for node, weight in screen.fixed_weights)
    fixed = screen.fixed
    return bool(np.count_nonzero(np.abs(diff.desired_weight[fixed] - screen.desired_weight[fixed]) > MARGIN))

"""One portfolio's allocation across its strategies: stored returns in, a target (or why not) out.

`Allocator.run(trigger)` does, for one portfolio, one thing at a time (a lock): read the base tree and
the strategies' latest common returns, solve with the method's problem kept from the previous solve
(re-solved with new parameters; rebuilt only when the set of strategies changes), off the event loop,
scale to the volatility target, and publish a `TargetWeightsComputed` whose tree is the base tree with
the strategy nodes' weights replaced (or, in reconciler mode, with the wallets at the target positions)
and whose `optimization` holds the portfolio_config numbers. Too little data, an infeasible problem or a
solver failure publish an `OptimizationFailed` with the reason; the previous target stays in force.

Event ids come from the trigger (a command's id, the schedule's tick, the count of returns, the
positions reported), so replicas and redeliveries publish each result once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from rebal import bus
from rebal.core.contracts import MAX_LEVERAGE
from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.performance import Irregular, frequency_of
from rebal.core.reconcile_positions import ManagerConfig, parse_portfolio_config, target_positions
from rebal.core.strategy_targets import (
    TreeShapeError,
    find_strategy_nodes,
    futures_positions_tree,
    positions_tree,
    set_strategy_weights,
)
from rebal.core.tree import parse_tree
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    Optimization,
    OptimizationFailed,
    TargetWeightsComputed,
    new_event,
)
from rebal.io import FileError, load, read_input
from rebal.schedule import CronSchedule
from rebal_allocation.estimate import TooLarge
from rebal_allocation.methods import make_optimizer
from rebal_allocation.optimize import BadData, Infeasible, Optimizer, SolverFailed
from rebal_allocation.volatility import PortfolioConfig, target_volatility
from rebal_optimizer.settings import AllocationSettings
from rebal_optimizer.targets import target_event

log = logging.getLogger("rebal.optimizer")
Floats = NDArray[np.float64]
LEVERAGE_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True)
class Trigger:
    """Why a solve runs: `kind` (command, schedule, data, positions, start) and a key naming the
    occasion (the tick, the count of returns); `cause` is the command when there is one."""

    kind: str
    key: str
    cause: Event | None = None


@dataclass(frozen=True)
class ReturnMatrix:
    names: tuple[str, ...]
    timestamps: Floats
    returns: Floats  # periods x strategies, oldest first


class StrategyData(Protocol):
    async def strategies(self, portfolio: str) -> list[str]: ...

    async def matrix(self, portfolio: str, strategies: list[str], lookback: int) -> ReturnMatrix: ...

    async def count(self, portfolio: str) -> int: ...

    async def positions(self, portfolio: str) -> dict[str, dict[str, Decimal]]: ...


def snapshot_value(snapshot: BalanceSnapshotTaken) -> Decimal:
    """The free value of the snapshot's tree in its valuation currency (what a rebalance allocates)."""
    tree = parse_tree(snapshot.tree, "real")
    prices = Prices.parse(snapshot.prices)
    total = Decimal(0)
    for node in range(len(tree)):
        asset = tree.assets[node]
        if not tree.wallet[node] or asset is None:
            continue
        price = prices.get(asset)
        if price is None:
            raise InputError("prices", f"no price for {asset}")
        total += (tree.exact_amount(node) - tree.exact_locked(node)) * price
    return total


@dataclass
class Allocator:
    portfolio: str
    settings: AllocationSettings
    base_file: Path
    data: StrategyData
    history: bus.History
    publisher: bus.EventSink
    clock: Callable[[], datetime]
    optimizer: Optimizer | None = None
    names: tuple[str, ...] = ()
    weights: dict[str, float] | None = None
    config: PortfolioConfig | None = None
    solved_at_count: int | None = None
    positions: dict[str, dict[str, Decimal]] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The operators' tree when one is set (`rebal_optimizer.manual`): the base instead of `base_file`.
    manual_base: Callable[[], dict[str, Any] | None] = lambda: None
    # The digest of the portfolio_config.json last traded (its allocation is re-read when it changes).
    config_key: str | None = None
    # When the last solve (of any trigger) began: a schedule's tick at or before it is served.
    solved_at: datetime | None = None

    async def run(self, trigger: Trigger) -> TargetWeightsComputed | OptimizationFailed:
        async with self.lock:
            began = self.clock()
            count = await self.data.count(self.portfolio)
            outcome = await self._allocate(trigger)
            self.solved_at_count = count
            await self.publisher.publish(outcome)
            self.solved_at = began
            if isinstance(outcome, OptimizationFailed):
                log.warning("no allocation for %s (%s): %s", self.portfolio, trigger.kind, outcome.reason)
            else:
                log.info("allocated %s (%s): %s", self.portfolio, trigger.kind, self.weights)
            return outcome

    async def publish_base(self) -> bool:
        """Until a first allocation, the portfolio's target is its base tree as written (weights mode): it is
        published at start when the streams hold no target for the portfolio yet, so a new deployment can
        plan before its strategies have `min_observations` returns. True when published."""
        if self.settings.mode != "weights":
            return False
        async with self.lock:
            if self.weights is not None:
                return False
            if await self.history.latest_id(TargetWeightsComputed, self.portfolio) is not None:
                return False
            if self.manual_base() is not None:
                return False  # the operators' target is published as it was set
            try:
                event = target_event(self.portfolio, self.base_file, now=self.clock())
            except FileError as exc:
                log.error("the base tree of %s was not published: %s", self.portfolio, exc)
                return False
            published = await self.publisher.publish(event)
        if published:
            log.info("published the base tree of %s until a first allocation", self.portfolio)
        return published

    async def due_tick(self, schedule: CronSchedule) -> Trigger | None:
        """The schedule's latest tick at or before now when a solve began before it and none since: the
        trigger of a scheduled solve (keyed by the tick, so replicas publish it once), or None. Evaluated
        from the clock, so a tick missed while the service was down is due once; after a restart the
        last solve is the latest outcome in the streams (`last_outcome_at`)."""
        tick = schedule.previous(int(self.clock().timestamp()))
        if tick is None:
            return None
        if self.solved_at is None:
            self.solved_at = await self.last_outcome_at()
        if self.solved_at is None or tick <= self.solved_at.timestamp():
            return None  # never solved (a first deployment: the data trigger solves), or solved since
        return Trigger("schedule", datetime.fromtimestamp(tick, UTC).isoformat())

    async def last_outcome_at(self) -> datetime | None:
        """When the latest allocation or failure of this portfolio stored in the streams was made (a base
        tree published as is, or an operator's target, is not an allocation)."""
        target = await self.history.latest(TargetWeightsComputed, self.portfolio)
        failed = await self.history.latest(OptimizationFailed, self.portfolio)
        times = [event.occurred_at for event in (failed,) if event is not None]
        if target is not None and target.optimization is not None:
            times.append(target.occurred_at)
        return max(times, default=None)

    async def due_for_data(self) -> bool:
        """Enough new returns since the last solve (`after_new_returns`), or any new return while there is
        no allocation yet (the first solves, at start, often find too little data)."""
        wanted = self.settings.after_new_returns
        if wanted <= 0 and self.weights is not None:
            return False
        count = await self.data.count(self.portfolio)
        if self.solved_at_count is None:
            return True
        if self.weights is None:
            return count != self.solved_at_count
        return count - self.solved_at_count >= wanted

    async def positions_changed(self) -> dict[str, dict[str, Decimal]] | None:
        """The strategies' latest positions when they differ from those last used (reconciler mode)."""
        if self.settings.mode != "reconciler" or self.weights is None:
            return None
        latest = await self.data.positions(self.portfolio)
        return latest if latest != self.positions else None

    def config_changed(self) -> str | None:
        """The digest of the manager's portfolio_config.json when it differs from the one last traded
        (None: unchanged, unreadable, or none configured)."""
        path = self.settings.portfolio_config
        if path is None or self.config_key is None:
            return None
        try:
            key = hashlib.sha256(read_input(path)).hexdigest()[:16]
        except FileError:
            return None  # the next solve reports it
        return key if key != self.config_key else None

    def _event(self, why: Trigger, kind: type[Any], **fields: Any) -> Any:
        now = self.clock()
        if why.cause is not None:
            return why.cause.caused(kind, now=now, **fields)
        key = f"{self.portfolio}|{why.kind}|{why.key}"
        return new_event(kind, key=key, now=now, portfolio_id=self.portfolio, **fields)

    def _failed(self, trigger: Trigger, reason: str) -> OptimizationFailed:
        event: OptimizationFailed = self._event(
            trigger, OptimizationFailed, method=self.settings.method, reason=reason, trigger=trigger.kind
        )
        return event

    async def _allocate(  # noqa: PLR0911 - one early return per reason there is no allocation
        self, trigger: Trigger
    ) -> TargetWeightsComputed | OptimizationFailed:
        settings = self.settings
        try:
            base = self.manual_base() or load(self.base_file, lambda doc: (parse_tree(doc, "target"), doc)[1])
        except FileError as exc:
            return self._failed(trigger, f"base tree: {exc}")
        if not isinstance(base, dict):
            return self._failed(trigger, f"base tree: {self.base_file} must be a tree document")
        if settings.portfolio_config is not None:
            return await self._configured(trigger, base, settings.portfolio_config)
        reported = await self.data.strategies(self.portfolio)
        try:
            nodes = await self._nodes(base, reported)
        except TreeShapeError as exc:
            return self._failed(trigger, f"base tree: {exc}")
        names = tuple(sorted(nodes))
        if not names:
            return self._failed(trigger, "no strategy of the portfolio has reported returns (or has a node)")
        data = await self.data.matrix(self.portfolio, list(names), settings.lookback_periods)
        observations = int(data.returns.shape[0])
        if observations < settings.min_observations:
            return self._failed(
                trigger,
                f"only {observations} common returns for {', '.join(names)}; "
                f"{settings.min_observations} needed",
            )
        frequency = frequency_of(data.timestamps)
        if isinstance(frequency, Irregular):
            return self._failed(trigger, f"the strategies' common dates: {frequency.reason}")
        per_year = settings.periods_per_year or frequency.periods_per_year
        account = await self._account_value()
        if isinstance(account, str):
            return self._failed(trigger, account)
        if self.optimizer is None or names != self.names or self.optimizer.periods_per_year != per_year:
            try:
                self.optimizer = make_optimizer(settings, names, per_year)
            except ValueError as exc:  # constraints the method cannot take, a parameter not finite
                return self._failed(trigger, f"allocation settings: {exc}")
            if names != self.names:
                self.names, self.weights = names, None  # the previous weights are of other strategies
        current = None if self.weights is None else [self.weights[name] for name in names]
        try:
            result = await asyncio.to_thread(self.optimizer.solve, data.returns, current)
        except TooLarge as exc:
            return self._failed(trigger, f"cannot allocate: {exc}")
        if isinstance(result, BadData):
            return self._failed(trigger, f"bad data: {result.describe(names)}")
        if isinstance(result, Infeasible | SolverFailed):
            kind = "infeasible" if isinstance(result, Infeasible) else "solver failed"
            return self._failed(trigger, f"{kind}: {result.reason}")
        config = target_volatility(
            list(names),
            result.weights,
            data.returns,
            float(account),
            settings.target_volatility,
            math.inf if settings.max_leverage is None else settings.max_leverage,
            per_year,
        )
        try:
            tree, targets, notes = await self._tree(base, nodes, config, account)
        except TreeShapeError as exc:
            return self._failed(trigger, f"base tree: {exc}")
        self.weights, self.config = dict(config.weights), config
        realised = config.realised_volatility
        optimization = Optimization(
            method=settings.method,
            parameters=dict(settings.parameters),
            weights=dict(config.weights),
            realised_volatility=realised if np.isfinite(realised) else None,
            target_volatility=config.target_volatility,
            leverage=config.leverage,
            account_value=account,
            status=result.status,
            observations=observations,
            trigger=trigger.kind,
            mode=settings.mode,
            targets=targets,
            notes=notes,
        )
        event: TargetWeightsComputed = self._event(
            trigger,
            TargetWeightsComputed,
            tree=tree,
            source=f"optimizer:{settings.method}",
            optimization=optimization,
        )
        return event

    async def _configured(
        self, trigger: Trigger, base: dict[str, Any], path: Path
    ) -> TargetWeightsComputed | OptimizationFailed:
        """The manager's portfolio_config.json traded as written: its weights and leverage, on its
        account_value (no solve; the returns are not read). Not before every strategy it weighs has
        reported its positions: with leverage, trading on a part of them could open what the others
        would cancel (a long strategy alone at 2.62x)."""
        try:
            key = hashlib.sha256(read_input(path)).hexdigest()[:16]
            manager = load(path, parse_portfolio_config)
        except FileError as exc:
            return self._failed(trigger, f"portfolio_config: {exc}")
        reported = await self.data.positions(self.portfolio)
        silent = [name for name, weight in manager.weights.items() if weight > 0 and name not in reported]
        if silent:
            return self._failed(
                trigger,
                f"no positions reported yet by {', '.join(silent)}: no target until every strategy of "
                "portfolio_config has reported its positions",
            )
        try:
            nodes = await self._nodes(base, sorted(manager.weights))
        except TreeShapeError as exc:
            return self._failed(trigger, f"base tree: {exc}")
        config = _as_config(manager)
        try:
            tree, targets, notes = await self._tree(base, nodes, config, manager.account_value)
        except TreeShapeError as exc:
            return self._failed(trigger, f"base tree: {exc}")
        self.weights, self.config, self.config_key = dict(config.weights), config, key
        held = await self._snapshot_value()
        if held is not None and held < manager.account_value:
            notes += (
                f"the account is worth {held.quantize(LEVERAGE_QUANTUM).normalize()}, less than "
                f"portfolio_config's account_value {manager.account_value}: positions are sized on the "
                "account_value as written",
            )
        optimization = Optimization(
            method="portfolio_config",
            weights=dict(config.weights),
            realised_volatility=None if manager.ann_volatility_pct is None else config.realised_volatility,
            target_volatility=config.target_volatility,
            leverage=config.leverage,
            account_value=manager.account_value,
            status="as written",
            observations=0,
            trigger=trigger.kind,
            mode=self.settings.mode,
            targets=targets,
            notes=notes,
        )
        event: TargetWeightsComputed = self._event(
            trigger,
            TargetWeightsComputed,
            tree=tree,
            source=f"portfolio_config:{path.name}",
            optimization=optimization,
        )
        return event

    async def _snapshot_value(self) -> Decimal | None:
        snapshot = await self.history.latest(BalanceSnapshotTaken, self.portfolio)
        try:
            return None if snapshot is None else snapshot_value(snapshot)
        except InputError:
            return None

    async def _nodes(self, base: dict[str, Any], reported: list[str]) -> dict[str, str]:
        """Strategy -> node path (weights mode) or -> "" (reconciler mode: strategies are not nodes)."""
        configured = self.settings.strategies
        if self.settings.mode == "reconciler":
            return {name: "" for name in (configured or reported) if name in reported}
        if configured:
            return {name: path for name, path in configured.items() if name in reported}
        found, _ = find_strategy_nodes(base, reported)
        return found

    async def _account_value(self) -> Decimal | str:
        if self.settings.account_value is not None and self.settings.mode == "weights":
            return self.settings.account_value
        snapshot = await self.history.latest(BalanceSnapshotTaken, self.portfolio)
        if snapshot is None:
            if self.settings.account_value is not None:
                return self.settings.account_value
            return "no balance snapshot yet to value the account"
        try:
            value = snapshot_value(snapshot)
        except InputError as exc:
            return f"balance snapshot: {exc}"
        if self.settings.account_value is not None:
            return min(value, self.settings.account_value)
        return value

    async def _tree(
        self, base: dict[str, Any], nodes: Mapping[str, str], config: PortfolioConfig, account: Decimal
    ) -> tuple[dict[str, Any], dict[str, Decimal] | None, tuple[str, ...]]:
        if self.settings.mode == "weights":
            return set_strategy_weights(base, nodes, config.weights), None, ()
        positions = await self.data.positions(self.portfolio)
        self.positions = positions
        futures = self.settings.futures_account
        reconciled = target_positions(
            account,
            Decimal(repr(config.leverage)).quantize(LEVERAGE_QUANTUM),
            {name: Decimal(repr(weight)) for name, weight in config.weights.items()},
            {name: held for name, held in positions.items() if name in config.weights},
            derivatives=futures is not None,
        )
        if futures is not None:
            leverage = self.settings.symbol_leverage or min(max(math.ceil(config.leverage), 1), MAX_LEVERAGE)
            tree = futures_positions_tree(
                base, reconciled.targets, futures, leverage, self.settings.margin_mode
            )
            return tree, reconciled.targets, reconciled.notes
        quote_wallet = self.settings.quote_wallet or ""
        tree, notes = positions_tree(base, reconciled.targets, account, quote_wallet)
        return tree, reconciled.targets, reconciled.notes + notes


def _as_config(manager: ManagerConfig) -> PortfolioConfig:
    """The manager's file as the allocation it states (volatilities as fractions)."""
    volatility = manager.ann_volatility_pct
    return PortfolioConfig(
        account_value=float(manager.account_value),
        weights={name: float(weight) for name, weight in manager.weights.items()},
        realised_volatility=float(volatility / 100) if volatility is not None else math.nan,
        target_volatility=float(manager.target_vol_pct / 100),
        leverage=float(manager.leverage),
    )


def positions_key(positions: Mapping[str, Mapping[str, Decimal]]) -> str:
    """A short digest naming a set of positions (the trigger key of a reconciliation)."""
    text = ";".join(
        f"{name}:" + ",".join(f"{k}={v}" for k, v in sorted(held.items()))
        for name, held in sorted(positions.items())
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]

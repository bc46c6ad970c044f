"""Allocation across strategies: six methods, one constraint set, problems built once and re-solved.

Each method is an ``Optimizer`` holding one cvxpy problem written with ``cp.Parameter`` (DPP), so a new day
of data only updates parameter values and the solver reuses the canonicalisation. The problem is rebuilt
only when its *structure* changes: the set of strategy pairs whose correlation exceeds the threshold, or
the length of the data window. ``solve(returns, current_weights)`` never raises for an expected outcome:
it returns ``Solved``, ``Infeasible(reason)`` or ``SolverFailed(reason)``; the solver status is always
checked and the weights are verified against every constraint before they are returned. Returns it
cannot compute with are refused before any work with ``TooLarge`` (a ``ValueError`` naming why: not
finite, moments that overflow, an estimate or a problem beyond ``MEMORY_LIMIT_BYTES``).

Rescaling. Daily covariances are ~1e-4, so absolute solver tolerances (1e-8) would be loose relative to
the data. Every method solves a rescaled problem whose data are O(1): the risk factor is multiplied by
``sqrt(s)`` with ``s = 1 / mean(diag(cov))`` and returns by ``s`` (mean-variance, so the objective is
``s`` times the original and the minimiser is the same) or normalised to a unit maximum (the ratio
methods, which are scale invariant). Reported objectives are recomputed from the weights in the original
units.

Methods (``returns`` is periods x strategies of simple period returns):

- ``MeanVariance(risk_aversion)``: maximise ``mu'w - risk_aversion / 2 * w'Σw`` (per period).
- ``MinVariance``: minimise ``w'Σw``.
- ``MaxSharpe(risk_free)``: maximise ``(mu - rf)'w / sqrt(w'Σw)`` by the homogenised reformulation
  (Cornuéjols & Tütüncü): minimise ``y'Σy`` subject to ``(mu - rf)'y = 1``, ``sum(y) = κ``, ``κ >= 0`` and
  every constraint multiplied by ``κ``; then ``w = y / κ``. Needs a strategy whose mean beats ``rf``.
- ``RiskParity``: equal risk contribution by the log-barrier problem (Spinu; Maillard et al.): minimise
  ``x'Σx / 2 - sum(log x) / n`` over ``x > 0``, whose optimum has ``x_i (Σx)_i = 1 / n``; then
  ``w = x / sum(x)``. The normalised optimum is unique, so it takes no constraint beyond long-only and
  fully invested (other constraints raise ``ValueError`` at construction).
- ``SlopeStd(lookback)``: maximise the least-squares slope of the portfolio's cumulative-return curve over
  the last ``lookback`` periods divided by the standard deviation of its period returns. The curve is the
  *additive* one, ``E_t = sum_{s<=t} R_s w`` (weights held fixed, rebalanced each period), so the slope is
  linear in w, ``slope = (C'a)'w`` with ``C = cumsum(R)`` and ``a_t = (t - mean t) / sum (t - mean t)^2``,
  and the standard deviation is ``||D w||`` with ``D`` the centred window over ``sqrt(T - 1)``. Maximising
  ``g'w / ||Dw||`` is a max-Sharpe problem with ``g = C'a`` as the "mean" and ``D`` as the risk factor, and
  is solved by the same homogenised reformulation. (``g = R'b`` with ``b_s = sum_{t>=s} a_t >= 0``: a mean
  of the returns that weighs the middle of the window most.)
- ``Mix(return_weight, volatility_weight, drawdown_weight, lookback)``: maximise
  ``λr * P * mu'w - λv * sqrt(P * w'Σw) - λd * MDD(w)``, all three in annual / fractional units so the
  weights are comparable. The drawdown term is the maximum drawdown of the additive cumulative-return
  curve over the lookback: ``MDD(w) = max_t (max_{s<=t} E_s - E_t)`` with ``E_0 = 0``, a maximum of affine
  functions of w, hence convex, written as the linear program of Chekhlov, Uryasev & Zabarankin
  (``u_t >= E_t``, ``u_t >= u_{t-1}``, ``u_0 >= 0``, ``z >= u_t - E_t``). It measures the fall in units of
  the starting capital, not of the peak; the two differ only by compounding.

Direct path. When the constraints are only long-only, fully invested and per-strategy bounds (and no pair
exceeds the correlation threshold), minimum variance, mean-variance, maximum Sharpe / slope-std (with no
bound either: the homogenised bounds are general constraints) and risk parity are solved by the exact
numpy algorithms of ``rebal_allocation.direct`` instead: an active-set method warm-started from the
previous solution's active set, and Newton's method on the risk-parity barrier warm-started from the
previous solution. Their answers satisfy the optimality conditions to rounding (checked); whenever they
cannot vouch for one they return nothing and the cvxpy problem solves instead. ``direct=False`` always
uses the cvxpy problem. For the direct path ``Solved.rebuilt`` means "not warm-started".

Constraints (``Constraints``): long-only and fully invested always; ``min_weight`` / ``max_weight`` (one
value or one per strategy); ``groups`` (``Group(members, cap)``: the members' total at most ``cap``); the
combined weight of every pair whose estimated correlation exceeds ``correlation_threshold`` at most
``pair_cap``; and ``turnover``: ``sum |w - current| <= turnover``.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import cvxpy as _cvxpy
import numpy as np
from numpy.typing import ArrayLike, NDArray

from rebal.core.performance import DAYS_PER_YEAR, ZERO_DEVIATION
from rebal_allocation import compounded, constrained
from rebal_allocation.active_set import Rows
from rebal_allocation.allocation import Equity, parameter_problem
from rebal_allocation.direct import ActiveSet, box_qp, risk_parity
from rebal_allocation.estimate import (
    MEMORY_LIMIT_BYTES,
    Estimate,
    Estimator,
    Rolling,
    TooLarge,
    correlation_of,
    estimate_rolling,
    factor,
)

# cvxpy ships py.typed but re-exports its atoms implicitly (`from ... import *`), which strict mypy
# rejects; the modelling layer is used untyped, behind these names.
cp: Any = _cvxpy
Expression = Any
Parameter = Any
Constraint = Any
Problem = Any

Floats = NDArray[np.float64]
Pair = tuple[int, int]

# A solution may break a constraint by this much (solver tolerance) and still count as satisfying it.
WEIGHT_TOLERANCE = 1e-6
# Accepted solver statuses; OPTIMAL_INACCURATE passes only when the weights then verify (above).
ACCEPTED = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
INFEASIBLE = (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
DEFAULT_SOLVER = cp.CLARABEL
# Risk parity: Newton steps after the interior-point solve, until the scaled residual is below this.
POLISH_STEPS = 5
POLISH_TOLERANCE = 1e-15
POLISH_SMALLEST_STEP = 1e-6
DEFAULT_LOOKBACK = 365


@dataclass(frozen=True)
class Group:
    members: tuple[int, ...]
    cap: float


@dataclass(frozen=True)
class Constraints:
    min_weight: float | tuple[float, ...] = 0.0
    max_weight: float | tuple[float, ...] = 1.0
    groups: tuple[Group, ...] = ()
    correlation_threshold: float | None = None
    pair_cap: float = 1.0
    turnover: float | None = None

    def trivial(self) -> bool:
        return self == Constraints()

    def bounds_only(self) -> bool:
        """No constraint beyond per-strategy bounds (a correlation threshold is checked per solve)."""
        return not self.groups and self.turnover is None


@dataclass(frozen=True)
class Solved:
    weights: Floats
    objective: float  # the method's objective at `weights`, original units (see each method)
    status: str
    rebuilt: bool  # the problem was (re)built for this solve rather than re-solved with new parameters


@dataclass(frozen=True)
class Infeasible:
    reason: str


@dataclass(frozen=True)
class SolverFailed:
    reason: str


@dataclass(frozen=True)
class BadData:
    """Returns no allocation can honestly be computed from: ``columns`` (the strategies' indices) have
    constant returns, so there is no variance to weigh them by; ``reason`` says so, without the names
    (``describe`` adds them)."""

    reason: str
    columns: tuple[int, ...] = ()

    def describe(self, names: tuple[str, ...] | list[str]) -> str:
        return f"{', '.join(names[i] for i in self.columns)}: {self.reason}"


Result = Solved | Infeasible | SolverFailed | BadData


@dataclass(frozen=True)
class Bounds:
    low: Floats
    high: Floats

    @staticmethod
    def of(constraints: Constraints, count: int) -> Bounds:
        low = np.broadcast_to(np.asarray(constraints.min_weight, dtype=np.float64), (count,)).copy()
        high = np.broadcast_to(np.asarray(constraints.max_weight, dtype=np.float64), (count,)).copy()
        return Bounds(low, high)

    def infeasible(self) -> str | None:
        if np.any(self.low > self.high):
            return "a strategy's minimum weight exceeds its maximum"
        if self.low.sum() > 1.0 + WEIGHT_TOLERANCE:
            return f"the minimum weights sum to {self.low.sum():.6g} > 1"
        if self.high.sum() < 1.0 - WEIGHT_TOLERANCE:
            return f"the maximum weights sum to {self.high.sum():.6g} < 1"
        return None


def constant_strategies(returns: Floats) -> list[int]:
    """The columns whose returns do not vary (a standard deviation of at most ZERO_DEVIATION)."""
    if returns.shape[0] < 2:
        return []
    return [int(i) for i in np.flatnonzero(np.std(returns, axis=0) <= ZERO_DEVIATION)]


def checked(name: str, value: float) -> float:
    """A method parameter, refused (ValueError) when it is not finite or not of its kind."""
    problem = parameter_problem(name, value)
    if problem is not None:
        raise ValueError(problem)
    return value


def correlated_pairs(covariance: Floats, threshold: float | None) -> tuple[Pair, ...]:
    if threshold is None:
        return ()
    upper = np.triu(correlation_of(covariance) > threshold, k=1)
    rows, cols = np.nonzero(upper)
    return tuple((int(i), int(j)) for i, j in zip(rows, cols, strict=True))


def violation(weights: Floats, constraints: Constraints, pairs: tuple[Pair, ...], current: Floats) -> float:
    """The largest amount by which `weights` break a constraint (0 when they satisfy all of them)."""
    bounds = Bounds.of(constraints, weights.shape[0])
    breaches = [
        abs(weights.sum() - 1.0),
        float(np.max(bounds.low - weights, initial=0.0)),
        float(np.max(weights - bounds.high, initial=0.0)),
        *(weights[list(g.members)].sum() - g.cap for g in constraints.groups),
        *(weights[i] + weights[j] - constraints.pair_cap for i, j in pairs),
    ]
    if constraints.turnover is not None:
        breaches.append(float(np.abs(weights - current).sum()) - constraints.turnover)
    return float(max(0.0, *breaches))


@dataclass
class _Built:
    problem: Problem
    key: tuple[Any, ...]
    current: Parameter
    handles: dict[str, Any] = field(default_factory=dict)  # parameters and variables, by name


class Optimizer(ABC):
    """One method over `count` strategies: build once, then `solve` as the data change."""

    def __init__(
        self,
        count: int,
        constraints: Constraints | None = None,
        estimator: Estimator | None = None,
        periods_per_year: float = DAYS_PER_YEAR,
        solver: str = DEFAULT_SOLVER,
        solver_options: dict[str, Any] | None = None,
        direct: bool = True,
    ) -> None:
        if not math.isfinite(periods_per_year) or periods_per_year <= 0:
            raise ValueError(f"periods per year must be a positive finite number, not {periods_per_year}")
        self.count = count
        self.direct = direct
        self.constraints = constraints or Constraints()
        self.estimator = estimator or Estimator()
        self.periods_per_year = periods_per_year
        self.solver = solver
        self.solver_options = solver_options or {}
        self.bounds = Bounds.of(self.constraints, count)
        if np.any(self.bounds.low < 0):
            raise ValueError("long-only: minimum weights must be non-negative")
        self._built: _Built | None = None
        self._warm: Any = None  # the direct path's last solution (active set or barrier minimiser)
        self._moments: Rolling | None = None  # the last window's moments, for a one-new-day update

    # -- what each method provides ---------------------------------------------------------------
    @abstractmethod
    def _structure(self, returns: Floats) -> tuple[Any, ...]:
        """Whatever, besides the correlated pairs, fixes the problem's shape."""

    def _factor_rows(self, returns: Floats) -> int:
        """Rows of the risk factor the problem is written with."""
        return self.count

    @abstractmethod
    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        """The problem for this structure (parameters unset)."""

    @abstractmethod
    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        """Set the parameters from the data; a reason when the data make the problem infeasible."""

    @abstractmethod
    def _weights(self, built: _Built) -> Floats:
        """The weights from the solved variables (before clean-up)."""

    @abstractmethod
    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        """The method's objective at `weights`, in the original units."""

    def _direct(
        self, returns: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | str | None:
        """Weights by an exact numpy method (``direct``, ``constrained``), storing its warm start; a reason
        when the data make the problem infeasible; None when there is no such method for these
        constraints or it gave no certified answer (the cvxpy problem then solves)."""
        return None

    def _rows(self, pairs: tuple[Pair, ...]) -> Rows:
        """The budget, group and pair constraints as rows (``constrained.rows_of``)."""
        groups = [(g.members, g.cap) for g in self.constraints.groups]
        return constrained.rows_of(self.count, groups, pairs, self.constraints.pair_cap)

    def _warm_of(self) -> constrained.Warm:
        if not isinstance(self._warm, constrained.Warm):
            self._warm = constrained.Warm()
        return self._warm

    # -- the shared shell ---------------------------------------------------------------------------
    def solve(self, returns: ArrayLike, current_weights: ArrayLike | None = None) -> Result:
        data = np.asarray(returns, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.count:
            raise ValueError(f"returns must be a (periods x {self.count}) matrix")
        if not np.all(np.isfinite(data)):
            raise TooLarge("the returns are not all finite numbers")
        current = self._current(current_weights)
        reason = self.bounds.infeasible()
        if reason is not None:
            return Infeasible(reason)
        flat = constant_strategies(data)
        if flat:
            reason = (
                f"constant returns over the last {data.shape[0]} periods: no variance to weigh "
                "by (every method needs it; give more history or leave the strategy out)"
            )
            return BadData(reason, tuple(flat))
        est, self._moments = estimate_rolling(data, self.estimator, self._moments)
        pairs = correlated_pairs(est.covariance, self.constraints.correlation_threshold)
        if self.direct:
            outcome = self._solve_direct(data, est, pairs, current)
            if outcome is not None:
                return outcome
        return self._solve_problem(data, est, pairs, current)

    def _solve_problem(self, data: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats) -> Result:
        """The cvxpy path: rebuild the problem if its structure changed, set the parameters, solve."""
        key = (pairs, *self._structure(data))
        rebuilt = self._built is None or self._built.key != key
        if self._built is None or rebuilt:
            check_problem_size(self.count, self._factor_rows(data))
            current_parameter = cp.Parameter(self.count, name="current")
            self._built = self._build(pairs, current_parameter, data)
            self._built.key = key
        built = self._built
        built.current.value = current
        reason = self._update(built, data, est)
        if reason is not None:
            return Infeasible(reason)
        failure = self._run(built.problem)
        if failure is not None:
            return failure
        weights = self._refine(self._clean(self._weights(built)), data, pairs, current)
        if weights is None:
            return SolverFailed(f"the solver returned no usable weights (status {built.problem.status})")
        breach = violation(weights, self.constraints, pairs, current)
        if breach > WEIGHT_TOLERANCE:
            return SolverFailed(f"status {built.problem.status} but a constraint is broken by {breach:.3g}")
        return Solved(weights, self.objective(weights, data, est), str(built.problem.status), rebuilt)

    def _solve_direct(
        self, data: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Result | None:
        warm = self._warm is not None
        found = self._direct(data, est, pairs, current)
        if isinstance(found, str):
            return Infeasible(found)
        weights = self._refine(self._clean(found), data, pairs, current)
        if weights is None or violation(weights, self.constraints, pairs, current) > WEIGHT_TOLERANCE:
            self._warm = None
            return None
        return Solved(weights, self.objective(weights, data, est), cp.OPTIMAL, rebuilt=not warm)

    def _refine(
        self, weights: Floats | None, data: Floats, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | None:
        """The solved weights, or better ones for an objective the solved problem approximates (the
        compounded slope/std); None when there are none."""
        return weights

    def _current(self, current_weights: ArrayLike | None) -> Floats:
        if current_weights is None:
            if self.constraints.turnover is not None:
                raise ValueError("a turnover limit needs the current weights")
            return np.full(self.count, 1.0 / self.count)
        current = np.asarray(current_weights, dtype=np.float64)
        if current.shape != (self.count,):
            raise ValueError(f"current weights must have {self.count} entries")
        return current

    def _run(self, problem: Problem) -> Infeasible | SolverFailed | None:
        try:
            with warnings.catch_warnings():
                # the status (checked below) says the same as cvxpy's "may be inaccurate" warning
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                problem.solve(solver=self.solver, **self.solver_options)
        except cp.error.SolverError as error:
            return SolverFailed(f"{self.solver}: {error}")
        if problem.status in INFEASIBLE:
            return Infeasible(f"the constraints admit no portfolio ({problem.status})")
        if problem.status not in ACCEPTED:
            return SolverFailed(f"{self.solver} ended with status {problem.status}")
        return None

    @staticmethod
    def _clean(raw: Floats | None) -> Floats | None:
        if raw is None or not np.all(np.isfinite(raw)):
            return None
        weights = np.clip(raw, 0.0, None)
        total = weights.sum()
        return None if total <= 0 else np.asarray(weights / total, dtype=np.float64)

    def _portfolio_constraints(
        self, w: Expression, budget: Expression | float, pairs: tuple[Pair, ...], current: Parameter
    ) -> list[Constraint]:
        """The constraint set on `w`, homogenised by `budget` (1, or the max-Sharpe scale variable κ)."""
        c = self.constraints
        out: list[Constraint] = [cp.sum(w) == budget, w >= 0]
        if np.any(self.bounds.low > 0):
            out.append(w >= self.bounds.low * budget)
        if np.any(self.bounds.high < 1):
            out.append(w <= self.bounds.high * budget)
        out += [cp.sum(w[list(g.members)]) <= g.cap * budget for g in c.groups]
        if pairs:
            first = [i for i, _ in pairs]
            second = [j for _, j in pairs]
            out.append(w[first] + w[second] <= c.pair_cap * budget)
        if c.turnover is not None:
            out.append(cp.norm1(w - budget * current) <= c.turnover * budget)
        return out


def check_problem_size(count: int, rows: int) -> None:
    """Refuse a problem cvxpy would need more than `MEMORY_LIMIT_BYTES` to set up: its coefficients of the
    parametrised risk term are a dense (n + 1) x (r n + 1) matrix for an r x n risk factor over n
    strategies (2,000 strategies: 59.6 GiB)."""
    needed = 8 * (count + 1) * (rows * count + 1)
    if needed > MEMORY_LIMIT_BYTES:
        raise TooLarge(
            f"{count} strategies: setting up the optimisation problem would take {needed / 2**30:.1f} GiB,"
            f" more than the {MEMORY_LIMIT_BYTES / 2**30:g} GiB allowed: allocate fewer strategies at once"
        )


def _scale(covariance: Floats) -> float:
    """``s`` such that ``s * covariance`` has a unit mean diagonal."""
    mean = float(np.mean(np.diag(covariance)))
    return 1.0 / mean if mean > 0 else 1.0


def _variance(weights: Floats, est: Estimate) -> float:
    return float(weights @ est.covariance @ weights)


class MinVariance(Optimizer):
    """Minimise the portfolio variance; the objective is the per-period variance ``w'Σw``."""

    def _structure(self, returns: Floats) -> tuple[Any, ...]:
        return ()

    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        w = cp.Variable(self.count, name="w")
        risk = cp.Parameter((self.count, self.count), name="risk")
        problem = cp.Problem(
            cp.Minimize(cp.sum_squares(risk @ w)), self._portfolio_constraints(w, 1.0, pairs, current)
        )
        return _Built(problem, (), current, {"risk": risk, "w": w})

    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        built.handles["risk"].value = math.sqrt(_scale(est.covariance)) * factor(est.covariance)
        return None

    def _weights(self, built: _Built) -> Floats:
        return np.asarray(built.handles["w"].value, dtype=np.float64)

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        return _variance(weights, est)

    def _quadratic_data(self, est: Estimate) -> tuple[Floats, Floats]:
        """(Q, c) of ``min w'Qw / 2 - c'w`` on the rescaled data."""
        return _scale(est.covariance) * est.covariance, np.zeros(self.count)

    def _direct(
        self, returns: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | str | None:
        quadratic, linear = self._quadratic_data(est)
        if not self.constraints.bounds_only() or pairs:  # groups, pairs, turnover: general rows
            turnover = self.constraints.turnover
            warm = self._warm_of()
            answer = constrained.turnover_qp(
                quadratic,
                linear,
                self.bounds.low,
                self.bounds.high,
                self._rows(pairs),
                None,
                current,
                turnover,
                warm,
            )
            return None if answer is None else answer.x
        ones = np.ones(self.count)
        start = self._warm if isinstance(self._warm, ActiveSet) else None
        solution = box_qp(quadratic, linear, ones, 1.0, self.bounds.low, self.bounds.high, start)
        if solution is None:
            return None
        self._warm = solution.active
        return solution.x


class MeanVariance(MinVariance):
    """Maximise ``mu'w - risk_aversion / 2 * w'Σw`` (per period); the objective is that utility."""

    def __init__(self, count: int, risk_aversion: float = 1.0, **options: Any) -> None:
        super().__init__(count, **options)
        self.risk_aversion = checked("risk_aversion", risk_aversion)

    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        w = cp.Variable(self.count, name="w")
        risk = cp.Parameter((self.count, self.count), name="risk")
        mean = cp.Parameter(self.count, name="mean")
        utility = mean @ w - self.risk_aversion / 2 * cp.sum_squares(risk @ w)
        problem = cp.Problem(cp.Maximize(utility), self._portfolio_constraints(w, 1.0, pairs, current))
        return _Built(problem, (), current, {"risk": risk, "mean": mean, "w": w})

    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        scale = _scale(est.covariance)
        built.handles["risk"].value = math.sqrt(scale) * factor(est.covariance)
        built.handles["mean"].value = scale * est.mean
        return None

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        return float(est.mean @ weights) - self.risk_aversion / 2 * _variance(weights, est)

    def _quadratic_data(self, est: Estimate) -> tuple[Floats, Floats]:
        scale = _scale(est.covariance)
        return self.risk_aversion * scale * est.covariance, scale * est.mean


class _Ratio(Optimizer):
    """Maximise ``g'w / ||F w||`` by minimising ``||F y||^2`` subject to ``g'y = 1`` and κ-homogenised
    constraints (``w = y / κ``). Subclasses provide ``g`` and ``F``."""

    @abstractmethod
    def _ratio_data(self, returns: Floats, est: Estimate) -> tuple[Floats, Floats]:
        """(g, F) in original units."""

    @abstractmethod
    def _nothing_positive(self) -> str:
        """The reason given when no strategy has a positive g."""

    def _ratio_quadratic(self, returns: Floats, est: Estimate) -> tuple[Floats, Floats]:
        """(g, F'F) in original units."""
        gain, risk = self._ratio_data(returns, est)
        return gain, risk.T @ risk

    def _direct(
        self, returns: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | str | None:
        if not self.constraints.trivial() or pairs:
            return None  # bounds homogenised by κ are general linear constraints: the cvxpy problem
        gain, quadratic = self._ratio_quadratic(returns, est)
        top = float(np.max(gain))
        if top <= 0:
            return self._nothing_positive()
        low, high = np.zeros(self.count), np.full(self.count, np.inf)
        warm = self._warm if isinstance(self._warm, ActiveSet) else None
        scaled = _scale(quadratic) * quadratic
        solution = box_qp(scaled, np.zeros(self.count), gain / top, 1.0, low, high, warm)
        if solution is None or not solution.x.sum() > 0:
            return None
        self._warm = solution.active
        return solution.x

    def _structure(self, returns: Floats) -> tuple[Any, ...]:
        return (self._factor_rows(returns),)

    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        y = cp.Variable(self.count, name="y")
        kappa = cp.Variable(nonneg=True, name="kappa")
        risk = cp.Parameter((self._factor_rows(returns), self.count), name="risk")
        gain = cp.Parameter(self.count, name="gain")
        constraints = [gain @ y == 1, *self._portfolio_constraints(y, kappa, pairs, current)]
        problem = cp.Problem(cp.Minimize(cp.sum_squares(risk @ y)), constraints)
        return _Built(problem, (), current, {"risk": risk, "gain": gain, "y": y, "kappa": kappa})

    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        gain, risk = self._ratio_data(returns, est)
        top = float(np.max(gain))
        if top <= 0:
            return self._nothing_positive()
        scale = _scale(risk.T @ risk)
        built.handles["gain"].value = gain / top
        built.handles["risk"].value = math.sqrt(scale) * risk
        return None

    def _weights(self, built: _Built) -> Floats:
        y, kappa = built.handles["y"].value, built.handles["kappa"].value
        if y is None or kappa is None or kappa <= 0:
            return np.full(self.count, np.nan)
        return np.asarray(y / kappa, dtype=np.float64)

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        gain, risk = self._ratio_data(returns, est)
        spread = float(np.linalg.norm(risk @ weights))
        return float(gain @ weights) / spread if spread > 0 else math.inf


class MaxSharpe(_Ratio):
    """Maximise the Sharpe ratio; ``risk_free`` is an annual rate, the objective the annualised Sharpe
    ``(mu - rf / P)'w / sqrt(w'Σw) * sqrt(P)`` of the estimates."""

    def __init__(self, count: int, risk_free: float = 0.0, **options: Any) -> None:
        super().__init__(count, **options)
        self.risk_free = checked("risk_free", risk_free)

    def _ratio_data(self, returns: Floats, est: Estimate) -> tuple[Floats, Floats]:
        excess = est.mean - self.risk_free / self.periods_per_year
        return excess, factor(est.covariance)

    def _nothing_positive(self) -> str:
        return "no strategy's expected return exceeds the risk-free rate"

    def _ratio_quadratic(self, returns: Floats, est: Estimate) -> tuple[Floats, Floats]:
        return est.mean - self.risk_free / self.periods_per_year, est.covariance

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        excess = est.mean - self.risk_free / self.periods_per_year
        deviation = math.sqrt(max(_variance(weights, est), 0.0))
        sharpe = float(excess @ weights) / deviation if deviation > 0 else math.inf
        return sharpe * math.sqrt(self.periods_per_year)


def slope_std_data(window: Floats) -> tuple[Floats, Floats]:
    """(g, D): the cumulative-curve slope is ``g'w`` and the std of period returns ``||D w||``."""
    periods = window.shape[0]
    times = np.arange(periods, dtype=np.float64)
    centred_times = times - times.mean()
    slope_weights = centred_times / np.sum(centred_times**2)
    gain = np.cumsum(window, axis=0).T @ slope_weights
    spread = (window - window.mean(axis=0)) / math.sqrt(periods - 1)
    return np.asarray(gain, dtype=np.float64), np.asarray(spread, dtype=np.float64)


def slope_over_std(window: Floats, weights: Floats) -> float:
    """The definition, computed directly: regression slope of ``cumsum(R w)`` over the std of ``R w``."""
    portfolio = window @ weights
    curve = np.cumsum(portfolio)
    slope = np.polyfit(np.arange(curve.shape[0], dtype=np.float64), curve, 1)[0]
    return float(slope / np.std(portfolio, ddof=1))


class SlopeStd(_Ratio):
    """Maximise slope / std of the combined equity curve over the last ``lookback`` periods; the objective
    is that ratio (per period). ``equity="compounded"`` (the default: the value of 1 invested) or
    ``"additive"`` (the sum of the returns); the compounded optimum is found from the additive one
    (``rebal_allocation.compounded``)."""

    def __init__(
        self, count: int, lookback: int = DEFAULT_LOOKBACK, equity: Equity = "compounded", **options: Any
    ) -> None:
        super().__init__(count, **options)
        self.lookback = int(checked("lookback", lookback))
        if equity not in ("compounded", "additive"):
            raise ValueError(f"equity must be compounded or additive, not {equity!r}")
        self.equity = equity

    def _factor_rows(self, returns: Floats) -> int:
        return min(self.lookback, int(returns.shape[0]))

    def _ratio_data(self, returns: Floats, est: Estimate) -> tuple[Floats, Floats]:
        return slope_std_data(returns[-self.lookback :])

    def _nothing_positive(self) -> str:
        return "no strategy's cumulative curve slopes upwards over the lookback"

    def _refine(
        self, weights: Floats | None, data: Floats, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | None:
        if self.equity == "additive" or weights is None:
            return weights
        c = self.constraints
        window = data[-self.lookback :]
        single = np.zeros(self.count)
        single[int(np.argmax(window.sum(axis=0)))] = 1.0
        starts = [weights, single, np.full(self.count, 1.0 / self.count)]
        groups = [(g.members, g.cap) for g in c.groups]
        found = compounded.maximise(
            window, starts, self.bounds.low, self.bounds.high, groups, pairs, c.pair_cap, current, c.turnover
        )
        return weights if found is None else self._clean(found)

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        if self.equity == "additive":
            return super().objective(weights, returns, est)
        return compounded.compounded_slope_over_std(returns[-self.lookback :], weights)


class RiskParity(Optimizer):
    """Equal risk contribution; the objective is ``max_i |RC_i / w'Σw - 1/n|`` (0 at exact parity)."""

    def __init__(self, count: int, **options: Any) -> None:
        super().__init__(count, **options)
        if not self.constraints.trivial():
            raise ValueError("risk parity takes no constraint beyond long-only and fully invested")

    def _structure(self, returns: Floats) -> tuple[Any, ...]:
        return ()

    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        x = cp.Variable(self.count, name="x")
        risk = cp.Parameter((self.count, self.count), name="risk")
        barrier = cp.sum_squares(risk @ x) / 2 - cp.sum(cp.log(x)) / self.count
        return _Built(cp.Problem(cp.Minimize(barrier)), (), current, {"risk": risk, "x": x})

    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        scale = _scale(est.covariance)
        built.handles["risk"].value = math.sqrt(scale) * factor(est.covariance)
        built.handles["scaled"] = scale * est.covariance
        return None

    def _weights(self, built: _Built) -> Floats:
        x = built.handles["x"].value
        if x is None:
            return np.full(self.count, np.nan)
        return newton_polish(np.asarray(x, dtype=np.float64), built.handles["scaled"])

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        return parity_gap(weights, est.covariance)

    def _direct(
        self, returns: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | str | None:
        warm = self._warm if isinstance(self._warm, np.ndarray) else None
        solution = risk_parity(_scale(est.covariance) * est.covariance, warm)
        if solution is None:
            return None
        self._warm = solution.x
        return solution.x


def newton_polish(x: Floats, covariance: Floats) -> Floats:
    """Newton steps on the log-barrier optimality condition ``Σx - 1/(n x) = 0`` from the interior-point
    solution (accurate to the solver's ~1e-7), damped to keep ``x > 0``: quadratic convergence takes the
    risk contributions to equal within float precision in two or three steps."""
    count = x.shape[0]
    for _ in range(POLISH_STEPS):
        residual = covariance @ x - 1.0 / (count * x)
        if np.max(np.abs(residual * x)) < POLISH_TOLERANCE:
            break
        step = np.linalg.solve(covariance + np.diag(1.0 / (count * x**2)), residual)
        length = 1.0
        while np.any(x - length * step <= 0) and length > POLISH_SMALLEST_STEP:
            length /= 2
        x = x - length * step
    return x


def parity_gap(weights: Floats, covariance: Floats) -> float:
    """How far the risk contributions are from equal: ``max_i |w_i (Σw)_i / w'Σw - 1/n|``."""
    contributions = weights * (covariance @ weights)
    return float(np.max(np.abs(contributions / contributions.sum() - 1.0 / weights.shape[0])))


def additive_max_drawdown(window: Floats, weights: Floats) -> float:
    """The drawdown proxy of `Mix`, computed directly: the largest fall of ``cumsum(R w)`` (from 0)."""
    curve = np.concatenate([[0.0], np.cumsum(window @ weights)])
    return float(np.max(np.maximum.accumulate(curve) - curve))


class Mix(Optimizer):
    """Maximise ``λr * annual return - λv * annual volatility - λd * MDD`` (see the module doc); the
    objective is that utility."""

    def __init__(
        self,
        count: int,
        return_weight: float = 1.0,
        volatility_weight: float = 1.0,
        drawdown_weight: float = 1.0,
        lookback: int = DEFAULT_LOOKBACK,
        **options: Any,
    ) -> None:
        super().__init__(count, **options)
        self.weights_of = (
            checked("return_weight", return_weight),
            checked("volatility_weight", volatility_weight),
            checked("drawdown_weight", drawdown_weight),
        )
        self.lookback = int(checked("lookback", lookback))

    def _structure(self, returns: Floats) -> tuple[Any, ...]:
        return (min(self.lookback, returns.shape[0]),)

    def _build(self, pairs: tuple[Pair, ...], current: Parameter, returns: Floats) -> _Built:
        periods = min(self.lookback, returns.shape[0])
        w = cp.Variable(self.count, name="w")
        peak = cp.Variable(periods, name="peak")
        worst = cp.Variable(name="worst")
        mean = cp.Parameter(self.count, name="mean")
        risk = cp.Parameter((self.count, self.count), name="risk")
        curve = cp.Parameter((periods, self.count), name="curve")
        lam_r, lam_v, lam_d = self.weights_of
        utility = lam_r * (mean @ w) - lam_v * cp.norm2(risk @ w) - lam_d * worst
        drawdown = [peak >= curve @ w, peak[1:] >= peak[:-1], peak[0] >= 0, worst >= peak - curve @ w]
        constraints = self._portfolio_constraints(w, 1.0, pairs, current) + drawdown
        problem = cp.Problem(cp.Maximize(utility), constraints)
        return _Built(problem, (), current, {"mean": mean, "risk": risk, "curve": curve, "w": w})

    def _update(self, built: _Built, returns: Floats, est: Estimate) -> str | None:
        built.handles["mean"].value = self.periods_per_year * est.mean
        built.handles["risk"].value = math.sqrt(self.periods_per_year) * factor(est.covariance)
        built.handles["curve"].value = np.cumsum(returns[-self.lookback :], axis=0)
        return None

    def _weights(self, built: _Built) -> Floats:
        return np.asarray(built.handles["w"].value, dtype=np.float64)

    def _direct(
        self, returns: Floats, est: Estimate, pairs: tuple[Pair, ...], current: Floats
    ) -> Floats | str | None:
        lam_r, lam_v, lam_d = self.weights_of
        window = returns[-self.lookback :]
        curve = np.vstack([np.zeros((1, self.count)), np.cumsum(window, axis=0)])
        return constrained.mix(
            self.periods_per_year * est.covariance,
            lam_r * self.periods_per_year * est.mean,
            lam_v,
            lam_d,
            curve,
            self.bounds.low,
            self.bounds.high,
            self._rows(pairs),
            current,
            self.constraints.turnover,
            self._warm_of(),
        )

    def objective(self, weights: Floats, returns: Floats, est: Estimate) -> float:
        lam_r, lam_v, lam_d = self.weights_of
        annual_return = self.periods_per_year * float(est.mean @ weights)
        annual_volatility = math.sqrt(self.periods_per_year * _variance(weights, est))
        drawdown = additive_max_drawdown(returns[-self.lookback :], weights)
        return lam_r * annual_return - lam_v * annual_volatility - lam_d * drawdown

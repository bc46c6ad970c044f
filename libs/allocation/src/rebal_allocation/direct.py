"""Direct numpy solvers for the common cases, exact to rounding and warm-started from the last solution.

The cvxpy problems in ``optimize`` handle every constraint, but a general interior-point solve through
cvxpy costs milliseconds at ten strategies and seconds at a thousand. Two shapes cover the usual
configuration (long-only, fully invested, per-strategy bounds at most) and have fast exact algorithms:

- ``box_qp``: minimise ``x'Qx / 2 - c'x`` subject to ``a'x = b`` and ``low <= x <= high``, by the
  primal-dual active-set method (Hintermüller, Ito & Kunisch 2002, a semismooth Newton method): guess
  which bounds are active, solve the equality-constrained problem on the free variables exactly (one
  Cholesky factorisation), move every variable that breaks its bound or whose bound has a multiplier of
  the wrong sign, and repeat until the guess repeats. A stable guess satisfies the KKT conditions, which
  for a convex problem means the global optimum; the answer is then exact to rounding, not to a solver
  tolerance. Started from the previous solution's active set, a re-solve after one new day usually takes
  one or two factorisations. The guesses can cycle or pick a set on which ``a'x = b`` cannot hold
  (about a third of small random bounded cases, none of the benchmark's); the primal active-set method
  (Nocedal & Wright 16.3: from a feasible point, one bound added or released per factorisation) then
  takes over, sure but slower (one factorisation per bound that changes, so seconds for a cold start
  at N=1000; a re-solve restarts it from the previous solution). Minimum variance, mean-variance and
  (homogenised) maximum Sharpe are this problem.
- ``risk_parity``: Newton's method on the convex log-barrier function of Spinu (2013),
  ``f(x) = x'Σx / 2 - sum(log x) / n`` over ``x > 0``, whose minimiser has ``x_i (Σx)_i = 1 / n`` for every
  i (equal risk contributions once normalised), with a backtracking line search that keeps ``x > 0``;
  started from inverse volatility (exact when uncorrelated) or the previous solution. Newton converges
  quadratically near the optimum, so it stops at the risk contributions equal to float precision; there,
  while each step still shrinks the residual tenfold, the last Cholesky factor is reused (chord steps),
  so a warm re-solve costs one O(N^3) factorisation and a few O(N^2) solves.

Both return ``None`` instead of an answer they cannot vouch for (a singular matrix, no convergence within
the step budget, an active-set cycle, a KKT residual above tolerance); the caller then falls back to the
cvxpy problem. Inputs are expected rescaled to O(1) (see ``optimize``), so the tolerances are relative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Flags = NDArray[np.bool_]

# Active-set guesses before giving up (each is one Cholesky factorisation of the free block).
ACTIVE_SET_ITERATIONS = 100
# The primal active-set fallback: steps per variable before giving up (each adds or releases one bound).
PRIMAL_ITERATIONS_PER_VARIABLE = 3
# A free block whose Cholesky pivots span more than this ratio (condition number ~1e14) is treated as
# singular: its solution would be noise, so the method gives no answer.
PIVOT_RATIO = 1e-7
# Largest accepted stationarity / feasibility residual, relative to the size of the data.
KKT_TOLERANCE = 1e-9
# Newton on the risk-parity barrier: step budget, and the stop once every scaled risk contribution
# n * x_i (Σx)_i is within this of 1 (float precision for O(1) data).
NEWTON_STEPS = 50
PARITY_TOLERANCE = 1e-13
# When the line search finds no decrease left (rounding), the point is accepted within this.
PARITY_ROUNDING = 1e-10
ARMIJO = 1e-4
# Scaled risk contributions within this of 1: full Newton steps (quadratic convergence region).
NEWTON_REGION = 1e-3
# ... where a factorisation is reused while each step shrinks the residual by at least this factor.
CHORD_CONTRACTION = 0.1
SMALLEST_STEP = 1e-10


@dataclass(frozen=True)
class ActiveSet:
    """Which variables sit at their lower / upper bound, and the solution they came with: the warm start
    of the next ``box_qp`` (the point starts the primal method when it is still feasible)."""

    low: Flags
    high: Flags
    point: Floats | None = None


@dataclass(frozen=True)
class QpSolution:
    x: Floats
    active: ActiveSet
    iterations: int


def box_qp(
    quadratic: Floats,
    linear: Floats,
    direction: Floats,
    target: float,
    low: Floats,
    high: Floats,
    start: ActiveSet | None = None,
) -> QpSolution | None:
    """Minimise ``x'Qx / 2 - c'x`` s.t. ``a'x = b``, ``low <= x <= high`` (Q positive definite on the free
    block); ``None`` when the method cannot certify an optimum (see the module doc).

    The primal-dual guesses converge in a few steps but may cycle or guess a set that cannot meet
    ``a'x = b``; the primal active-set method (Nocedal & Wright, algorithm 16.3: from a feasible point,
    one bound added or released per step) then takes over, slower but sure."""
    found = _primal_dual(quadratic, linear, direction, target, low, high, start)
    if found is not None:
        return found
    warm = None if start is None else _still_feasible(start.point, direction, target, low, high)
    return _primal(quadratic, linear, direction, target, low, high, warm)


def _primal_dual(
    quadratic: Floats,
    linear: Floats,
    direction: Floats,
    target: float,
    low: Floats,
    high: Floats,
    start: ActiveSet | None,
) -> QpSolution | None:
    count = linear.shape[0]
    at_low = np.zeros(count, dtype=np.bool_) if start is None else start.low.copy()
    at_high = np.zeros(count, dtype=np.bool_) if start is None else start.high.copy()
    at_high &= ~at_low
    seen: set[bytes] = set()
    for iteration in range(1, ACTIVE_SET_ITERATIONS + 1):
        key = np.packbits(np.concatenate([at_low, at_high])).tobytes()
        if key in seen:
            return None  # the guesses cycle
        seen.add(key)
        solved = _equality_qp(quadratic, linear, direction, target, low, high, at_low, at_high)
        if solved is None:
            return None
        x, multiplier = solved
        gradient = quadratic @ x - linear - multiplier * direction  # = (bound multipliers) low - high
        free = ~(at_low | at_high)
        # A free variable past its bound by any amount goes onto it: a tolerance here would accept a weight
        # of -1e-9 under a minimum of 1e-10 (cleaned to 0 afterwards). Ties (a multiplier of zero) keep
        # the current guess, so rounding at a bound cannot make the guesses alternate.
        tie = KKT_TOLERANCE * (1.0 + float(np.max(np.abs(gradient + linear + multiplier * direction))))
        new_low = (free & (x < low)) | (at_low & (gradient > -tie))
        new_high = (free & (x > high)) | (at_high & (gradient < tie))
        new_high &= ~new_low
        if np.array_equal(new_low, at_low) and np.array_equal(new_high, at_high):
            if not _certified(gradient, linear, direction, target, x, multiplier, free):
                return None
            return QpSolution(x, ActiveSet(at_low, at_high, x), iteration)
        at_low, at_high = new_low, new_high
    return None


def _primal(
    quadratic: Floats,
    linear: Floats,
    direction: Floats,
    target: float,
    low: Floats,
    high: Floats,
    start: Floats | None = None,
) -> QpSolution | None:
    x = start if start is not None else _feasible_point(direction, target, low, high)
    if x is None:
        return None
    count = x.shape[0]
    slack = KKT_TOLERANCE * (1.0 + float(np.max(np.abs(x))))
    at_low = x <= low + slack
    at_high = (x >= high - slack) & ~at_low
    x = np.where(at_low, low, np.where(at_high, high, x))
    for iteration in range(1, PRIMAL_ITERATIONS_PER_VARIABLE * count + 1):
        solved = _equality_qp(quadratic, linear, direction, target, low, high, at_low, at_high)
        if solved is None:
            return None
        target_x, multiplier = solved
        step = target_x - x
        free = ~(at_low | at_high)
        outside = free & ((target_x < low) | (target_x > high))  # then the step below adds that bound
        if not outside.any() and np.max(np.abs(step), initial=0.0) <= KKT_TOLERANCE * (
            1.0 + np.max(np.abs(x))
        ):
            gradient = quadratic @ target_x - linear - multiplier * direction
            wrong = np.where(at_low, -gradient, np.where(at_high, gradient, 0.0))
            worst = int(np.argmax(wrong))
            size = 1.0 + float(np.max(np.abs(gradient + multiplier * direction)))
            if wrong[worst] <= KKT_TOLERANCE * size:
                if not _certified(gradient, linear, direction, target, target_x, multiplier, free):
                    return None
                return QpSolution(target_x, ActiveSet(at_low, at_high, target_x), iteration)
            at_low[worst] = at_high[worst] = False  # release the bound with the wrong-signed multiplier
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(step < 0, (low - x) / step, np.where(step > 0, (high - x) / step, np.inf))
        room = np.where(free, np.clip(room, 0.0, None), np.inf)
        blocking = int(np.argmin(room))
        length = min(1.0, float(room[blocking]))
        x = x + length * step
        if length < 1.0:
            if step[blocking] < 0:
                x[blocking], at_low[blocking] = low[blocking], True
            else:
                x[blocking], at_high[blocking] = high[blocking], True
    return None


def _still_feasible(
    point: Floats | None, direction: Floats, target: float, low: Floats, high: Floats
) -> Floats | None:
    """The previous solution as a start for the new data: as it is when it satisfies ``a'x = b`` and the
    bounds (the budget ``sum w = 1`` does not change), or rescaled onto ``a'x = b`` when the bounds are the
    cone ``x >= 0`` (the homogenised maximum Sharpe, whose ``a`` is the new mean)."""
    if point is None or point.shape != direction.shape:
        return None
    reach = float(direction @ point)
    if np.all(low == 0) and np.all(np.isinf(high)) and reach > 0:
        point = point * (target / reach)
    slack = KKT_TOLERANCE * (1.0 + float(np.max(np.abs(point))))
    inside = bool(np.all(point >= low - slack) and np.all(point <= high + slack))
    on_plane = abs(float(direction @ point) - target) <= KKT_TOLERANCE * (1.0 + abs(target))
    return np.clip(point, low, high) if inside and on_plane else None


def _feasible_point(direction: Floats, target: float, low: Floats, high: Floats) -> Floats | None:
    """A point of ``{a'x = b, low <= x <= high}``: along the box diagonal when the box is bounded, else
    from ``low`` along the unbounded coordinate with the largest ``a_i``."""
    span = high - low
    if np.all(np.isfinite(span)):
        reach = float(direction @ span)
        fraction = (target - float(direction @ low)) / reach if reach != 0 else math.nan
        if not -KKT_TOLERANCE <= fraction <= 1.0 + KKT_TOLERANCE:
            return None
        return low + min(max(fraction, 0.0), 1.0) * span  # (rounding can put a vertex a hair outside)
    open_ended = np.where(np.isfinite(span), -np.inf, direction)
    best = int(np.argmax(open_ended))
    if not open_ended[best] > 0:
        return None
    x = low.copy()
    x[best] += (target - float(direction @ low)) / direction[best]
    return x if x[best] >= low[best] else None


def _equality_qp(
    quadratic: Floats,
    linear: Floats,
    direction: Floats,
    target: float,
    low: Floats,
    high: Floats,
    at_low: Flags,
    at_high: Flags,
) -> tuple[Floats, float] | None:
    """The fixed variables at their bounds and the free ones minimising the objective on ``a'x = b``."""
    free = ~(at_low | at_high)
    x = np.where(at_low, low, np.where(at_high, high, 0.0))
    if not np.all(np.isfinite(x[~free])):
        return None  # an infinite bound cannot be active
    fixed_part = quadratic[np.ix_(free, ~free)] @ x[~free]
    rest = target - float(direction[~free] @ x[~free])
    if not free.any():
        if abs(rest) > KKT_TOLERANCE * (1.0 + abs(target)):
            return None
        return x, _vertex_multiplier(quadratic @ x - linear, direction, at_low, at_high)
    factor = _well_conditioned_cholesky(quadratic[np.ix_(free, free)])
    if factor is None:
        return None
    both = scipy.linalg.cho_solve(factor, np.column_stack([direction[free], linear[free] - fixed_part]))
    along, base = both[:, 0], both[:, 1]
    curvature = float(direction[free] @ along)
    if not curvature > 0:
        return None  # the free variables cannot move a'x
    multiplier = (rest - float(direction[free] @ base)) / curvature
    x[free] = base + multiplier * along
    return x, multiplier


def _well_conditioned_cholesky(block: Floats) -> tuple[Floats, bool] | None:
    try:
        factor = scipy.linalg.cho_factor(block, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    pivots = np.abs(np.diag(factor[0]))
    return factor if pivots.min() > PIVOT_RATIO * pivots.max() else None


def _vertex_multiplier(slope: Floats, direction: Floats, at_low: Flags, at_high: Flags) -> float:
    """With every variable at a bound, the equality's multiplier λ is free: the one that gives every bound
    multiplier ``slope_i - λ a_i`` its right sign (>= 0 at a lower bound, <= 0 at an upper one) when one
    does, else the middle of the conflicting limits (and the active-set step then releases a bound)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = slope / direction
    positive, negative = direction > 0, direction < 0
    below = np.concatenate([ratio[at_low & positive], ratio[at_high & negative]])  # λ <= these
    above = np.concatenate([ratio[at_high & positive], ratio[at_low & negative]])  # λ >= these
    ceiling = float(np.min(below, initial=math.inf))
    floor = float(np.max(above, initial=-math.inf))
    if floor <= ceiling:
        return floor if math.isfinite(floor) else (ceiling if math.isfinite(ceiling) else 0.0)
    return (floor + ceiling) / 2


def _certified(
    gradient: Floats,
    linear: Floats,
    direction: Floats,
    target: float,
    x: Floats,
    multiplier: float,
    free: Flags,
) -> bool:
    """Stationarity on the free variables and the equality hold to rounding (the signs are checked);
    ``gradient`` is ``Qx - c - λa`` at `x`."""
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(gradient)):
        return False
    curvature = gradient + linear + multiplier * direction  # Qx
    size = float(np.max(np.abs(curvature), initial=0.0)) + float(np.max(np.abs(linear), initial=0.0))
    stationary = float(np.max(np.abs(gradient[free]), initial=0.0)) <= KKT_TOLERANCE * (1.0 + size)
    feasible = abs(float(direction @ x) - target) <= KKT_TOLERANCE * (1.0 + abs(target))
    return stationary and feasible


@dataclass(frozen=True)
class ParitySolution:
    x: Floats  # the barrier minimiser; weights are x / sum(x)
    steps: int


def risk_parity(covariance: Floats, start: Floats | None = None) -> ParitySolution | None:
    """Minimise ``x'Σx / 2 - sum(log x) / n`` (Σ positive definite) by damped Newton; ``None`` when it does
    not reach equal risk contributions within the step budget."""
    count = covariance.shape[0]
    if start is None or start.shape != (count,) or not np.all(start > 0):
        start = 1.0 / np.sqrt(np.clip(np.diag(covariance), np.finfo(np.float64).tiny, None))
    quadratic = float(start @ covariance @ start)
    if not quadratic > 0:
        return None
    x = start / np.sqrt(quadratic)  # the best multiple of the start: x'Σx = 1, as at the optimum
    product = covariance @ x
    factor: tuple[Floats, bool] | None = None
    previous = math.inf
    for step in range(NEWTON_STEPS + 1):
        residual = float(np.max(np.abs(count * x * product - 1.0)))
        if residual < PARITY_TOLERANCE:
            return ParitySolution(x, step)
        gradient = product - 1.0 / (count * x)
        # near the optimum, while each step still shrinks the residual tenfold, the last factorisation
        # serves again (a chord step: O(N^2) instead of a new O(N^3) Cholesky)
        if factor is None or residual >= NEWTON_REGION or residual > CHORD_CONTRACTION * previous:
            try:
                hessian = covariance + np.diag(1.0 / (count * x**2))
                factor = scipy.linalg.cho_factor(hessian, check_finite=False)
            except np.linalg.LinAlgError:
                return None
        direction = -scipy.linalg.cho_solve(factor, gradient, check_finite=False)
        previous = residual
        moved = _line_search(covariance, x, product, gradient, direction)
        if moved is None:
            return ParitySolution(x, step) if residual < PARITY_ROUNDING else None
        x, product = moved
    return None


def _line_search(
    covariance: Floats, x: Floats, product: Floats, gradient: Floats, direction: Floats
) -> tuple[Floats, Floats] | None:
    """The full Newton step near the optimum (where the decrease in f is below its rounding, so an
    Armijo test would stall); otherwise backtracking from the longest step that keeps ``x > 0``."""
    count = x.shape[0]
    if np.max(np.abs(count * x * product - 1.0)) < NEWTON_REGION and np.all(x + direction > 0):
        full = x + direction
        return full, covariance @ full
    shrinking = direction < 0
    # the longest step keeping x > 0, with a margin
    length = min(1.0, 0.99 * float(np.min(-x[shrinking] / direction[shrinking], initial=np.inf)))
    value = _barrier(x, product, count)
    slope = float(gradient @ direction)
    while length >= SMALLEST_STEP:
        trial = x + length * direction
        trial_product = covariance @ trial
        if _barrier(trial, trial_product, count) <= value + ARMIJO * length * slope:
            return trial, trial_product
        length /= 2
    return None


def _barrier(x: Floats, product: Floats, count: int) -> float:
    return float(x @ product) / 2 - float(np.sum(np.log(x))) / count

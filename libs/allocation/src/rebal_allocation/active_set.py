"""An exact active-set method for the constrained allocation problems (groups, pairs, turnover, the mix).

``linear_qp`` minimises ``x'Qx / 2 - c'x + d'z`` over ``x`` (n variables with bounds) and ``z`` (a few free
variables with no curvature: the drawdown of the mix objective) subject to equality rows and inequality
rows ``A x + B z (= or <=) b``; ``Q`` must be positive definite on the variables not at a bound. It is the
primal-dual active-set method of ``direct.box_qp`` (Hintermüller, Ito & Kunisch 2002) with general rows:
guess which bounds and which inequality rows are active, solve the equality-constrained problem they leave
exactly, move every free variable past a bound onto it and every inactive row that is broken into the
working set, release every bound and row whose multiplier has the wrong sign, and repeat until the guess
repeats. A stable guess satisfies the KKT conditions of a convex problem: the answer is the optimum, exact
to rounding (not to a solver tolerance). Started from the previous solution's active sets, a re-solve after
one new day takes one or two factorisations.

One equality-constrained step: with the bound variables fixed, ``x_F = Q_FF⁻¹ (c_F - Q_FB x_B - A_F' λ)``
(one Cholesky factorisation of the free block, `k` solves for the `k` working rows), and the multipliers and
``z`` from a small ``(k + p)`` system. Returns ``None`` rather than an answer it cannot vouch for (a
singular block, guesses that cycle or run out, a KKT residual above tolerance): the caller then solves by
the cvxpy problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
from numpy.typing import NDArray

from rebal_allocation.direct import KKT_TOLERANCE, PIVOT_RATIO, PRIMAL_ITERATIONS_PER_VARIABLE

Floats = NDArray[np.float64]
Flags = NDArray[np.bool_]
Guess = tuple[Flags, Flags, Flags]  # at a lower bound, at an upper bound, rows in the working set

# Active-set guesses before giving up (each is one Cholesky factorisation of the free block).
ITERATIONS = 200
# The small system of multipliers: a condition number above 1 / this is treated as singular.
SMALLEST_RECIPROCAL_CONDITION = 1e-13


@dataclass(frozen=True)
class Rows:
    """``A x + B z (= or <=) b``: ``equality`` marks the rows that must hold with equality."""

    a: Floats  # rows x n
    b_z: Floats  # rows x p
    bound: Floats  # rows
    equality: Flags  # rows

    @staticmethod
    def of(a: Floats, bound: Floats, equality: Flags, b_z: Floats | None = None) -> Rows:
        count = a.shape[0]
        return Rows(a, np.zeros((count, 0)) if b_z is None else b_z, bound, equality)

    def __len__(self) -> int:
        return int(self.a.shape[0])


@dataclass(frozen=True)
class Working:
    """The active bounds and inequality rows: the warm start of the next solve."""

    low: Flags
    high: Flags
    rows: Flags


@dataclass(frozen=True)
class Answer:
    x: Floats
    z: Floats
    multipliers: Floats  # one per row (0 for an inactive inequality)
    gradient: Floats  # Qx - c + A'λ: the bound multipliers (>= 0 at a lower bound, <= 0 at an upper)
    working: Working
    iterations: int


def linear_qp(
    quadratic: Floats,
    linear: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    z_cost: Floats | None = None,
    start: Working | None = None,
) -> Answer | None:
    """Minimise ``x'Qx / 2 - c'x + d'z`` s.t. ``rows``, ``low <= x <= high`` (see the module doc): the
    primal-dual method, else the primal active-set method from a feasible point."""
    found = _primal_dual(quadratic, linear, low, high, rows, z_cost, start)
    if found is not None:
        return found
    cost = np.zeros(rows.b_z.shape[1]) if z_cost is None else z_cost
    return _primal(quadratic, linear, low, high, rows, cost)


def _primal_dual(
    quadratic: Floats,
    linear: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    z_cost: Floats | None,
    start: Working | None,
) -> Answer | None:
    count = linear.shape[0]
    cost = np.zeros(rows.b_z.shape[1]) if z_cost is None else z_cost
    at_low = np.zeros(count, dtype=np.bool_) if start is None else start.low.copy()
    at_high = np.zeros(count, dtype=np.bool_) if start is None else start.high.copy()
    at_high &= ~at_low
    # z is pinned by rows only: with no start, its rows start in the working set (the method drops those
    # whose multiplier turns out negative)
    with_z = np.any(rows.b_z != 0, axis=1)
    active = (rows.equality | with_z) if start is None else (start.rows | rows.equality)
    if start is not None and with_z.any() and not (active & with_z).any():
        active = active | with_z
    seen: set[bytes] = set()
    # Changing every bound and row at once (the primal-dual step) converges in a few steps but can cycle,
    # or guess rows that contradict each other; from the last guess that solved, the method then changes
    # one thing at a time, the first (lowest index) the guess gets wrong: Murty's least-index principal
    # pivoting, which terminates for the positive definite problems here.
    single = False
    last: tuple[Guess, Guess] | None = None
    guess: Guess = (at_low, at_high, active)
    for iteration in range(1, ITERATIONS + 1):
        key = _key(*guess)
        step = None if key in seen else _equality_step(quadratic, linear, low, high, rows, cost, *guess)
        seen.add(key)
        if step is None:
            if single or last is None:
                return None
            single, guess = True, _one_change(*last)
            seen.clear()  # guesses of the all-at-once phase may be passed again, one change at a time
            continue
        at_low, at_high, active = guess
        x, z, multipliers = step
        gradient = quadratic @ x - linear + rows.a.T @ multipliers
        free = ~(at_low | at_high)
        size = 1.0 + float(np.max(np.abs(quadratic @ x), initial=0.0)) + float(np.max(np.abs(linear)))
        tie = KKT_TOLERANCE * size
        residual = rows.a @ x + rows.b_z @ z - rows.bound
        row_slack = KKT_TOLERANCE * (1.0 + np.abs(rows.bound))
        new_low = (free & (x < low)) | (at_low & (gradient > -tie))
        new_high = (free & (x > high)) | (at_high & (gradient < tie))
        new_high &= ~new_low
        # a working row broken by bounded members alone: release the bounds that push it over
        broken = active & (residual > row_slack) & ~np.any(rows.a[:, free] != 0, axis=1)
        if broken.any():
            pushing = np.any(rows.a[broken] != 0, axis=0)
            new_low &= ~(pushing & at_low & (np.sum(rows.a[broken], axis=0) < 0))
            new_high &= ~(pushing & at_high & (np.sum(rows.a[broken], axis=0) > 0))
        inequality = ~rows.equality
        new_active = (
            rows.equality
            | (inequality & ~active & (residual > row_slack))
            | (inequality & active & (multipliers > -tie))
        )
        proposal: Guess = (new_low, new_high, new_active)
        if _key(*proposal) == key:
            if not _certified(gradient, free, residual, active, rows, row_slack, tie):
                return None
            return Answer(
                x, z, multipliers, gradient, Working(at_low, at_high, active & inequality), iteration
            )
        last = (guess, proposal)
        guess = _one_change(guess, proposal) if single else proposal
    return None


def _primal(
    quadratic: Floats, linear: Floats, low: Floats, high: Floats, rows: Rows, z_cost: Floats
) -> Answer | None:
    """The primal active-set method (Nocedal & Wright, algorithm 16.3): from a feasible point (a linear
    programme's, HiGHS through scipy, with ``z`` at its least cost), one bound or row added (the one that
    blocks the step) or released (the most negative multiplier) per factorisation. Sure, and slower: the
    fallback when the primal-dual guesses cycle or contradict each other."""
    count, extra = linear.shape[0], rows.b_z.shape[1]
    inequality = ~rows.equality
    both = np.hstack([rows.a, rows.b_z])
    feasible = scipy.optimize.linprog(
        np.concatenate([np.zeros(count), z_cost]),
        A_ub=both[inequality] if inequality.any() else None,
        b_ub=rows.bound[inequality] if inequality.any() else None,
        A_eq=both[rows.equality] if rows.equality.any() else None,
        b_eq=rows.bound[rows.equality] if rows.equality.any() else None,
        bounds=[
            (float(lo), float(hi) if math.isfinite(hi) else None) for lo, hi in zip(low, high, strict=True)
        ]
        + [(None, None)] * extra,
        method="highs",
    )
    if feasible.status != 0:
        return None
    x = np.clip(np.asarray(feasible.x[:count], dtype=np.float64), low, high)
    z = np.asarray(feasible.x[count:], dtype=np.float64)
    at_low, at_high = x <= low, (x >= high) & ~(x <= low)
    active = rows.equality.copy()
    for k in range(extra):  # z is pinned by one of its rows, the tightest
        with_z = np.flatnonzero(rows.b_z[:, k] != 0)
        if with_z.size and not (active[with_z]).any():
            active[with_z[int(np.argmax(rows.a[with_z] @ x + rows.b_z[with_z] @ z - rows.bound[with_z]))]] = (
                True
            )
    for iteration in range(1, PRIMAL_ITERATIONS_PER_VARIABLE * (count + len(rows)) + 1):
        step = _equality_step(quadratic, linear, low, high, rows, z_cost, at_low, at_high, active)
        if step is None:
            return None
        target, target_z, multipliers = step
        direction, z_direction = target - x, target_z - z
        free = ~(at_low | at_high)
        moved = max(
            float(np.max(np.abs(direction), initial=0.0)), float(np.max(np.abs(z_direction), initial=0.0))
        )
        if moved <= KKT_TOLERANCE * (1.0 + float(np.max(np.abs(x)))):
            gradient = quadratic @ target - linear + rows.a.T @ multipliers
            tie = KKT_TOLERANCE * (
                1.0 + float(np.max(np.abs(quadratic @ target))) + float(np.max(np.abs(linear)))
            )
            wrong = np.concatenate(
                [
                    np.where(at_low, -gradient, np.where(at_high, gradient, 0.0)),
                    np.where(active & inequality, -multipliers, 0.0),
                ]
            )
            worst = int(np.argmax(wrong))
            if wrong[worst] <= tie:
                residual = rows.a @ target + rows.b_z @ target_z - rows.bound
                slack = KKT_TOLERANCE * (1.0 + np.abs(rows.bound))
                if not _certified(gradient, free, residual, active, rows, slack, tie):
                    return None
                working = Working(at_low, at_high, active & inequality)
                return Answer(target, target_z, multipliers, gradient, working, iteration)
            if worst < count:
                at_low[worst] = at_high[worst] = False
            else:
                active[worst - count] = False
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(
                direction < 0, (low - x) / direction, np.where(direction > 0, (high - x) / direction, np.inf)
            )
            rate = rows.a @ direction + rows.b_z @ z_direction
            row_room = np.where(rate > 0, (rows.bound - rows.a @ x - rows.b_z @ z) / rate, np.inf)
        room = np.where(free, np.clip(room, 0.0, None), np.inf)
        row_room = np.where(inequality & ~active, np.clip(row_room, 0.0, None), np.inf)
        variable = int(np.argmin(room))
        row = int(np.argmin(row_room)) if len(rows) else -1
        length = min(1.0, float(room[variable]), float(row_room[row]) if row >= 0 else math.inf)
        x, z = x + length * direction, z + length * z_direction
        if length < 1.0:
            if row >= 0 and row_room[row] <= room[variable]:
                active[row] = True
            elif direction[variable] < 0:
                x[variable], at_low[variable] = low[variable], True
            else:
                x[variable], at_high[variable] = high[variable], True
    return None


def _one_change(guess: Guess, proposal: Guess) -> Guess:
    """`guess` with the first bound (by variable) or else the first row that `proposal` changes changed."""
    low, high, active = (flags.copy() for flags in guess)
    variables = np.flatnonzero((proposal[0] != low) | (proposal[1] != high))
    if variables.size:
        first = int(variables[0])
        low[first], high[first] = proposal[0][first], proposal[1][first]
        return low, high, active
    first = int(np.flatnonzero(proposal[2] != active)[0])
    active[first] = proposal[2][first]
    return low, high, active


def _key(at_low: Flags, at_high: Flags, active: Flags) -> bytes:
    return np.packbits(np.concatenate([at_low, at_high, active])).tobytes()


def _equality_step(
    quadratic: Floats,
    linear: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    cost: Floats,
    at_low: Flags,
    at_high: Flags,
    active: Flags,
) -> tuple[Floats, Floats, Floats] | None:
    """The bound variables at their bounds, the rest minimising on the working rows held with equality."""
    free = ~(at_low | at_high)
    fixed = ~free
    x = np.where(at_low, low, np.where(at_high, high, 0.0))
    if not np.all(np.isfinite(x[fixed])):
        return None  # an infinite bound cannot be active
    # A row whose free part is empty (every member at a bound) and that has no z is decided by the
    # bounds: it stays out of the system (multiplier 0), and the update releases bounds if it is broken.
    decided = ~np.any(rows.a[:, free] != 0, axis=1) & ~np.any(rows.b_z != 0, axis=1)
    working = np.flatnonzero(active & ~(decided & ~rows.equality))
    a_free = rows.a[np.ix_(working, free)]
    a_fixed = rows.a[np.ix_(working, fixed)]
    b_z = rows.b_z[working]
    rest = rows.bound[working] - a_fixed @ x[fixed]
    p = b_z.shape[1]
    k = working.shape[0]
    if free.any():
        factor = _cholesky(quadratic[np.ix_(free, free)])
        if factor is None:
            return None
        right = linear[free] - quadratic[np.ix_(free, fixed)] @ x[fixed]
        solved = scipy.linalg.cho_solve(factor, np.column_stack([right, a_free.T]), check_finite=False)
        unconstrained, along = solved[:, 0], solved[:, 1:]
        schur = a_free @ along
        offset = a_free @ unconstrained
    else:
        unconstrained, along = np.zeros(0), np.zeros((0, k))
        schur, offset = np.zeros((k, k)), np.zeros(k)
    # [M  -B] [λ]   [A_F x̄ - rest]
    # [B'  0] [z] = [-d]
    system = np.block([[schur, -b_z], [b_z.T, np.zeros((p, p))]])
    right_side = np.concatenate([offset - rest, -cost])
    if system.shape[0]:
        # Working rows may depend on each other on the free variables (the turnover row is the budget
        # row when every free weight is on the same side): the least-squares multipliers of smallest norm
        # give the same x when the rows agree; when they contradict each other the guess has no point.
        values, *_ = np.linalg.lstsq(system, right_side, rcond=SMALLEST_RECIPROCAL_CONDITION)
        scale = 1.0 + float(np.max(np.abs(right_side), initial=0.0))
        if not float(np.max(np.abs(system @ values - right_side))) <= KKT_TOLERANCE * scale:
            return None
    else:
        values = np.zeros(0)
    lam, z = values[:k], values[k:]
    x[free] = unconstrained - along @ lam
    multipliers = np.zeros(len(rows))
    multipliers[working] = lam
    return x, z, multipliers


def _cholesky(block: Floats) -> tuple[Floats, bool] | None:
    try:
        factor = scipy.linalg.cho_factor(block, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    pivots = np.abs(np.diag(factor[0]))
    return factor if pivots.min() > PIVOT_RATIO * pivots.max() else None


def _certified(
    gradient: Floats,
    free: Flags,
    residual: Floats,
    active: Flags,
    rows: Rows,
    row_slack: Floats,
    tie: float,
) -> bool:
    """Stationarity on the free variables, the working rows held, the other rows not broken."""
    if not np.all(np.isfinite(gradient)) or not np.all(np.isfinite(residual)):
        return False
    stationary = float(np.max(np.abs(gradient[free]), initial=0.0)) <= tie
    held = bool(np.all(np.abs(residual[active]) <= row_slack[active]))
    kept = bool(np.all(residual[~active & ~rows.equality] <= row_slack[~active & ~rows.equality]))
    return stationary and held and kept and math.isfinite(tie)

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
from numpy.typing import NDArray

from rebal_allocation.direct import KKT_TOLERANCE, PIVOT_RATIO

Floats = NDArray[np.float64]
Flags = NDArray[np.bool_]

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
    """Minimise ``x'Qx / 2 - c'x + d'z`` s.t. ``rows``, ``low <= x <= high`` (see the module doc)."""
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
    cautious: tuple[Flags, Flags, Flags] | None = None  # the guess adding one row only, if this one fails
    for iteration in range(1, ITERATIONS + 1):
        key = _key(at_low, at_high, active)
        if key in seen and cautious is not None and _key(*cautious) not in seen:
            (at_low, at_high, active), cautious = cautious, None  # rows added one at a time instead
            key = _key(at_low, at_high, active)
        if key in seen:
            return None  # the guesses cycle
        seen.add(key)
        step = _equality_step(quadratic, linear, low, high, rows, cost, at_low, at_high, active)
        if step is None:
            # Rows added together can contradict each other (groups that cover every strategy, with the
            # budget): add the most broken one alone instead.
            if cautious is None:
                return None
            (at_low, at_high, active), cautious = cautious, None
            continue
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
        if (
            np.array_equal(new_low, at_low)
            and np.array_equal(new_high, at_high)
            and np.array_equal(new_active, active)
        ):
            if not _certified(gradient, free, residual, active, rows, row_slack, tie):
                return None
            return Answer(
                x, z, multipliers, gradient, Working(at_low, at_high, active & inequality), iteration
            )
        added = new_active & ~active
        cautious = None
        if np.count_nonzero(added) > 1:
            one = (active & new_active).copy()
            one[int(np.argmax(np.where(added, residual, -np.inf)))] = True
            cautious = (new_low, new_high, one)
        at_low, at_high, active = new_low, new_high, new_active
    return None


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

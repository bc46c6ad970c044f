"""The constrained allocation problems by the exact active-set method of ``active_set``.

- The constraint set as rows: ``sum w = 1``; each group's total at most its cap; each correlated pair's
  total at most the pair cap (``rows_of``).
- Turnover, ``sum |w - current| <= turnover``, is not linear, but it is on each side of ``current``: with
  a side chosen per strategy (above or below its current weight) it is one row ``s'(w - current) <=
  turnover`` and the side is a bound (``w_i >= current_i`` above, ``<= current_i`` below). For a side
  pattern the problem is solved exactly; a strategy held at its current weight whose multiplier says it
  wants to cross it (``|r_i| > ν``, the subgradient condition of ``|w_i - current_i|`` at 0, with ν the
  turnover row's multiplier) changes side, and the problem is solved again from the same active sets,
  until no strategy wants to: then the KKT conditions of the real problem hold (``turnover_qp``).
- The mix objective, ``λr P mu'w - λv sqrt(P) ||F w|| - λd MDD(w)`` (``mix``): the drawdown of the
  additive curve is the largest of the ``(E_s - E_t)'w`` over s <= t (E_0 = 0), written with one variable
  ``z`` and the rows ``(E_s - E_t)'w <= z`` of the pairs that matter, added one at a time where ``z`` falls
  short of the drawdown (cutting planes; finite, since the pairs are); and ``||F w|| = min over t > 0 of
  (w'Σw / t + t) / 2`` (equal at ``t = ||F w||``), so for a fixed t the problem is a quadratic programme,
  and t is moved to ``||F w(t)||`` (secant steps) until they agree to rounding: there the quadratic
  programme's optimality conditions are the mix's.

Every function returns ``None`` when the active-set method gives no certified answer (the caller then
solves by the cvxpy problem) and takes and returns a ``Warm`` start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from rebal_allocation.active_set import Answer, Rows, Working, linear_qp
from rebal_allocation.direct import KKT_TOLERANCE

Floats = NDArray[np.float64]
Pair = tuple[int, int]

# Side changes of the turnover problem before giving up (each is one warm-started active-set solve).
SIDE_ITERATIONS = 100
# Mix: cutting planes per quadratic programme, and moves of t, before giving up.
CUTS = 400
T_ITERATIONS = 60
# t has reached ||F w(t)|| when they agree to this (relative): the mix's optimality conditions then hold
# to rounding.
T_TOLERANCE = 1e-13


@dataclass
class Warm:
    """What a re-solve starts from: the active bounds and rows, the turnover sides, the mix's drawdown
    pairs and t."""

    working: Working | None = None
    sides: Floats | None = None
    cuts: list[Pair] = field(default_factory=list)
    t: float | None = None


def rows_of(
    count: int, groups: list[tuple[tuple[int, ...], float]], pairs: tuple[Pair, ...], cap: float
) -> Rows:
    """The budget (equality), the group caps and the pair caps as rows."""
    matrix = np.zeros((1 + len(groups) + len(pairs), count))
    bound = np.empty(matrix.shape[0])
    matrix[0], bound[0] = 1.0, 1.0
    for k, (members, limit) in enumerate(groups, start=1):
        matrix[k, list(members)] = 1.0
        bound[k] = limit
    for k, (i, j) in enumerate(pairs, start=1 + len(groups)):
        matrix[k, [i, j]] = 1.0
        bound[k] = cap
    equality = np.zeros(matrix.shape[0], dtype=np.bool_)
    equality[0] = True
    return Rows.of(matrix, bound, equality)


def _resized(working: Working | None, count: int, rows: int) -> Working | None:
    """A working set for `rows` rows (rows added since are inactive, rows gone are dropped)."""
    if working is None or working.low.shape[0] != count:
        return None
    active = np.zeros(rows, dtype=np.bool_)
    kept = min(rows, working.rows.shape[0])
    active[:kept] = working.rows[:kept]
    return Working(working.low, working.high, active)


def turnover_qp(
    quadratic: Floats,
    linear: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    z_cost: Floats | None,
    current: Floats | None,
    turnover: float | None,
    warm: Warm,
) -> Answer | None:
    """``linear_qp`` with the turnover limit when there is one (see the module doc); updates `warm`."""
    count = linear.shape[0]
    if turnover is None or current is None:
        answer = linear_qp(
            quadratic, linear, low, high, rows, z_cost, _resized(warm.working, count, len(rows))
        )
        warm.working = None if answer is None else answer.working
        return answer
    sides = warm.sides if warm.sides is not None and warm.sides.shape == (count,) else None
    if sides is None:  # the sides of the solution without the limit; it is the answer when it keeps it
        free = linear_qp(quadratic, linear, low, high, rows, z_cost, _resized(warm.working, count, len(rows)))
        if free is None:
            return None
        if float(np.abs(free.x - current).sum()) <= turnover + KKT_TOLERANCE:
            warm.working = Working(free.working.low, free.working.high, np.append(free.working.rows, False))
            return free
        sides = np.where(free.x >= current, 1.0, -1.0)
    limited = Rows(
        np.vstack([rows.a, sides]),
        np.vstack([rows.b_z, np.zeros((1, rows.b_z.shape[1]))]),
        np.append(rows.bound, turnover + float(sides @ current)),
        np.append(rows.equality, False),
    )
    start = _resized(warm.working, count, len(limited))
    for _ in range(SIDE_ITERATIONS):
        above = sides > 0
        side_low = np.where(above, np.maximum(low, current), low)
        side_high = np.where(above, high, np.minimum(high, current))
        limited.a[-1] = sides
        limited.bound[-1] = turnover + float(sides @ current)
        answer = linear_qp(quadratic, linear, side_low, side_high, limited, z_cost, start)
        if answer is None:
            return None
        nu = float(answer.multipliers[-1])
        gradient = answer.gradient
        tie = KKT_TOLERANCE * (1.0 + float(np.max(np.abs(gradient))) + abs(nu))
        held_above = above & answer.working.low & (side_low > low)  # at its current weight, from above
        held_below = ~above & answer.working.high & (side_high < high)
        down = held_above & (gradient > 2 * nu + tie)  # wants to go below its current weight
        up = held_below & (gradient < -2 * nu - tie)
        if not down.any() and not up.any():
            warm.working, warm.sides = answer.working, sides
            return answer
        sides = np.where(down, -1.0, np.where(up, 1.0, sides))
        moved = down | up  # free to move on their new side
        start = Working(answer.working.low & ~moved, answer.working.high & ~moved, answer.working.rows)
    return None


def drawdown_rows(curve: Floats, cuts: list[Pair]) -> tuple[Floats, Floats]:
    """The rows ``(E_s - E_t)'w - z <= 0`` of the cut pairs (curve starts with the zero row E_0)."""
    a = np.array([curve[s] - curve[t] for s, t in cuts]).reshape(len(cuts), curve.shape[1])
    return a, -np.ones((len(cuts), 1))


def worst_fall(curve: Floats, weights: Floats) -> tuple[float, Pair]:
    """The largest fall of ``E w`` (E_0 = 0) and the (peak, trough) indices where it happens."""
    values = curve @ weights
    peaks = np.maximum.accumulate(values)
    falls = peaks - values
    trough = int(np.argmax(falls))
    peak = int(np.argmax(values[: trough + 1]))
    return float(falls[trough]), (peak, trough)


def mix(
    covariance: Floats,
    gain: Floats,
    volatility_weight: float,
    drawdown_weight: float,
    curve: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    current: Floats | None,
    turnover: float | None,
    warm: Warm,
) -> Floats | None:
    """Maximise ``gain'w - volatility_weight ||F w|| - drawdown_weight MDD(w)`` (F'F = covariance; `curve`
    the cumulative returns with a leading zero row), subject to `rows`, the bounds and the turnover limit;
    see the module doc. Needs ``volatility_weight > 0`` (a positive definite quadratic term)."""
    count = gain.shape[0]
    if not volatility_weight > 0:
        return None
    guess = np.clip(np.full(count, 1.0 / count), low, high)
    t = (
        warm.t
        if warm.t is not None and warm.t > 0
        else math.sqrt(max(float(guess @ covariance @ guess), 1e-300))
    )
    cuts = list(dict.fromkeys([(0, 0), *warm.cuts, worst_fall(curve, guess)[1]]))
    uses_drawdown = drawdown_weight > 0
    previous: tuple[float, float] | None = None
    for _ in range(T_ITERATIONS):
        quadratic = (volatility_weight / t) * covariance
        weights = _with_cuts(
            quadratic,
            gain,
            low,
            high,
            rows,
            curve,
            cuts,
            drawdown_weight,
            uses_drawdown,
            current,
            turnover,
            warm,
        )
        if weights is None:
            return None
        spread = math.sqrt(max(float(weights @ covariance @ weights), 0.0))
        gap = spread - t
        if abs(gap) <= T_TOLERANCE * max(t, 1e-300):
            warm.cuts, warm.t = cuts, t
            return weights
        if previous is not None and previous[1] != gap:
            secant = t - gap * (t - previous[0]) / (gap - previous[1])
            next_t = secant if secant > 0 else spread
        else:
            next_t = spread
        if not next_t > 0:
            return None
        previous, t = (t, gap), next_t
    return None


def _with_cuts(
    quadratic: Floats,
    gain: Floats,
    low: Floats,
    high: Floats,
    rows: Rows,
    curve: Floats,
    cuts: list[Pair],
    drawdown_weight: float,
    uses_drawdown: bool,
    current: Floats | None,
    turnover: float | None,
    warm: Warm,
) -> Floats | None:
    """The quadratic programme for one t, its drawdown pairs added where ``z`` falls short (`cuts` grows)."""
    if not uses_drawdown:
        answer = turnover_qp(quadratic, gain, low, high, rows, None, current, turnover, warm)
        return None if answer is None else answer.x
    for _ in range(CUTS):
        a, b_z = drawdown_rows(curve, cuts)
        cut_rows = Rows(
            np.vstack([rows.a, a]),
            np.vstack([np.zeros((len(rows), 1)), b_z]),
            np.concatenate([rows.bound, np.zeros(len(cuts))]),
            np.concatenate([rows.equality, np.zeros(len(cuts), dtype=np.bool_)]),
        )
        answer = turnover_qp(
            quadratic, gain, low, high, cut_rows, np.array([drawdown_weight]), current, turnover, warm
        )
        if answer is None:
            return None
        fall, pair = worst_fall(curve, answer.x)
        if fall <= float(answer.z[0]) + KKT_TOLERANCE * (1.0 + abs(fall)):
            return answer.x
        if pair in cuts:
            return None  # the cut is there and still broken: rounding trouble, no certified answer
        cuts.append(pair)
    return None

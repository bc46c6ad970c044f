"""Slope / std of the *compounded* equity curve, the curve a manager looks at.

The equity of 1 invested in the portfolio, rebalanced to ``w`` every period, is
``E_t = prod_{s<=t} (1 + R_s w)``; the objective is the least-squares slope of ``E`` over the window
(``a'E`` with ``a_t = (t - mean t) / sum (t - mean t)^2``) divided by the standard deviation of the
period returns ``R w``. Unlike the additive curve (``cumsum(R w)``, linear in ``w``: a convex ratio solved
exactly in ``optimize``), the compounded curve is a polynomial of degree T in ``w`` and the ratio is not
concave, so it is maximised locally: SLSQP (scipy) with the exact gradient, from the additive optimum
(which it differs from only by compounding, so usually a start in the right basin) and from the best
single strategy and equal weights; the best point found wins. With daily returns the two curves give
weights that differ in the third or fourth decimal; the tests check both against a brute-force search.

Constraints are those of ``Constraints``: the budget and bounds, group caps and pair caps as linear
inequalities, and turnover by splitting ``|w - current|`` into ``t >= ±(w - current)``, ``sum t <= turnover``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.optimize
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Pair = tuple[int, int]

# SLSQP: iterations and the tolerance on the objective's change (the ratio is O(0.01-1) per period).
ITERATIONS = 500
TOLERANCE = 1e-14


def equity_curve(window: Floats, weights: Floats) -> Floats:
    return np.asarray(np.cumprod(1.0 + window @ weights), dtype=np.float64)


def slope_weights(periods: int) -> Floats:
    times = np.arange(periods, dtype=np.float64)
    centred = times - times.mean()
    return np.asarray(centred / np.sum(centred**2), dtype=np.float64)


def compounded_slope_over_std(window: Floats, weights: Floats) -> float:
    """The definition, computed directly: regression slope of ``cumprod(1 + R w)`` over the std of ``R w``."""
    portfolio = window @ weights
    curve = np.cumprod(1.0 + portfolio)
    slope = np.polyfit(np.arange(curve.shape[0], dtype=np.float64), curve, 1)[0]
    spread = float(np.std(portfolio, ddof=1))
    return float(slope / spread) if spread > 0 else math.nan


def _ratio_and_gradient(window: Floats, weights: Floats, slope_of: Floats) -> tuple[float, Floats]:
    portfolio = window @ weights
    growth = 1.0 + portfolio
    curve = np.cumprod(growth)
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity = curve[:, None] * np.cumsum(window / growth[:, None], axis=0)  # dE_t / dw
    slope = float(slope_of @ curve)
    slope_gradient = slope_of @ sensitivity
    centred = window - window.mean(axis=0)
    deviation = centred @ weights
    spread = math.sqrt(float(deviation @ deviation) / (window.shape[0] - 1))
    if not spread > 0 or not np.all(np.isfinite(slope_gradient)):
        return -math.inf, np.zeros_like(weights)
    spread_gradient = centred.T @ deviation / ((window.shape[0] - 1) * spread)
    ratio = slope / spread
    return ratio, (slope_gradient - ratio * spread_gradient) / spread


def maximise(
    window: Floats,
    starts: list[Floats],
    low: Floats,
    high: Floats,
    groups: list[tuple[tuple[int, ...], float]],
    pairs: tuple[Pair, ...],
    pair_cap: float,
    current: Floats,
    turnover: float | None,
) -> Floats | None:
    """The best local maximiser of the compounded ratio found from `starts` (None when none converged)."""
    count = window.shape[1]
    slope_of = slope_weights(window.shape[0])
    split = turnover is not None
    size = 2 * count if split else count

    def negative(z: Floats) -> tuple[float, Floats]:
        ratio, gradient = _ratio_and_gradient(window, z[:count], slope_of)
        full = np.zeros(size)
        full[:count] = -gradient
        return -ratio, full

    rows, caps = [], []
    for members, cap in groups:
        row = np.zeros(size)
        row[list(members)] = 1.0
        rows.append(row)
        caps.append(cap)
    for i, j in pairs:
        row = np.zeros(size)
        row[[i, j]] = 1.0
        rows.append(row)
        caps.append(pair_cap)
    budget = np.zeros(size)
    budget[:count] = 1.0
    constraints: list[dict[str, Any]] = [
        {"type": "eq", "fun": lambda z: float(budget @ z) - 1.0, "jac": lambda z: budget}
    ]
    if rows:
        matrix, limit = np.array(rows), np.array(caps)
        constraints.append({"type": "ineq", "fun": lambda z: limit - matrix @ z, "jac": lambda z: -matrix})
    bounds = list(zip(low, high, strict=True))
    if split:
        assert turnover is not None
        eye = np.eye(count)
        above = np.hstack([-eye, eye])  # t - (w - c) >= 0
        below = np.hstack([eye, eye])  # t + (w - c) >= 0
        total = np.concatenate([np.zeros(count), np.ones(count)])
        constraints += [
            {"type": "ineq", "fun": lambda z: above @ z + current, "jac": lambda z: above},
            {"type": "ineq", "fun": lambda z: below @ z - current, "jac": lambda z: below},
            {"type": "ineq", "fun": lambda z: turnover - total @ z, "jac": lambda z: -total},
        ]
        bounds += [(0.0, None)] * count
    best: tuple[float, Floats] | None = None
    for start in starts:
        z0 = np.concatenate([start, np.abs(start - current)]) if split else start.copy()
        found = scipy.optimize.minimize(
            negative,
            z0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=constraints,
            options={"maxiter": ITERATIONS, "ftol": TOLERANCE},
        )
        if not found.success:
            continue
        weights = np.clip(np.asarray(found.x[:count], dtype=np.float64), low, high)
        value = -float(found.fun)
        if math.isfinite(value) and (best is None or value > best[0]):
            best = (value, weights)
    return None if best is None else best[1]

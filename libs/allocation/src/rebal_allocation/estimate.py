"""Expected returns and covariance from a (periods x strategies) matrix of period returns.

Three covariance estimators: the sample covariance (``ddof=1``); an exponentially weighted one (weights
halve every ``halflife`` periods, newest heaviest, with the reliability-weights bias correction); and
Ledoit-Wolf shrinkage towards a scaled identity (the estimator of ``sklearn.covariance.LedoitWolf``, which
is what keeps the estimate well conditioned when there are fewer periods than strategies). Ledoit-Wolf is
computed here in closed form with one ``X'X`` product: the sum of the entries of ``(X**2)' (X**2)`` is
the sum over periods of the squared row sums of ``X**2``, so it needs no second N x N product (sklearn's
blocked loop takes 0.7 s at 1000 x 1000; this takes 0.02 s and agrees with it to rounding). The mean
is the plain sample mean, or the exponentially weighted mean for the EWMA estimator. All figures are per
period.

What cannot be estimated is refused up front with `TooLarge` (a `ValueError` naming why): returns so
large that their moments overflow a float, or so many strategies that the N x N matrices would not fit
in `MEMORY_LIMIT_BYTES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Method = Literal["sample", "ewma", "ledoit_wolf"]

# Added to the diagonal (relative to its mean) when a covariance is not numerically positive definite.
FACTOR_JITTER = 1e-10
# Rolling moments: the most periods one update may add, and the updates before a fresh recomputation.
ROLLING_LARGEST_STEP = 5
ROLLING_REFRESH = 250
# The most memory an estimate (about four N x N float matrices at once) or the optimisation problem set
# up from it (`rebal_allocation.optimize`) may take: beyond it the allocation is refused, not attempted
# until the machine runs out of memory.
MEMORY_LIMIT_BYTES = 2 * 2**30
ESTIMATE_MATRICES = 4


class TooLarge(ValueError):
    """Returns no allocation can be computed from: moments that overflow, or more strategies than the
    memory limit allows. The message says which, with the figures."""


def check_size(strategies: int) -> None:
    """Refuse more strategies than the estimate's N x N matrices can hold within `MEMORY_LIMIT_BYTES`."""
    needed = ESTIMATE_MATRICES * 8 * strategies**2
    if needed > MEMORY_LIMIT_BYTES:
        most = math.isqrt(MEMORY_LIMIT_BYTES // (ESTIMATE_MATRICES * 8))
        raise TooLarge(
            f"{strategies} strategies: estimating their covariance would take {needed / 2**30:.1f} GiB;"
            f" at most {most} strategies fit in the {MEMORY_LIMIT_BYTES / 2**30:g} GiB allowed"
        )


def _finite(result: Estimate, returns: Floats) -> Estimate:
    if not (np.all(np.isfinite(result.mean)) and np.all(np.isfinite(result.covariance))):
        largest = float(np.max(np.abs(returns))) if returns.size else 0.0
        raise TooLarge(
            f"the returns are too large to estimate from (the largest is {largest:.3g}): their"
            " covariance overflows a float"
        )
    return result


@dataclass(frozen=True)
class Estimator:
    method: Method = "ledoit_wolf"
    halflife: float = 60.0  # periods; EWMA only


@dataclass(frozen=True)
class Estimate:
    mean: Floats
    covariance: Floats


def _ewma_weights(count: int, halflife: float) -> Floats:
    ages = np.arange(count - 1, -1, -1, dtype=np.float64)
    weights = np.power(0.5, ages / halflife)
    return np.asarray(weights / weights.sum(), dtype=np.float64)


def _ewma(returns: Floats, halflife: float) -> Estimate:
    weights = _ewma_weights(returns.shape[0], halflife)
    mean = weights @ returns
    centred = returns - mean
    covariance = (centred * weights[:, None]).T @ centred / (1.0 - np.sum(weights**2))
    return Estimate(np.asarray(mean, dtype=np.float64), np.asarray(covariance, dtype=np.float64))


def estimate(returns: Floats, estimator: Estimator) -> Estimate:
    """Mean and covariance of the strategies; at least two periods are required; `TooLarge` for what
    cannot be estimated."""
    if returns.ndim != 2 or returns.shape[0] < 2:
        raise ValueError("estimation needs a (periods x strategies) matrix with at least two periods")
    check_size(returns.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        if estimator.method == "ewma":
            return _finite(_ewma(returns, estimator.halflife), returns)
        mean = np.asarray(returns.mean(axis=0), dtype=np.float64)
        if estimator.method == "sample":
            covariance = np.cov(returns, rowvar=False, ddof=1).reshape(returns.shape[1], returns.shape[1])
        else:
            covariance = ledoit_wolf(returns - mean)
    return _finite(Estimate(mean, np.asarray(covariance, dtype=np.float64)), returns)


def ledoit_wolf(centred: Floats) -> Floats:
    """Ledoit & Wolf (2004) shrinkage of the (ddof=0) covariance of centred returns towards
    ``trace / n * I``, with sklearn's estimate of the shrinkage intensity."""
    return _shrunk(centred.T @ centred / centred.shape[0], centred)


def _shrunk(empirical: Floats, centred: Floats) -> Floats:
    periods, count = centred.shape
    if count == 1:
        return np.asarray(empirical, dtype=np.float64)
    trace = float(np.trace(empirical))
    mu = trace / count
    fourth = float(np.sum(np.sum(centred**2, axis=1) ** 2))  # the sum of the entries of squares' squares
    second = float(np.sum(empirical**2))  # the sum of the squared entries of X'X, over periods^2
    beta = (fourth / periods - second) / (count * periods)
    delta = (second - 2.0 * mu * trace + count * mu**2) / count
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * empirical
    shrunk[np.diag_indices(count)] += shrinkage * mu
    return np.asarray(shrunk, dtype=np.float64)


@dataclass
class Rolling:
    """The moments of the last window (``sum y_t`` and ``sum y_t y_t'`` of ``y = x - shift``, the shift being
    the mean of the window they were first computed on, which keeps the subtraction of the mean free of
    cancellation), so that the next window, the same one moved on by a few periods (or grown or shrunk),
    costs ``O(k N^2 + T N)`` instead of the ``O(T N^2)`` of ``X'X``. Owned and mutated by one optimizer;
    recomputed from scratch every ``ROLLING_REFRESH`` updates to bound the drift of the running sums."""

    window: Floats
    shift: Floats
    total: Floats
    cross: Floats
    updates: int = 0

    @staticmethod
    def of(returns: Floats) -> Rolling:
        window = np.array(returns, dtype=np.float64)
        shift = window.mean(axis=0)
        shifted = window - shift
        return Rolling(window, shift, shifted.sum(axis=0), shifted.T @ shifted)

    def advance(self, returns: Floats) -> bool:
        """Move to `returns` by rank-k updates when it continues the stored window; False when it does not."""
        if self.updates >= ROLLING_REFRESH or returns.shape[1] != self.window.shape[1]:
            return False
        old, new = self.window.shape[0], returns.shape[0]
        for added in range(ROLLING_LARGEST_STEP + 1):
            dropped = old + added - new
            if not 0 <= dropped < old or new - added <= 0:
                continue
            if np.array_equal(returns[: new - added], self.window[dropped:]):
                gone = self.window[:dropped] - self.shift
                fresh = returns[new - added :] - self.shift
                self.total += fresh.sum(axis=0) - gone.sum(axis=0)
                self.cross += fresh.T @ fresh - gone.T @ gone
                self.window = np.array(returns, dtype=np.float64)
                self.updates += 1
                return True
        return False

    def estimate(self, method: Method) -> Estimate:
        periods = self.window.shape[0]
        offset = self.total / periods
        mean = self.shift + offset
        scatter = self.cross - periods * np.outer(offset, offset)
        if method == "sample":
            return Estimate(mean, scatter / (periods - 1))
        return Estimate(mean, _shrunk(scatter / periods, self.window - mean))


def estimate_rolling(
    returns: Floats, estimator: Estimator, rolling: Rolling | None
) -> tuple[Estimate, Rolling | None]:
    """``estimate`` that reuses (and updates) the moments of the previous window when `returns` is that
    window moved on by a few periods; the EWMA estimator reweighs every period and is always recomputed."""
    if estimator.method == "ewma" or returns.ndim != 2 or returns.shape[0] < 2:
        return estimate(returns, estimator), None
    check_size(returns.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        if rolling is None or not rolling.advance(returns):
            rolling = Rolling.of(returns)
        result = rolling.estimate(estimator.method)
    return _finite(result, returns), rolling


def factor(covariance: Floats) -> Floats:
    """An upper-triangular ``F`` with ``F.T @ F == covariance``: Cholesky, or eigenvalues when singular."""
    scale = float(np.mean(np.diag(covariance))) or 1.0
    try:
        lower = np.linalg.cholesky(covariance + FACTOR_JITTER * scale * np.eye(covariance.shape[0]))
        return np.asarray(lower.T, dtype=np.float64)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(covariance)
        return np.asarray(np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T, dtype=np.float64)


def correlation_of(covariance: Floats) -> Floats:
    """The correlation matrix of a covariance; a zero-variance strategy is uncorrelated with the rest."""
    deviation = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    live = deviation > 0
    inverse = np.where(live, 1.0 / np.where(live, deviation, 1.0), 0.0)
    result = covariance * inverse[:, None] * inverse[None, :]
    np.fill_diagonal(result, 1.0)
    return np.asarray(np.clip(result, -1.0, 1.0), dtype=np.float64)

"""Returns whose sample mean and covariance are exactly what a test asks for."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from rebal_allocation.estimate import Estimator

SAMPLE = Estimator("sample")
Floats = NDArray[np.float64]


def returns_with(mean: Floats, covariance: Floats, periods: int = 200, seed: int = 0) -> Floats:
    """`periods` x n returns with sample mean `mean` and sample covariance (ddof=1) `covariance`."""
    count = mean.shape[0]
    noise = np.random.default_rng(seed).normal(size=(periods, count))
    noise -= noise.mean(axis=0)
    whitening = np.linalg.cholesky(np.cov(noise, rowvar=False).reshape(count, count))
    white = np.linalg.solve(whitening, noise.T).T
    return np.asarray(white @ np.linalg.cholesky(covariance).T + mean, dtype=np.float64)


def random_returns(count: int, periods: int = 300, seed: int = 0) -> Floats:
    """Correlated synthetic daily returns (positive drift, a common factor)."""
    rng = np.random.default_rng(seed)
    drift = rng.uniform(0.0002, 0.002, count)
    factor = rng.normal(0, 0.01, (periods, 1)) * rng.uniform(0.2, 1.0, count)
    return np.asarray(drift + factor + rng.normal(0, 0.015, (periods, count)), dtype=np.float64)

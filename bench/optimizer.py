"""Optimizer benchmark: ours beside PyPortfolioOpt and skfolio, full solve, re-solve, gap to a reference.

Data: synthetic daily returns (T=1000 periods, N strategies with a common factor and a positive drift,
fixed seed); the first window is periods 0..999, the "one new day" window periods 1..1000. Every library
gets the same returns and the same estimates: the Ledoit-Wolf covariance (ours computes sklearn's
estimator in closed form; PyPortfolioOpt's ``CovarianceShrinkage.ledoit_wolf`` and skfolio's
``LedoitWolf`` call sklearn) and the sample mean. Each library is used the way its documentation shows:

- ours: ``MinVariance(n)`` / ``MaxSharpe(n)`` / ``RiskParity(n)``, ``.solve(returns)``; the re-solve is
  the same optimizer's ``.solve`` on the new window (warm start from the previous solution);
- PyPortfolioOpt 1.6: ``risk_models.CovarianceShrinkage(returns, returns_data=True).ledoit_wolf()``,
  ``expected_returns.mean_historical_return(..., compounding=False)``, ``EfficientFrontier(mu, S)``,
  ``.min_volatility()`` / ``.max_sharpe()``; risk parity has no dedicated method, so its docs'
  non-convex route: ``ef.nonconvex_objective(deviation_risk_parity, ef.cov_matrix)`` (SLSQP);
- skfolio 1.12: ``MeanRisk(risk_measure=VARIANCE, prior_estimator=EmpiricalPrior(covariance_estimator=
  LedoitWolf()))`` (minimum variance; ``objective_function=MAXIMIZE_RATIO`` for maximum Sharpe) and
  ``RiskBudgeting(risk_measure=VARIANCE, prior_estimator=...)``, ``.fit(returns)``.
  Neither library has a re-solve API: a new day means running the same steps again on the new window.

Times include estimation (every library estimates from the returns); medians of ``--repeat`` runs
(fresh objects each time), wall-clock and process CPU time (CPU time is what the solve itself costs
when other processes share the cores). BLAS runs
single-threaded (``--threads``): on a shared 2-core machine OpenBLAS's threads spin against the other
load and multiply times by 10-40 for everyone.

Gap (on the new window, every library's weights scored with the same estimate):
- minimum variance: ``w'Σw / ref - 1``; maximum Sharpe: ``1 - sharpe(w) / ref`` (negative = better than
  the reference). The reference is the same problem solved by CLARABEL (through cvxpy, our parameterised
  problem with ``direct=False``) on the rescaled data with tolerances 1e-12, independent of our direct
  active-set path.
- risk parity: the relative deviation of the risk contributions from equal, ``max_i |n RC_i / w'Σw - 1|``
  (0 at the unique equal-risk-contribution portfolio, so the exact answer is its own reference).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from rebal_optimizer.estimate import Estimate, Estimator, estimate
from rebal_optimizer.optimize import MaxSharpe, MinVariance, Optimizer, RiskParity, Solved, parity_gap

Floats = NDArray[np.float64]
PERIODS = 1000
PERIODS_PER_YEAR = 365
SEED = 20261121
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
METHODS = ("min-variance", "max-sharpe", "risk-parity")
OURS: dict[str, Callable[..., Optimizer]] = {
    "min-variance": MinVariance,
    "max-sharpe": MaxSharpe,
    "risk-parity": RiskParity,
}
# PyPortfolioOpt's SLSQP risk parity (numerical gradients of an N x N objective) is not run above this.
SLSQP_LARGEST = 200
LARGE = 1000
LIBRARIES = ("rebal", "PyPortfolioOpt", "skfolio")


def synthetic(count: int, periods: int = PERIODS + 1) -> Floats:
    rng = np.random.default_rng(SEED + count)
    drift = rng.uniform(0.0001, 0.001, count)
    loadings = rng.uniform(0.2, 1.0, count)
    common = rng.normal(0, 0.01, (periods, 1)) * loadings
    return np.asarray(drift + common + rng.normal(0, 0.015, (periods, count)), dtype=np.float64)


# -- the libraries, each as "a solve": returns -> weights (raises on failure) ----------------------------
Solve = Callable[[Floats], Floats]


def ours(method: str, count: int) -> tuple[Solve, Solve]:
    """(full, re-solve): a fresh optimizer, and one kept between calls."""

    def full(returns: Floats) -> Floats:
        return _weights(OURS[method](count).solve(returns))

    kept = OURS[method](count)

    def again(returns: Floats) -> Floats:
        return _weights(kept.solve(returns))

    return full, again


def _weights(result: object) -> Floats:
    if not isinstance(result, Solved):
        raise RuntimeError(str(result))
    return result.weights


def pypfopt_solve(method: str, count: int) -> Solve | None:
    from pypfopt import EfficientFrontier, expected_returns, risk_models

    if method == "risk-parity" and count > SLSQP_LARGEST:
        return None

    def deviation_risk_parity(w: Floats, cov_matrix: Floats) -> float:  # from PyPortfolioOpt's docs
        diff = w * np.dot(cov_matrix, w) - (w * np.dot(cov_matrix, w)).reshape(-1, 1)
        return float((diff**2).sum().sum())

    def run(returns: Floats) -> Floats:
        frame = pd.DataFrame(returns)
        cov = risk_models.CovarianceShrinkage(
            frame, returns_data=True, frequency=PERIODS_PER_YEAR
        ).ledoit_wolf()
        if method == "min-variance":
            weights = EfficientFrontier(None, cov).min_volatility()
        else:
            mu = expected_returns.mean_historical_return(
                frame, returns_data=True, compounding=False, frequency=PERIODS_PER_YEAR
            )
            frontier = EfficientFrontier(mu, cov)
            if method == "max-sharpe":
                weights = frontier.max_sharpe(risk_free_rate=0.0)
            else:
                weights = frontier.nonconvex_objective(deviation_risk_parity, frontier.cov_matrix)
        return np.array([weights[i] for i in range(count)], dtype=np.float64)

    return run


def skfolio_solve(method: str, count: int) -> Solve:
    from skfolio import RiskMeasure
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import MeanRisk, ObjectiveFunction, RiskBudgeting
    from skfolio.prior import EmpiricalPrior

    def run(returns: Floats) -> Floats:
        prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
        model: MeanRisk | RiskBudgeting
        if method == "min-variance":
            model = MeanRisk(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior)
        elif method == "max-sharpe":
            model = MeanRisk(
                objective_function=ObjectiveFunction.MAXIMIZE_RATIO,
                risk_measure=RiskMeasure.VARIANCE,
                prior_estimator=prior,
            )
        else:
            model = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior)
        return np.asarray(model.fit(returns).weights_, dtype=np.float64)

    return run


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class Row:
    method: str
    count: int
    library: str
    full_s: float = math.nan
    full_cpu_s: float = math.nan
    resolve_s: float = math.nan
    resolve_cpu_s: float = math.nan
    gap: float = math.nan
    note: str = ""


def timed(run: Solve, returns: Floats) -> tuple[float, float, Floats]:
    """Wall-clock and process CPU seconds of one solve, and its weights."""
    start, cpu = time.perf_counter(), time.process_time()
    weights = run(returns)
    return time.perf_counter() - start, time.process_time() - cpu, weights


def score(method: str, weights: Floats, est: Estimate, reference: float) -> float:
    if method == "min-variance":
        return float(weights @ est.covariance @ weights) / reference - 1.0
    if method == "max-sharpe":
        return 1.0 - sharpe(weights, est) / reference
    return parity_gap(weights, est.covariance) * weights.shape[0]


def sharpe(weights: Floats, est: Estimate) -> float:
    return float(est.mean @ weights) / math.sqrt(float(weights @ est.covariance @ weights))


def reference_value(method: str, count: int, returns: Floats, est: Estimate) -> tuple[float, str]:
    if method == "risk-parity":
        return 0.0, "exact parity"
    result = OURS[method](count, direct=False, solver_options=TIGHT).solve(returns)
    if not isinstance(result, Solved):
        return math.nan, f"reference failed: {result}"
    value = float(result.weights @ est.covariance @ result.weights)
    return (
        value if method == "min-variance" else sharpe(result.weights, est)
    ), f"CLARABEL 1e-12 {result.status}"


def measure_library(
    library: str, method: str, count: int, repeat: int, data: Floats
) -> tuple[Row, Floats | None]:
    """Medians of the full solve (first window) and the re-solve (new window); the re-solve's weights."""
    first, second = data[:PERIODS], data[1:]
    row = Row(method, count, library)
    fulls: list[float] = []
    resolves: list[float] = []
    full_cpus: list[float] = []
    cpus: list[float] = []
    weights: Floats | None = None
    try:
        for _ in range(repeat):
            if library == "rebal":
                full, again = ours(method, count)
                elapsed, cpu, _ = timed(full, first)
                fulls.append(elapsed)
                full_cpus.append(cpu)
                again(first)  # the kept optimizer has seen yesterday's window
                elapsed, cpu, weights = timed(again, second)
                resolves.append(elapsed)
                cpus.append(cpu)
                continue
            run = (
                pypfopt_solve(method, count) if library == "PyPortfolioOpt" else skfolio_solve(method, count)
            )
            if run is None:
                row.note = f"not run: SLSQP, numerical gradients of an N x N objective, N > {SLSQP_LARGEST}"
                return row, None
            elapsed, cpu, _ = timed(run, first)
            fulls.append(elapsed)
            full_cpus.append(cpu)
            elapsed, cpu, weights = timed(run, second)
            resolves.append(elapsed)
            cpus.append(cpu)
    except Exception as error:  # a library that fails is a figure, not the end of the run  # noqa: BLE001
        row.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
        return row, None
    row.full_s, row.resolve_s = statistics.median(fulls), statistics.median(resolves)
    row.full_cpu_s, row.resolve_cpu_s = statistics.median(full_cpus), statistics.median(cpus)
    return row, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10,50,200,1000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repeat-large", type=int, default=3, help="repeats at N >= 1000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    repeats = f"median of {args.repeat} ({args.repeat_large} at N>={LARGE})"
    print(f"T={PERIODS}, Ledoit-Wolf, BLAS threads {args.threads}; {repeats}")
    header = f"{'full s':>9} {'cpu s':>8} {'re-solve s':>11} {'cpu s':>8} {'gap':>10}"
    print(f"{'method':<13} {'N':>5} {'library':<15} {header}  note")
    summary: list[str] = []
    with threadpool_limits(limits=args.threads):
        for count in (int(size) for size in args.sizes.split(",")):
            data = synthetic(count)
            est = estimate(data[1:], Estimator())
            for method in args.methods.split(","):
                reference, how = reference_value(method, count, data[1:], est)
                rows = []
                for library in args.libraries.split(","):
                    repeat = args.repeat if count < LARGE else args.repeat_large
                    row, weights = measure_library(library, method, count, repeat, data)
                    if weights is not None:
                        row.gap = score(method, weights, est, reference)
                    rows.append(row)
                    note = row.note or (how if library == "rebal" else "")
                    print(
                        f"{method:<13} {count:>5} {library:<15} {row.full_s:>9.4f} {row.full_cpu_s:>8.4f} "
                        f"{row.resolve_s:>11.4f} {row.resolve_cpu_s:>8.4f} "
                        f"{row.gap:>10.2e}  {note}",
                        flush=True,
                    )
                summary.append(ratio_line(method, count, rows))
    print("\nre-solve: the fastest other library's median over ours (target >= 5), wall-clock and CPU")
    for line in summary:
        print(line)


def ratio_line(method: str, count: int, rows: list[Row]) -> str:
    mine = next((r for r in rows if r.library == "rebal"), None)
    others = [r for r in rows if r.library != "rebal" and math.isfinite(r.resolve_s)]
    if mine is None or not others or not math.isfinite(mine.resolve_s):
        return f"{method:<13} {count:>5}  (no comparison)"
    fastest = min(others, key=lambda r: r.resolve_s)
    fastest_cpu = min(others, key=lambda r: r.resolve_cpu_s)
    ratio = fastest.resolve_s / mine.resolve_s
    ratio_cpu = fastest_cpu.resolve_cpu_s / mine.resolve_cpu_s
    return (
        f"{method:<13} {count:>5}  {ratio:>7.1f}x wall ({fastest.library} {fastest.resolve_s:.4f} s vs ours "
        f"{mine.resolve_s:.4f} s)  {ratio_cpu:>7.1f}x cpu ({fastest_cpu.library})  our gap {mine.gap:.1e}"
    )


if __name__ == "__main__":
    main()

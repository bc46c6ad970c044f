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

    .venv-bench/bin/python bench/optimizer.py                   # all sizes, ~10 minutes (skfolio at N=1000)
    .venv-bench/bin/python bench/optimizer.py --sizes 10,50,200 # a minute

Figures on the development machine (2026-11-21, 23:01-23:08 UTC, 2 cores shared with other engineers'
test runs, load average 2-3 during the run). Under load average 12 (an earlier run, 22:52) the re-solve
ratios were 13.8-301x on CPU and 25.9-554x wall-clock; one run before that had a wall-clock outlier of
4.0x (risk parity, N=10: our 0.4 ms solve descheduled; 8.9x on CPU), hence the CPU column:

    T=1000, Ledoit-Wolf, BLAS threads 1; median of 7 runs (3 at N=1000); seconds

    method           N  library          full s   cpu s  re-solve s   cpu s        gap
    min-variance    10  rebal            0.0003  0.0003      0.0002  0.0002   0.00e+00
    min-variance    10  PyPortfolioOpt   0.0133  0.0121      0.0116  0.0115   0.00e+00
    min-variance    10  skfolio          0.0093  0.0093      0.0097  0.0097   1.42e-08
    max-sharpe      10  rebal            0.0003  0.0003      0.0002  0.0002  -9.59e-14
    max-sharpe      10  PyPortfolioOpt   0.0095  0.0091      0.0087  0.0087  -9.57e-14
    max-sharpe      10  skfolio          0.0120  0.0120      0.0126  0.0118   1.95e-07
    risk-parity     10  rebal            0.0004  0.0004      0.0002  0.0002   8.91e-14
    risk-parity     10  PyPortfolioOpt   0.0035  0.0035      0.0035  0.0035   7.72e-02
    risk-parity     10  skfolio          0.0101  0.0101      0.0103  0.0103   1.06e-04
    min-variance    50  rebal            0.0009  0.0009      0.0005  0.0005  -3.80e-13
    min-variance    50  PyPortfolioOpt   0.0120  0.0120      0.0118  0.0118  -3.80e-13
    min-variance    50  skfolio          0.0181  0.0180      0.0183  0.0183   2.34e-06
    max-sharpe      50  rebal            0.0012  0.0012      0.0006  0.0006  -1.20e-12
    max-sharpe      50  PyPortfolioOpt   0.0173  0.0169      0.0166  0.0166  -1.20e-12
    max-sharpe      50  skfolio          0.0208  0.0203      0.0201  0.0197   1.26e-05
    risk-parity     50  rebal            0.0010  0.0010      0.0006  0.0006   1.91e-15
    risk-parity     50  PyPortfolioOpt   0.0151  0.0151      0.0156  0.0156   4.34e-01
    risk-parity     50  skfolio          0.0165  0.0156      0.0159  0.0157   3.81e-05
    min-variance   200  rebal            0.0028  0.0028      0.0010  0.0010  -3.49e-13
    min-variance   200  PyPortfolioOpt   0.0226  0.0226      0.0231  0.0229  -3.49e-13
    min-variance   200  skfolio          0.1088  0.1071      0.1062  0.1043   3.39e-06
    max-sharpe     200  rebal            0.0032  0.0032      0.0013  0.0012  -1.49e-14
    max-sharpe     200  PyPortfolioOpt   0.2264  0.2256      0.2292  0.2292  -1.49e-14
    max-sharpe     200  skfolio          0.1639  0.1827      0.1741  0.1929   3.41e-05
    risk-parity    200  rebal            0.0043  0.0043      0.0020  0.0020   2.08e-15
    risk-parity    200  PyPortfolioOpt   0.1284  0.1284      0.1186  0.1186   3.29e-01
    risk-parity    200  skfolio          0.2042  0.2282      0.2111  0.2175   1.47e-05
    min-variance  1000  rebal            0.0603  0.0570      0.0115  0.0115  -5.87e-12
    min-variance  1000  PyPortfolioOpt   0.7544  0.7341      0.7493  0.7048  -5.87e-12
    min-variance  1000  skfolio          5.1152  4.7389      4.8240  4.1539   3.57e-05
    max-sharpe    1000  rebal            0.0500  0.0500      0.0102  0.0102  -3.62e-14
    max-sharpe    1000  PyPortfolioOpt        -       -           -       -  failed: user_limit
    max-sharpe    1000  skfolio          3.1065  3.3301      2.9191  2.9537   3.89e-06
    risk-parity   1000  rebal            0.0815  0.0815      0.0251  0.0251   1.67e-14
    risk-parity   1000  PyPortfolioOpt        -       -           -       -  not run: SLSQP
    risk-parity   1000  skfolio          6.0613  6.1096      7.9228  7.8829   2.16e-05

    re-solve, the fastest other library over ours (target >= 5):
    min-variance    10    41.9x wall (skfolio 0.0097 s / ours 0.0002 s)    41.9x cpu (skfolio)
    max-sharpe      10    39.5x wall (PyPortfolioOpt 0.0087 s / ours 0.0002 s)    39.4x cpu (PyPortfolioOpt)
    risk-parity     10    15.0x wall (PyPortfolioOpt 0.0035 s / ours 0.0002 s)    15.0x cpu (PyPortfolioOpt)
    min-variance    50    26.1x wall (PyPortfolioOpt 0.0118 s / ours 0.0005 s)    26.0x cpu (PyPortfolioOpt)
    max-sharpe      50    27.7x wall (PyPortfolioOpt 0.0166 s / ours 0.0006 s)    27.8x cpu (PyPortfolioOpt)
    risk-parity     50    24.8x wall (PyPortfolioOpt 0.0156 s / ours 0.0006 s)    24.8x cpu (PyPortfolioOpt)
    min-variance   200    23.8x wall (PyPortfolioOpt 0.0231 s / ours 0.0010 s)    23.7x cpu (PyPortfolioOpt)
    max-sharpe     200   133.7x wall (skfolio 0.1741 s / ours 0.0013 s)   164.4x cpu (skfolio)
    risk-parity    200    59.1x wall (PyPortfolioOpt 0.1186 s / ours 0.0020 s)    59.0x cpu (PyPortfolioOpt)
    min-variance  1000    65.2x wall (PyPortfolioOpt 0.7493 s / ours 0.0115 s)    61.3x cpu (PyPortfolioOpt)
    max-sharpe    1000   286.0x wall (skfolio 2.9191 s / ours 0.0102 s)   289.5x cpu (skfolio)
    risk-parity   1000   315.4x wall (skfolio 7.9228 s / ours 0.0251 s)   313.7x cpu (skfolio)
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

from rebal_allocation import constrained
from rebal_allocation.estimate import Estimate, Estimator, correlation_of, estimate, factor
from rebal_allocation.optimize import (
    Constraints,
    Group,
    MaxSharpe,
    MinVariance,
    Mix,
    Optimizer,
    RiskParity,
    Solved,
    additive_max_drawdown,
    correlated_pairs,
    parity_gap,
)

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
    parser.add_argument("--constrained-sizes", default="200,1000", help="sizes of the constrained cases")
    parser.add_argument("--constrained-repeat", type=int, default=3)
    parser.add_argument("--only-constrained", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    repeats = f"median of {args.repeat} ({args.repeat_large} at N>={LARGE})"
    print(f"T={PERIODS}, Ledoit-Wolf, BLAS threads {args.threads}; {repeats}")
    header = f"{'full s':>9} {'cpu s':>8} {'re-solve s':>11} {'cpu s':>8} {'gap':>10}"
    print(f"{'method':<13} {'N':>5} {'library':<15} {header}  note")
    summary: list[str] = []
    with threadpool_limits(limits=args.threads):
        for count in (int(size) for size in ([] if args.only_constrained else args.sizes.split(","))):
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
        sizes = [int(size) for size in args.constrained_sizes.split(",") if size]
        summary += constrained_main(sizes, args.libraries.split(","), args.constrained_repeat)
    print("\nre-solve: the fastest other library's median over ours (target >= 5), wall-clock and CPU")
    for line in summary:
        print(line)


# -- constrained problems (issue 17, target 6) -------------------------------------------------------
# Each case is the same problem for every library, stated with its own constraint API:
# - groups: minimum variance, every strategy at most 5%, ten groups (every tenth strategy) at most 12% each;
# - pairs: minimum variance, every pair whose estimated correlation is in the top 0.1% (~500 pairs at
#   N=1000) together at most 2 / N;
# - turnover: minimum variance, sum |w - current| <= 0.2 from a current allocation (half the strategies
#   at 1.5 / N, half at 0.5 / N);
# - mix: maximise P mu'w - sqrt(P) ||F w|| - MDD(w) (P = 365.25, the additive curve's drawdown over the
#   last 365 days), long-only and fully invested.
# PyPortfolioOpt: EfficientFrontier(None or mu, S, weight_bounds) with add_sector_constraints (groups),
# add_constraint (pairs, turnover) and min_volatility(); the mix by convex_objective with cvxpy atoms
# (cummax for the drawdown). skfolio: MeanRisk(VARIANCE) with groups + linear_constraints, left_inequality
# (pairs), add_constraints (turnover: its max_turnover bounds each asset's change, not the sum); the mix
# has no MeanRisk form (one risk measure per problem) and is not run. The reference is the problem
# written directly in cvxpy (constants, no parameters) and solved by CLARABEL at 1e-12; the gap is our
# objective's relative distance from it (negative: better than the reference, by its tolerance).
CONSTRAINED = ("groups", "pairs", "turnover", "mix")
GROUP_COUNT, GROUP_CAP, GROUP_MAX_WEIGHT = 10, 0.12, 0.05
PAIR_QUANTILE = 0.999
TURNOVER = 0.2
MIX_LOOKBACK = 365
MIX_PERIODS = 365.25


@dataclass(frozen=True)
class Case:
    name: str
    count: int
    constraints: Constraints
    current: Floats
    pairs: tuple[tuple[int, int], ...]


def case_of(name: str, count: int, est: Estimate) -> Case:
    current = np.where(np.arange(count) < count // 2, 1.5, 0.5) / count
    if name == "groups":
        groups = tuple(Group(tuple(range(g, count, GROUP_COUNT)), GROUP_CAP) for g in range(GROUP_COUNT))
        return Case(name, count, Constraints(max_weight=GROUP_MAX_WEIGHT, groups=groups), current, ())
    if name == "pairs":
        correlations = correlation_of(est.covariance)
        threshold = float(np.quantile(correlations[np.triu_indices(count, 1)], PAIR_QUANTILE))
        constraints = Constraints(correlation_threshold=threshold, pair_cap=2.0 / count)
        return Case(name, count, constraints, current, correlated_pairs(est.covariance, threshold))
    if name == "turnover":
        return Case(name, count, Constraints(turnover=TURNOVER), current, ())
    return Case(name, count, Constraints(), current, ())


def ours_constrained(case: Case) -> tuple[Solve, Solve, Callable[[], Optimizer]]:
    def make() -> Optimizer:
        if case.name == "mix":
            return Mix(case.count, lookback=MIX_LOOKBACK, periods_per_year=MIX_PERIODS)
        return MinVariance(case.count, constraints=case.constraints)

    def full(returns: Floats) -> Floats:
        return _weights(make().solve(returns, case.current))

    kept = make()

    def again(returns: Floats) -> Floats:
        return _weights(kept.solve(returns, case.current))

    return full, again, lambda: kept


def _mix_terms(w: object, returns: Floats, est: Estimate) -> object:
    import cvxpy as cp

    window = returns[-MIX_LOOKBACK:]
    curve = cp.hstack([np.zeros(1), np.cumsum(window, axis=0) @ w])
    drawdown = cp.max(cp.cummax(curve) - curve)
    risk = factor(est.covariance) * math.sqrt(MIX_PERIODS)
    return MIX_PERIODS * (est.mean @ w) - cp.norm(risk @ w, 2) - drawdown


def pypfopt_constrained(case: Case) -> Solve:
    import cvxpy as cp
    from pypfopt import EfficientFrontier

    def run(returns: Floats) -> Floats:
        est = estimate(returns, Estimator())  # the same Ledoit-Wolf estimate (sklearn's, in closed form)
        if case.name == "mix":
            frontier = EfficientFrontier(None, est.covariance)
            weights = frontier.convex_objective(
                lambda w: -_mix_terms(w, returns, est), weights_sum_to_one=True
            )
            return np.array([weights[i] for i in range(case.count)], dtype=np.float64)
        bounds = (0.0, float(np.max(case.constraints.max_weight)))
        frontier = EfficientFrontier(None, est.covariance, weight_bounds=bounds)
        if case.name == "groups":
            mapper = {i: f"g{g}" for g in range(GROUP_COUNT) for i in range(g, case.count, GROUP_COUNT)}
            frontier.add_sector_constraints(mapper, {}, {f"g{g}": GROUP_CAP for g in range(GROUP_COUNT)})
        elif case.name == "pairs":
            first, second = [i for i, _ in case.pairs], [j for _, j in case.pairs]
            frontier.add_constraint(lambda w: w[first] + w[second] <= case.constraints.pair_cap)
        else:
            frontier.add_constraint(lambda w: cp.norm(w - case.current, 1) <= TURNOVER)
        weights = frontier.min_volatility()
        return np.array([weights[i] for i in range(case.count)], dtype=np.float64)

    return run


def skfolio_constrained(case: Case) -> Solve | None:
    import cvxpy as cp
    from skfolio import RiskMeasure
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import MeanRisk
    from skfolio.prior import EmpiricalPrior

    if case.name == "mix":
        return None

    def run(returns: Floats) -> Floats:
        prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
        options: dict[str, object] = {"risk_measure": RiskMeasure.VARIANCE, "prior_estimator": prior}
        if case.name == "groups":
            options["max_weights"] = GROUP_MAX_WEIGHT
            options["groups"] = [[f"g{i % GROUP_COUNT}" for i in range(case.count)]]
            options["linear_constraints"] = [f"g{g} <= {GROUP_CAP}" for g in range(GROUP_COUNT)]
        elif case.name == "pairs":
            matrix = np.zeros((len(case.pairs), case.count))
            for row, (i, j) in enumerate(case.pairs):
                matrix[row, [i, j]] = 1.0
            options["left_inequality"] = matrix
            options["right_inequality"] = np.full(len(case.pairs), case.constraints.pair_cap)
        else:
            options["add_constraints"] = lambda w: [cp.norm(w - case.current, 1) <= TURNOVER]
        return np.asarray(MeanRisk(**options).fit(returns).weights_, dtype=np.float64)

    return run


def constrained_objective(case: Case, weights: Floats, returns: Floats, est: Estimate) -> float:
    if case.name == "mix":
        window = returns[-MIX_LOOKBACK:]
        volatility = math.sqrt(MIX_PERIODS * float(weights @ est.covariance @ weights))
        return MIX_PERIODS * float(est.mean @ weights) - volatility - additive_max_drawdown(window, weights)
    return float(weights @ est.covariance @ weights)


def constrained_reference(case: Case, returns: Floats, est: Estimate) -> float:
    """The same problem written directly in cvxpy with constants, CLARABEL at 1e-12 (independent of
    both our active-set path and our parameterised problems)."""
    import cvxpy as cp

    w = cp.Variable(case.count)
    constraints = [cp.sum(w) == 1, w >= 0]
    c = case.constraints
    if case.name == "mix":
        problem = cp.Problem(cp.Maximize(_mix_terms(w, returns, est)), constraints)
    else:
        if np.max(c.max_weight) < 1:
            constraints.append(w <= np.max(c.max_weight))
        constraints += [cp.sum(w[list(g.members)]) <= g.cap for g in c.groups]
        if case.pairs:
            constraints.append(w[[i for i, _ in case.pairs]] + w[[j for _, j in case.pairs]] <= c.pair_cap)
        if c.turnover is not None:
            constraints.append(cp.norm(w - case.current, 1) <= c.turnover)
        scale = 1.0 / float(np.mean(np.diag(est.covariance)))
        risk = math.sqrt(scale) * factor(est.covariance)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(risk @ w)), constraints)
    problem.solve(solver=cp.CLARABEL, **TIGHT)
    weights = np.clip(np.asarray(w.value, dtype=np.float64), 0.0, None)
    return constrained_objective(case, weights / weights.sum(), returns, est)


def measure_constrained(library: str, case: Case, repeat: int, data: Floats) -> tuple[Row, Floats | None]:
    first, second = data[:PERIODS], data[1:]
    row = Row(case.name, case.count, library)
    fulls: list[float] = []
    resolves: list[float] = []
    full_cpus: list[float] = []
    cpus: list[float] = []
    weights: Floats | None = None
    try:
        for _ in range(repeat):
            if library == "rebal":
                full, again, kept = ours_constrained(case)
                elapsed, cpu, _ = timed(full, first)
                fulls.append(elapsed)
                full_cpus.append(cpu)
                again(first)
                elapsed, cpu, weights = timed(again, second)
                warm = kept()._warm
                if not isinstance(warm, constrained.Warm):
                    row.note = "the cvxpy fallback answered"
                resolves.append(elapsed)
                cpus.append(cpu)
                continue
            run = pypfopt_constrained(case) if library == "PyPortfolioOpt" else skfolio_constrained(case)
            if run is None:
                row.note = "not run: MeanRisk has one risk measure (the mix sums volatility and drawdown)"
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


def constrained_main(sizes: list[int], libraries: list[str], repeat: int) -> list[str]:
    print(f"\nconstrained problems (T={PERIODS}, Ledoit-Wolf; median of {repeat}); seconds")
    header = f"{'full s':>9} {'cpu s':>8} {'re-solve s':>11} {'cpu s':>8} {'gap':>10}"
    print(f"{'case':<13} {'N':>5} {'library':<15} {header}  note")
    summary = []
    for count in sizes:
        data = synthetic(count)
        est = estimate(data[1:], Estimator())
        for name in CONSTRAINED:
            case = case_of(name, count, est)
            reference = constrained_reference(case, data[1:], est)
            rows = []
            for library in libraries:
                row, weights = measure_constrained(library, case, repeat, data)
                if weights is not None:
                    value = constrained_objective(case, weights, data[1:], est)
                    row.gap = (value - reference) / abs(reference) * (-1.0 if name == "mix" else 1.0)
                rows.append(row)
                note = row.note or (f"{len(case.pairs)} pairs" if case.pairs else "")
                print(
                    f"{name:<13} {count:>5} {library:<15} {row.full_s:>9.4f} {row.full_cpu_s:>8.4f} "
                    f"{row.resolve_s:>11.4f} {row.resolve_cpu_s:>8.4f} {row.gap:>10.2e}  {note}",
                    flush=True,
                )
            summary.append(ratio_line(name, count, rows))
    return summary


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

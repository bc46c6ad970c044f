"""Fund cycle benchmark: many users' deposits and withdrawals on one fund, netted into one cycle.

A fund (BTC 40%, ETH 30%, SOL 20%, cash 10%; steps, minimums and fees like a spot exchange) whose users
already hold random shares; in one cycle 60% of them deposit (10 to 5,000 USDT), 20% withdraw (a random
part of what they hold, one in four of those everything) and the rest do nothing. The cycle runs the pure
core end to end (`rebal.core.funds`): plan and net, settle phase 1 (net sells filled at the reference
price, as the paper exchange would, fee charged), size phase 2 from the actual cash, settle phase 2, pay
the withdrawals out. Printed per user count:

- orders: net orders sent versus the orders of the same flows one user at a time (each user's legs as
  their own orders; legs below a market's minimum could not be sent at all and are counted apart);
- fees: estimated fees one user at a time versus the venue fees of the net orders;
- time: the cycle's computation (median of `--repeat` runs), and the check that the users' ledgers add
  up exactly to the account's balances afterwards.

    .venv/bin/python bench/funds.py                    # 1,000 / 10,000 / 100,000 users
    .venv/bin/python bench/funds.py --users 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

import numpy as np

from rebal.core.funds import (
    CyclePlan,
    Due,
    Execution,
    NeedsAdjustment,
    NetOrder,
    Quote,
    pay_out,
    plan_cycle,
    resize_buys,
    settle,
)
from rebal.core.ledger import LEDGER_QUANTUM, Fund, Ledger
from rebal.core.market import Market

FUND = Fund(
    "bench",
    "paper",
    "main",
    "USDT",
    {"BTC": Decimal("0.4"), "ETH": Decimal("0.3"), "SOL": Decimal("0.2"), "USDT": Decimal("0.1")},
)
QUOTES = {
    "BTC": Quote(
        Market("BTC", "USDT", Decimal("0.00001"), Decimal("0.00001"), Decimal(5), Decimal("0.001")),
        Decimal("60000"),
    ),
    "ETH": Quote(
        Market("ETH", "USDT", Decimal("0.0001"), Decimal("0.0001"), Decimal(5), Decimal("0.001")),
        Decimal("3000"),
    ),
    "SOL": Quote(
        Market("SOL", "USDT", Decimal("0.001"), Decimal("0.01"), Decimal(5), Decimal("0.001")), Decimal("150")
    ),
}


@dataclass(frozen=True)
class Case:
    ledger: Ledger
    due: Due
    balances: dict[str, Decimal]


def make_case(users: int, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    names = tuple(f"user{i:06d}" for i in range(users))
    assets = FUND.assets()
    prices = np.array([1.0] + [float(QUOTES[a].price) for a in assets[1:]])
    worth = rng.uniform(100, 20_000, users)  # what each user held before this cycle, in USDT
    drifted = np.array([float(FUND.weights[a]) for a in assets]) * rng.uniform(0.8, 1.2, (users, len(assets)))
    held = worth[:, None] * drifted / prices / float(LEDGER_QUANTUM)
    units = np.floor(held).astype(np.int64)
    roll = rng.uniform(size=users)
    deposit_users = np.flatnonzero(roll < 0.6)
    deposits = {names[i]: Decimal(int(rng.integers(1_000, 500_000))) / 100 for i in deposit_users}
    for i in deposit_users:
        units[i, 0] += int(deposits[names[i]] / LEDGER_QUANTUM)
    withdrawals: dict[str, Decimal | None] = {}
    for i in np.flatnonzero(roll >= 0.8):
        if rng.uniform() < 0.25:
            withdrawals[names[i]] = None
        else:
            value = float((units[i] * prices).sum()) * float(LEDGER_QUANTUM)
            withdrawals[names[i]] = Decimal(int(value * rng.uniform(0.05, 0.8) * 100)) / 100
    ledger = Ledger(assets, names, units)
    return Case(ledger, Due(deposits, withdrawals, rebalance=False), dict(ledger.totals()))


def fill(order: NetOrder, balances: dict[str, Decimal]) -> Execution:
    market = QUOTES[order.asset].market
    cost = (order.amount * order.est_price).quantize(LEDGER_QUANTUM)
    fee = (cost * market.fee_rate).quantize(LEDGER_QUANTUM, rounding=ROUND_CEILING)
    sign = 1 if order.side == "buy" else -1
    balances[order.asset] += sign * order.amount
    balances["USDT"] += -(cost + fee) if order.side == "buy" else cost - fee
    return Execution(order.amount, cost, fee)


@dataclass(frozen=True)
class Outcome:
    plan: CyclePlan
    final: CyclePlan
    seconds: float
    fees: Decimal
    exact: bool


def run(case: Case) -> Outcome:
    balances = dict(case.balances)
    start = time.perf_counter()
    plan = plan_cycle(FUND, case.ledger, case.due, QUOTES, free=balances)
    assert not isinstance(plan, NeedsAdjustment)
    first = settle(plan, plan.ledger, 1, {o.asset: fill(o, balances) for o in plan.phase_orders(1)})
    final = resize_buys(plan, first.ledger, free=balances)
    second = settle(final, first.ledger, 2, {o.asset: fill(o, balances) for o in final.phase_orders(2)})
    paid = pay_out(final, second.ledger)
    seconds = time.perf_counter() - start
    balances["USDT"] -= sum(paid.paid.values(), Decimal(0))
    fees = from_fees(first.fees.sum() + second.fees.sum())
    exact = paid.ledger.totals() == {a: balances[a] for a in paid.ledger.assets}
    return Outcome(plan, final, seconds, fees, exact)


def from_fees(units: int) -> Decimal:
    return LEDGER_QUANTUM * int(units)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        f"{'users':>8} {'deposits':>8} {'withdr.':>8} {'orders 1-by-1':>13} {'under min':>9}"
        f" {'net orders':>10} {'fees 1-by-1':>12} {'fees netted':>11} {'fees saved':>11}"
        f" {'cycle s':>8} {'exact':>5}"
    )
    for users in args.users:
        case = make_case(users, args.seed)
        outcomes = [run(case) for _ in range(args.repeat)]
        seconds = statistics.median(o.seconds for o in outcomes)
        outcome = outcomes[0]
        netting = outcome.plan.netting
        orders = len(outcome.plan.phase_orders(1)) + len(outcome.final.phase_orders(2))
        print(
            f"{users:>8,} {len(case.due.deposits):>8,} {len(case.due.withdrawals):>8,}"
            f" {netting.user_orders:>13,} {netting.user_below_minimum:>9,} {orders:>10}"
            f" {netting.user_fees:>12,.2f} {outcome.fees:>11,.2f} {netting.user_fees - outcome.fees:>11,.2f}"
            f" {seconds:>8.3f} {'yes' if all(o.exact for o in outcomes) else 'NO':>5}"
        )


if __name__ == "__main__":
    main()

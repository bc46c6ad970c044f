"""The planner's fund part: per-user ledgers in Postgres, flows in, one netted plan per cycle phase out.

- `RecordDeposit` credits the user's cash at once (`FundDeposited`); a later cycle invests it.
- `RequestWithdrawal` queues a withdrawal (`FundWithdrawalRequested`).
- `RunFundCycle` nets every pending flow of the fund into two phases sent to the executor as plans, and
  pays the withdrawals out once both have run (`FundCycleSettled`).

Bottom-up: `records` (what a cycle stores and recomputes from; no I/O), `store` (the SQL), `flows` (the
commands that take effect at once), `cycle` (the two-phase cycle), `handlers` (the consumers).
"""

from rebal_planner.funds.handlers import FundService, register

__all__ = ["FundService", "register"]

-- The money on its way from an exchange account to a bank (docs/execution.md, "Bank balances"): an
-- operator's transfer task into a bank (`TransferTaskOpened`, recorded in `bank_tasks` like those out of a
-- bank, `baseline` NULL) is wired by hand at the exchange; the exchange debits the amount when it takes the
-- withdrawal, and the bank's ledger counts it only when the operator confirms. In between, each snapshot
-- lists the sending account's withdrawals (ccxt's fetchWithdrawals) and counts those taken for the task
-- at the bank, in transit, so the money counts once.
--
-- `bank_withdrawals`: which task each withdrawal was last given to (keyed by the account and the venue's
-- withdrawal id): once that task no longer counts (it expired, or was confirmed before any task of its
-- account and asset still open), the withdrawal stays its own, so it is never taken for another task.
CREATE TABLE bank_withdrawals (
    portfolio_id  text        NOT NULL,
    account       text        NOT NULL,
    withdrawal_id text        NOT NULL,
    task_id       text        NOT NULL REFERENCES bank_tasks (task_id),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portfolio_id, account, withdrawal_id)
);

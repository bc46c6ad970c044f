-- The operators' transfers out of bank accounts not confirmed yet, as the tracker keeps them
-- (docs/execution.md, "Bank balances"): between the moment the money lands at the receiving exchange
-- account and the operator's confirmation, the bank's stated balance still holds it; the tracker takes
-- off the bank what the receiving account's holding of the asset grew since the task opened (at most the
-- task's amount), so the money counts once.
--
-- `bank_tasks`: one row per task (`TransferTaskOpened`, keyed by the task: a redelivered or re-announced
-- task changes nothing). `baseline`: the receiving account's holding of the asset (free and in orders)
-- when the tracker recorded the task; NULL when no venue reports that account (another bank). A task is
-- open until its confirmation is in `bank_ledger` or it expired (`expired_at`, `TransferTaskExpired`).
CREATE TABLE bank_tasks (
    task_id      text        PRIMARY KEY,
    portfolio_id text        NOT NULL,
    asset        text        NOT NULL,
    from_account text        NOT NULL,
    to_account   text        NOT NULL,
    amount       numeric     NOT NULL CHECK (amount >= 0),
    baseline     numeric,
    opened_at    timestamptz NOT NULL,
    expired_at   timestamptz,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bank_tasks_by_portfolio ON bank_tasks (portfolio_id, opened_at);

-- Transfers to or from a bank or broker account without an API (`"kind": "bank"`) are operators' tasks
-- (docs/execution.md, "Bank transfers"). The executor journals each task before it tells anyone
-- (`execution.transfer_tasks`: one row per plan transfer, its id derived from the plan and the transfer);
-- the run's buys that the money funds wait until it is confirmed (with the amount that arrived, spent at
-- most) or expires. The monitor projects the executor's events into `transfer_tasks` for the API and
-- the CLI (`GET /transfers`, `rebal transfer list`).
CREATE TABLE execution.transfer_tasks (
    task_id      text        PRIMARY KEY,
    plan_id      uuid        NOT NULL REFERENCES execution.runs (plan_id),
    transfer     integer     NOT NULL,
    asset        text        NOT NULL,
    from_account text        NOT NULL,
    to_account   text        NOT NULL,
    amount       numeric     NOT NULL,
    state        text        NOT NULL CHECK (state IN ('waiting', 'confirmed', 'expired')),
    received     numeric,
    opened_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    confirmed_at timestamptz,
    confirmed_by text,
    reason       text        NOT NULL DEFAULT '',
    UNIQUE (plan_id, transfer)
);
CREATE INDEX transfer_tasks_waiting ON execution.transfer_tasks (plan_id) WHERE state = 'waiting';

CREATE TABLE transfer_tasks (
    task_id      text        PRIMARY KEY,
    portfolio_id text        NOT NULL,
    run_id       uuid,
    plan_id      uuid        NOT NULL,
    transfer     integer     NOT NULL,
    asset        text        NOT NULL,
    from_account text        NOT NULL,
    to_account   text        NOT NULL,
    amount       numeric     NOT NULL,
    state        text        NOT NULL,
    received     numeric,
    opened_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    confirmed_at timestamptz,
    confirmed_by text,
    reason       text        NOT NULL DEFAULT ''
);
CREATE INDEX transfer_tasks_by_state ON transfer_tasks (state, opened_at);

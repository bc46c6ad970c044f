-- The operators' API (issue 7): stored plan previews, and what the history endpoint reads fast.

-- A plan made through the API: a side-effect-free preview with its inputs, kept so that approving it
-- runs exactly it. `plan_id` is the RebalancePlanned event id; `run_id` its run (correlation id).
CREATE TABLE plans (
    plan_id           uuid PRIMARY KEY,
    run_id            uuid        NOT NULL,
    portfolio_id      text        NOT NULL,
    status            text        NOT NULL,
    dry_run           boolean     NOT NULL,
    band              numeric     NOT NULL,
    snapshot_id       uuid        NOT NULL,
    target_id         uuid        NOT NULL,
    total_value       numeric     NOT NULL,
    prices            jsonb       NOT NULL,
    orders            jsonb       NOT NULL,
    transfers         jsonb       NOT NULL,
    skipped           jsonb       NOT NULL,
    projected_weights jsonb       NOT NULL,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    approved_at       timestamptz,
    approval_run_id   uuid
);
CREATE INDEX plans_portfolio ON plans (portfolio_id, created_at DESC, plan_id DESC);

-- A run's skipped orders with their reasons (the counts and distinct reasons were already there).
ALTER TABLE runs ADD COLUMN skips jsonb NOT NULL DEFAULT '[]';
-- History pages: keyset on (planned_at, run_id) within a portfolio, newest first.
CREATE INDEX runs_history ON runs (portfolio_id, planned_at DESC, run_id DESC);
CREATE INDEX fills_run ON fills (run_id);

-- The executor's write-ahead journal (schema `execution`): what it intends is written before it acts, so a
-- restarted executor knows every order it may have sent and resumes or reconciles instead of guessing.
CREATE SCHEMA IF NOT EXISTS execution;

-- One row per non-dry-run plan received (a run executes one plan; `run_id` is its correlation id);
-- `state` follows rebal.core.execution.RUN_TRANSITIONS.
CREATE TABLE execution.runs (
    plan_id       uuid PRIMARY KEY,
    run_id        uuid        NOT NULL,
    portfolio_id  text        NOT NULL,
    plan          jsonb       NOT NULL,
    state         text        NOT NULL,
    reason        text        NOT NULL DEFAULT '',
    planned_at    timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX runs_unfinished ON execution.runs (portfolio_id, planned_at)
    WHERE state IN ('queued', 'sells_in_progress', 'buys_in_progress');

-- One row per order attempt, written (state 'created') BEFORE it is sent. The client order id is derived
-- from (plan, leg, attempt): sending it again can only find the same order at the venue.
CREATE TABLE execution.orders (
    client_order_id text PRIMARY KEY,
    plan_id         uuid        NOT NULL REFERENCES execution.runs (plan_id),
    leg             integer     NOT NULL,
    attempt         integer     NOT NULL,
    exchange        text        NOT NULL,
    account         text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('buy', 'sell')),
    amount          numeric     NOT NULL CHECK (amount > 0),
    notional        numeric     NOT NULL,
    state           text        NOT NULL,
    filled          numeric     NOT NULL DEFAULT 0,
    reason          text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (plan_id, leg, attempt)
);

-- Each fill once, by the venue's trade id.
CREATE TABLE execution.fills (
    exchange        text        NOT NULL,
    trade_id        text        NOT NULL,
    client_order_id text        NOT NULL REFERENCES execution.orders (client_order_id),
    amount          numeric     NOT NULL,
    price           numeric     NOT NULL,
    fee             numeric     NOT NULL,
    fee_asset       text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (exchange, trade_id)
);
CREATE INDEX fills_client_order ON execution.fills (client_order_id);

-- How each leg of a run ended (the run report is counted from here): placed means the venue took an order.
CREATE TABLE execution.legs (
    plan_id uuid    NOT NULL REFERENCES execution.runs (plan_id),
    leg     integer NOT NULL,
    outcome text    NOT NULL CHECK (outcome IN ('filled', 'failed', 'skipped')),
    placed  boolean NOT NULL,
    PRIMARY KEY (plan_id, leg)
);

-- The run report's reasons, in the order they arose; `key` makes recording one twice (on resume) a no-op.
CREATE TABLE execution.notes (
    plan_id uuid  NOT NULL REFERENCES execution.runs (plan_id),
    key    text   NOT NULL,
    seq    bigserial,
    reason text   NOT NULL,
    PRIMARY KEY (plan_id, key)
);

-- Every state change of a run or an order, append-only.
CREATE TABLE execution.transitions (
    seq             bigserial PRIMARY KEY,
    plan_id         uuid        NOT NULL,
    client_order_id text,
    from_state      text,
    to_state        text        NOT NULL,
    reason          text        NOT NULL DEFAULT '',
    at              timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX transitions_run ON execution.transitions (plan_id, seq);

-- The kill switch, per portfolio: survives restarts.
CREATE TABLE execution.halts (
    portfolio_id text PRIMARY KEY,
    halted       boolean     NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    requested_by text        NOT NULL DEFAULT '',
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

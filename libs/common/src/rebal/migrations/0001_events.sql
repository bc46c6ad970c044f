-- Every event and command seen on the bus, exactly once (the monitor's journal).
CREATE TABLE events (
    event_id       uuid PRIMARY KEY,
    type           text        NOT NULL,
    subject        text        NOT NULL,
    portfolio_id   text        NOT NULL,
    correlation_id uuid,
    causation_id   uuid,
    occurred_at    timestamptz NOT NULL,
    emitted_at     timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    payload        jsonb       NOT NULL
);
CREATE INDEX events_portfolio_type ON events (portfolio_id, type, occurred_at DESC);
CREATE INDEX events_correlation ON events (correlation_id);

-- Rebalance runs: one row per plan that was executed (or previewed), updated as it goes.
CREATE TABLE runs (
    run_id       uuid PRIMARY KEY,
    portfolio_id text        NOT NULL,
    plan_id      uuid        NOT NULL,
    dry_run      boolean     NOT NULL,
    status       text        NOT NULL,
    orders       integer     NOT NULL DEFAULT 0,
    placed       integer     NOT NULL DEFAULT 0,
    filled       integer     NOT NULL DEFAULT 0,
    skipped      integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    reasons      jsonb       NOT NULL DEFAULT '[]',
    planned_at   timestamptz NOT NULL,
    finished_at  timestamptz
);
CREATE INDEX runs_portfolio ON runs (portfolio_id, planned_at DESC);

CREATE TABLE orders (
    client_order_id text PRIMARY KEY,
    run_id          uuid,
    portfolio_id    text        NOT NULL,
    account         text        NOT NULL,
    exchange        text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL,
    amount          numeric     NOT NULL,
    phase           integer     NOT NULL,
    filled          numeric     NOT NULL DEFAULT 0,
    placed_at       timestamptz NOT NULL
);
CREATE INDEX orders_run ON orders (run_id);

CREATE TABLE fills (
    trade_id        text PRIMARY KEY,
    client_order_id text        NOT NULL,
    run_id          uuid,
    portfolio_id    text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL,
    amount          numeric     NOT NULL,
    price           numeric     NOT NULL,
    fee             numeric     NOT NULL,
    fee_asset       text        NOT NULL,
    filled_at       timestamptz NOT NULL
);
CREATE INDEX fills_order ON fills (client_order_id);

-- Strategy returns reported by bots: idempotent by strategy and timestamp.
CREATE TABLE strategy_returns (
    strategy_id   text        NOT NULL,
    ts            timestamptz NOT NULL,
    period_return numeric     NOT NULL,
    equity        numeric,
    positions     jsonb,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy_id, ts)
);

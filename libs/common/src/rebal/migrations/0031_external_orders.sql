-- Reconciliation with the venues (docs/execution.md, "Reconciliation").
--
-- Orders open at a venue, on an account the executor trades, that the journal does not know: placed by
-- hand or by another program. Recorded once (first_seen), seen again each cycle (last_seen), NEVER
-- cancelled. `client_order_id` is the venue's client id, or "venue:<its order id>" when it has none;
-- `looks_ours` marks one with our "rb-" prefix that the journal does not know (worth a look).
CREATE TABLE execution.external_orders (
    exchange        text        NOT NULL,
    account         text        NOT NULL,
    client_order_id text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL,
    amount          numeric     NOT NULL,
    looks_ours      boolean     NOT NULL DEFAULT false,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    PRIMARY KEY (exchange, account, client_order_id)
);

-- Each account a run trades, as the venue showed it when the run started and when it finished: per asset
-- {"free": "...", "total": "..."} (decimal strings). The change between the two is compared with what the
-- run's journaled fills explain.
CREATE TABLE execution.run_balances (
    plan_id     uuid        NOT NULL REFERENCES execution.runs (plan_id),
    moment      text        NOT NULL CHECK (moment IN ('start', 'end')),
    exchange    text        NOT NULL,
    account     text        NOT NULL,
    balances    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (plan_id, moment, exchange, account)
);

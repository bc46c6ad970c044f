-- Funds (issue 6): each user's part of a fund's account, kept per asset in exact numerics, the flows
-- (deposits, withdrawals) waiting for or taken by a cycle, the cycles and the fills of their runs.
CREATE TABLE funds (
    fund_id     text        PRIMARY KEY,
    exchange    text        NOT NULL,
    account     text        NOT NULL,
    quote       text        NOT NULL,
    weights     jsonb       NOT NULL,
    prices_from text        NOT NULL,
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_adjustment')),
    reason      text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL
);

-- The per-user ledger: whole 1e-8 units of each asset. The quote may be negative between the two phases
-- of a cycle (a buy crossed in phase 1 is paid by a sell crossed in phase 2); never after a cycle.
CREATE TABLE fund_ledger (
    fund_id text    NOT NULL REFERENCES funds (fund_id),
    user_id text    NOT NULL,
    asset   text    NOT NULL,
    amount  numeric NOT NULL,
    PRIMARY KEY (fund_id, user_id, asset)
);

-- A flow per command (its event id): a deposit is credited at once and invested by a later cycle, a
-- withdrawal waits for one. `amount` NULL is a full withdrawal.
CREATE TABLE fund_flows (
    flow_id    uuid        PRIMARY KEY,
    fund_id    text        NOT NULL REFERENCES funds (fund_id),
    user_id    text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    amount     numeric,
    status     text        NOT NULL CHECK (status IN ('pending', 'running', 'done', 'rejected', 'cancelled')),
    cycle_id   uuid,
    paid       numeric,
    reason     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);
CREATE INDEX fund_flows_due ON fund_flows (fund_id, status);

-- A cycle: its inputs (the ledger, what was due, the prices and markets) so each phase is recomputed
-- exactly from them, the run of each phase, and its report once settled. One running cycle per fund.
CREATE TABLE fund_cycles (
    cycle_id   uuid        PRIMARY KEY,
    fund_id    text        NOT NULL REFERENCES funds (fund_id),
    phase      integer     NOT NULL,
    run_ids    uuid[]      NOT NULL,
    status     text        NOT NULL CHECK (status IN ('running', 'done', 'cancelled')),
    inputs     jsonb       NOT NULL,
    report     jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX fund_cycles_one_running ON fund_cycles (fund_id) WHERE status = 'running';

-- The fills of a cycle's runs, once each by trade id.
CREATE TABLE fund_fills (
    trade_id  text    PRIMARY KEY,
    run_id    uuid    NOT NULL,
    client_order_id text NOT NULL,
    symbol    text    NOT NULL,
    side      text    NOT NULL CHECK (side IN ('buy', 'sell')),
    amount    numeric NOT NULL,
    price     numeric NOT NULL,
    fee       numeric NOT NULL,
    fee_asset text    NOT NULL
);
CREATE INDEX fund_fills_run ON fund_fills (run_id);

-- The paper exchange: balances, orders and fills shared by every process that trades on it
-- (the tracker reads balances, the executor places orders). Amounts are exact numerics.
CREATE SCHEMA IF NOT EXISTS paper;

CREATE TABLE paper.balances (
    exchange text    NOT NULL,
    account  text    NOT NULL,
    asset    text    NOT NULL,
    amount   numeric NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (exchange, account, asset)
);

-- One row per client order id: placing the same id again finds this row and changes nothing.
CREATE TABLE paper.orders (
    exchange        text        NOT NULL,
    client_order_id text        NOT NULL,
    account         text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('buy', 'sell')),
    amount          numeric     NOT NULL,
    status          text        NOT NULL,
    filled          numeric     NOT NULL DEFAULT 0,
    reason          text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (exchange, client_order_id)
);

CREATE TABLE paper.fills (
    trade_id        text        PRIMARY KEY,
    exchange        text        NOT NULL,
    client_order_id text        NOT NULL,
    amount          numeric     NOT NULL,
    price           numeric     NOT NULL,
    fee             numeric     NOT NULL,
    fee_asset       text        NOT NULL,
    ts              timestamptz NOT NULL,
    FOREIGN KEY (exchange, client_order_id) REFERENCES paper.orders (exchange, client_order_id)
);
CREATE INDEX fills_order ON paper.fills (exchange, client_order_id);

-- The paper exchange's transfers between accounts (and between paper exchanges): the source is debited
-- when the withdrawal is asked for, the destination credited (amount - fee) once `credit_at` has passed.
CREATE TABLE paper.transfers (
    exchange     text        NOT NULL,
    transfer_id  text        NOT NULL,
    account      text        NOT NULL,
    to_exchange  text        NOT NULL,
    to_account   text        NOT NULL,
    asset        text        NOT NULL,
    network      text        NOT NULL,
    amount       numeric     NOT NULL CHECK (amount > 0),
    fee          numeric     NOT NULL CHECK (fee >= 0 AND fee < amount),
    txid         text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    credit_at    timestamptz NOT NULL,
    credited     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (exchange, transfer_id)
);
CREATE INDEX transfers_due ON paper.transfers (to_exchange, credit_at) WHERE NOT credited;

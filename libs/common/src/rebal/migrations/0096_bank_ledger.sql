-- The balances of bank accounts (`"kind": "bank"`: no API to read them) as the tracker keeps them
-- (docs/execution.md, "Bank balances"): the layout states each bank wallet's amount (the opening
-- balance), and the confirmed transfers to or from the bank since move it.
--
-- `bank_ledger`: one row per confirmed operator's task (`TransferConfirmed`), keyed by the task, so a
-- redelivered or repeated confirmation changes nothing. `sent` left the sender (the amount the task
-- asked to move), `received` arrived.
CREATE TABLE bank_ledger (
    task_id      text        PRIMARY KEY,
    portfolio_id text        NOT NULL,
    asset        text        NOT NULL,
    from_account text        NOT NULL,
    to_account   text        NOT NULL,
    sent         numeric     NOT NULL CHECK (sent >= 0),
    received     numeric     NOT NULL CHECK (received >= 0),
    confirmed_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bank_ledger_by_portfolio ON bank_ledger (portfolio_id, confirmed_at);

-- `bank_openings`: the layout's amount of each bank wallet as the tracker last started with it, and
-- since when it stands. A changed amount is the operator restating the balance: only the transfers
-- confirmed from then on move it.
CREATE TABLE bank_openings (
    portfolio_id text        NOT NULL,
    account      text        NOT NULL,
    asset        text        NOT NULL,
    amount       numeric     NOT NULL,
    since        timestamptz NOT NULL,
    PRIMARY KEY (portfolio_id, account, asset)
);

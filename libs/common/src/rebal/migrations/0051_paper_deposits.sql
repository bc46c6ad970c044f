-- Money arriving on a paper account from outside (`rebal paper deposit`): credited once per reference,
-- in the same transaction as the balance, and kept so that what came in is known (a portfolio's
-- performance counts it as a deposit, not a gain).
CREATE TABLE paper.deposits (
    exchange    text        NOT NULL,
    reference   text        NOT NULL,
    account     text        NOT NULL,
    asset       text        NOT NULL,
    amount      numeric     NOT NULL CHECK (amount > 0),
    credited_at timestamptz NOT NULL,
    PRIMARY KEY (exchange, reference)
);
CREATE INDEX paper_deposits_account ON paper.deposits (exchange, account, credited_at);

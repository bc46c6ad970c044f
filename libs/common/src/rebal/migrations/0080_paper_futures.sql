-- The paper exchange's perpetual futures accounts (`rebal_venues.paper_futures`). A futures account's
-- collateral is its row in paper.balances (the wallet balance: deposits, realized profit, fees, funding);
-- its orders are paper.orders and paper.fills like any other. Here: its positions (one per symbol,
-- one-way mode), the leverage and margin mode set per symbol, and the funding payments and liquidations
-- applied to it.
CREATE TABLE paper.positions (
    exchange        text        NOT NULL,
    account         text        NOT NULL,
    symbol          text        NOT NULL,
    amount          numeric     NOT NULL CHECK (amount <> 0),  -- signed: a short is negative
    entry_price     numeric     NOT NULL CHECK (entry_price > 0),
    isolated_margin numeric     CHECK (isolated_margin >= 0),  -- NULL in cross margin
    funded_at       timestamptz NOT NULL,  -- the last funding time settled (or when it opened)
    PRIMARY KEY (exchange, account, symbol)
);

CREATE TABLE paper.symbol_settings (
    exchange    text    NOT NULL,
    account     text    NOT NULL,
    symbol      text    NOT NULL,
    leverage    integer NOT NULL CHECK (leverage BETWEEN 1 AND 125),
    margin_mode text    NOT NULL CHECK (margin_mode IN ('cross', 'isolated')),
    PRIMARY KEY (exchange, account, symbol)
);

-- One row per position and funding time: a funding time is settled once, whoever reads the account first.
CREATE TABLE paper.funding (
    exchange     text        NOT NULL,
    account      text        NOT NULL,
    symbol       text        NOT NULL,
    funding_time timestamptz NOT NULL,
    amount       numeric     NOT NULL,
    mark_price   numeric     NOT NULL,
    rate         numeric     NOT NULL,
    payment      numeric     NOT NULL,  -- what the wallet paid (negative: received)
    PRIMARY KEY (exchange, account, symbol, funding_time)
);

CREATE TABLE paper.liquidations (
    exchange     text        NOT NULL,
    account      text        NOT NULL,
    symbol       text        NOT NULL,
    at           timestamptz NOT NULL,
    amount       numeric     NOT NULL,
    mark_price   numeric     NOT NULL,
    realized_pnl numeric     NOT NULL,
    fee          numeric     NOT NULL,
    PRIMARY KEY (exchange, account, symbol, at)
);

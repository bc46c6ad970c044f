-- What each portfolio was worth at each balance snapshot (its free value in the snapshot's valuation
-- currency): the monitor's journal writes a row per snapshot, and the portfolio's own performance
-- (GET /portfolio/performance) is computed from these and the money that came in or went out.
CREATE TABLE portfolio_values (
    snapshot_id  uuid PRIMARY KEY,
    portfolio_id text             NOT NULL,
    at           timestamptz      NOT NULL,
    value        double precision NOT NULL,
    quote        text             NOT NULL
);
CREATE INDEX portfolio_values_at ON portfolio_values (portfolio_id, at);

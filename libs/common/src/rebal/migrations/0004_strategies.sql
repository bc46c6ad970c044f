-- Strategies (issue 5). A strategy belongs to the portfolio named in the envelope of its returns
-- (`StrategyReturnReported.portfolio_id`); rows stored before this migration belong to no portfolio ('').
-- Returns stay idempotent by (strategy, timestamp).
ALTER TABLE strategy_returns ADD COLUMN portfolio_id text NOT NULL DEFAULT '';
CREATE INDEX strategy_returns_portfolio ON strategy_returns (portfolio_id, strategy_id, ts);

-- The tracker's statistics per strategy and window: 'inception' (every return) or a rolling window of
-- the last N days ('90d'). Undefined statistics (too few returns, no downside, ...) are NULL.
CREATE TABLE strategy_stats (
    portfolio_id      text             NOT NULL,
    strategy_id       text             NOT NULL,
    window_label      text             NOT NULL,
    computed_at       timestamptz      NOT NULL,
    observations      integer          NOT NULL,
    cumulative_return double precision,
    annualised_return double precision,
    volatility        double precision,
    max_drawdown      double precision,
    sharpe            double precision,
    sortino           double precision,
    last_timestamp    timestamptz,
    PRIMARY KEY (portfolio_id, strategy_id, window_label)
);

-- Pearson correlation of each pair of a portfolio's strategies over the returns they share in the window
-- (both orders stored, and the unit diagonal, so a matrix is one SELECT).
CREATE TABLE strategy_correlations (
    portfolio_id text             NOT NULL,
    window_label text             NOT NULL,
    strategy_a   text             NOT NULL,
    strategy_b   text             NOT NULL,
    correlation  double precision NOT NULL,
    observations integer          NOT NULL,
    computed_at  timestamptz      NOT NULL,
    PRIMARY KEY (portfolio_id, window_label, strategy_a, strategy_b)
);

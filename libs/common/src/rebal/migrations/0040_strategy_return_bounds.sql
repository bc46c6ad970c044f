-- Issue 19: the bounds of `rebal.core.bounds`, which the events already enforce, held by the table too,
-- so that no path (a tool writing rows, an older service) stores a return statistics cannot use.
-- NOT VALID: rows stored before stay (statistics skip and report them); new rows must comply.
ALTER TABLE strategy_returns
    ADD CONSTRAINT strategy_returns_period_return_bounds
        CHECK (period_return >= -1 AND period_return < 1e30) NOT VALID,
    ADD CONSTRAINT strategy_returns_equity_bounds
        CHECK (equity > -1e30 AND equity < 1e30) NOT VALID,
    ADD CONSTRAINT strategy_returns_ts_bounds
        CHECK (ts >= '1970-01-01T00:00:00Z' AND ts < '2100-01-01T00:00:00Z') NOT VALID;

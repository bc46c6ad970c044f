-- When each run started trading and when it ended, by the executor's clock: a plan made from a snapshot
-- taken before the end of the portfolio's last run that traded is refused (it would trade again on facts
-- that run already changed).
ALTER TABLE execution.runs ADD COLUMN started_at timestamptz;
ALTER TABLE execution.runs ADD COLUMN finished_at timestamptz;
CREATE INDEX runs_ended ON execution.runs (portfolio_id, finished_at) WHERE started_at IS NOT NULL;

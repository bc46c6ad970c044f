-- Strategy statistics state the frequency they were annualised at (`rebal.core.performance`: daily 365.25
-- periods a year, weekly 365.25 / 7, monthly 12, intraday by the spacing; 'unknown' for dates too few or
-- too irregular) and, for each annualised statistic left NULL for want of data, the reason
-- ({"sharpe": "needs ≥ 30 periods (has 12)"}).
ALTER TABLE strategy_stats ADD COLUMN frequency text NOT NULL DEFAULT 'unknown';
ALTER TABLE strategy_stats ADD COLUMN periods_per_year double precision;
ALTER TABLE strategy_stats ADD COLUMN not_annualised jsonb NOT NULL DEFAULT '{}';

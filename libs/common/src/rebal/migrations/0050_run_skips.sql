-- A run's skips: the plan's (its `skips`, with reasons) and the executor's (`RunFinished.skipped`) were
-- one column that the run's end overwrote, so a run whose plan skipped a leg showed "skipped 0". The
-- executor's count is kept apart; `skipped` is the larger of the two (a `RunFinished` that counts the
-- plan's skips too gives the total).
ALTER TABLE runs ADD COLUMN run_skipped integer NOT NULL DEFAULT 0;
UPDATE runs SET run_skipped = skipped WHERE finished_at IS NOT NULL AND NOT dry_run;
UPDATE runs SET skipped = GREATEST(run_skipped, jsonb_array_length(skips));

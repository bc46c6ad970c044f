-- A stored plan's estimated costs (docs/api.md, "Plans"): `{"fees", "spread", "withdrawal_fees", "total"}`
-- in the valuation currency, as `rebal plan --json` and the plan event (`RebalancePlanned.costs`) give them.
-- NULL for plans without them (plans stored before this migration, fund cycles).
ALTER TABLE plans ADD COLUMN costs jsonb;

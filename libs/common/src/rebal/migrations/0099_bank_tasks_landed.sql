-- What of each open bank task the tracker has seen land (docs/execution.md, "Bank balances"): money that
-- landed stays landed, so when the receiving account's holding falls below its baseline and what landed
-- (a conversion spending money confirmed meanwhile), the tracker lowers the task's `baseline` rather than
-- putting the money back at the bank; a confirmation raises the baseline of the tasks still open into the
-- same account and asset by what it received. Both survive a tracker restart.
ALTER TABLE bank_tasks ADD COLUMN landed numeric NOT NULL DEFAULT 0;

-- Deadlines the ledger enforces (timeout, expiry, missed heartbeats): each
-- run's next one, derived by the fold, and the index the enforcer finds due
-- runs by. `run_history` has the column too, so both tables keep one row
-- layout. Runs written before have no deadline in their state: emptying
-- `run_counts` makes the next start refill every projection from the log
-- (see `fill_new_projections`), which folds their deadlines in.
ALTER TABLE runs ADD COLUMN deadline_at INTEGER;
ALTER TABLE run_history ADD COLUMN deadline_at INTEGER;
CREATE INDEX runs_deadline ON runs (deadline_at) WHERE deadline_at IS NOT NULL;
DELETE FROM run_counts;

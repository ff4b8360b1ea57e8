-- What a run is created with and keeps, for the `operation_id` and
-- `payload` filters of every list and bulk selector: the bulk operation
-- that created it, and the hashed terms of its payload (see
-- projections/src/payload.rs), both written when the run is created and
-- keyed by run, so they serve `runs` and every version in `run_history`
-- alike (neither table needs a column). Runs written before lack them, and
-- their states lack `created_by` and `operation_id`: emptying `run_counts`
-- makes the next start refill every projection from the log (see
-- `fill_new_projections`).
CREATE TABLE run_operations (
    operation_id  TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    PRIMARY KEY (operation_id, run_id)
) WITHOUT ROWID;

CREATE TABLE run_payload_terms (
    term    INTEGER NOT NULL,
    run_id  TEXT    NOT NULL,
    PRIMARY KEY (term, run_id)
) WITHOUT ROWID;

-- The list sorted by `deadline_at`, read in order, ties broken by id (the
-- partial `runs_deadline` of 0017 skips the runs that have none, which
-- such a sort lists last).
CREATE INDEX runs_deadline_id ON runs (deadline_at, id);

DELETE FROM run_counts;

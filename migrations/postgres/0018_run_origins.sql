-- What a run is created with and keeps, for the `operation_id` and
-- `payload` filters of every list and bulk selector: the bulk operation
-- that created it, and its payload under a GIN index (`@>`), both written
-- when the run is created and keyed by run, so they serve `runs` and every
-- version in `run_history` alike (neither table needs a column), and no
-- later event of the run touches the GIN index. Runs written before lack
-- them, and their states lack `created_by` and `operation_id`: emptying
-- `run_counts` makes the next start refill every projection from the log
-- (see `fill_new_projections`).
CREATE TABLE run_operations (
    operation_id  TEXT COLLATE "C" NOT NULL,
    run_id        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (operation_id, run_id)
);

CREATE TABLE run_payloads (
    run_id   TEXT  COLLATE "C" PRIMARY KEY,
    payload  JSONB NOT NULL
);

CREATE INDEX run_payloads_contains ON run_payloads USING GIN (payload jsonb_path_ops);

-- The list sorted by `deadline_at`, read in order both ways, ties broken by
-- id (the partial `runs_deadline` of 0017 skips the runs that have none,
-- which such a sort lists last; see 0015 for the index per direction).
CREATE INDEX runs_deadline_id ON runs (deadline_at, id);
CREATE INDEX runs_deadline_id_desc ON runs (deadline_at DESC NULLS LAST, id DESC);

DELETE FROM run_counts;

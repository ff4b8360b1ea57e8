-- Runs counted by the combination of the columns most list filters test,
-- maintained with every append (see projections/src/run_counts.rs): the
-- exact total of such a list is a sum over this small table. `key` is the
-- combination as JSON; `retry_attempt` is 0 or 1 (whether a retry). Filled
-- by rebuild: the ledger rebuilds its projections when it finds this table
-- empty beside a non-empty runs table.
CREATE TABLE run_counts (
    key            TEXT    PRIMARY KEY,
    project        TEXT    NOT NULL,
    task_name      TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    end_reason     TEXT,
    triggered_by   TEXT    NOT NULL,
    exit_code      INTEGER,
    retry_attempt  INTEGER NOT NULL,
    dead_lettered  INTEGER NOT NULL,
    deleted        INTEGER NOT NULL,
    n              INTEGER NOT NULL
);

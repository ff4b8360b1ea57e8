-- Runs counted by the combination of the columns most list filters test,
-- maintained with every append (see projections/src/run_counts.rs): the
-- exact total of such a list is a sum over this small table. `key` is the
-- combination as JSON; `retry_attempt` is 0 or 1 (whether a retry). Filled
-- by rebuild: the ledger rebuilds its projections when it finds this table
-- empty beside a non-empty runs table.
CREATE TABLE run_counts (
    key            TEXT    COLLATE "C" PRIMARY KEY,
    project        TEXT    COLLATE "C" NOT NULL,
    task_name      TEXT    COLLATE "C" NOT NULL,
    status         TEXT    COLLATE "C" NOT NULL,
    end_reason     TEXT    COLLATE "C",
    triggered_by   TEXT    NOT NULL,
    exit_code      BIGINT,
    retry_attempt  BIGINT  NOT NULL,
    dead_lettered  BOOLEAN NOT NULL,
    deleted        BOOLEAN NOT NULL,
    n              BIGINT  NOT NULL
);

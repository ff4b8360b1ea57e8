-- The runs projection: one row per run, the fold of its stream. `state` is
-- the whole RunState as JSON; the other columns exist to filter and sort.
-- Times are microseconds since the Unix epoch.
CREATE TABLE runs (
    id               TEXT    PRIMARY KEY,
    project          TEXT    NOT NULL,
    task_name        TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    end_reason       TEXT,
    exit_code        INTEGER,
    triggered_by     TEXT    NOT NULL,
    retry_attempt    INTEGER NOT NULL,
    parent_run_id    TEXT,
    idempotency_key  TEXT,
    dead_lettered    INTEGER NOT NULL,
    deleted          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    start_at         INTEGER,
    end_at           INTEGER,
    duration_ms      INTEGER,
    version          INTEGER NOT NULL,
    position         INTEGER NOT NULL,
    state            TEXT    NOT NULL
);

CREATE INDEX runs_created_at ON runs (created_at);
CREATE INDEX runs_task_created ON runs (task_name, created_at);
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_end_reason_created ON runs (end_reason, created_at) WHERE end_reason IS NOT NULL;
CREATE INDEX runs_start_at ON runs (start_at);
CREATE INDEX runs_exit_code ON runs (exit_code);
CREATE INDEX runs_duration ON runs (duration_ms);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_idempotency ON runs (task_name, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE run_tags (
    run_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX run_tags_key_value ON run_tags (key, value);

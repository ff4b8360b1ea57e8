-- The runs projection: one row per run, the fold of its stream. `state` is
-- the whole RunState as JSON; the other columns exist to filter and sort.
-- Times are microseconds since the Unix epoch. Sorted text uses the "C"
-- collation so the order is the same as on SQLite.
CREATE TABLE runs (
    id               TEXT    COLLATE "C" PRIMARY KEY,
    project          TEXT    COLLATE "C" NOT NULL,
    task_name        TEXT    COLLATE "C" NOT NULL,
    status           TEXT    COLLATE "C" NOT NULL,
    end_reason       TEXT    COLLATE "C",
    exit_code        BIGINT,
    triggered_by     TEXT    NOT NULL,
    retry_attempt    BIGINT  NOT NULL,
    parent_run_id    TEXT,
    idempotency_key  TEXT,
    dead_lettered    BOOLEAN NOT NULL,
    deleted          BOOLEAN NOT NULL,
    created_at       BIGINT  NOT NULL,
    start_at         BIGINT,
    end_at           BIGINT,
    duration_ms      BIGINT,
    version          BIGINT  NOT NULL,
    position         BIGINT  NOT NULL,
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
    run_id  TEXT COLLATE "C" NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX run_tags_key_value ON run_tags (key, value);

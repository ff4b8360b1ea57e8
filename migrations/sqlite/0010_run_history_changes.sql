-- run_history keeps, per version, only what the run's events after creation
-- change (`changes`, JSON of RunChanges); the rest of a version is the run's
-- current row, which never changes in those fields. A past version is the
-- current state with the version's changes put back. A version is keyed by
-- `position`, where it starts (one event opens one version), so versions are
-- appended in log order; the index on `id` holds that key too, and finds a
-- run's version at a position. The old table held a whole state per
-- version: it is dropped, and the server rebuilds the projections from the
-- log at start-up when it finds history empty.
DROP TABLE run_history;

CREATE TABLE run_history (
    id               TEXT    NOT NULL,
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
    position         INTEGER PRIMARY KEY,
    changes          TEXT    NOT NULL,
    valid_to         INTEGER NOT NULL,
    valid_from_at    INTEGER NOT NULL,
    valid_to_at      INTEGER
);

CREATE INDEX run_history_run ON run_history (id);
CREATE INDEX run_history_valid ON run_history (valid_to, position);
CREATE INDEX run_history_task_valid ON run_history (task_name, valid_to);

-- The run-history projection: one row per run version (one per event),
-- valid from the event's position (`position`, at `valid_from_at`) until the
-- run's next event (`valid_to`, at `valid_to_at`); the current version has
-- valid_to = 9223372036854775807 and no valid_to_at. The runs table as it was
-- at position P is the rows with position <= P < valid_to. Columns as in
-- `runs`; times are microseconds since the Unix epoch. Tags never change
-- after creation, so `run_tags` serves past versions too.
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
    position         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    valid_to         INTEGER NOT NULL,
    valid_from_at    INTEGER NOT NULL,
    valid_to_at      INTEGER,
    PRIMARY KEY (id, version)
);

CREATE INDEX run_history_valid ON run_history (valid_to, position);
CREATE INDEX run_history_task_valid ON run_history (task_name, valid_to);

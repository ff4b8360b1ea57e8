-- The run-history projection: one row per run version (one per event),
-- valid from the event's position (`position`, at `valid_from_at`) until the
-- run's next event (`valid_to`, at `valid_to_at`); the current version has
-- valid_to = 9223372036854775807 and no valid_to_at. The runs table as it was
-- at position P is the rows with position <= P < valid_to. Columns as in
-- `runs`; times are microseconds since the Unix epoch. Tags never change
-- after creation, so `run_tags` serves past versions too.
CREATE TABLE run_history (
    id               TEXT    COLLATE "C" NOT NULL,
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
    state            TEXT    NOT NULL,
    valid_to         BIGINT  NOT NULL,
    valid_from_at    BIGINT  NOT NULL,
    valid_to_at      BIGINT,
    PRIMARY KEY (id, version)
);

CREATE INDEX run_history_valid ON run_history (valid_to, position);
CREATE INDEX run_history_task_valid ON run_history (task_name, valid_to);

-- run_history keeps, per version, only what the run's events after creation
-- change (`changes`, JSON of RunChanges); the rest of a version is the run's
-- current row, which never changes in those fields. A past version is the
-- current state with the version's changes put back. A version is keyed by
-- `position`, where it starts (one event opens one version). The old table
-- held a whole state per version: it is dropped, and the server rebuilds the
-- projections from the log at start-up when it finds history empty.
DROP TABLE run_history;

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
    position         BIGINT  PRIMARY KEY,
    changes          TEXT    NOT NULL,
    valid_to         BIGINT  NOT NULL,
    valid_from_at    BIGINT  NOT NULL,
    valid_to_at      BIGINT
);

CREATE INDEX run_history_run ON run_history (id, position);
CREATE INDEX run_history_valid ON run_history (valid_to, position);
CREATE INDEX run_history_task_valid ON run_history (task_name, valid_to);

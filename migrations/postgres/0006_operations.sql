-- Bulk operations: who ran which, when, on what selection, and the runs it
-- changed. Written in the same transaction as the operation's events (which
-- carry its id as metadata.operation_id); a record, not a projection, so
-- rebuild leaves it alone.
CREATE TABLE operations (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    request_id  TEXT,
    selector    TEXT NOT NULL,
    as_of       BIGINT NOT NULL,
    selected    BIGINT NOT NULL,
    affected    BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE operation_runs (
    operation_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    run_id        TEXT NOT NULL,
    new_run_id    TEXT,
    PRIMARY KEY (operation_id, seq)
);

-- Responses to POSTs sent with an Idempotency-Key header, per caller (the
-- actor: a token's name, or anonymous), so that a retried request gets the
-- first response again instead of acting twice. A row with no status is a
-- reservation: its request is still running. Times are Unix milliseconds; a
-- row is forgotten once expires_at has passed. Not history: rebuild and
-- export leave this table alone.
CREATE TABLE idempotency_keys (
    actor           TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_sha256  TEXT NOT NULL,
    status          INTEGER,
    headers         TEXT,
    body            BLOB,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (actor, idem_key)
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

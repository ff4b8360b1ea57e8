-- The log. `position` is assigned by the appender while it holds the
-- ledger's transaction-scoped advisory lock, so positions are gap-free and
-- commit in order across every node (see events/src/postgres/mod.rs).
-- `data` and `metadata` are the canonical JSON text that was hashed.
CREATE TABLE events (
    position        BIGINT  PRIMARY KEY,
    event_id        UUID    NOT NULL UNIQUE,
    stream_id       TEXT    COLLATE "C" NOT NULL,
    stream_version  BIGINT  NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;

CREATE TRIGGER events_are_append_only_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TRIGGER events_are_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Time travel by time: recorded_at never decreases along the log, so the
-- last event at or before a time gives the position to fold up to. The text
-- is fixed-width RFC 3339; the "C" collation makes its order the time order.
ALTER TABLE events ALTER COLUMN recorded_at TYPE TEXT COLLATE "C";
CREATE INDEX events_recorded_at ON events (recorded_at);

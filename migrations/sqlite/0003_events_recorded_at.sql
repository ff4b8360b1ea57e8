-- Time travel by time: recorded_at never decreases along the log, so the
-- last event at or before a time gives the position to fold up to.
CREATE INDEX events_recorded_at ON events (recorded_at);

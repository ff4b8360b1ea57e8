-- Each run's first version, by position: the last run created at or before
-- a position, read from the end of one range, gives by its ordinal
-- (`runs.seq`) how many runs the table had there (the total of an `as_of`
-- list; see `RunQuery::count_sql`).
CREATE INDEX run_history_first ON run_history (position) WHERE version = 1;

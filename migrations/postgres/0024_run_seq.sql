-- Each run's ordinal along the log: 1 for the first run created, n for
-- the n-th. A run's created_at never decreases along the log, so the runs
-- created in a time window are a range of ordinals, and the window's total
-- is the difference of the ordinals at its two ends, read from the
-- created-order index (see `RunQuery::count_sql`) instead of a count of
-- every entry between them. Existing runs are numbered in the order of
-- their first version.
ALTER TABLE runs ADD COLUMN seq BIGINT;
UPDATE runs SET seq = o.n
FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY first) AS n
      FROM (SELECT id, MIN(position) AS first FROM run_history GROUP BY id) f) o
WHERE runs.id = o.id;
DROP INDEX runs_created_id;
CREATE INDEX runs_created_id ON runs (created_at, id, deleted, seq);

-- A list in created order skips `offset` rows by walking one of these
-- indexes. With `deleted` in them, NOT deleted is decided from the index
-- entry, so the rows it skips are never read from the table (an offset of
-- 50,000 read 50,000 rows); with `id`, a phase's range is in the list's
-- order (created_at, id) and needs no sort of its ties.
DROP INDEX runs_created_id;
CREATE INDEX runs_created_id ON runs (created_at, id, deleted);
DROP INDEX runs_status_created;
CREATE INDEX runs_status_created ON runs (status, created_at, id, deleted);

-- Every sort of the runs list read in order from one index, ties broken by
-- id as the list breaks them: an index on the sort column alone left each
-- tie group (every `ended` run, every exit code 0) to be sorted whole before
-- the first page. The single-column indexes these replace go. A column some
-- runs lack sorts them last both ways, so it has an index per direction (an
-- index read backwards would put them first).
DROP INDEX runs_created_at;
DROP INDEX runs_start_at;
DROP INDEX runs_exit_code;
DROP INDEX runs_duration;
CREATE INDEX runs_created_id ON runs (created_at, id);
CREATE INDEX runs_start_id ON runs (start_at, id);
CREATE INDEX runs_start_id_desc ON runs (start_at DESC NULLS LAST, id DESC);
CREATE INDEX runs_exit_code_id ON runs (exit_code, id);
CREATE INDEX runs_exit_code_id_desc ON runs (exit_code DESC NULLS LAST, id DESC);
CREATE INDEX runs_duration_id ON runs (duration_ms, id);
CREATE INDEX runs_duration_id_desc ON runs (duration_ms DESC NULLS LAST, id DESC);
CREATE INDEX runs_task_id ON runs (task_name, id);
CREATE INDEX runs_status_id ON runs (status, id);
-- The dead-letter queue and the deleted runs, newest first, without reading
-- past the live ones.
CREATE INDEX runs_dead_lettered ON runs (created_at, id) WHERE dead_lettered;
CREATE INDEX runs_deleted ON runs (created_at, id) WHERE deleted;

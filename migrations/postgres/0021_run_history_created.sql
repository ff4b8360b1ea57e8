-- An `as_of` page in created order walks this index from the time of its
-- position down (see `RunQuery::where_parts`): a run that existed then was
-- created at or before it, since recorded_at never decreases along the log.
CREATE INDEX run_history_created ON run_history (created_at, id);
-- The total of the table at a position counts every version valid there
-- from run_history_valid, less the deleted ones from this one.
CREATE INDEX run_history_deleted ON run_history (valid_to, position) WHERE deleted;

-- A task's latest success and latest failure of each reason (GET /api/tasks)
-- read from the end of one range each, instead of every ended run of the
-- task.
CREATE INDEX runs_task_end ON runs (task_name, end_reason, end_at) WHERE NOT deleted AND end_reason IS NOT NULL;

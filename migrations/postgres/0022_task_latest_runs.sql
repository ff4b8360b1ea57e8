-- Each task's latest run, latest success and latest failure (failed,
-- timeout or crashed), maintained with every append beside its counts
-- (see projections/src/task_counts.rs): GET /api/tasks reads them by id
-- instead of searching the runs table three times per task. `_at` is the
-- run's created_at (last_run) or end_at; ties go to the greater id.
ALTER TABLE task_counts ADD COLUMN last_run_at BIGINT;
ALTER TABLE task_counts ADD COLUMN last_run_id TEXT COLLATE "C";
ALTER TABLE task_counts ADD COLUMN last_success_at BIGINT;
ALTER TABLE task_counts ADD COLUMN last_success_id TEXT COLLATE "C";
ALTER TABLE task_counts ADD COLUMN last_failure_at BIGINT;
ALTER TABLE task_counts ADD COLUMN last_failure_id TEXT COLLATE "C";

UPDATE task_counts SET
    (last_run_at, last_run_id) = (
        SELECT created_at, id FROM runs WHERE task_name = task_counts.task_name AND NOT deleted
        ORDER BY created_at DESC, id DESC LIMIT 1),
    (last_success_at, last_success_id) = (
        SELECT end_at, id FROM runs WHERE task_name = task_counts.task_name AND NOT deleted
        AND end_reason = 'success' ORDER BY end_at DESC, id DESC LIMIT 1),
    (last_failure_at, last_failure_id) = (
        SELECT end_at, id FROM runs WHERE task_name = task_counts.task_name AND NOT deleted
        AND end_reason IN ('failed', 'timeout', 'crashed') ORDER BY end_at DESC, id DESC LIMIT 1);

-- Per task, counts of its live runs by phase, end reason and dead letter,
-- maintained with every append (GET /api/tasks reads it instead of grouping
-- the runs table). A task with no live run has no row.
CREATE TABLE task_counts (
    task_name    TEXT    NOT NULL PRIMARY KEY,
    total        BIGINT NOT NULL DEFAULT 0,
    pending      BIGINT NOT NULL DEFAULT 0,
    running      BIGINT NOT NULL DEFAULT 0,
    paused       BIGINT NOT NULL DEFAULT 0,
    ended        BIGINT NOT NULL DEFAULT 0,
    success      BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    stopped      BIGINT NOT NULL DEFAULT 0,
    timeout      BIGINT NOT NULL DEFAULT 0,
    crashed      BIGINT NOT NULL DEFAULT 0,
    skipped      BIGINT NOT NULL DEFAULT 0,
    log_overflow BIGINT NOT NULL DEFAULT 0,
    expired      BIGINT NOT NULL DEFAULT 0,
    dead_letter  BIGINT NOT NULL DEFAULT 0
);

INSERT INTO task_counts (task_name, total, pending, running, paused, ended, success, failed, stopped, timeout, crashed, skipped, log_overflow, expired, dead_letter)
SELECT task_name, COUNT(*),
       COUNT(*) FILTER (WHERE status = 'pending'),
       COUNT(*) FILTER (WHERE status = 'running'),
       COUNT(*) FILTER (WHERE status = 'paused'),
       COUNT(*) FILTER (WHERE status = 'ended'),
       COUNT(*) FILTER (WHERE end_reason = 'success'),
       COUNT(*) FILTER (WHERE end_reason = 'failed'),
       COUNT(*) FILTER (WHERE end_reason = 'stopped'),
       COUNT(*) FILTER (WHERE end_reason = 'timeout'),
       COUNT(*) FILTER (WHERE end_reason = 'crashed'),
       COUNT(*) FILTER (WHERE end_reason = 'skipped'),
       COUNT(*) FILTER (WHERE end_reason = 'log_overflow'),
       COUNT(*) FILTER (WHERE end_reason = 'expired'),
       COUNT(*) FILTER (WHERE dead_lettered)
FROM runs WHERE NOT deleted GROUP BY task_name;

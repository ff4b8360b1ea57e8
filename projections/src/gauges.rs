//! What `/metrics` reports of the runs, read at scrape time from tables
//! that every append already maintains: live runs by phase and end reason,
//! the dead-letter queue and the busiest tasks from `task_counts` (one row
//! per task, never the runs table), and the oldest pending run from the end
//! of one index range (`runs_status_created`). One SQL for both backends.

use std::sync::LazyLock;

use runledger_events::EndReason;

use crate::task_counts::count_columns;
use crate::RunStatus;

/// The label of every task outside the top N. A task really named `other`
/// is always counted there, so the label never names two series.
pub const OTHER_TASKS: &str = "other";

/// Each column of `task_counts` summed over every task, in `count_columns()`
/// order (cast: PostgreSQL sums a BIGINT as NUMERIC).
pub static TOTALS_SQL: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = count_columns()
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)"))
        .collect();
    format!("SELECT {} FROM task_counts", sums.join(", "))
});

/// The `$2` tasks with the most live runs (ties by name), leaving out `$1`
/// (`OTHER_TASKS`). (SQLite numbers parameters in the order they appear.)
pub const TOP_TASKS_SQL: &str =
    "SELECT task_name, total FROM task_counts WHERE task_name <> $1 ORDER BY total DESC, task_name LIMIT $2";

/// When the oldest live pending run was created (microseconds), read from
/// the start of the pending range of `runs_status_created`.
pub const OLDEST_PENDING_SQL: &str =
    "SELECT created_at FROM runs WHERE status = 'pending' AND NOT deleted ORDER BY created_at LIMIT 1";

/// The runs as `/metrics` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunGauges {
    /// Live runs in each phase, every phase listed.
    pub by_status: Vec<(RunStatus, i64)>,
    /// Live ended runs by end reason, every reason listed.
    pub by_end_reason: Vec<(EndReason, i64)>,
    /// Live dead-lettered runs: the dead-letter queue.
    pub dead_lettered: i64,
    /// The busiest tasks and their live runs, busiest first.
    pub top_tasks: Vec<(String, i64)>,
    /// The live runs of every other task.
    pub other_tasks: i64,
    /// When the oldest live pending run was created, in microseconds.
    pub oldest_pending_at: Option<i64>,
}

impl RunGauges {
    /// From the rows of `TOTALS_SQL`, `TOP_TASKS_SQL` and `OLDEST_PENDING_SQL`.
    pub fn from_rows(totals: &[i64], top_tasks: Vec<(String, i64)>, oldest_pending_at: Option<i64>) -> Self {
        let columns = count_columns();
        let at = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| totals.get(i).copied())
                .unwrap_or(0)
        };
        let in_top: i64 = top_tasks.iter().map(|(_, n)| n).sum();
        Self {
            by_status: RunStatus::ALL.iter().map(|s| (*s, at(s.as_str()))).collect(),
            by_end_reason: EndReason::ALL.iter().map(|r| (*r, at(r.as_str()))).collect(),
            dead_lettered: at("dead_letter"),
            other_tasks: (at("total") - in_top).max(0),
            top_tasks,
            oldest_pending_at,
        }
    }

    /// How long the oldest pending run has waited at `now` (microseconds),
    /// in seconds; 0 when none is pending.
    pub fn oldest_pending_age_seconds(&self, now: i64) -> f64 {
        self.oldest_pending_at
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_become_gauges_and_the_rest_is_other() {
        let columns = count_columns();
        let mut totals = vec![0; columns.len()];
        let mut set = |name: &str, n: i64| totals[columns.iter().position(|c| *c == name).unwrap()] = n;
        set("total", 10);
        set("pending", 3);
        set("ended", 7);
        set("failed", 2);
        set("dead_letter", 1);
        let g = RunGauges::from_rows(&totals, vec![("etl".into(), 6), ("report".into(), 1)], Some(1_000_000));
        assert_eq!(g.by_status[0], (RunStatus::Pending, 3));
        assert_eq!(g.by_status.len(), RunStatus::ALL.len());
        assert!(g.by_end_reason.contains(&(EndReason::Failed, 2)));
        assert_eq!((g.dead_lettered, g.other_tasks), (1, 3));
        assert_eq!(g.oldest_pending_age_seconds(3_500_000), 2.5);
        assert_eq!(
            RunGauges::from_rows(&totals, vec![], None).oldest_pending_age_seconds(9),
            0.0
        );
        assert!(TOTALS_SQL.starts_with("SELECT CAST(COALESCE(SUM(total), 0) AS BIGINT), "));
    }
}

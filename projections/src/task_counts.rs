//! `task_counts`: per task, how many of its live (not deleted) runs are in
//! each phase, have each end reason, and are dead-lettered, and which of
//! them are its latest run, latest success and latest failure. Maintained
//! with every append from the run before and after it, so `GET /api/tasks`
//! reads one row per task and its latest runs by id instead of grouping or
//! searching the runs table; `rebuild` refills it from the runs it has just
//! folded, through the same deltas. A task with no live run has no row.

use std::collections::BTreeMap;

use runledger_events::EndReason;

use crate::{RunState, RunStatus};

/// The counted columns, in table order: `total`, then one per key of
/// `TaskSummary::count_keys()` (`dead_letter` is `dead_letter`).
pub fn count_columns() -> Vec<&'static str> {
    let mut columns = vec!["total"];
    columns.extend(crate::TaskSummary::count_keys());
    columns
}

/// What one run contributes to each column of its task (0 or 1).
fn contribution(run: &RunState) -> Vec<i64> {
    let live = !run.deleted;
    let mut out = vec![i64::from(live)];
    out.extend(RunStatus::ALL.iter().map(|s| i64::from(live && run.status == *s)));
    out.extend(
        EndReason::ALL
            .iter()
            .map(|r| i64::from(live && run.end_reason == Some(*r))),
    );
    out.push(i64::from(live && run.dead_lettered));
    out
}

/// The change one append makes to its task's counts (`previous` is the run
/// before it, `None` for a new run); `None` when nothing counted changed.
fn delta(previous: Option<&RunState>, current: &RunState) -> Option<Vec<i64>> {
    let after = contribution(current);
    let changes: Vec<i64> = match previous {
        Some(before) => after.iter().zip(contribution(before)).map(|(a, b)| a - b).collect(),
        None => after,
    };
    changes.iter().any(|d| *d != 0).then_some(changes)
}

/// The latest runs a task's row names: its latest live run by creation,
/// and its latest live success and failure (`EndReason::is_failure`) by
/// end; ties go to the greater id, as the lists break them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Latest {
    Run,
    Success,
    Failure,
}

/// A run's place in the order of a `Latest`: its time (micros) and id.
pub type LatestKey = (i64, String);

impl Latest {
    pub const ALL: [Self; 3] = [Self::Run, Self::Success, Self::Failure];

    /// The prefix of the kind's two columns, `{prefix}_at` and `{prefix}_id`.
    pub fn column(self) -> &'static str {
        match self {
            Self::Run => "last_run",
            Self::Success => "last_success",
            Self::Failure => "last_failure",
        }
    }

    /// Where `run` stands in this kind's order, if it is a live run of it.
    fn key(self, run: &RunState) -> Option<LatestKey> {
        if run.deleted {
            return None;
        }
        let at = match self {
            Self::Run => Some(run.created_at),
            Self::Success => run.end_at.filter(|_| run.end_reason == Some(EndReason::Success)),
            Self::Failure => run.end_at.filter(|_| run.end_reason.is_some_and(|r| r.is_failure())),
        }?;
        Some((at.as_micros(), run.id.to_string()))
    }

    /// `SELECT time, id` of the latest run of this kind of the task `task`
    /// (an SQL expression), read from the end of one index range per end
    /// reason (`runs_task_created`, `runs_task_end`): what a row's columns
    /// go back to when the run they name is deleted.
    pub fn sql(self, task: &str) -> String {
        let live = format!("FROM runs WHERE task_name = {task} AND NOT deleted");
        match self {
            Self::Run => format!("SELECT created_at, id {live} ORDER BY created_at DESC, id DESC LIMIT 1"),
            Self::Success => {
                format!("SELECT end_at, id {live} AND end_reason = 'success' ORDER BY end_at DESC, id DESC LIMIT 1")
            }
            Self::Failure => {
                let ranges: Vec<String> = EndReason::ALL
                    .iter()
                    .filter(|r| r.is_failure())
                    .map(|r| {
                        format!(
                            "SELECT * FROM (SELECT end_at, id {live} AND end_reason = '{}' \
                             ORDER BY end_at DESC, id DESC LIMIT 1) {}",
                            r.as_str(),
                            r.as_str()
                        )
                    })
                    .collect();
                format!(
                    "SELECT end_at, id FROM ({}) latest ORDER BY end_at DESC, id DESC LIMIT 1",
                    ranges.join(" UNION ALL ")
                )
            }
        }
    }

    /// Sets the rows back to the latest run of this kind still live where
    /// they name a run that has just left the kind: `pairs` gives those
    /// (task, run id) pairs, and `task` is the task in `sql` — `$1` for one
    /// pair, `task_counts.task_name` for many (PostgreSQL).
    pub fn recompute_sql(self, task: &str, pairs: &str) -> String {
        let c = self.column();
        format!(
            "UPDATE task_counts SET ({c}_at, {c}_id) = ({}) WHERE (task_name, {c}_id) IN ({pairs})",
            self.sql(task)
        )
    }
}

/// One task's change in a batch: its counts, and for each `Latest` the
/// greatest run that entered it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskDelta {
    pub counts: Vec<i64>,
    pub latest: [Option<LatestKey>; 3],
}

/// Deltas of many appends, summed per task (one upsert each), and the runs
/// that left a task's `Latest` (deleted), whose rows may need it again.
#[derive(Debug, Default)]
pub struct TaskDeltas {
    pub tasks: BTreeMap<String, TaskDelta>,
    /// Task, kind, run id: in append order.
    pub left: Vec<(String, Latest, String)>,
}

impl TaskDeltas {
    pub fn add(&mut self, previous: Option<&RunState>, current: &RunState) {
        if let Some(d) = delta(previous, current) {
            let sum = self.entry(&current.task_name);
            sum.counts.iter_mut().zip(d).for_each(|(s, d)| *s += d);
        }
        for (i, kind) in Latest::ALL.into_iter().enumerate() {
            let (was, is) = (previous.and_then(|p| kind.key(p)), kind.key(current));
            if was == is {
                continue;
            }
            if let Some(is) = is {
                let latest = &mut self.entry(&current.task_name).latest[i];
                if latest.as_ref().is_none_or(|l| *l < is) {
                    *latest = Some(is);
                }
            }
            if let Some((_, id)) = was {
                self.left.push((current.task_name.clone(), kind, id));
            }
        }
    }

    fn entry(&mut self, task_name: &str) -> &mut TaskDelta {
        let task = self.tasks.entry(task_name.to_owned()).or_default();
        if task.counts.is_empty() {
            task.counts = vec![0; count_columns().len()];
        }
        task
    }
}

/// The columns an upsert writes, in order: `count_columns()`, then each
/// `Latest`'s time and id.
pub fn upsert_columns() -> Vec<String> {
    let mut columns: Vec<String> = count_columns().into_iter().map(str::to_owned).collect();
    for kind in Latest::ALL {
        columns.push(format!("{}_at", kind.column()));
        columns.push(format!("{}_id", kind.column()));
    }
    columns
}

/// `INSERT INTO task_counts … {rows} ON CONFLICT … DO UPDATE`, adding
/// each inserted row's counts to the task's and keeping, for each `Latest`,
/// the later of the row's run and the inserted one: `rows` supplies the
/// values in `task_name, upsert_columns()` order (a `Latest` with no run
/// entering it: NULL).
pub fn upsert_sql(rows: &str) -> String {
    let mut sets: Vec<String> = count_columns()
        .iter()
        .map(|c| format!("{c} = task_counts.{c} + excluded.{c}"))
        .collect();
    for kind in Latest::ALL {
        let c = kind.column();
        let later = format!(
            "excluded.{c}_at IS NOT NULL AND (task_counts.{c}_at IS NULL OR excluded.{c}_at > task_counts.{c}_at \
             OR (excluded.{c}_at = task_counts.{c}_at AND excluded.{c}_id > task_counts.{c}_id))"
        );
        for part in ["at", "id"] {
            sets.push(format!(
                "{c}_{part} = CASE WHEN {later} THEN excluded.{c}_{part} ELSE task_counts.{c}_{part} END"
            ));
        }
    }
    format!(
        "INSERT INTO task_counts (task_name, {}) {rows} ON CONFLICT (task_name) DO UPDATE SET {}",
        upsert_columns().join(", "),
        sets.join(", ")
    )
}

/// Adds `$2…` to the task `$1`'s row (placeholders for both backends).
pub static UPSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let marks: Vec<String> = (2..=upsert_columns().len() + 1).map(|i| format!("${i}")).collect();
    upsert_sql(&format!("VALUES ($1, {})", marks.join(", ")))
});

/// Drops the row of task `$1` once it counts no live run.
pub const DROP_EMPTY_SQL: &str = "DELETE FROM task_counts WHERE task_name = $1 AND total = 0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_moves_a_run_between_columns() {
        let mut run = RunState::empty(uuid::Uuid::now_v7());
        run.task_name = "t".into();
        let created = delta(None, &run).expect("a new run counts");
        let columns = count_columns();
        let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        assert_eq!(created[at("total")], 1);
        assert_eq!(created[at("pending")], 1);
        let mut ended = run.clone();
        ended.status = RunStatus::Ended;
        ended.end_reason = Some(EndReason::Failed);
        ended.dead_lettered = true;
        let d = delta(Some(&run), &ended).unwrap();
        assert_eq!(
            (d[at("pending")], d[at("ended")], d[at("failed")], d[at("dead_letter")]),
            (-1, 1, 1, 1)
        );
        assert_eq!(d[at("total")], 0);
        let mut deleted = ended.clone();
        deleted.deleted = true;
        let gone = delta(Some(&ended), &deleted).unwrap();
        assert!(gone.iter().all(|v| *v <= 0) && gone[at("total")] == -1);
        assert_eq!(delta(Some(&ended), &ended), None);
        assert_eq!(columns.len(), created.len());
        let mut sums = TaskDeltas::default();
        sums.add(None, &run);
        sums.add(Some(&run), &ended);
        assert_eq!(sums.tasks["t"].counts[at("total")], 1);
        assert_eq!(sums.tasks["t"].counts[at("pending")], 0);
        assert!(UPSERT_SQL.contains("failed = task_counts.failed + excluded.failed"));
        // The order of the table's columns in migrations 0011.
        assert_eq!(
            columns.join(" "),
            "total pending running paused ended success failed stopped timeout crashed skipped log_overflow expired dead_letter"
        );
    }

    #[test]
    fn a_run_enters_its_tasks_latest_runs_and_leaves_them_when_deleted() {
        let mut first = RunState::empty(uuid::Uuid::now_v7());
        first.task_name = "t".into();
        let mut second = first.clone();
        second.id = uuid::Uuid::now_v7();
        second.created_at = first.created_at.plus_secs(1).unwrap();
        let mut d = TaskDeltas::default();
        d.add(None, &second);
        d.add(None, &first);
        let run = Latest::Run as usize;
        assert_eq!(
            d.tasks["t"].latest[run],
            Some((second.created_at.as_micros(), second.id.to_string())),
            "the later of a batch's new runs"
        );
        let mut failed = second.clone();
        failed.status = RunStatus::Ended;
        failed.end_reason = Some(EndReason::Timeout);
        failed.end_at = Some(second.created_at.plus_secs(5).unwrap());
        let mut ended = TaskDeltas::default();
        ended.add(Some(&second), &failed);
        let entered = &ended.tasks["t"].latest;
        assert_eq!(entered[run], None, "already the latest run: nothing enters");
        assert_eq!(entered[Latest::Success as usize], None);
        assert_eq!(
            entered[Latest::Failure as usize],
            Some((failed.end_at.unwrap().as_micros(), second.id.to_string()))
        );
        let mut deleted = failed.clone();
        deleted.deleted = true;
        let mut gone = TaskDeltas::default();
        gone.add(Some(&failed), &deleted);
        assert_eq!(
            gone.left,
            [
                ("t".to_owned(), Latest::Run, second.id.to_string()),
                ("t".to_owned(), Latest::Failure, second.id.to_string())
            ]
        );
        assert!(Latest::Failure
            .recompute_sql("$1", "VALUES ($1, $2)")
            .contains("end_reason = 'crashed'"));
    }
}

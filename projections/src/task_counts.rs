//! `task_counts`: per task, how many of its live (not deleted) runs are in
//! each phase, have each end reason, and are dead-lettered. Maintained with
//! every append from the run before and after it, so `GET /api/tasks` reads
//! one row per task instead of grouping the runs table; `rebuild` refills it
//! from the runs it has just written. A task with no live run has no row.

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
pub fn delta(previous: Option<&RunState>, current: &RunState) -> Option<Vec<i64>> {
    let after = contribution(current);
    let changes: Vec<i64> = match previous {
        Some(before) => after.iter().zip(contribution(before)).map(|(a, b)| a - b).collect(),
        None => after,
    };
    changes.iter().any(|d| *d != 0).then_some(changes)
}

/// Deltas of many appends, summed per task (one upsert each).
#[derive(Debug, Default)]
pub struct TaskDeltas(pub BTreeMap<String, Vec<i64>>);

impl TaskDeltas {
    pub fn add(&mut self, previous: Option<&RunState>, current: &RunState) {
        if let Some(d) = delta(previous, current) {
            let sum = self
                .0
                .entry(current.task_name.clone())
                .or_insert_with(|| vec![0; d.len()]);
            sum.iter_mut().zip(d).for_each(|(s, d)| *s += d);
        }
    }
}

/// `INSERT INTO task_counts … {rows} ON CONFLICT … DO UPDATE`, adding
/// each inserted row's counts to the task's: `rows` supplies the values in
/// `task_name, count_columns()` order.
pub fn upsert_sql(rows: &str) -> String {
    let columns = count_columns();
    let sets: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = task_counts.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO task_counts (task_name, {}) {rows} ON CONFLICT (task_name) DO UPDATE SET {}",
        columns.join(", "),
        sets.join(", ")
    )
}

/// Adds `$2…` to the task `$1`'s row (placeholders for both backends).
pub static UPSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let marks: Vec<String> = (2..=count_columns().len() + 1).map(|i| format!("${i}")).collect();
    upsert_sql(&format!("VALUES ($1, {})", marks.join(", ")))
});

/// Drops the row of task `$1` once it counts no live run.
pub const DROP_EMPTY_SQL: &str = "DELETE FROM task_counts WHERE task_name = $1 AND total = 0";

/// Fills `task_counts` from the runs table (after a rebuild; the migration
/// that made the table does the same).
pub static REFILL_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut sums = vec!["COUNT(*)".to_owned()];
    sums.extend(
        RunStatus::ALL
            .iter()
            .map(|s| format!("COUNT(*) FILTER (WHERE status = '{}')", s.as_str())),
    );
    sums.extend(
        EndReason::ALL
            .iter()
            .map(|r| format!("COUNT(*) FILTER (WHERE end_reason = '{}')", r.as_str())),
    );
    sums.push("COUNT(*) FILTER (WHERE dead_lettered)".to_owned());
    format!(
        "INSERT INTO task_counts (task_name, {}) SELECT task_name, {} FROM runs WHERE NOT deleted GROUP BY task_name",
        count_columns().join(", "),
        sums.join(", ")
    )
});

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
        assert_eq!(sums.0["t"][at("total")], 1);
        assert_eq!(sums.0["t"][at("pending")], 0);
        assert!(UPSERT_SQL.contains("failed = task_counts.failed + excluded.failed"));
        // The order of the table's columns in migrations 0011.
        assert_eq!(
            columns.join(" "),
            "total pending running paused ended success failed stopped timeout crashed skipped log_overflow expired dead_letter"
        );
    }
}

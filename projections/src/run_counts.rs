//! `run_counts`: how many runs share each combination of the columns most
//! list filters test (project, task, phase, end reason, trigger, exit code,
//! whether a retry, dead-lettered, deleted). Maintained with every append
//! from the run before and after it, like `task_counts`, so that the exact
//! `total` of a list whose filters are all among these columns is a sum over
//! a few thousand rows instead of a count over the runs table
//! (`RunQuery::count_sql`). A combination that no run has has no row.
//! `rebuild` fills it from the runs it has just folded.
//!
//! `tag_counts` does the same for tags: how many live runs have each
//! `key:value`, so that the total of a list filtered by one tag alone is
//! one row.

use std::collections::BTreeMap;

use crate::RunState;

/// The columns of `run_counts`, in table order (before `n`).
pub const COLUMNS: &str =
    "key, project, task_name, status, end_reason, triggered_by, exit_code, retry_attempt, dead_lettered, deleted";

/// One combination: the `run_counts` columns of a run. `retry_attempt` is
/// 0 or 1 (whether the run is a retry), which is all a filter asks of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CountKey {
    pub project: String,
    pub task_name: String,
    pub status: &'static str,
    pub end_reason: Option<&'static str>,
    pub triggered_by: &'static str,
    pub exit_code: Option<i64>,
    pub retry: bool,
    pub dead_lettered: bool,
    pub deleted: bool,
}

impl CountKey {
    pub fn of(run: &RunState) -> Self {
        Self {
            project: run.project.clone(),
            task_name: run.task_name.clone(),
            status: run.status.as_str(),
            end_reason: run.end_reason.map(|r| r.as_str()),
            triggered_by: run.triggered_by.as_str(),
            exit_code: run.exit_code,
            retry: run.retry_attempt > 0,
            dead_lettered: run.dead_lettered,
            deleted: run.deleted,
        }
    }

    /// The row's primary key: the combination as a JSON array.
    pub fn text(&self) -> String {
        serde_json::json!([
            self.project,
            self.task_name,
            self.status,
            self.end_reason,
            self.triggered_by,
            self.exit_code,
            self.retry,
            self.dead_lettered,
            self.deleted
        ])
        .to_string()
    }
}

/// Changes to `run_counts` and `tag_counts`, summed per combination and
/// per tag: +1 for where a run is after an append, -1 for where it was.
#[derive(Debug, Default)]
pub struct RunCountDeltas {
    pub runs: BTreeMap<CountKey, i64>,
    pub tags: BTreeMap<(String, String), i64>,
}

impl RunCountDeltas {
    pub fn add(&mut self, previous: Option<&RunState>, current: &RunState) {
        let after = CountKey::of(current);
        let before = previous.map(CountKey::of);
        if before.as_ref() != Some(&after) {
            if let Some(before) = before {
                *self.runs.entry(before).or_default() -= 1;
            }
            *self.runs.entry(after).or_default() += 1;
        }
        let live_tags = |run: &RunState| {
            if run.deleted {
                Default::default()
            } else {
                run.tags.clone()
            }
        };
        let (was, is) = (previous.map(live_tags).unwrap_or_default(), live_tags(current));
        if was != is {
            for tag in was {
                *self.tags.entry(tag).or_default() -= 1;
            }
            for tag in is {
                *self.tags.entry(tag).or_default() += 1;
            }
        }
    }

    /// The combinations whose count changes, with the change.
    pub fn changes(&self) -> impl Iterator<Item = (&CountKey, i64)> {
        self.runs.iter().filter(|(_, d)| **d != 0).map(|(k, d)| (k, *d))
    }

    /// The tags whose count of live runs changes, with the change.
    pub fn tag_changes(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.tags
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|((k, v), d)| (k.as_str(), v.as_str(), *d))
    }
}

/// `INSERT INTO run_counts … {rows} ON CONFLICT … DO UPDATE`, adding each
/// row's `n` to its combination's: `rows` supplies the values in `COLUMNS`
/// order, then `n` (a `VALUES` list, or an `UNNEST` of arrays).
pub fn upsert_sql(rows: &str) -> String {
    format!(
        "INSERT INTO run_counts ({COLUMNS}, n) {rows} ON CONFLICT (key) DO UPDATE SET n = run_counts.n + excluded.n"
    )
}

/// The same for `tag_counts`: `rows` supplies key, value, n.
pub fn tag_upsert_sql(rows: &str) -> String {
    format!("INSERT INTO tag_counts (key, value, n) {rows} ON CONFLICT (key, value) DO UPDATE SET n = tag_counts.n + excluded.n")
}

/// Drops the combinations of `{keys}` left with no run.
pub fn drop_empty_sql(keys: &str) -> String {
    format!("DELETE FROM run_counts WHERE key {keys} AND n = 0")
}

/// Drops the tags of `{tags}` (a `(key, value)` condition) left with no live run.
pub fn tag_drop_empty_sql(tags: &str) -> String {
    format!("DELETE FROM tag_counts WHERE (key, value) {tags} AND n = 0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunStatus;
    use runledger_events::EndReason;

    #[test]
    fn an_append_moves_a_run_between_combinations() {
        let mut run = RunState::empty(uuid::Uuid::now_v7());
        run.task_name = "t".into();
        let mut d = RunCountDeltas::default();
        d.add(None, &run);
        let mut ended = run.clone();
        ended.status = RunStatus::Ended;
        ended.end_reason = Some(EndReason::Failed);
        ended.exit_code = Some(2);
        d.add(Some(&run), &ended);
        let changes: Vec<_> = d.changes().collect();
        assert_eq!(changes.len(), 1, "created then ended: one run, where it ended");
        assert_eq!(changes[0].0.end_reason, Some("failed"));
        assert_eq!(changes[0].1, 1);
        let mut same = RunCountDeltas::default();
        let mut heartbeat = ended.clone();
        heartbeat.version += 1;
        same.add(Some(&ended), &heartbeat);
        assert!(same.runs.is_empty(), "a change no counted column sees is no change");
        let mut tagged = run.clone();
        tagged.tags.insert("env".into(), "prod".into());
        let mut t = RunCountDeltas::default();
        t.add(None, &tagged);
        let mut deleted = tagged.clone();
        deleted.deleted = true;
        t.add(Some(&tagged), &deleted);
        assert_eq!(
            t.tag_changes().count(),
            0,
            "created then deleted: no live run has the tag"
        );
        let mut only_delete = RunCountDeltas::default();
        only_delete.add(Some(&tagged), &deleted);
        assert_eq!(only_delete.tag_changes().collect::<Vec<_>>(), [("env", "prod", -1)]);
        assert_ne!(CountKey::of(&run).text(), CountKey::of(&ended).text());
    }
}

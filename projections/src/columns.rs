//! The runs table's row for a run state, written once for both backends:
//! which field goes to which column, the column list and the upsert.

use crate::{stored_state, RunChanges, RunState};

/// The columns of `runs`, in the order of `RunRowValues`.
pub const RUN_COLUMNS: &str = "id, project, task_name, status, end_reason, exit_code, triggered_by, \
     retry_attempt, parent_run_id, idempotency_key, dead_lettered, deleted, created_at, start_at, end_at, \
     duration_ms, deadline_at, version, position, state";

/// The ordinal (`runs.seq`) of the last run created, 0 when there is none:
/// the greatest of the runs created last, from the end of `runs_created_id`
/// (a run's created_at never decreases along the log). A new run's is the
/// next; an existing run's never changes (`RUN_UPSERT_SET` leaves it).
pub const LAST_SEQ_SQL: &str =
    "SELECT COALESCE(MAX(seq), 0) FROM runs WHERE created_at = (SELECT MAX(created_at) FROM runs)";

/// What an upsert of `runs` sets when the run exists (both dialects).
pub const RUN_UPSERT_SET: &str = "project = excluded.project, task_name = excluded.task_name, \
     status = excluded.status, end_reason = excluded.end_reason, exit_code = excluded.exit_code, \
     triggered_by = excluded.triggered_by, retry_attempt = excluded.retry_attempt, \
     parent_run_id = excluded.parent_run_id, idempotency_key = excluded.idempotency_key, \
     dead_lettered = excluded.dead_lettered, deleted = excluded.deleted, created_at = excluded.created_at, \
     start_at = excluded.start_at, end_at = excluded.end_at, duration_ms = excluded.duration_ms, \
     deadline_at = excluded.deadline_at, version = excluded.version, position = excluded.position, state = excluded.state";

/// One row of `runs`: the columns that filter and sort, and the state as JSON.
#[derive(PartialEq)]
pub struct RunRowValues<'a> {
    pub id: String,
    pub project: &'a str,
    pub task_name: &'a str,
    pub status: &'static str,
    pub end_reason: Option<&'static str>,
    pub exit_code: Option<i64>,
    pub triggered_by: &'static str,
    pub retry_attempt: i64,
    pub parent_run_id: Option<String>,
    pub idempotency_key: Option<&'a str>,
    pub dead_lettered: bool,
    pub deleted: bool,
    /// Times are microseconds since the Unix epoch.
    pub created_at: i64,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The run's next deadline; the enforcer finds due runs by it.
    pub deadline_at: Option<i64>,
    pub version: i64,
    pub position: i64,
    pub state: String,
}

impl<'a> RunRowValues<'a> {
    /// The row of `runs`: `state` is the run without its empty fields
    /// (`stored_state`; `read_state` reads it back whole).
    pub fn of(s: &'a RunState) -> Result<Self, serde_json::Error> {
        Ok(Self::with_state(s, stored_state(s)?))
    }

    /// The row of `run_history` for the version `s`: `state` holds only
    /// what changed since creation (`RunChanges`).
    pub fn version_of(s: &'a RunState) -> Result<Self, serde_json::Error> {
        Ok(Self::with_state(s, RunChanges::json(s)?))
    }

    /// The columns lists filter and sort by, and nothing else: the row
    /// without its version, position and JSON (see `stores_version`).
    fn key(s: &'a RunState) -> Self {
        Self {
            version: 0,
            position: 0,
            ..Self::with_state(s, String::new())
        }
    }

    fn with_state(s: &'a RunState, state: String) -> Self {
        Self {
            id: s.id.to_string(),
            project: &s.project,
            task_name: &s.task_name,
            status: s.status.as_str(),
            end_reason: s.end_reason.map(|r| r.as_str()),
            exit_code: s.exit_code,
            triggered_by: s.triggered_by.as_str(),
            retry_attempt: s.retry_attempt,
            parent_run_id: s.parent_run_id.map(|p| p.to_string()),
            idempotency_key: s.idempotency_key.as_deref(),
            dead_lettered: s.dead_lettered,
            deleted: s.deleted,
            created_at: s.created_at.as_micros(),
            start_at: s.start_at.map(|t| t.as_micros()),
            end_at: s.end_at.map(|t| t.as_micros()),
            duration_ms: s.duration_ms,
            deadline_at: s.deadline_at.map(|t| t.as_micros()),
            version: s.version,
            position: s.position,
            state,
        }
    }
}

/// The columns of `run_history`: those of `runs` (`position` is where the
/// version starts; `changes` in place of `state`), then where and when it
/// stops.
pub const HISTORY_COLUMNS: &str = "id, project, task_name, status, end_reason, exit_code, triggered_by, \
     retry_attempt, parent_run_id, idempotency_key, dead_lettered, deleted, created_at, start_at, end_at, \
     duration_ms, deadline_at, version, position, changes, valid_to, valid_from_at, valid_to_at";

/// What a query of `run_history` selects for each version: the run's current
/// state and the version's changes, for `RunChanges::decode`.
pub const HISTORY_STATE: &str = "(SELECT r.state FROM runs r WHERE r.id = run_history.id), run_history.changes";

/// The run's version valid at a position: binds the run id, then the position.
/// The run's last version that began at or before it, one step back along
/// the run's index from the position (not every version of a long run).
pub static VERSION_AT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {HISTORY_STATE} FROM run_history WHERE id = $1 AND position <= $2 AND valid_to > $2 \
         ORDER BY position DESC LIMIT 1"
    )
});

/// The time of log position `p` (a placeholder) as `run_history` knows it:
/// when the last run version at or before it began (NULL before any run).
/// Every run that existed at `p` was created at or before it, since
/// `recorded_at` never decreases along the log.
pub fn time_at_sql(p: &str) -> String {
    format!("(SELECT h.valid_from_at FROM run_history h WHERE h.position <= {p} ORDER BY h.position DESC LIMIT 1)")
}

/// `valid_to` of a run's current version.
pub const CURRENT: i64 = i64::MAX;

/// Closes a run's open version when the next one is stored: binds
/// `valid_to`, `valid_to_at` and the run's id. The open version is the
/// run's last, one step back along its index.
pub const CLOSE_VERSION_SQL: &str = "UPDATE run_history SET valid_to = $1, valid_to_at = $2 \
     WHERE position = (SELECT MAX(position) FROM run_history WHERE id = $3)";

/// At most this many of a run's events follow one stored version before
/// the next is stored, whatever they change: what a past state's reader
/// folds on from its version (see `stores_version`).
pub const VERSION_EVERY: i64 = 64;

/// Whether the run's version `state` gets a row of `run_history`, after
/// `last` (the run's last stored version, `None` for a new run). A version
/// that changes no column a list filters or sorts by (a heartbeat, a log
/// line, usage, a tool call, an output) needs no row: filters and sorts at
/// a past position read the columns of the version stored before it, and
/// its state is that version's with the run's events after it folded on.
/// Every `VERSION_EVERY`th event of a run is stored all the same, so that
/// fold stays short.
pub fn stores_version(last: Option<&RunState>, state: &RunState) -> bool {
    match last {
        None => true,
        Some(last) => state.version % VERSION_EVERY == 0 || RunRowValues::key(last) != RunRowValues::key(state),
    }
}

/// The streams a reader of stored versions reads on from: each run's
/// stream after the version it holds (see `fold_on`).
pub fn streams_after(versions: &[RunState]) -> Vec<(String, i64)> {
    versions
        .iter()
        .map(|s| (runledger_events::run_stream_id(&s.id), s.version))
        .collect()
}

/// Brings stored versions up to a position: `events` are their runs'
/// events after them up to it (read by `streams_after`), which stored no
/// version of their own and so change no column, and are folded on here.
pub fn fold_on(versions: &mut [RunState], events: &[runledger_events::EventEnvelope]) -> Result<(), crate::ApplyError> {
    if events.is_empty() {
        return Ok(());
    }
    let by_stream: std::collections::HashMap<String, usize> = streams_after(versions)
        .into_iter()
        .enumerate()
        .map(|(i, (stream, _))| (stream, i))
        .collect();
    for envelope in events {
        if let Some(&i) = by_stream.get(&envelope.stream_id) {
            versions[i].apply_envelope(envelope)?;
        }
    }
    Ok(())
}

/// One version of a run: its state after one event, valid from that event
/// (recorded at `valid_from_at`, µs) until the run's next stored version.
#[derive(Clone, Debug)]
pub struct HistoryVersion {
    pub state: RunState,
    pub valid_from_at: i64,
    /// The next event's position, or `CURRENT`.
    pub valid_to: i64,
    pub valid_to_at: Option<i64>,
}

impl HistoryVersion {
    /// The current version: `state` after its last event, recorded at `at`.
    pub fn current(state: RunState, at: i64) -> Self {
        Self {
            state,
            valid_from_at: at,
            valid_to: CURRENT,
            valid_to_at: None,
        }
    }

    /// Ends this version where the version after it (at `position`,
    /// recorded at `at`) starts.
    pub fn close(&mut self, position: i64, at: i64) {
        self.valid_to = position;
        self.valid_to_at = Some(at);
    }
}

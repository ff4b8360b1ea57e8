//! The read side of runledger: the fold of a run's events into its state, and
//! the tables that fold maintains and serves queries from.
#![forbid(unsafe_code)]

mod changes;
mod columns;
pub mod deadlines;
pub mod details;
pub mod gauges;
mod log;
pub mod payload;
pub mod postgres;
mod query;
mod replay;
pub mod run_counts;
mod run_state;
pub mod schema;
pub mod sqlite;
mod state_json;
pub mod task_counts;

pub use changes::RunChanges;
pub use columns::{
    fold_on, stores_version, streams_after, HistoryVersion, RunRowValues, CLOSE_VERSION_SQL, CURRENT, HISTORY_COLUMNS,
    LAST_SEQ_SQL, RUN_COLUMNS, RUN_UPSERT_SET, VERSION_AT_SQL, VERSION_EVERY,
};
pub use details::DetailRow;
pub use state_json::{read_state, stored_state};

/// Every table the log's fold fills: what a rebuild empties and fills again.
pub fn projection_tables() -> impl Iterator<Item = &'static str> {
    [
        "runs",
        "run_tags",
        "run_history",
        "task_counts",
        "run_counts",
        "tag_counts",
        "run_operations",
    ]
    .into_iter()
    .chain(details::DETAIL_TABLES.iter().map(|t| t.name))
}
pub use log::{LogEntry, LogFilter};
pub use query::{
    Arg, Candidates, Cursor, Dialect, Known, RunFilter, RunQuery, SortDirection, SortField, SqlQuery, StatusValue,
    TaskSummary,
};
pub use replay::{CurrentRun, Replay, ReplayError};
pub use run_state::{ApplyError, EventContext, Refusal, RefusalKind, RunState, RunStatus};

//! The read side of runledger: the fold of a run's events into its state, and
//! the tables that fold maintains and serves queries from.
#![forbid(unsafe_code)]

mod columns;
pub mod details;
mod log;
pub mod postgres;
mod query;
mod replay;
mod run_state;
pub mod sqlite;

pub use columns::{
    HistoryVersion, RunRowValues, CLOSE_VERSION_SQL, CURRENT, HISTORY_COLUMNS, RUN_COLUMNS, RUN_UPSERT_SET,
    VERSION_AT_SQL,
};
pub use details::DetailRow;
pub use log::{LogEntry, LogFilter};
pub use query::{Arg, RunFilter, RunQuery, SortDirection, SortField, SqlQuery, StatusValue, TaskSummary};
pub use replay::{Replay, ReplayError};
pub use run_state::{ApplyError, EventContext, Refusal, RefusalKind, RunState, RunStatus};

//! The write side of runledger: the event vocabulary, the envelope every
//! stored event carries, the SHA-256 hash chain, and the append-only log.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod chain;
mod envelope;
pub mod postgres;
mod run;
mod seal;
pub mod sqlite;
mod timestamp;
pub mod upcast;

pub use envelope::{EventEnvelope, ExpectedVersion, Metadata, NewEvent};
pub use run::*;
pub use seal::{Sealed, Sealer};
pub use timestamp::Timestamp;

/// The stream every event of one run is appended to.
pub fn run_stream_id(run_id: &uuid::Uuid) -> String {
    format!("run-{run_id}")
}

/// Records one committed batch (group commit) in the process's metrics:
/// batch size, commit latency.
pub fn record_commit(units: usize, took: std::time::Duration) {
    metrics::histogram!("runledger_commit_batch_size").record(units as f64);
    metrics::histogram!("runledger_commit_seconds").record(took.as_secs_f64());
}

/// Records events appended by a committed batch.
pub fn record_appended(events: u64) {
    metrics::counter!("runledger_appended_events_total").increment(events);
}

//! The write side of runledger: the event vocabulary, the envelope every
//! stored event carries, the SHA-256 hash chain, and the append-only log.
#![forbid(unsafe_code)]

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

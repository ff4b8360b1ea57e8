//! runledger: an event-sourced ledger for job runs.
#![forbid(unsafe_code)]

pub mod anchors;
pub mod auth;
pub mod chunks;
pub mod cli;
pub mod client;
pub mod commands;
pub mod console;
pub mod deadlines;
pub mod domain;
pub mod follow;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod telemetry;

//! The projection tables on SQLite.

pub mod details;
pub mod runs;

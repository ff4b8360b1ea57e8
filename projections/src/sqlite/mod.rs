//! The projection tables on SQLite.

pub mod runs;

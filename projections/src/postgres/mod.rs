//! The projection tables on PostgreSQL.

pub mod details;
pub mod runs;

//! The projection tables on PostgreSQL.

pub mod runs;

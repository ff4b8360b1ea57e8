//! Finding runs whose deadline is due, from the `runs_deadline` index: the
//! fold sets `deadline_at`, the service's enforcer ends the runs it finds.

/// Runs due at a time (µs, bound first), earliest first, at most a limit
/// (bound second): their ids and the versions the enforcer appends at.
pub const DUE_SQL: &str = "SELECT id, version FROM runs WHERE deadline_at IS NOT NULL AND deadline_at <= $1 \
     ORDER BY deadline_at LIMIT $2";

/// The earliest deadline of any run (µs), or NULL.
pub const NEXT_SQL: &str = "SELECT MIN(deadline_at) FROM runs WHERE deadline_at IS NOT NULL";

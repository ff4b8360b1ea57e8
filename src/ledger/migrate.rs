//! Schema migrations for SQLite, run at start-up. Each file in
//! `migrations/sqlite/` runs once, in order, in one transaction.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "events", include_str!("../../migrations/sqlite/0001_events.sql")),
    (2, "runs", include_str!("../../migrations/sqlite/0002_runs.sql")),
    (
        3,
        "events_recorded_at",
        include_str!("../../migrations/sqlite/0003_events_recorded_at.sql"),
    ),
    (
        4,
        "api_tokens",
        include_str!("../../migrations/sqlite/0004_api_tokens.sql"),
    ),
    (
        5,
        "run_history",
        include_str!("../../migrations/sqlite/0005_run_history.sql"),
    ),
    (
        6,
        "operations",
        include_str!("../../migrations/sqlite/0006_operations.sql"),
    ),
    (
        7,
        "run_details",
        include_str!("../../migrations/sqlite/0007_run_details.sql"),
    ),
    (
        8,
        "run_lineage",
        include_str!("../../migrations/sqlite/0008_run_lineage.sql"),
    ),
    (
        9,
        "idempotency_keys",
        include_str!("../../migrations/sqlite/0009_idempotency_keys.sql"),
    ),
    (
        10,
        "run_history_changes",
        include_str!("../../migrations/sqlite/0010_run_history_changes.sql"),
    ),
    (
        11,
        "task_counts",
        include_str!("../../migrations/sqlite/0011_task_counts.sql"),
    ),
    (
        12,
        "run_counts",
        include_str!("../../migrations/sqlite/0012_run_counts.sql"),
    ),
    (
        13,
        "run_search",
        include_str!("../../migrations/sqlite/0013_run_search.sql"),
    ),
    (
        14,
        "runs_task_end",
        include_str!("../../migrations/sqlite/0014_runs_task_end.sql"),
    ),
    (
        15,
        "sort_indexes",
        include_str!("../../migrations/sqlite/0015_sort_indexes.sql"),
    ),
    (
        16,
        "tag_counts",
        include_str!("../../migrations/sqlite/0016_tag_counts.sql"),
    ),
    (
        17,
        "run_deadlines",
        include_str!("../../migrations/sqlite/0017_run_deadlines.sql"),
    ),
    (
        18,
        "run_origins",
        include_str!("../../migrations/sqlite/0018_run_origins.sql"),
    ),
    (
        20,
        "run_search_ids",
        include_str!("../../migrations/sqlite/0020_run_search_ids.sql"),
    ),
    (
        21,
        "run_history_created",
        include_str!("../../migrations/sqlite/0021_run_history_created.sql"),
    ),
    (
        22,
        "task_latest_runs",
        include_str!("../../migrations/sqlite/0022_task_latest_runs.sql"),
    ),
    (
        23,
        "live_created_indexes",
        include_str!("../../migrations/sqlite/0023_live_created_indexes.sql"),
    ),
    (24, "run_seq", include_str!("../../migrations/sqlite/0024_run_seq.sql")),
    (
        25,
        "run_history_first",
        include_str!("../../migrations/sqlite/0025_run_history_first.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the database is at schema version {found}, newer than this build knows ({known}); upgrade runledger")]
    FromTheFuture { found: i64, known: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Applies the migrations the database does not have yet; returns how many.
pub fn sqlite(conn: &mut Connection) -> Result<usize, MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )?;
    let found: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > known {
        return Err(MigrateError::FromTheFuture { found, known });
    }
    // Every known migration not yet applied, even one numbered below the
    // newest applied: migrations written on different branches can land
    // out of order.
    let done = applied_versions(&tx)?;
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !done.contains(&m.0)) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, runledger_events::Timestamp::now().to_rfc3339()],
        )?;
        applied += 1;
    }
    tx.commit()?;
    Ok(applied)
}

fn applied_versions(conn: &Connection) -> rusqlite::Result<std::collections::HashSet<i64>> {
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations")?;
    let versions = stmt.query_map([], |r| r.get(0))?;
    versions.collect()
}

/// True when every known migration is applied.
pub fn sqlite_is_current(conn: &Connection) -> rusqlite::Result<bool> {
    let done = applied_versions(conn)?;
    Ok(MIGRATIONS.iter().all(|m| done.contains(&m.0)))
}

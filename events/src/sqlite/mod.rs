//! The log on SQLite: one writer thread that owns its connection and commits
//! batches of units of work (group commit), and a pool of read connections.

mod pool;
pub mod read;
mod verify;
mod writer;

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

pub use crate::chain::ChainReport;
pub use pool::ReadPool;
pub use verify::verify_chain;
pub use writer::{AppendError, StorageError, WriteError, WriteTx, Writer, WriterStats, MAX_BATCH};

/// Opens a connection with the settings every runledger connection shares:
/// WAL, `synchronous=FULL` (an acknowledged write survives power loss), and a
/// busy timeout for the rare moment another process holds the write lock.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, expected wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// A connection that can only read.
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// True when the error is a UNIQUE or PRIMARY KEY constraint violation.
pub fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Inserts one sealed event as stored.
pub fn insert_sealed(conn: &Connection, sealed: &crate::Sealed) -> rusqlite::Result<usize> {
    let e = &sealed.envelope;
    conn.prepare_cached(
        "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
         schema_version, data, metadata, recorded_at, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(rusqlite::params![
        e.position,
        e.event_id.to_string(),
        e.stream_id,
        e.stream_version,
        e.event_type,
        e.schema_version,
        sealed.data,
        sealed.metadata,
        sealed.recorded_at,
        e.prev_hash,
        e.hash,
    ])
}

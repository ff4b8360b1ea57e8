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

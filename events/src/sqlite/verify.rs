//! Re-computes the hash chain over the stored log.

use rusqlite::Connection;

use crate::chain::{ChainReport, ChainWalk, HashInput};

/// Walks the log in position order: positions must run 1, 2, 3…, each
/// `prev_hash` must be the previous event's `hash`, and each `hash` must be
/// the hash of the stored fields.
pub fn verify_chain(conn: &Connection) -> rusqlite::Result<ChainReport> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM events ORDER BY position",
        super::read::COLUMNS
    ))?;
    let mut rows = stmt.query([])?;
    let mut walk = ChainWalk::default();
    while let Some(row) = rows.next()? {
        let (event_id, stream_id, event_type): (String, String, String) = (row.get(1)?, row.get(2)?, row.get(4)?);
        let (data, metadata, recorded_at): (String, String, String) = (row.get(6)?, row.get(7)?, row.get(8)?);
        let (prev_hash, hash): (String, String) = (row.get(9)?, row.get(10)?);
        let stored = HashInput {
            position: row.get(0)?,
            event_id: &event_id,
            stream_id: &stream_id,
            stream_version: row.get(3)?,
            event_type: &event_type,
            schema_version: row.get(5)?,
            data: &data,
            metadata: &metadata,
            recorded_at: &recorded_at,
            prev_hash: &prev_hash,
        };
        if !walk.step(&stored, &hash) {
            break;
        }
    }
    Ok(walk.report())
}

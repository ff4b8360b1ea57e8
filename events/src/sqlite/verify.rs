//! Re-computes the hash chain over the stored log.

use rusqlite::Connection;

use crate::chain::{HashInput, GENESIS_HASH};

/// What a full pass over the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub events: i64,
    /// The last position checked.
    pub head: i64,
    /// The first position where the chain breaks, and why.
    pub first_break: Option<(i64, String)>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Walks the log in position order: positions must run 1, 2, 3…, each
/// `prev_hash` must be the previous event's `hash`, and each `hash` must be
/// the hash of the stored fields.
pub fn verify_chain(conn: &Connection) -> rusqlite::Result<ChainReport> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM events ORDER BY position",
        super::read::COLUMNS
    ))?;
    let mut rows = stmt.query([])?;
    let mut expected_position = 1;
    let mut prev = GENESIS_HASH.to_owned();
    let mut events = 0;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(0)?;
        let event_id: String = row.get(1)?;
        let stream_id: String = row.get(2)?;
        let event_type: String = row.get(4)?;
        let data: String = row.get(6)?;
        let metadata: String = row.get(7)?;
        let recorded_at: String = row.get(8)?;
        let prev_hash: String = row.get(9)?;
        let hash: String = row.get(10)?;
        let fault = if position != expected_position {
            Some(format!(
                "expected position {expected_position}, found {position}: an event was removed"
            ))
        } else if prev_hash != prev {
            Some("prev_hash does not match the previous event's hash: events were removed or reordered".into())
        } else {
            let computed = HashInput {
                position,
                event_id: &event_id,
                stream_id: &stream_id,
                stream_version: row.get(3)?,
                event_type: &event_type,
                schema_version: row.get(5)?,
                data: &data,
                metadata: &metadata,
                recorded_at: &recorded_at,
                prev_hash: &prev_hash,
            }
            .hash();
            (computed != hash).then(|| "the stored fields do not match the event's hash: the event was altered".into())
        };
        if let Some(reason) = fault {
            return Ok(ChainReport {
                events,
                head: position,
                first_break: Some((expected_position.min(position), reason)),
            });
        }
        events += 1;
        expected_position += 1;
        prev = hash;
    }
    Ok(ChainReport {
        events,
        head: expected_position - 1,
        first_break: None,
    })
}

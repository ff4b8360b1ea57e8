//! Reading the log by position or by stream.

use rusqlite::{params, types::Value as SqlValue, Connection, OptionalExtension, Row};
use serde_json::Value;

use crate::chain::GENESIS_HASH;
use crate::{EventEnvelope, Metadata, Timestamp};

pub(crate) const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash";

fn parse_err(col: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

pub fn envelope_from_row(row: &Row<'_>) -> rusqlite::Result<EventEnvelope> {
    let event_id: String = row.get(1)?;
    let data: String = row.get(6)?;
    let metadata: String = row.get(7)?;
    let recorded_at: String = row.get(8)?;
    Ok(EventEnvelope {
        position: row.get(0)?,
        event_id: event_id.parse().map_err(|e| parse_err(1, e))?,
        stream_id: row.get(2)?,
        stream_version: row.get(3)?,
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        data: serde_json::from_str::<Value>(&data).map_err(|e| parse_err(6, e))?,
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| parse_err(7, e))?,
        recorded_at: Timestamp::parse(&recorded_at).map_err(|e| parse_err(8, e))?,
        prev_hash: row.get(9)?,
        hash: row.get(10)?,
    })
}

/// The last event's position, hash and time; position 0 and the genesis hash
/// for an empty log.
pub fn head(conn: &Connection) -> rusqlite::Result<(i64, String, Option<Timestamp>)> {
    let row = conn
        .prepare_cached("SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1")?
        .query_row([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .optional()?;
    Ok(match row {
        Some((p, h, t)) => (p, h, Timestamp::parse(&t).ok()),
        None => (0, GENESIS_HASH.to_owned(), None),
    })
}

/// Current version of a stream (0 if it has no events).
pub fn stream_version(conn: &Connection, stream_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?1")?
        .query_row([stream_id], |r| r.get(0))
}

pub fn by_event_id(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<EventEnvelope>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ?1"))?
        .query_row([event_id], envelope_from_row)
        .optional()
}

/// One stream's events after `after_version`, oldest first, optionally only
/// some types.
pub fn stream(
    conn: &Connection,
    stream_id: &str,
    after_version: i64,
    limit: i64,
    types: &[String],
) -> rusqlite::Result<Vec<EventEnvelope>> {
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version > ?2");
    let mut args: Vec<SqlValue> = vec![stream_id.to_owned().into(), after_version.into()];
    push_type_filter(&mut sql, &mut args, types);
    sql.push_str(&format!(" ORDER BY stream_version LIMIT ?{}", args.len() + 1));
    args.push(limit.into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), envelope_from_row)?;
    rows.collect()
}

/// Each stream's events after its version (`(stream_id, after_version)`)
/// up to position `until`, stream by stream, oldest first.
pub fn streams_until(conn: &Connection, streams: &[(String, i64)], until: i64) -> rusqlite::Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version > ?2 AND position <= ?3 \
         ORDER BY stream_version"
    ))?;
    let mut events = Vec::new();
    for (stream_id, after_version) in streams {
        let rows = stmt.query_map(params![stream_id, after_version, until], envelope_from_row)?;
        for row in rows {
            events.push(row?);
        }
    }
    Ok(events)
}

/// The global log after `after`, in position order.
pub fn after(conn: &Connection, after: i64, limit: i64) -> rusqlite::Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![after, limit], envelope_from_row)?;
    rows.collect()
}

/// The events at these positions (those that exist), in position order.
pub fn at_positions(conn: &Connection, positions: &[i64]) -> rusqlite::Result<Vec<EventEnvelope>> {
    let list = serde_json::to_string(positions).expect("integers serialize");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE position IN (SELECT value FROM json_each(?1)) ORDER BY position"
    ))?;
    let rows = stmt.query_map([list], envelope_from_row)?;
    rows.collect()
}

fn push_type_filter(sql: &mut String, args: &mut Vec<SqlValue>, types: &[String]) {
    if types.is_empty() {
        return;
    }
    let marks: Vec<String> = types
        .iter()
        .map(|t| {
            args.push(t.clone().into());
            format!("?{}", args.len())
        })
        .collect();
    sql.push_str(&format!(" AND event_type IN ({})", marks.join(",")));
}

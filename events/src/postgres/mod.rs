//! The log on PostgreSQL.
//!
//! Gap-free, commit-ordered positions: every appending transaction first
//! takes the ledger's transaction-scoped advisory lock, then reads the head,
//! seals its events after it, inserts them and commits. The lock is released
//! only after the commit is visible, so the next appender (on any node) reads
//! a head that includes it, and no reader can ever see position p+1 committed
//! while p is not. Appends are batched (group commit), so the lock is taken
//! once per batch, not per event. Readers never wait on a timeout and never
//! skip: what they read by position is final.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::chain::GENESIS_HASH;
use crate::{EventEnvelope, Metadata, Sealed, Sealer, Timestamp};

/// The channel every node notifies after a commit; the payload is
/// `<schema>:<head position>`. It is a wake-up only: followers read the log.
pub const NOTIFY_CHANNEL: &str = "runledger_events";

const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash";

/// Takes the ledger's append lock until the transaction ends. One lock per
/// schema, so several ledgers can share a database.
pub async fn lock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('runledger:' || current_schema()))")
        .execute(conn)
        .await?;
    Ok(())
}

/// The head the next event is sealed after. Call it holding the lock.
pub async fn head(conn: &mut PgConnection) -> sqlx::Result<Sealer> {
    let row = sqlx::query("SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(row) => Sealer::new(
            row.try_get("position")?,
            row.try_get("hash")?,
            Timestamp::parse(row.try_get::<&str, _>("recorded_at")?).ok(),
        ),
        None => Sealer::new(0, GENESIS_HASH.to_owned(), None),
    })
}

/// The last committed position (0 for an empty log).
pub async fn head_position(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(conn)
        .await
}

/// Inserts sealed events in one statement.
pub async fn insert(conn: &mut PgConnection, sealed: &[Sealed]) -> sqlx::Result<()> {
    if sealed.is_empty() {
        return Ok(());
    }
    let mut position = Vec::with_capacity(sealed.len());
    let mut event_id = Vec::with_capacity(sealed.len());
    let mut stream_id = Vec::with_capacity(sealed.len());
    let mut stream_version = Vec::with_capacity(sealed.len());
    let mut event_type = Vec::with_capacity(sealed.len());
    let mut schema_version = Vec::with_capacity(sealed.len());
    let mut data = Vec::with_capacity(sealed.len());
    let mut metadata = Vec::with_capacity(sealed.len());
    let mut recorded_at = Vec::with_capacity(sealed.len());
    let mut prev_hash = Vec::with_capacity(sealed.len());
    let mut hash = Vec::with_capacity(sealed.len());
    for s in sealed {
        let e = &s.envelope;
        position.push(e.position);
        event_id.push(e.event_id);
        stream_id.push(e.stream_id.as_str());
        stream_version.push(e.stream_version);
        event_type.push(e.event_type.as_str());
        schema_version.push(e.schema_version);
        data.push(s.data.as_str());
        metadata.push(s.metadata.as_str());
        recorded_at.push(s.recorded_at.as_str());
        prev_hash.push(e.prev_hash.as_str());
        hash.push(e.hash.as_str());
    }
    sqlx::query(&format!(
        "INSERT INTO events ({COLUMNS}) SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], \
         $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
    ))
    .bind(position)
    .bind(event_id)
    .bind(stream_id)
    .bind(stream_version)
    .bind(event_type)
    .bind(schema_version)
    .bind(data)
    .bind(metadata)
    .bind(recorded_at)
    .bind(prev_hash)
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes every node's followers; delivered when the transaction commits.
pub async fn notify(conn: &mut PgConnection, head: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, current_schema() || ':' || $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(head.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

fn decode_err(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Reads an envelope from a row with the log's columns.
pub fn envelope(row: &PgRow) -> sqlx::Result<EventEnvelope> {
    Ok(EventEnvelope {
        position: row.try_get("position")?,
        event_id: row.try_get::<Uuid, _>("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: serde_json::from_str(row.try_get("data")?).map_err(decode_err)?,
        metadata: serde_json::from_str::<Metadata>(row.try_get("metadata")?).map_err(decode_err)?,
        recorded_at: Timestamp::parse(row.try_get("recorded_at")?).map_err(decode_err)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// One stream's events after `after_version`, oldest first, optionally only
/// some types.
pub async fn stream(
    conn: &mut PgConnection,
    stream_id: &str,
    after_version: i64,
    limit: i64,
    types: &[String],
) -> sqlx::Result<Vec<EventEnvelope>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
         AND (cardinality($3::text[]) = 0 OR event_type = ANY($3)) ORDER BY stream_version LIMIT $4"
    ))
    .bind(stream_id)
    .bind(after_version)
    .bind(types)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(envelope).collect()
}

/// Each stream's events after its version (`(stream_id, after_version)`)
/// up to position `until`, in position order; one statement for them all.
pub async fn streams_until(
    conn: &mut PgConnection,
    streams: &[(String, i64)],
    until: i64,
) -> sqlx::Result<Vec<EventEnvelope>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, versions): (Vec<&str>, Vec<i64>) = streams.iter().map(|(s, v)| (s.as_str(), *v)).unzip();
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events JOIN UNNEST($1::text[], $2::bigint[]) AS s(sid, after_version) \
         ON stream_id = s.sid AND stream_version > s.after_version WHERE position <= $3 ORDER BY position"
    ))
    .bind(ids)
    .bind(versions)
    .bind(until)
    .fetch_all(conn)
    .await?;
    rows.iter().map(envelope).collect()
}

/// The global log after `after`, in position order.
pub async fn after(conn: &mut PgConnection, after: i64, limit: i64) -> sqlx::Result<Vec<EventEnvelope>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(envelope).collect()
}

/// The events at these positions (those that exist), in position order.
pub async fn at_positions(conn: &mut PgConnection, positions: &[i64]) -> sqlx::Result<Vec<EventEnvelope>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE position = ANY($1::bigint[]) ORDER BY position"
    ))
    .bind(positions)
    .fetch_all(conn)
    .await?;
    rows.iter().map(envelope).collect()
}

/// Walks the whole log in position order and checks the hash chain (see
/// `chain::ChainWalk`), in pages so memory stays bounded.
pub async fn verify_chain(conn: &mut PgConnection) -> sqlx::Result<crate::chain::ChainReport> {
    let mut walk = crate::chain::ChainWalk::default();
    let mut after: i64 = 0;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT 10000"
        ))
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("position")?;
        for row in &rows {
            let event_id = row.try_get::<Uuid, _>("event_id")?.to_string();
            let stored = crate::chain::HashInput {
                position: row.try_get("position")?,
                event_id: &event_id,
                stream_id: row.try_get("stream_id")?,
                stream_version: row.try_get("stream_version")?,
                event_type: row.try_get("event_type")?,
                schema_version: row.try_get("schema_version")?,
                data: row.try_get("data")?,
                metadata: row.try_get("metadata")?,
                recorded_at: row.try_get("recorded_at")?,
                prev_hash: row.try_get("prev_hash")?,
            };
            if !walk.step(&stored, row.try_get("hash")?) {
                return Ok(walk.report());
            }
        }
    }
    Ok(walk.report())
}

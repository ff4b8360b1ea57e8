//! Idempotency keys: the stored responses of POSTs sent with an
//! `Idempotency-Key` header, per caller. Stored beside the log, like tokens
//! (they are not history: rebuild and export leave them alone). The SQL is
//! shared by both backends (`$n` placeholders, bound in order).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Ledger, LedgerError};

pub(super) const FIND_SQL: &str = "SELECT request_sha256, status, headers, body, expires_at \
     FROM idempotency_keys WHERE actor = $1 AND idem_key = $2";
pub(super) const DROP_EXPIRED_SQL: &str =
    "DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2 AND expires_at <= $3";
pub(super) const RESERVE_SQL: &str = "INSERT INTO idempotency_keys (actor, idem_key, request_sha256, expires_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (actor, idem_key) DO NOTHING";
pub(super) const COMPLETE_SQL: &str = "UPDATE idempotency_keys SET status = $1, headers = $2, body = $3, \
     expires_at = $4 WHERE actor = $5 AND idem_key = $6 AND status IS NULL";
pub(super) const RELEASE_SQL: &str =
    "DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2 AND status IS NULL";
/// Expired rows of any caller, a bounded number at a time.
pub(super) const PURGE_SQL: &str = "DELETE FROM idempotency_keys WHERE (actor, idem_key) IN \
     (SELECT actor, idem_key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)";

/// Each new reservation removes at most this many expired rows, so the table
/// stays bounded by the keys used within one time-to-live without a
/// sweeper, and no request pays for a large backlog.
pub(super) const PURGE_BATCH: i64 = 100;

/// A response as it was first sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The handler's headers (content type, location…), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a request with an idempotency key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The key is new (or its last use expired): it is now held for this
    /// request, which must complete or release it.
    Reserved,
    /// The same request already finished: answer with its response.
    Replay(StoredResponse),
    /// The same key is held by a request that has not finished yet.
    InProgress,
    /// The key was used for a different request.
    Reused,
}

/// A row as `FIND_SQL` reads it.
pub(super) struct KeyRow {
    pub request_sha256: String,
    pub status: Option<i64>,
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
    pub expires_at: i64,
}

impl KeyRow {
    /// What a request with this hash gets from a live row.
    pub fn answer(self, request_sha256: &str) -> Result<Reservation, LedgerError> {
        if self.request_sha256 != request_sha256 {
            return Ok(Reservation::Reused);
        }
        let Some(status) = self.status else {
            return Ok(Reservation::InProgress);
        };
        let headers = match &self.headers {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| LedgerError::Storage(format!("stored idempotent response headers: {e}")))?,
            None => Vec::new(),
        };
        Ok(Reservation::Replay(StoredResponse {
            status: u16::try_from(status)
                .map_err(|_| LedgerError::Storage(format!("stored idempotent response status {status}")))?,
            headers,
            body: self.body.unwrap_or_default(),
        }))
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn millis_after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).expect("string pairs serialize")
}

impl Ledger {
    /// Holds `key` for `actor`'s request with this hash, for at most `lease`
    /// (a reservation whose server died is taken over after it), or says why
    /// not. An expired row is forgotten here, as if the key were new.
    pub async fn reserve_idempotency_key(
        &self,
        actor: &str,
        key: &str,
        request_sha256: &str,
        lease: Duration,
    ) -> Result<Reservation, LedgerError> {
        let (actor, key, hash) = (actor.to_owned(), key.to_owned(), request_sha256.to_owned());
        match self {
            Self::Sqlite(l) => l.reserve_idempotency_key(actor, key, hash, lease).await,
            Self::Postgres(l) => l.reserve_idempotency_key(actor, key, hash, lease).await,
        }
    }

    /// Stores the response of a reserved key, kept for `ttl` from now.
    pub async fn complete_idempotency_key(
        &self,
        actor: &str,
        key: &str,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), LedgerError> {
        let (actor, key) = (actor.to_owned(), key.to_owned());
        match self {
            Self::Sqlite(l) => l.complete_idempotency_key(actor, key, response, ttl).await,
            Self::Postgres(l) => l.complete_idempotency_key(actor, key, response, ttl).await,
        }
    }

    /// Gives up a reservation (its request failed), so a retry runs anew.
    pub async fn release_idempotency_key(&self, actor: &str, key: &str) -> Result<(), LedgerError> {
        let (actor, key) = (actor.to_owned(), key.to_owned());
        match self {
            Self::Sqlite(l) => l.release_idempotency_key(actor, key).await,
            Self::Postgres(l) => l.release_idempotency_key(actor, key).await,
        }
    }
}

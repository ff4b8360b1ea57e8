//! `Idempotency-Key` on every POST under `/api/`.
//!
//! The first request with a key reserves it (a unique insert, so of two
//! concurrent requests only one runs; the other gets 409
//! `idempotency_key_in_progress`), runs, and stores its response: status,
//! the handler's headers (content type, `Location`) and the body bytes, as
//! the client got them. A later POST by the same caller with the same key
//! and the same request (a SHA-256 of method, path with query, and body) gets
//! that response again, with `Idempotent-Replayed: true`, and nothing runs;
//! with a different request it gets 422 `idempotency_key_reused`. Keys are
//! per caller (the token's name, or `anonymous`). 2xx, 3xx and 4xx responses
//! are stored (a refused request is refused again); a 5xx is not, and the key
//! is released so that a retry runs. A stored key is kept for the configured
//! time-to-live, then treated as new.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::error::{finish, ApiError, FieldError, Finished};
use crate::auth::ANONYMOUS;
use crate::ledger::{Ledger, Reservation, StoredResponse};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

const LOCATION: &str = "header.Idempotency-Key";
const MAX_KEY: usize = 255;

pub struct Idempotency {
    pub ledger: Arc<Ledger>,
    /// How long a stored response is kept.
    pub ttl: Duration,
    /// How long a reservation holds its key: longer than any request may
    /// run, so only a reservation whose server died is ever taken over.
    pub lease: Duration,
    pub max_body_bytes: usize,
}

/// A key: 1–255 visible ASCII characters.
fn parse_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_one(LOCATION, "give one Idempotency-Key header", None));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY {
        return Err(ApiError::invalid_one(
            LOCATION,
            format!("must be 1 to {MAX_KEY} characters long"),
            Some(bytes.len().into()),
        ));
    }
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_one(
            LOCATION,
            "must be visible ASCII characters (no spaces or control characters)",
            None,
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn request_sha256(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b"\n");
    hash.update(path_and_query);
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// A reserved key, released if its request ends without a stored response
/// (a 5xx, or the request dropped by the timeout or a disconnect).
struct Held {
    ledger: Arc<Ledger>,
    actor: String,
    key: String,
    settled: bool,
}

impl Held {
    async fn release(mut self) {
        self.settled = true;
        if let Err(e) = self.ledger.release_idempotency_key(&self.actor, &self.key).await {
            tracing::error!(error = %e, "could not release an idempotency key");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (ledger, actor, key) = (
            self.ledger.clone(),
            std::mem::take(&mut self.actor),
            std::mem::take(&mut self.key),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = ledger.release_idempotency_key(&actor, &key).await {
                    tracing::error!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// The middleware; it runs after the auth guard, which names the caller.
pub async fn guard(State(idem): State<Arc<Idempotency>>, request: Request, next: Next) -> Response {
    let applies = request.method() == Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|route| route.as_str().starts_with("/api/"));
    if !applies {
        return next.run(request).await;
    }
    let key = match parse_key(request.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    let actor = request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |c| c.name.clone());
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, idem.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return ApiError::PayloadTooLarge.into_response(),
        Err(e) => {
            return ApiError::Malformed {
                detail: format!("the request body could not be read: {e}"),
                errors: Vec::new(),
            }
            .into_response()
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let hash = request_sha256(&parts.method, target, &body);
    match idem
        .ledger
        .reserve_idempotency_key(&actor, &key, &hash, idem.lease)
        .await
    {
        Ok(Reservation::Reserved) => {}
        Ok(Reservation::Replay(stored)) => return replay(stored),
        Ok(Reservation::InProgress) => {
            return ApiError::Conflict {
                code: "idempotency_key_in_progress",
                detail: "a request with this Idempotency-Key is still running; retry once it has finished".into(),
                current_status: None,
                current_version: None,
            }
            .into_response()
        }
        Ok(Reservation::Reused) => {
            return ApiError::Unprocessable {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used for a different request (method, path or body)".into(),
                errors: vec![FieldError {
                    location: LOCATION.into(),
                    message: "already used for a different request".into(),
                    value: Some(key.into()),
                }],
            }
            .into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let held = Held {
        ledger: idem.ledger.clone(),
        actor,
        key,
        settled: false,
    };
    let path = parts.uri.path().to_owned();
    let response = finish(next.run(Request::from_parts(parts, Body::from(body))).await, path).await;
    if response.status().is_server_error() {
        held.release().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            held.release().await;
            return ApiError::Internal(format!("reading a response to store it: {e}")).into_response();
        }
    };
    store(held, &parts, &body, idem.ttl).await;
    Response::from_parts(parts, Body::from(body))
}

async fn store(mut held: Held, parts: &axum::http::response::Parts, body: &Bytes, ttl: Duration) {
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING)
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: body.to_vec(),
    };
    // If the response cannot be stored the request has still acted: keep
    // the reservation (it lapses after its lease) rather than let a retry
    // act twice.
    held.settled = true;
    if let Err(e) = held
        .ledger
        .complete_idempotency_key(&held.actor, &held.key, stored, ttl)
        .await
    {
        tracing::error!(error = %e, "could not store an idempotent response");
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (name.parse::<HeaderName>(), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response.extensions_mut().insert(Finished);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &[u8]) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).expect("header value"));
        parse_key(&headers)
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert_eq!(key(b"order-42").ok().flatten().as_deref(), Some("order-42"));
        assert!(key(&[b'k'; 255]).is_ok());
        assert!(key(&[b'k'; 256]).is_err());
        assert!(key(b"").is_err());
        assert!(key(b"two words").is_err());
        assert!(key(b"tab\there").is_err());
        assert!(key("caf\u{e9}".as_bytes()).is_err());
        assert!(matches!(parse_key(&HeaderMap::new()), Ok(None)));
    }

    #[test]
    fn the_hash_covers_method_path_and_body() {
        let base = request_sha256(&Method::POST, "/api/runs", b"{}");
        assert_eq!(base, request_sha256(&Method::POST, "/api/runs", b"{}"));
        assert_ne!(base, request_sha256(&Method::POST, "/api/runs", b"{ }"));
        assert_ne!(base, request_sha256(&Method::POST, "/api/runs/x/start", b"{}"));
        assert_ne!(base, request_sha256(&Method::PUT, "/api/runs", b"{}"));
    }
}

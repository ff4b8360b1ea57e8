//! Who may call which route, and how often.
//!
//! Every `/api/` route needs one scope, given by [`required_scope`] from its
//! method and route template; the OpenAPI document states the same mapping
//! (see [`document`]). The guard runs after routing, on those routes only:
//! it identifies the caller (a bearer token, or `anonymous` when the API runs
//! open), charges the caller's rate limit, then checks the scope. Health,
//! readiness, metrics and the API documents are public.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use crate::auth::{secret_hash, Scope, ANONYMOUS};
use crate::ledger::{tokens_generation, Ledger};

/// The scope a route needs; `None` for public routes. Reads need
/// `runs:read`, except the global log and every live stream (`ledger:read`);
/// writes need `runs:write`, except deleting, restoring and bulk operations
/// (`runs:admin`). A new route falls under these rules by its shape.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    if !route.starts_with("/api/") {
        return None;
    }
    let reading = method == Method::GET || method == Method::HEAD;
    if reading && (route.starts_with("/api/events") || route.ends_with("/stream")) {
        Some(Scope::LedgerRead)
    } else if reading {
        Some(Scope::RunsRead)
    } else if method == Method::DELETE || route.ends_with("/restore") || route.contains("/bulk") {
        Some(Scope::RunsAdmin)
    } else {
        Some(Scope::RunsWrite)
    }
}

/// Adds the bearer scheme and each operation's required scope to the
/// OpenAPI document, from [`required_scope`].
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from `runledger token create`. With no tokens configured the API runs open, on a loopback address only.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
            utoipa::openapi::security::ApiKeyValue::with_description(
                SESSION_COOKIE,
                "A browser session from `POST /api/session`: it stands in for the bearer token it was signed in with on every route (its scopes, its actor, its revocation). A request it authenticates that is not a read needs an `Origin` naming this server, or an `X-Runledger-CSRF` header.",
            ),
        )),
    );
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            if path == SESSION_ROUTE {
                // Any token: the session has whatever scopes it has.
                if let Some(operation) = operation.as_mut() {
                    operation.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::default(),
                    ]);
                }
                continue;
            }
            if let (Some(operation), Some(scope)) = (operation.as_mut(), required_scope(&method, path)) {
                // The empty requirement: anonymous, when the API runs open.
                operation.security = Some(vec![
                    SecurityRequirement::new("bearer", [scope.as_str()]),
                    SecurityRequirement::default(),
                ]);
            }
        }
    }
}

/// The caller of a request, put in its extensions by the guard; it becomes
/// the actor of every event the request appends.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            scopes: Scope::ALL.to_vec(),
        }
    }

    pub fn covers(&self, required: Scope) -> bool {
        self.scopes.iter().any(|s| s.covers(required))
    }
}

/// Rate limit per token (per client address when the API runs open).
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// How long a token list is trusted before it is read again; a token
/// created or revoked by another process takes effect within this.
const REFRESH: Duration = Duration::from_secs(1);
/// An unknown secret makes the list be read again, at most this often.
const MISS_REFRESH: Duration = Duration::from_millis(100);
/// Past this many limiter keys, idle ones are forgotten.
const LIMITER_KEYS: usize = 10_000;

/// The route of browser sessions: any valid token may sign in, whatever its
/// scopes (the session then has exactly those scopes).
pub const SESSION_ROUTE: &str = "/api/session";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "runledger_session";
/// How long a browser session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Past this many live sessions, the oldest is ended to admit a new one.
const MAX_SESSIONS: usize = 10_000;
/// The header a cookie-authenticated unsafe request may send, instead of
/// an `Origin`, to show it was not made by a cross-site form.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-runledger-csrf");

/// A browser session: bound to the token it was signed in with, so it has
/// that token's scopes and actor and ends when the token is revoked. Kept
/// in this node's memory only (by the hash of its id): a restart signs
/// every browser out.
struct Session {
    token_hash: String,
    expires: Instant,
    expires_at: runledger_events::Timestamp,
}

/// How a request proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// No tokens exist and the API runs open.
    Open,
    Bearer,
    /// A session cookie; the hash of the session id.
    Cookie(String),
}

struct Snapshot {
    by_hash: HashMap<String, Caller>,
    loaded_at: Instant,
    generation: u64,
}

type Limiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

pub struct Gate {
    ledger: Arc<Ledger>,
    /// Whether the API may run open when no token exists: only when it
    /// listens on a loopback address.
    open_allowed: bool,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    refreshing: tokio::sync::Mutex<()>,
    limiter: Option<(Limiter, RateLimit)>,
    sessions: std::sync::Mutex<HashMap<String, Session>>,
}

impl Gate {
    pub fn new(ledger: Arc<Ledger>, open_allowed: bool, limit: Option<RateLimit>) -> Self {
        let limiter = limit.map(|l| {
            let quota = Quota::per_second(l.per_second).allow_burst(l.burst);
            (
                RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                l,
            )
        });
        Self {
            ledger,
            open_allowed,
            snapshot: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            limiter,
            sessions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().expect("token snapshot").clone()
    }

    /// The token list, read again when it is older than `max_age` or a token
    /// changed in this process. If the database cannot be read, the last
    /// list stays in use; with none, the request fails.
    async fn tokens(&self, max_age: Duration) -> Result<Arc<Snapshot>, ApiError> {
        let fresh = |s: &Snapshot| s.loaded_at.elapsed() < max_age && s.generation == tokens_generation();
        if let Some(s) = self.current().filter(|s| fresh(s)) {
            return Ok(s);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(s) = self.current().filter(|s| fresh(s)) {
            return Ok(s);
        }
        let generation = tokens_generation();
        match self.ledger.token_rows().await {
            Ok(rows) => {
                let by_hash = rows
                    .iter()
                    .filter(|row| row.revoked_at.is_none())
                    .filter_map(|row| match row.info() {
                        Ok(info) => Some((
                            row.secret_sha256.clone(),
                            Caller {
                                name: info.name,
                                scopes: info.scopes,
                            },
                        )),
                        Err(e) => {
                            tracing::error!(error = %e, "ignoring an unreadable token");
                            None
                        }
                    })
                    .collect();
                let snapshot = Arc::new(Snapshot {
                    by_hash,
                    loaded_at: Instant::now(),
                    generation,
                });
                *self.snapshot.write().expect("token snapshot") = Some(snapshot.clone());
                Ok(snapshot)
            }
            Err(e) => match self.current() {
                Some(stale) => {
                    tracing::warn!(error = %e, "cannot read the tokens; using the last list");
                    Ok(stale)
                }
                None => Err(ApiError::Internal(format!("reading the tokens: {e}"))),
            },
        }
    }

    /// The caller, the hash of the token's secret (none when open) and how
    /// it was shown. A bearer token wins over a session cookie.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<(Caller, Option<String>, Via), ApiError> {
        let snapshot = self.tokens(REFRESH).await?;
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            if let Some(session) = session_cookie(headers) {
                let key = secret_hash(session);
                let token = self.session_token(&key);
                if let Some(caller) = token.as_ref().and_then(|t| snapshot.by_hash.get(t)) {
                    return Ok((caller.clone(), token, Via::Cookie(key)));
                }
                if token.is_some() {
                    // Its token was revoked: the session ends with it.
                    self.end_session(&key);
                }
            }
            if snapshot.by_hash.is_empty() && self.open_allowed {
                return Ok((Caller::anonymous(), None, Via::Open));
            }
            return Err(ApiError::Unauthorized(
                "this route needs a token: send `Authorization: Bearer <secret>`, or sign in (`POST /api/session`)"
                    .into(),
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <secret>`".into()))?;
        let hash = secret_hash(secret);
        if let Some(caller) = snapshot.by_hash.get(&hash) {
            return Ok((caller.clone(), Some(hash), Via::Bearer));
        }
        // Perhaps the token was created a moment ago by another process.
        let snapshot = self.tokens(MISS_REFRESH).await?;
        let caller = snapshot
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("the token is unknown or revoked".into()))?;
        Ok((caller, Some(hash), Via::Bearer))
    }

    /// The token hash of a live session.
    fn session_token(&self, key: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().expect("sessions");
        match sessions.get(key) {
            Some(s) if s.expires > Instant::now() => Some(s.token_hash.clone()),
            Some(_) => {
                sessions.remove(key);
                None
            }
            None => None,
        }
    }

    /// A new session bound to the token with hash `token_hash`: its id (the
    /// cookie's value) and when it expires.
    pub fn start_session(&self, token_hash: String) -> (String, runledger_events::Timestamp) {
        let id = hex::encode({
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the operating system's random source");
            bytes
        });
        let now = Instant::now();
        let expires_at = runledger_events::Timestamp::now()
            .plus_secs(SESSION_TTL.as_secs() as i64)
            .expect("in range");
        let mut sessions = self.sessions.lock().expect("sessions");
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            secret_hash(&id),
            Session {
                token_hash,
                expires: now + SESSION_TTL,
                expires_at,
            },
        );
        (id, expires_at)
    }

    /// When the session with this key expires, if it is live.
    pub fn session_expiry(&self, key: &str) -> Option<runledger_events::Timestamp> {
        let sessions = self.sessions.lock().expect("sessions");
        sessions
            .get(key)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.expires_at)
    }

    pub fn end_session(&self, key: &str) {
        self.sessions.lock().expect("sessions").remove(key);
    }

    /// Whether the credential a request was admitted with is still good: its
    /// token not revoked (or, for an open API, still no token at all).
    async fn still_admits(&self, secret_hash: Option<&str>, session: Option<&str>) -> bool {
        if session.is_some_and(|key| self.session_token(key).is_none()) {
            return false;
        }
        let Ok(snapshot) = self.tokens(REFRESH).await else {
            return true;
        };
        match secret_hash {
            Some(hash) => snapshot.by_hash.contains_key(hash),
            None => snapshot.by_hash.is_empty() && self.open_allowed,
        }
    }

    /// Charges one request to `key`: the rate-limit headers, or the 429.
    pub fn charge(&self, key: String) -> Result<Option<[(HeaderName, HeaderValue); 3]>, Box<Response>> {
        let Some((limiter, limit)) = &self.limiter else {
            return Ok(None);
        };
        if limiter.len() > LIMITER_KEYS {
            limiter.retain_recent();
        }
        let per_cell = Duration::from_secs(1) / limit.per_second.get();
        let burst = limit.burst.get();
        let seconds = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        // The Unix time (seconds, rounded up) at which the bucket is full again.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let headers = |remaining: u32| {
            let reset = seconds(now + per_cell * (burst - remaining));
            [
                (HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(burst)),
                (
                    HeaderName::from_static("x-ratelimit-remaining"),
                    HeaderValue::from(remaining),
                ),
                (HeaderName::from_static("x-ratelimit-reset"), HeaderValue::from(reset)),
            ]
        };
        match limiter.check_key(&key) {
            Ok(state) => Ok(Some(headers(state.remaining_burst_capacity()))),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = seconds(wait).max(1);
                let mut response = ApiError::RateLimited {
                    detail: format!(
                        "more than {} requests a second (bursts of {burst}); retry in {retry_after} s",
                        limit.per_second
                    ),
                    retry_after,
                    limit: burst,
                    window: format!("{}s", seconds(per_cell * burst)),
                }
                .into_response();
                let h = response.headers_mut();
                h.extend(headers(0));
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                Err(Box::new(response))
            }
        }
    }
}

/// How often an open stream checks that its credential still holds; the
/// token list itself is re-read at most every `REFRESH`, as for requests.
const REVOCATION_CHECK: Duration = Duration::from_millis(200);

/// What a request was admitted with, for responses that outlive the request
/// (streams): they end when it no longer admits.
#[derive(Clone)]
pub struct Credential {
    gate: Arc<Gate>,
    secret_hash: Option<String>,
    /// The session it came by, if a cookie: signing out ends it too.
    session: Option<String>,
}

impl Credential {
    /// The hash of the token's secret; none when the API runs open.
    pub fn token_hash(&self) -> Option<&str> {
        self.secret_hash.as_deref()
    }

    /// Completes once the credential no longer admits: the token was revoked
    /// (within a second, as its new requests are refused), or the session it
    /// came by ended.
    pub async fn revoked(&self) {
        let mut tick = tokio::time::interval(REVOCATION_CHECK);
        loop {
            tick.tick().await;
            if !self
                .gate
                .still_admits(self.secret_hash.as_deref(), self.session.as_deref())
                .await
            {
                return;
            }
        }
    }
}

/// Whose budget a request is charged to: its token's, or (open, or not
/// identified) its client address's.
pub fn limit_key(caller: Option<&Caller>, extensions: &axum::http::Extensions) -> String {
    match caller {
        Some(caller) if caller.name != ANONYMOUS => format!("token {}", caller.name),
        _ => {
            let addr = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            format!(
                "address {}",
                addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
            )
        }
    }
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The CSRF defence of a request authenticated by its cookie that is not a
/// read: its `Origin` must be this server's own (the `Host` it was sent to),
/// or, when a client sends no `Origin`, it must carry `X-Runledger-CSRF`,
/// which a cross-site form cannot set and a cross-site script cannot send
/// without a CORS preflight.
fn same_site(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or_default()) {
        Some(origin) => {
            let own = host.is_some_and(|host| {
                origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
            });
            if own {
                Ok(())
            } else {
                Err(ApiError::CrossSite(format!(
                    "a request signed in by cookie came from the origin {origin:?}, not from this server ({})",
                    host.unwrap_or("no Host header")
                )))
            }
        }
        None if headers.contains_key(CSRF_HEADER) => Ok(()),
        None => Err(ApiError::CrossSite(
            "a request signed in by cookie that changes anything needs an Origin header naming this server, or an X-Runledger-CSRF header"
                .into(),
        )),
    }
}

/// The guard of every route that needs a scope (and of the session route,
/// which needs a caller but no scope).
pub async fn guard(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|r| r.as_str().to_owned());
    let required = match route.as_deref() {
        Some(SESSION_ROUTE) => Some(None),
        Some(route) => required_scope(request.method(), route).map(Some),
        None => None,
    };
    let Some(required) = required else {
        return next.run(request).await;
    };
    let identity = gate.identify(request.headers()).await;
    let key = limit_key(
        identity.as_ref().ok().map(|(caller, _, _)| caller),
        request.extensions(),
    );
    let limit_headers = match gate.charge(key) {
        Ok(headers) => headers,
        Err(too_many) => return *too_many,
    };
    let identity = identity.and_then(|(caller, hash, via)| match via {
        Via::Cookie(_) => same_site(request.method(), request.headers()).map(|()| (caller, hash, via)),
        _ => Ok((caller, hash, via)),
    });
    let mut response = match identity {
        Err(e) => e.into_response(),
        Ok((caller, _, _)) if required.is_some_and(|r| !caller.covers(r)) => ApiError::Forbidden {
            required: required.expect("checked"),
            granted: caller.scopes,
        }
        .into_response(),
        Ok((caller, secret_hash, via)) => {
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(Credential {
                gate: gate.clone(),
                secret_hash,
                session: match &via {
                    Via::Cookie(key) => Some(key.clone()),
                    _ => None,
                },
            });
            request.extensions_mut().insert(via);
            request.extensions_mut().insert(gate.clone());
            next.run(request).await
        }
    };
    if let Some(headers) = limit_headers {
        response.headers_mut().extend(headers);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_route_shape() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/healthz"), None);
        assert_eq!(required_scope(&get, "/metrics"), None);
        assert_eq!(required_scope(&get, "/api/runs"), Some(Scope::RunsRead));
        assert_eq!(required_scope(&get, "/api/runs/{id}/history"), Some(Scope::RunsRead));
        assert_eq!(required_scope(&get, "/api/events"), Some(Scope::LedgerRead));
        assert_eq!(required_scope(&get, "/api/runs/{id}/stream"), Some(Scope::LedgerRead));
        assert_eq!(required_scope(&post, "/api/runs"), Some(Scope::RunsWrite));
        assert_eq!(required_scope(&post, "/api/runs/{id}/retry"), Some(Scope::RunsWrite));
        assert_eq!(required_scope(&post, "/api/runs/{id}/restore"), Some(Scope::RunsAdmin));
        assert_eq!(
            required_scope(&Method::DELETE, "/api/runs/{id}"),
            Some(Scope::RunsAdmin)
        );
        assert_eq!(required_scope(&post, "/api/runs/bulk/cancel"), Some(Scope::RunsAdmin));
    }
}

//! Browser sessions: `EventSource` cannot send an `Authorization` header, so
//! a browser signs in once with its token and is then known by a cookie.

use std::sync::Arc;

use axum::extract::Extension;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runledger_events::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, Credential, Gate, Via, SESSION_COOKIE, SESSION_TTL};
use super::error::{ApiError, Problem};
use super::extract::QueryParams;
use crate::auth::Scope;
use crate::ledger::Ledger;

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new().routes(routes!(sign_in, who, sign_out))
}

/// Who a request is, and how it proved it.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// The actor of every event appended in this session: the token's name
    /// (`anonymous` when the API runs open).
    pub actor: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    /// `cookie` (a session), `bearer` (an `Authorization` header) or `open`
    /// (no tokens exist).
    #[schema(pattern = "^(cookie|bearer|open)$")]
    pub via: String,
    /// When the session ends by itself; null unless `via` is `cookie` or
    /// this answers a sign-in.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// Whether the request reached the server over TLS. runledger speaks plain
/// HTTP itself, so this is what the TLS-terminating proxy in front of it
/// says (`X-Forwarded-Proto: https` or `Forwarded: proto=https`), or an
/// `https` origin. Either can only add `Secure`, never remove a defence.
fn over_tls(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
    };
    text(header::HeaderName::from_static("x-forwarded-proto"))
        .iter()
        .any(|v| v.split(',').next().map(str::trim) == Some("https"))
        || text(header::FORWARDED)
            .iter()
            .any(|v| v.split([';', ',']).any(|p| p.trim() == "proto=https"))
        || text(header::ORIGIN).iter().any(|v| v.starts_with("https://"))
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a cookie of hex and fixed words")
}

fn info(caller: &Caller, via: &Via, expires_at: Option<Timestamp>) -> SessionInfo {
    SessionInfo {
        actor: caller.name.clone(),
        scopes: caller.scopes.clone(),
        via: match via {
            Via::Open => "open",
            Via::Bearer => "bearer",
            Via::Cookie(_) => "cookie",
        }
        .to_owned(),
        expires_at,
    }
}

/// Signs a browser in: send `Authorization: Bearer <token>`; the answer
/// sets the session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the
/// request came over TLS), which then authenticates API calls and streams
/// with that token's scopes and actor until it expires, is signed out or the
/// token is revoked. With no tokens (the API runs open) there is nothing to
/// sign in to: 409.
#[utoipa::path(post, path = "/api/session", tag = "operations",
    responses(
        (status = 201, body = SessionInfo, headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 409, description = "The API runs open: no session is needed (`api_runs_open`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn sign_in(
    Extension(gate): Extension<Arc<Gate>>,
    Extension(caller): Extension<Caller>,
    Extension(via): Extension<Via>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    let token_hash = match via {
        Via::Bearer => credential.token_hash().expect("a bearer credential").to_owned(),
        Via::Open => {
            return Err(ApiError::Conflict {
                code: "api_runs_open",
                detail: "no tokens exist and the API runs open: there is nothing to sign in to".into(),
                current_status: None,
                current_version: None,
            })
        }
        Via::Cookie(_) => {
            return Err(ApiError::Unauthorized(
                "sign in with `Authorization: Bearer <secret>`, not with a session".into(),
            ))
        }
    };
    let (id, expires_at) = gate.start_session(token_hash);
    let mut response = (StatusCode::CREATED, Json(info(&caller, &via, Some(expires_at)))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&id, SESSION_TTL.as_secs(), over_tls(&headers)),
    );
    Ok(response)
}

/// Who the request is: the session's actor and scopes (or the bearer
/// token's, or `anonymous` when the API runs open). The console asks this.
#[utoipa::path(get, path = "/api/session", tag = "operations",
    responses((status = 200, body = SessionInfo)))]
async fn who(
    Extension(gate): Extension<Arc<Gate>>,
    Extension(caller): Extension<Caller>,
    Extension(via): Extension<Via>,
    params: QueryParams,
) -> Result<Json<SessionInfo>, ApiError> {
    params.finish()?;
    let expires_at = match &via {
        Via::Cookie(key) => gate.session_expiry(key),
        _ => None,
    };
    Ok(Json(info(&caller, &via, expires_at)))
}

/// Signs out: ends the session (its open streams end too) and clears the
/// cookie. Called with a bearer token, it only clears the cookie.
#[utoipa::path(delete, path = "/api/session", tag = "operations",
    responses((status = 204, description = "Signed out", headers(("Set-Cookie" = String, description = "Clears the session cookie")))))]
async fn sign_out(
    Extension(gate): Extension<Arc<Gate>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    if let Via::Cookie(key) = &via {
        gate.end_session(key);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, over_tls(&headers)));
    Ok(response)
}

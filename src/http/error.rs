//! RFC 9457 problem details. Every error response of the API is one of these;
//! 5xx details are logged, never sent.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::auth::Scope;
use crate::commands::CommandError;
use crate::ledger::LedgerError;

/// One offending input.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the fault is: `query.limit`, `body.filter.created_after`, `path.id`.
    pub location: String,
    pub message: String,
    /// The offending value, when there is one: any JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// An RFC 9457 problem document, which also carries the `message` and
/// `details` that clients of the `{code, message, details}` shape read.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem: `/problems/<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The status's reason phrase.
    pub title: String,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code (snake_case).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: String,
    /// The same text as `detail`.
    pub message: String,
    /// Structured context; always an object (`{}` when there is none).
    /// 403: `required_scope`, `token_scopes`; 404: `resource`, `id`; 409:
    /// `current_status` and/or `current_version`; 429: `retry_after`
    /// (seconds), `limit` (requests), `window` (the time the limit refills
    /// in, e.g. `5s`).
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
    /// Each offending input (422, and some 400s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For conflicts: the run's status when the request was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    /// For version conflicts: the run's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// For 403: the scope the route needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// For 403: the scopes the token has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_scopes: Option<Vec<String>>,
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request could not be read at all (malformed JSON, bad query encoding).
    Malformed {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 422: well-formed but invalid values.
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 422 with its own code: valid on its own, refused in context (an
    /// idempotency key reused for a different request).
    Unprocessable {
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
    },
    NotFound {
        code: &'static str,
        detail: String,
        /// What was not found (`run`, `operation`, `route`) and its id, when known.
        resource: &'static str,
        id: Option<String>,
    },
    Conflict {
        code: &'static str,
        detail: String,
        current_status: Option<String>,
        current_version: Option<i64>,
    },
    UnsupportedMediaType(String),
    /// 401: no token, or one that is unknown or revoked.
    Unauthorized(String),
    /// 403: the token lacks the route's scope.
    Forbidden {
        required: Scope,
        granted: Vec<Scope>,
    },
    /// 403: a request signed in by cookie that failed the CSRF defence.
    CrossSite(String),
    /// 429 (the guard adds `Retry-After` and the rate-limit headers).
    RateLimited {
        detail: String,
        /// Seconds until a request is admitted again.
        retry_after: u64,
        /// Requests admitted in one `window`.
        limit: u32,
        /// How long the limit takes to refill, e.g. `5s`.
        window: String,
    },
    PayloadTooLarge,
    MethodNotAllowed,
    Internal(String),
}

impl ApiError {
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.location, one.message),
            many => format!("{} inputs are invalid", many.len()),
        };
        Self::Invalid { detail, errors }
    }

    pub fn invalid_one(location: impl Into<String>, message: impl Into<String>, value: Option<Value>) -> Self {
        Self::invalid(vec![FieldError {
            location: location.into(),
            message: message.into(),
            value,
        }])
    }

    pub fn run_not_found(id: impl std::fmt::Display) -> Self {
        Self::NotFound {
            code: "run_not_found",
            detail: format!("run {id} does not exist"),
            resource: "run",
            id: Some(id.to_string()),
        }
    }

    fn problem(&self) -> Problem {
        let (status, code, detail, errors) = match self {
            Self::Malformed { detail, errors } => (
                StatusCode::BAD_REQUEST,
                "malformed_request",
                detail.clone(),
                errors.clone(),
            ),
            Self::Invalid { detail, errors } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail.clone(),
                errors.clone(),
            ),
            Self::Unprocessable { code, detail, errors } => {
                (StatusCode::UNPROCESSABLE_ENTITY, *code, detail.clone(), errors.clone())
            }
            Self::NotFound { code, detail, .. } => (StatusCode::NOT_FOUND, *code, detail.clone(), vec![]),
            Self::Conflict { code, detail, .. } => (StatusCode::CONFLICT, *code, detail.clone(), vec![]),
            Self::UnsupportedMediaType(detail) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                detail.clone(),
                vec![],
            ),
            Self::Unauthorized(detail) => (StatusCode::UNAUTHORIZED, "unauthorized", detail.clone(), vec![]),
            Self::Forbidden { required, granted } => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "this route needs the scope {required}; the token has {}",
                    if granted.is_empty() {
                        "none".to_owned()
                    } else {
                        crate::auth::scopes_text(granted)
                    }
                ),
                vec![],
            ),
            Self::CrossSite(detail) => (StatusCode::FORBIDDEN, "cross_site_request", detail.clone(), vec![]),
            Self::RateLimited { detail, .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail.clone(), vec![]),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts".to_owned(),
                vec![],
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method".to_owned(),
                vec![],
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed to handle the request; the error is in its log".to_owned(),
                vec![],
            ),
        };
        let (current_status, current_version) = match self {
            Self::Conflict {
                current_status,
                current_version,
                ..
            } => (current_status.clone(), *current_version),
            _ => (None, None),
        };
        let (required_scope, token_scopes) = match self {
            Self::Forbidden { required, granted } => (
                Some(required.to_string()),
                Some(granted.iter().map(|s| s.to_string()).collect()),
            ),
            _ => (None, None),
        };
        Problem {
            problem_type: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            message: detail.clone(),
            detail,
            instance: None,
            code: code.to_owned(),
            details: self.details(),
            errors,
            current_status,
            current_version,
            required_scope,
            token_scopes,
        }
    }

    /// The structured context of `details`.
    fn details(&self) -> Map<String, Value> {
        let details = match self {
            Self::Forbidden { required, granted } => json!({
                "required_scope": required.as_str(),
                "token_scopes": granted.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            }),
            Self::RateLimited {
                retry_after,
                limit,
                window,
                ..
            } => json!({ "retry_after": retry_after, "limit": limit, "window": window }),
            Self::NotFound { resource, id, .. } => match id {
                Some(id) => json!({ "resource": resource, "id": id }),
                None => json!({ "resource": resource }),
            },
            Self::Conflict {
                current_status,
                current_version,
                ..
            } => {
                let mut map = Map::new();
                if let Some(status) = current_status {
                    map.insert("current_status".into(), status.clone().into());
                }
                if let Some(version) = current_version {
                    map.insert("current_version".into(), (*version).into());
                }
                Value::Object(map)
            }
            _ => Value::Object(Map::new()),
        };
        match details {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// RFC 6750's challenge for 401 and 403.
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Unauthorized(_) => Some(r#"Bearer realm="runledger""#.to_owned()),
            Self::Forbidden { required, .. } => Some(format!(
                r#"Bearer realm="runledger", error="insufficient_scope", scope="{required}""#
            )),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let problem = self.problem();
        let mut response = render(&problem);
        if let Some(challenge) = self.challenge().and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response.extensions_mut().insert(problem);
        response
    }
}

fn render(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).expect("problems serialize");
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Fills in `instance` with the request path, and turns error responses made
/// outside our handlers (unknown route, wrong method, body limit) into
/// problems too.
pub async fn problems(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    finish(response, path).await
}

/// Marks a response that is final as sent: `problems` leaves it alone. The
/// idempotency layer finishes responses itself, so what it stores is what
/// the client got, and marks the responses it replays.
#[derive(Clone, Copy, Debug)]
pub struct Finished;

/// The response as the client gets it (see `problems`), marked finished.
pub async fn finish(response: Response, path: String) -> Response {
    if response.extensions().get::<Finished>().is_some() {
        return response;
    }
    let mut response = render_problems(response, path).await;
    response.extensions_mut().insert(Finished);
    response
}

async fn render_problems(response: Response, path: String) -> Response {
    let status = response.status();
    let problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        // A 503 with no body is the request timeout's.
        None if status == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::CONTENT_TYPE) => {
            let mut p = rejection_problem(status, "the request took longer than the server allows".to_owned());
            p.code = "timeout".to_owned();
            p.problem_type = "/problems/timeout".to_owned();
            p
        }
        None if !status.is_client_error() => return response,
        None => match status {
            StatusCode::NOT_FOUND => ApiError::NotFound {
                code: "route_not_found",
                detail: format!("no route {path}"),
                resource: "route",
                id: Some(path.clone()),
            }
            .problem(),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.problem(),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge.problem(),
            // Any other rejection made by the framework (a path segment that
            // is not UTF-8, say): keep its status and its words.
            _ => {
                let (parts, body) = response.into_parts();
                let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
                let detail = String::from_utf8_lossy(&text).trim().to_owned();
                let response = Response::from_parts(parts, axum::body::Body::empty());
                let problem = rejection_problem(status, detail);
                return with_instance(response, problem, path);
            }
        },
    };
    with_instance(response, problem, path)
}

fn rejection_problem(status: StatusCode, detail: String) -> Problem {
    let code = match status {
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "client_error",
    };
    let detail = if detail.is_empty() {
        "the request was refused".to_owned()
    } else {
        detail
    };
    Problem {
        problem_type: format!("/problems/{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        message: detail.clone(),
        detail,
        instance: None,
        code: code.to_owned(),
        details: Map::new(),
        errors: Vec::new(),
        current_status: None,
        current_version: None,
        required_scope: None,
        token_scopes: None,
    }
}

fn with_instance(response: Response, problem: Problem, path: String) -> Response {
    let (mut parts, _) = response.into_parts();
    let rendered = render(&Problem {
        instance: Some(path),
        ..problem
    });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, rendered.into_body())
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Storage(detail) => Self::Internal(detail),
            LedgerError::Command(e) => e.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        if let CommandError::NotFound(id) = e {
            return Self::run_not_found(id);
        }
        if e.is_not_found() {
            return Self::NotFound {
                code: "run_not_found",
                detail: e.to_string(),
                resource: "run",
                id: None,
            };
        }
        match e {
            CommandError::Refused(refusal) => Self::Conflict {
                code: "illegal_transition",
                detail: refusal.message.clone(),
                current_status: refusal.current_status.map(|s| s.to_string()),
                current_version: None,
            },
            CommandError::VersionConflict { actual, .. } => Self::Conflict {
                code: "version_conflict",
                detail: e.to_string(),
                current_status: None,
                current_version: Some(actual),
            },
            CommandError::MissingReference { field, run_id } => Self::invalid_one(
                format!("body.{field}"),
                format!("run {run_id} does not exist"),
                Some(Value::String(run_id.to_string())),
            ),
            CommandError::NotFound(id) => Self::run_not_found(id),
        }
    }
}

//! `runledger runs …` and `runledger tasks`: a client of a running server
//! over its HTTP API. It only parses flags, calls the API and prints the
//! answer; every rule (filters, transitions, bulk selection) stays with the
//! server, whose problem documents are printed as they come.

pub mod args;
pub mod bulk;
mod commands;
pub mod render;
pub mod tail;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

pub use commands::{runs, tasks};

/// Exit statuses of the client subcommands (clap's usage errors exit 2).
pub mod exit {
    pub const OTHER: i32 = 1;
    pub const NOT_FOUND: i32 = 3;
    pub const REFUSED: i32 = 4;
    pub const UNREACHABLE: i32 = 5;
    pub const SERVER_ERROR: i32 = 6;
}

/// Shown under `--help` of `runs` and `tasks`.
pub const EXIT_CODES_HELP: &str = "Exit status: 0 ok; 1 other error; 2 usage error; 3 not found (404); \
4 refused by the server (other 4xx: 401, 403, 409, 422, 429…); 5 server unreachable (connection refused, \
DNS, timeout); 6 server error (5xx).";

/// One offending input of a problem document.
#[derive(Debug, Clone)]
pub struct FieldFault {
    pub location: String,
    pub message: String,
    pub value: Option<Value>,
}

/// Why a call failed; each kind has its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", problem_text(.detail, .errors))]
    NotFound { detail: String, errors: Vec<FieldFault> },
    #[error("{}", problem_text(.detail, .errors))]
    Refused {
        status: u16,
        detail: String,
        errors: Vec<FieldFault>,
    },
    #[error("{}", problem_text(.detail, &[]))]
    Server { status: u16, detail: String },
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{0}")]
    Other(String),
}

fn problem_text(detail: &str, errors: &[FieldFault]) -> String {
    let mut text = detail.to_owned();
    for e in errors {
        // A single fault is often the detail itself.
        if format!("{}: {}", e.location, e.message) == detail {
            continue;
        }
        text.push_str(&format!("\n  {}: {}", e.location, e.message));
        if let Some(v) = &e.value {
            text.push_str(&format!(" (got {v})"));
        }
    }
    text
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NotFound { .. } => exit::NOT_FOUND,
            Self::Refused { .. } => exit::REFUSED,
            Self::Unreachable { .. } => exit::UNREACHABLE,
            Self::Server { .. } => exit::SERVER_ERROR,
            Self::Other(_) => exit::OTHER,
        }
    }

    /// The error of a non-success response, from its problem document (or
    /// its status alone when the body is not one).
    async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let detail = body["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the server answered {status}"));
        let errors = body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| FieldFault {
                        location: e["location"].as_str().unwrap_or_default().to_owned(),
                        message: e["message"].as_str().unwrap_or_default().to_owned(),
                        value: e.get("value").cloned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self::from_status(status, detail, errors)
    }

    fn from_status(status: StatusCode, detail: String, errors: Vec<FieldFault>) -> Self {
        if status == StatusCode::NOT_FOUND {
            Self::NotFound { detail, errors }
        } else if status.is_client_error() {
            Self::Refused {
                status: status.as_u16(),
                detail,
                errors,
            }
        } else {
            Self::Server {
                status: status.as_u16(),
                detail,
            }
        }
    }
}

/// Where the server is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Longest a request (other than a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(server)
            .map_err(|e| ClientError::Other(format!("--server {server:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::Other(format!(
                "--server {server:?} must be an http:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A stream gets a keep-alive at least every 15 s: silence longer
            // than this is a dead connection.
            .read_timeout(Duration::from_secs(45))
            .user_agent(concat!("runledger-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        use std::error::Error;
        // The root cause ("Connection refused", "operation timed out")
        // says it; the layers above it only repeat the URL.
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        if error.is_timeout() {
            reason = format!("timed out ({reason})");
        }
        ClientError::Unreachable {
            server: self.base.clone(),
            reason,
        }
    }

    /// Sends and returns the response if it succeeded.
    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(ClientError::from_response(response).await)
        }
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, ClientError> {
        let response = self.send(request.timeout(REQUEST_TIMEOUT)).await?;
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Other(format!("the server's answer is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, path).query(query)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(self.request(Method::DELETE, path).json(body)).await
    }

    /// Opens a Server-Sent Events stream (no overall timeout).
    pub async fn stream(&self, path: &str, query: &[(String, String)]) -> Result<reqwest::Response, ClientError> {
        self.send(
            self.request(Method::GET, path)
                .query(query)
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await
    }
}

/// A path segment, escaped (run ids are UUIDs, but the id is the user's).
fn segment(raw: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(raw, SEGMENT).to_string()
}

//! Request parsing that reports every fault with its location.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use runledger_events::{Metadata, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::error::{ApiError, FieldError};

/// Collects the faults of one request so that all of them are reported at once.
#[derive(Default)]
pub struct Faults(Vec<FieldError>);

impl Faults {
    pub fn add(&mut self, location: impl Into<String>, message: impl Into<String>, value: Option<Value>) {
        self.0.push(FieldError {
            location: location.into(),
            message: message.into(),
            value,
        });
    }

    /// Parses with `parse`, recording a fault at `location` if it fails.
    pub fn check<T, E: Into<String>>(
        &mut self,
        location: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(location, message, Some(Value::String(raw.to_owned())));
                None
            }
        }
    }

    /// The run id of the path, checked with the rest of the request.
    pub fn path_id(&mut self, raw: &str) -> Option<Uuid> {
        self.check("path.id", raw, parse_uuid)
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

pub fn parse_time(raw: &str) -> Result<Timestamp, String> {
    Timestamp::parse(raw).map_err(|e| format!("must be an RFC 3339 date-time such as 2026-04-15T12:00:00Z ({e})"))
}

pub fn parse_uuid(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw).map_err(|_| "must be a run id (a UUID)".to_owned())
}

/// A run id from the path; a malformed one is a 422 at `path.id`.
pub fn run_id(raw: &str) -> Result<Uuid, ApiError> {
    parse_uuid(raw).map_err(|m| ApiError::invalid_one("path.id", m, Some(Value::String(raw.to_owned()))))
}

/// A JSON body. Malformed JSON is a 400; a value of the wrong type, a missing
/// or an unknown field is a 422 at `body.<path>`. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req.headers().get(header::CONTENT_TYPE).map(|content_type| {
            let text = content_type.to_str().unwrap_or_default().to_ascii_lowercase();
            text.split(';').next().unwrap_or_default().trim().to_owned()
        });
        if let Some(essence) = &declared {
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body must be application/json, not {essence}"
                )));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Malformed {
                    detail: rejection.body_text(),
                    errors: vec![],
                }
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else if declared.is_none() {
            // A body must say what it is: a browser page can send one with
            // no content type and no CORS preflight, and it must not be
            // read as a command.
            return Err(ApiError::UnsupportedMediaType(
                "a request body needs Content-Type: application/json".to_owned(),
            ));
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}

/// Text that both backends can store: PostgreSQL's `text` and `jsonb`
/// refuse U+0000, so it is refused everywhere (a ledger must be able to move
/// between backends).
pub fn storable(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        Err("must not contain the NUL character (U+0000): the ledger cannot store it".to_owned())
    } else {
        Ok(())
    }
}

/// The query string as pairs, `+` and percent-escapes decoded. A name or a
/// value that is not UTF-8, or that holds text the ledger cannot store, is a
/// 422 at `query.<name>`.
pub fn decode_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut faults = Faults::default();
    let mut pairs = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let decode = |raw: &str| {
            let spaced = raw.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "is not valid UTF-8 once percent-decoded".to_owned())
        };
        let name = match decode(name) {
            Ok(name) => name,
            Err(message) => {
                faults.add(format!("query.{name}"), format!("the name {message}"), None);
                continue;
            }
        };
        let checked = decode(value).and_then(|v| storable(&v).map(|()| v));
        match (storable(&name), checked) {
            (Ok(()), Ok(value)) => pairs.push((name, value)),
            (Err(message), _) | (_, Err(message)) => {
                let location = format!("query.{}", name.replace('\0', "\\0"));
                faults.add(location, message, Some(Value::String(value.to_owned())));
            }
        }
    }
    faults.finish().map(|()| pairs)
}

/// Where the first string (or object key) holding U+0000 is, if one does.
fn nul_at(value: &Value, path: &mut Vec<String>) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            path.push(i.to_string());
            let found = nul_at(v, path);
            if !found {
                path.pop();
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            path.push(k.replace('\0', "\\0"));
            let found = k.contains('\0') || nul_at(v, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// Whether the JSON text has an escape of U+0000 (JSON has no other way to
/// hold one: a raw control character is not valid JSON).
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .enumerate()
        .any(|(i, w)| w == b"\\u0000" && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if has_nul_escape(bytes) {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            let mut path = Vec::new();
            if nul_at(&value, &mut path) {
                let location = std::iter::once("body".to_owned())
                    .chain(path)
                    .collect::<Vec<_>>()
                    .join(".");
                return Err(ApiError::invalid_one(
                    location,
                    storable("\0").expect_err("NUL is refused"),
                    None,
                ));
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        json_fault(&path, err.into_inner())
    })?;
    de.end().map_err(|e| json_fault(".", e))?;
    Ok(value)
}

fn json_fault(path: &str, inner: serde_json::Error) -> ApiError {
    let message = strip_position(&inner.to_string());
    // A lone surrogate is well-formed JSON but no Unicode text: neither
    // backend can store it.
    if message.contains("surrogate") || message.contains("unexpected end of hex escape") {
        let location = if path == "." {
            "body".to_owned()
        } else {
            format!("body.{path}")
        };
        return ApiError::invalid_one(location, format!("{message}: text must be valid Unicode"), None);
    }
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::Malformed {
            detail: format!("the body is not valid JSON: {inner}"),
            errors: vec![FieldError {
                location: "body".into(),
                message,
                value: None,
            }],
        };
    }
    let mut location = if path == "." {
        "body".to_owned()
    } else {
        format!("body.{path}")
    };
    // serde_path_to_error already names an unknown field; a missing one is named only in the message.
    if let Some(field) = quoted_field(&message, "missing field `") {
        location = format!("{location}.{field}");
    }
    ApiError::invalid_one(location, message, None)
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn quoted_field(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// The longest query string accepted (a longer one is a 422 at `query`).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 64;
/// The most distinct values one list parameter (`status=a,b,…`) takes.
pub const MAX_LIST_VALUES: usize = 64;

/// The query string as ordered pairs, taken one name at a time; whatever is
/// left at the end is an unknown parameter.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    pub faults: Faults,
    /// Where the parameters came from: `query` for the query string.
    origin: &'static str,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::invalid_one(
                "query",
                format!(
                    "the query string is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
                    query.len()
                ),
                None,
            ));
        }
        let pairs = decode_query(query)?;
        if pairs.len() > MAX_QUERY_PARAMS {
            return Err(ApiError::invalid_one(
                "query",
                format!("{} parameters; at most {MAX_QUERY_PARAMS} are accepted", pairs.len()),
                None,
            ));
        }
        Ok(Self {
            pairs,
            faults: Faults::default(),
            origin: "query",
        })
    }
}

impl QueryParams {
    /// Parameters given another way (a bulk selector's `filter` object),
    /// parsed by the same rules; faults are located under `origin`.
    pub fn from_pairs(origin: &'static str, pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs,
            faults: Faults::default(),
            origin,
        }
    }

    /// Where a fault of parameter `name` is reported.
    pub fn location(&self, name: &str) -> String {
        format!("{}.{name}", self.origin)
    }

    /// Every value given for `name`. An empty value means the parameter was
    /// not given (HTML forms send their empty fields).
    pub fn many(&mut self, name: &str) -> Vec<String> {
        let (taken, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k == name);
        self.pairs = rest;
        taken.into_iter().map(|(_, v)| v).filter(|v| !v.is_empty()).collect()
    }

    /// The one value of `name`; repeating it is a fault.
    pub fn one(&mut self, name: &str) -> Option<String> {
        let mut values = self.many(name);
        if values.len() > 1 {
            self.faults.add(
                self.location(name),
                "must be given at most once",
                Some(Value::from(values.clone())),
            );
        }
        values.pop()
    }

    pub fn parsed<T, E: Into<String>>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Option<T> {
        let raw = self.one(name)?;
        let location = self.location(name);
        self.faults.check(&location, &raw, parse)
    }

    pub fn int_in(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        self.parsed(name, |raw| match raw.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(_) => Err(format!("must be between {min} and {max}")),
            Err(_) => Err("must be an integer".to_owned()),
        })
    }

    pub fn flag(&mut self, name: &str) -> Option<bool> {
        self.parsed(name, |raw| match raw {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("must be true or false"),
        })
    }

    pub fn time(&mut self, name: &str) -> Option<Timestamp> {
        self.parsed(name, parse_time)
    }

    /// A comma-separated list, each item parsed with `parse`; repeated items
    /// count once, and at most `MAX_LIST_VALUES` distinct ones are taken.
    pub fn list<T>(&mut self, name: &str, parse: impl Fn(&str) -> Option<T>, allowed: impl Fn() -> String) -> Vec<T> {
        let Some(raw) = self.one(name) else { return Vec::new() };
        let mut seen = std::collections::HashSet::new();
        let items: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|item| seen.insert(*item))
            .collect();
        if items.len() > MAX_LIST_VALUES {
            self.faults.add(
                self.location(name),
                format!(
                    "{} distinct values; at most {MAX_LIST_VALUES} are accepted",
                    items.len()
                ),
                None,
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for item in items {
            match parse(item) {
                Some(v) => out.push(v),
                None => self.faults.add(
                    self.location(name),
                    format!("{item:?} is not one of: {}", allowed()),
                    Some(Value::String(raw.clone())),
                ),
            }
        }
        out
    }

    /// Whether a fault was already recorded for parameter `name`.
    pub fn faults_at(&self, name: &str) -> bool {
        let location = self.location(name);
        self.faults.0.iter().any(|f| f.location == location)
    }

    /// Reports unknown parameters and every fault seen.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for (name, value) in std::mem::take(&mut self.pairs) {
            let location = self.location(&name);
            self.faults
                .add(location, "is not a known parameter", Some(Value::String(value)));
        }
        self.faults.finish()
    }
}

/// Who is asking and in which request: becomes every appended event's metadata.
pub struct RequestMeta(pub Metadata);

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 200)
                .map(str::to_owned)
        };
        let actor = parts
            .extensions
            .get::<super::auth::Caller>()
            .map_or_else(|| crate::auth::ANONYMOUS.to_owned(), |c| c.name.clone());
        Ok(Self(Metadata {
            actor,
            request_id: Some(header("x-request-id").unwrap_or_else(|| Uuid::now_v7().to_string())),
            operation_id: None,
            correlation_id: header("x-correlation-id"),
            causation_id: header("x-causation-id"),
            trace_id: parts.extensions.get::<super::RequestTrace>().map(|t| t.0.to_string()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: i64,
    }

    fn location(err: ApiError) -> (u16, String) {
        match err {
            ApiError::Malformed { errors, .. } => (400, errors[0].location.clone()),
            ApiError::Invalid { errors, .. } => (422, errors[0].location.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_the_ledger_cannot_store_is_refused_where_it_is() {
        let parse = |s: &str| parse_json::<Value>(s.as_bytes()).unwrap_err();
        assert_eq!(location(parse(r#"{"a": [1, "x\u0000"]}"#)), (422, "body.a.1".into()));
        assert_eq!(location(parse(r#"{"k\u0000": 1}"#)), (422, "body.k\\0".into()));
        assert_eq!(location(parse(r#"{"a": "\ud800"}"#)), (422, "body.a".into()));
        // An escaped backslash before "u0000" is text, not NUL.
        assert!(parse_json::<Value>(br#"{"a": "\\u0000"}"#).is_ok());
        let faults = |q: &str| match decode_query(q).unwrap_err() {
            ApiError::Invalid { errors, .. } => errors.into_iter().map(|e| e.location).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(faults("search=%FF%FE&limit=1"), ["query.search"]);
        assert_eq!(faults("tag=k:%00"), ["query.tag"]);
        assert_eq!(
            decode_query("a=x+y&b=%C3%A9&c").unwrap(),
            [
                ("a".into(), "x y".into()),
                ("b".into(), "é".into()),
                ("c".into(), String::new())
            ]
        );
    }

    #[test]
    fn json_faults_carry_their_location() {
        let parse = |s: &str| parse_json::<Body>(s.as_bytes()).unwrap_err();
        assert_eq!(location(parse("{")), (400, "body".into()));
        assert_eq!(location(parse(r#"{"name": "a"} x"#)), (400, "body".into()));
        assert_eq!(location(parse("{}")), (422, "body.name".into()));
        assert_eq!(location(parse(r#"{"name": 1}"#)), (422, "body.name".into()));
        assert_eq!(
            location(parse(r#"{"name": "a", "inner": {"n": "x"}}"#)),
            (422, "body.inner.n".into())
        );
        assert_eq!(location(parse(r#"{"name": "a", "nme": 1}"#)), (422, "body.nme".into()));
    }
}

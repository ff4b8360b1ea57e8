//! The OpenAPI document as a contract: every response a test receives is
//! checked against what `/openapi.json` documents for its operation (method
//! and path template) and status. Undocumented statuses, content types and
//! bodies fail the test that received them, so the document cannot drift.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

/// The served document, fetched once per test process (every server of the
/// process serves the same one), with its validators compiled on first use.
struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static CONTRACT: OnceCell<Contract> = OnceCell::const_new();

async fn contract(origin: &str) -> &'static Contract {
    CONTRACT
        .get_or_init(|| async {
            let url = format!("{origin}/openapi.json");
            let doc: Value = reqwest::get(&url)
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("contract: GET {url}: {e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("contract: {url} is not JSON: {e}"));
            Contract {
                doc,
                validators: Mutex::new(HashMap::new()),
            }
        })
        .await
}

/// Sends `request` and checks its response against the served document;
/// panics, naming the operation, status, fault and body, on any drift.
/// A JSON body is read whole and handed back in the returned response; an
/// event stream is returned unread (its status and content type are checked).
pub async fn send_checked(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let (client, request) = request.build_split();
    let request = request?;
    let method = request.method().clone();
    let url = request.url().clone();
    let response = client.execute(request).await?;
    let origin = url.origin().ascii_serialization();
    let contract = contract(&origin).await;
    let status = response.status();
    let content_type = media_type(response.headers());
    let streaming = content_type.as_deref() == Some("text/event-stream");
    if streaming || method == Method::HEAD {
        contract.check(&method, url.path(), status, content_type.as_deref(), None);
        return Ok(response);
    }
    let mut builder = axum::http::Response::builder()
        .status(status)
        .version(response.version());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let bytes = response.bytes().await?;
    contract.check(&method, url.path(), status, content_type.as_deref(), Some(&bytes));
    Ok(builder.body(bytes).expect("a response rebuilt from its parts").into())
}

/// What the hook says of a response, without sending anything: `Err` with
/// the fault when `/openapi.json` (fetched from `origin`) does not allow it.
pub async fn contract_fault(
    origin: &str,
    method: Method,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let status = StatusCode::from_u16(status).expect("a status");
    contract(origin)
        .await
        .verify(&method, path, status, content_type, Some(body))
}

/// `request.send_checked()`: [`send_checked`] in method position.
pub trait SendChecked {
    fn send_checked(self) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl SendChecked for reqwest::RequestBuilder {
    fn send_checked(self) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send {
        send_checked(self)
    }
}

fn media_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let raw = headers.get(reqwest::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

impl Contract {
    #[track_caller]
    fn check(&self, method: &Method, path: &str, status: StatusCode, content_type: Option<&str>, body: Option<&[u8]>) {
        if let Err(fault) = self.verify(method, path, status, content_type, body) {
            let body = body.map(String::from_utf8_lossy).unwrap_or_default();
            let shown: String = body.chars().take(2000).collect();
            panic!(
                "contract: {method} {path} answered {status} ({}), which /openapi.json does not allow: {fault}\nbody: {shown}",
                content_type.unwrap_or("no content type")
            );
        }
    }

    fn verify(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(), String> {
        let Some((template, item)) = self.path_item(path) else {
            // Outside the API (the Swagger page, the document itself) there is nothing to check.
            if !path.starts_with("/api/") {
                return Ok(());
            }
            return self.refusal(
                StatusCode::NOT_FOUND,
                "no documented path matches",
                status,
                content_type,
                body,
            );
        };
        let operation_name = format!("{method} {template}");
        let Some(operation) = item.get(method.as_str().to_ascii_lowercase()) else {
            // A CORS preflight is answered by the CORS layer, not an operation.
            if method == Method::OPTIONS {
                return Ok(());
            }
            return self.refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{operation_name} is not documented"),
                status,
                content_type,
                body,
            );
        };
        let responses = &operation["responses"];
        let class = format!("{}XX", status.as_u16() / 100);
        let (key, response) = [status.as_str(), class.as_str(), "default"]
            .into_iter()
            .find_map(|k| responses.get(k).map(|r| (k, r)))
            .ok_or_else(|| {
                let documented: Vec<&String> = responses.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                format!(
                    "{operation_name}: status {} is not documented (documented: {documented:?})",
                    status.as_u16()
                )
            })?;
        let response = self.resolve(response);
        let content = response.get("content").and_then(Value::as_object);
        let empty = body.is_some_and(<[u8]>::is_empty);
        let (media, schema) = match (content, content_type) {
            (None, _) if empty || body.is_none() => return Ok(()),
            (None, _) => return Err(format!("{operation_name} {key}: documents no body, but one was sent")),
            (Some(content), Some(ct)) => match content.get(ct) {
                Some(media) => (ct, media.get("schema")),
                None => {
                    return Err(format!(
                        "{operation_name} {key}: content type {ct} is not documented (documented: {:?})",
                        content.keys().collect::<Vec<_>>()
                    ))
                }
            },
            (Some(_), None) => return Err(format!("{operation_name} {key}: the response has no content type")),
        };
        let (Some(body), Some(schema)) = (body, schema) else {
            return Ok(());
        };
        if !(media == "application/json" || media.ends_with("+json")) {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{operation_name} {key}: the {media} body is not JSON: {e}"))?;
        let validator = self.validator(&format!("{operation_name} {key} {media}"), schema)?;
        let faults: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
            .collect();
        if faults.is_empty() {
            Ok(())
        } else {
            Err(format!("{operation_name} {key}: {}", faults.join("; ")))
        }
    }

    /// A request no operation serves must be refused as a documented problem.
    fn refusal(
        &self,
        expected: StatusCode,
        why: &str,
        status: StatusCode,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(), String> {
        if status != expected || content_type != Some("application/problem+json") {
            return Err(format!("{why}; only a {expected} problem is expected"));
        }
        let problem = json!({ "$ref": "#/components/schemas/Problem" });
        let value: Value = serde_json::from_slice(body.unwrap_or_default()).map_err(|e| format!("{why}: {e}"))?;
        let validator = self.validator("Problem", &problem)?;
        let faults: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        if faults.is_empty() {
            Ok(())
        } else {
            Err(format!("{why}: not a Problem: {}", faults.join("; ")))
        }
    }

    /// The path item whose template matches `path`; literal segments win over
    /// parameters (`/api/runs/dlq` over `/api/runs/{id}`).
    fn path_item(&self, path: &str) -> Option<(&str, &Value)> {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .iter()
            .filter_map(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.as_str(), item))
            })
            .max_by_key(|(literal, ..)| *literal)
            .map(|(_, template, item)| (template, item))
    }

    /// Follows a `$ref` to a response component.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix('#')
                .and_then(|pointer| self.doc.pointer(pointer))
                .unwrap_or(value),
            None => value,
        }
    }

    /// A JSON Schema 2020-12 validator of `schema`, whose `#/components/...`
    /// references resolve against the whole document.
    fn validator(&self, key: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.validators.lock().expect("validators").get(key) {
            return Ok(v.clone());
        }
        let mut root = match schema {
            Value::Object(o) => o.clone(),
            Value::Bool(true) => serde_json::Map::new(),
            other => return Err(format!("{key}: the schema {other} is not an object")),
        };
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| format!("{key}: the documented schema does not compile: {e}"))?;
        let validator = Arc::new(validator);
        self.validators
            .lock()
            .expect("validators")
            .insert(key.to_owned(), validator.clone());
        Ok(validator)
    }
}

//! The real server on port 0 against a fresh SQLite file per test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use runledger::http::{self, HttpConfig};
use runledger::ledger::{DatabaseUrl, Ledger};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub db_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// A response: status, content type and body (JSON, or a string for other bodies).
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts a problem+json response with this status and code; returns the body.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
        assert!(
            self.body["instance"].as_str().is_some_and(|i| i.starts_with('/')),
            "body: {}",
            self.body
        );
        &self.body
    }

    /// Asserts a 422 whose errors include one at `location`.
    #[track_caller]
    pub fn invalid_at(&self, location: &str) -> &Value {
        let body = self.problem(422, "validation_failed");
        let locations: Vec<&str> = body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["location"].as_str())
            .collect();
        assert!(
            locations.contains(&location),
            "expected a fault at {location}, got {locations:?}"
        );
        body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("runledger.db");
        let ledger = Arc::new(
            Ledger::open(&DatabaseUrl::Sqlite(db_path.clone()))
                .await
                .expect("open ledger"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(http::serve(ledger, HttpConfig::default(), listener, async {
            let _ = rx.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            db_path,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::reply(req.send().await.expect("request")).await
    }

    /// Sends a raw body with the given content type.
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> Reply {
        let req = self
            .client
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned());
        Self::reply(req.send().await.expect("request")).await
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            content_type,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Value) -> Reply {
        self.send(Method::DELETE, path, Some(body)).await
    }

    /// Creates a run and returns it.
    pub async fn create(&self, body: Value) -> Value {
        self.post("/api/runs", body).await.ok(201).clone()
    }

    /// Creates a run of `task` and drives it through `steps`, e.g.
    /// `["start", "end:failed:2"]`; returns the run's final state.
    pub async fn run_through(&self, task: &str, extra: Value, steps: &[&str]) -> Value {
        let mut body = json!({ "task_name": task });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let mut run = self.create(body).await;
        let id = run["id"].as_str().unwrap().to_owned();
        for step in steps {
            let mut parts = step.split(':');
            let action = parts.next().unwrap();
            let body = match action {
                "end" => {
                    let reason = parts.next().unwrap_or("success");
                    let code: Option<i64> = parts.next().map(|c| c.parse().unwrap());
                    json!({ "end_reason": reason, "exit_code": code })
                }
                _ => json!({}),
            };
            let path = if action == "delete" {
                format!("/api/runs/{id}")
            } else {
                format!("/api/runs/{id}/{action}")
            };
            let method = if action == "delete" {
                Method::DELETE
            } else {
                Method::POST
            };
            run = self.send(method, &path, Some(body)).await.ok(200).clone();
        }
        run
    }

    /// The number of events in the log, read straight from the database.
    pub fn event_count(&self) -> i64 {
        let conn = rusqlite::Connection::open(&self.db_path).expect("open db");
        conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .expect("count")
    }
}

/// The ids of a list response, in order.
pub fn ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

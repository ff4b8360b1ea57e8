//! The real server on port 0, against a fresh SQLite file or a fresh
//! PostgreSQL schema per test. `backend_tests!` runs each scenario on both.
#![allow(dead_code)]

mod contract;

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use runledger::http::{self, HttpConfig};
use runledger::ledger::{DatabaseUrl, Ledger};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use contract::{contract_fault, send_checked, SendChecked};

/// Where a test server keeps its ledger.
pub enum Backend {
    Sqlite { path: PathBuf, _dir: TempDir },
    Postgres { url: String, schema: String },
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    /// The server's ledger, for tests that append faster than HTTP allows.
    pub ledger: Arc<Ledger>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Runs each listed scenario (`async fn name(s: TestServer)`) once on SQLite
/// and once on PostgreSQL (skipped, visibly, when
/// `RUNLEDGER_TEST_POSTGRES_URL` is not set).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestServer::sqlite().await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = $crate::common::TestServer::postgres(stringify!($name)).await {
                        super::$name(server).await
                    }
                }
            )+
        }
    };
}

pub const POSTGRES_URL_VAR: &str = "RUNLEDGER_TEST_POSTGRES_URL";

/// The PostgreSQL URL for tests, or a visible SKIPPED line on stderr.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{POSTGRES_URL_VAR} is not set in CI: the PostgreSQL half of {test} must run, not be skipped")
        }
        _ => {
            use std::io::Write;
            // Written to the process's stderr directly: the test harness does
            // not capture it, so the skip is seen even when the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED postgres::{test}: {POSTGRES_URL_VAR} is not set"
            );
            None
        }
    }
}

/// Creates a fresh schema; returns connect options that use it.
pub async fn postgres_schema(url: &str) -> (String, sqlx::postgres::PgConnectOptions) {
    use sqlx::ConnectOptions;
    let schema = format!("rl_test_{}", uuid::Uuid::new_v4().simple());
    let base: sqlx::postgres::PgConnectOptions = url.parse().expect("RUNLEDGER_TEST_POSTGRES_URL");
    let mut conn = base.connect().await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let options = base.options([("search_path", schema.as_str())]);
    (schema, options)
}

/// A connection to the test's PostgreSQL schema.
pub async fn pg_connect(url: &str, schema: &str) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("RUNLEDGER_TEST_POSTGRES_URL");
    options
        .options([("search_path", schema)])
        .connect()
        .await
        .expect("connect to PostgreSQL")
}

/// The URL that makes a `runledger` process use `schema`.
pub fn url_with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
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
        // The `{code, message, details}` dialect of the same problem.
        assert_eq!(self.body["message"], self.body["detail"], "body: {}", self.body);
        assert!(self.body["details"].is_object(), "body: {}", self.body);
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
    pub async fn sqlite() -> Self {
        Self::sqlite_with(HttpConfig::default()).await
    }

    pub async fn sqlite_with(config: HttpConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("runledger.db");
        let ledger = Ledger::open(&DatabaseUrl::Sqlite(path.clone()))
            .await
            .expect("open ledger");
        Self::serve(ledger, Backend::Sqlite { path, _dir: dir }, config).await
    }

    /// `None` (after saying so) when no PostgreSQL is configured.
    pub async fn postgres(test: &str) -> Option<Self> {
        Self::postgres_with(test, HttpConfig::default()).await
    }

    pub async fn postgres_with(test: &str, config: HttpConfig) -> Option<Self> {
        let url = postgres_url(test)?;
        let (schema, options) = postgres_schema(&url).await;
        let ledger = Ledger::open_postgres(options).await.expect("open PostgreSQL ledger");
        Some(Self::serve(ledger, Backend::Postgres { url, schema }, config).await)
    }

    async fn serve(ledger: Ledger, backend: Backend, config: HttpConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let ledger = Arc::new(ledger);
        let handle = tokio::spawn(http::serve(ledger.clone(), config, listener, async {
            let _ = rx.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            backend,
            ledger,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Asks the server to stop and waits until it has (every stream ended).
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server");
        }
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
        if let Backend::Postgres { url, schema } = &self.backend {
            let _ = self.postgres_exec(url, &format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }

    async fn postgres_exec(&self, url: &str, sql: &str) -> Result<u64, String> {
        use sqlx::ConnectOptions;
        let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e: sqlx::Error| e.to_string())?;
        let mut conn = options.connect().await.map_err(|e| e.to_string())?;
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    /// Runs SQL straight against the test's database (in its schema).
    pub async fn exec_sql(&self, sql: &str) -> Result<u64, String> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.execute(sql, []).map(|n| n as u64).map_err(|e| e.to_string())
            }
            Backend::Postgres { url, schema } => {
                self.postgres_exec(url, &format!("SET search_path TO {schema}; {sql}"))
                    .await
            }
        }
    }

    /// A single integer from SQL run against the test's database.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open db");
                conn.query_row(sql, [], |r| r.get(0)).expect("query")
            }
            Backend::Postgres { url, schema } => {
                let mut conn = pg_connect(url, schema).await;
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("query")
            }
        }
    }

    /// A connection to the test's PostgreSQL schema (panics on SQLite).
    pub async fn pg_connection(&self) -> sqlx::PgConnection {
        match &self.backend {
            Backend::Postgres { url, schema } => pg_connect(url, schema).await,
            Backend::Sqlite { .. } => panic!("not a PostgreSQL test"),
        }
    }

    /// The `--database-url` that points a `runledger` process at this test's database.
    pub fn database_url(&self) -> String {
        match &self.backend {
            Backend::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Backend::Postgres { url, schema } => url_with_schema(url, schema),
        }
    }

    /// One text column of every row of `sql`, run against the test's database.
    pub async fn query_strings(&self, sql: &str) -> Vec<String> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open db");
                let mut stmt = conn.prepare(sql).expect("prepare");
                let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("query");
                rows.map(|r| r.expect("row")).collect()
            }
            Backend::Postgres { url, schema } => {
                let mut conn = pg_connect(url, schema).await;
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.expect("query")
            }
        }
    }

    /// Runs the `runledger` binary against this test's database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"));
        cmd.args(args)
            .arg("--database-url")
            .arg(self.database_url())
            .env("RUST_LOG", "warn");
        cmd.output().expect("run runledger")
    }

    /// The number of events in the log, read straight from the database.
    pub async fn event_count(&self) -> i64 {
        self.query_i64("SELECT COUNT(*) FROM events").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send_as(None, method, path, body).await
    }

    /// Sends with `Authorization: Bearer <token>` when a token is given.
    pub async fn send_as(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::reply(send_checked(req).await.expect("request")).await
    }

    /// Sends a raw body with the given content type.
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> Reply {
        let req = self
            .client
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned());
        Self::reply(send_checked(req).await.expect("request")).await
    }

    /// A response read into a `Reply`.
    pub async fn reply(resp: reqwest::Response) -> Reply {
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

/// Starts the real `runledger` binary on port 0 against `database_url`;
/// returns it and its base URL once it has printed that it listens.
pub fn spawn_binary(database_url: &str) -> (std::process::Child, String) {
    spawn_binary_on(database_url, "127.0.0.1:0")
}

/// `spawn_binary` listening on `listen`; the base URL it returns is always
/// on 127.0.0.1.
pub fn spawn_binary_on(database_url: &str, listen: &str) -> (std::process::Child, String) {
    spawn_binary_with(database_url, listen, &[])
}

/// `spawn_binary_on` with more `serve` arguments.
pub fn spawn_binary_with(database_url: &str, listen: &str, args: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"));
    command
        .args(["serve", "--listen", listen, "--database-url", database_url])
        .args(args)
        .env("RUST_LOG", "warn");
    // A PostgreSQL server's default anchors file is in its working folder:
    // keep it out of the checkout.
    if database_url.starts_with("postgres") {
        command.current_dir(std::env::temp_dir());
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start runledger");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("ready line");
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    let port = addr.rsplit(':').next().filter(|p| p.parse::<u16>().is_ok());
    let port = port.unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    (child, format!("http://127.0.0.1:{port}"))
}

/// A `runledger` process that is killed when dropped, even if the test panics.
pub struct Node {
    pub child: std::process::Child,
    pub base: String,
}

impl Node {
    pub fn start(database_url: &str) -> Self {
        let (child, base) = spawn_binary(database_url);
        Self { child, base }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

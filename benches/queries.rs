//! Read latency at production size: every list filter and sort (both
//! directions, with `total`), deep offset, the keyset cursor, search, tags,
//! `as_of`, `operation_id`, `payload` containment, the dead-letter queue, tasks, a task's runs and the events of a
//! run with 10,000 events, through the real HTTP server, on ledgers of 100k
//! and 1M runs (`common::fixture`, built once and kept), on SQLite and (with
//! `RUNLEDGER_BENCH_POSTGRES_URL`) PostgreSQL. Prints p50 and p99 of each and
//! how p50 grows from the smaller ledger to the larger; the goal is p50 ≤ 5 ms,
//! p99 ≤ 25 ms and growth ≤ 1.5×.
//!
//! `cargo bench --bench queries`; `RUNLEDGER_BENCH_SIZES` (default
//! `100000,1000000`), `RUNLEDGER_BENCH_ITERS` (default 40 requests per query,
//! fewer once a query has taken 10 s), `RUNLEDGER_BENCH_ONLY` (run only the
//! queries whose name contains it), `RUNLEDGER_BENCH_BACKENDS` (default
//! `sqlite,postgres`).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use runledger::http::{self, HttpConfig};
use runledger::ledger::Ledger;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

const GOAL_P50_MS: f64 = 5.0;
const GOAL_P99_MS: f64 = 25.0;
const GOAL_GROWTH: f64 = 1.5;
const DEEP_OFFSET: usize = 50_000;

struct Server {
    base: String,
    client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(ledger: Arc<Ledger>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(http::serve(ledger, HttpConfig::default(), listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            stop,
            handle,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.try_get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn try_get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

/// The queries, by name, found from the ledger's own data.
async fn queries(server: &Server, fixture: &Fixture) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, path: String| q.push((name.to_owned(), path));
    add("list limit=50", "/api/runs?limit=50".into());
    for field in [
        "created_at",
        "start_at",
        "task_name",
        "status",
        "exit_code",
        "duration",
        "deadline_at",
    ] {
        for dir in ["asc", "desc"] {
            add(
                &format!("sort {field} {dir}"),
                format!("/api/runs?sort_field={field}&sort_direction={dir}&limit=50"),
            );
        }
    }
    for status in [
        "pending",
        "running",
        "ended",
        "success",
        "failed",
        "timeout",
        "deleted",
        "dead_letter",
    ] {
        add(
            &format!("status={status}"),
            format!("/api/runs?status={status}&limit=50"),
        );
    }
    add(
        "status=failed,timeout",
        "/api/runs?status=failed,timeout&limit=50".into(),
    );
    add("project=billing", "/api/runs?project=billing&limit=50".into());
    add("task_name=task-3", "/api/runs?task_name=task-3&limit=50".into());
    add(
        "task_name=task-90 (rare)",
        "/api/runs?task_name=task-90&limit=50".into(),
    );
    add("triggered_by=cron", "/api/runs?triggered_by=cron&limit=50".into());
    add("triggered_by=manual", "/api/runs?triggered_by=manual&limit=50".into());
    let first = server.get("/api/runs?limit=1&sort_direction=asc").await;
    let last = server.get("/api/runs?limit=1").await;
    let time = |page: &Value| page["runs"][0]["created_at"].as_str().unwrap().to_owned();
    let (t0, t1) = (time(&first), time(&last));
    let mid = {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
        let (a, b) = (parse(&t0), parse(&t1));
        (a + (b - a) / 2)
            .to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let mid = mid.replace('+', "%2B");
    add("created_after=mid", format!("/api/runs?created_after={mid}&limit=50"));
    add("created_before=mid", format!("/api/runs?created_before={mid}&limit=50"));
    let soon = runledger_events::Timestamp::now()
        .plus_secs(3600)
        .expect("an hour from now");
    let soon =
        percent_encoding::utf8_percent_encode(&soon.to_rfc3339(), percent_encoding::NON_ALPHANUMERIC).to_string();
    add(
        "deadline_before=+1h sort deadline_at",
        format!("/api/runs?deadline_before={soon}&sort_field=deadline_at&sort_direction=asc&limit=50"),
    );
    add("exit_code_min=1", "/api/runs?exit_code_min=1&limit=50".into());
    add("exit_code_max=0", "/api/runs?exit_code_max=0&limit=50".into());
    add("retries_only", "/api/runs?retries_only=true&limit=50".into());
    add("include_deleted", "/api/runs?include_deleted=true&limit=50".into());
    add(
        "cron, exit>=1, sort exit_code",
        "/api/runs?triggered_by=cron&exit_code_min=1&sort_field=exit_code&limit=50".into(),
    );
    add(
        "status=failed sort duration",
        "/api/runs?status=failed&sort_field=duration&limit=50".into(),
    );
    add(
        "task-3 failed sort duration",
        "/api/runs?task_name=task-3&status=failed&sort_field=duration&limit=50".into(),
    );
    add("tag=env:prod", "/api/runs?tag=env:prod&limit=50".into());
    add(
        "tag=env:dev sort task_name",
        "/api/runs?tag=env:dev&sort_field=task_name&limit=50".into(),
    );
    add(
        "tag=team:team-3,env:prod",
        "/api/runs?tag=team:team-3&tag=env:prod&limit=50".into(),
    );
    add("search=task-4", "/api/runs?search=task-4&limit=20".into());
    let sample = server.get("/api/runs?limit=200").await;
    let runs = sample["runs"].as_array().unwrap();
    let id = runs[17]["id"].as_str().unwrap().to_owned();
    add(
        "search=id fragment",
        format!("/api/runs?search={}&limit=20", &id[24..32]),
    );
    add("search=nothing", "/api/runs?search=zzzz-no-such&limit=20".into());
    let parent = runs
        .iter()
        .find_map(|r| r["parent_run_id"].as_str())
        .expect("a child run among the latest 200")
        .to_owned();
    add("parent_run_id", format!("/api/runs?parent_run_id={parent}&limit=50"));
    let newest = server.get("/api/runs?limit=1").await;
    let operation = newest["runs"][0]["operation_id"]
        .as_str()
        .expect("the fixture's last runs are a bulk retry's")
        .to_owned();
    add("operation_id", format!("/api/runs?operation_id={operation}&limit=50"));
    add(
        "operation_id sort start_at",
        format!("/api/runs?operation_id={operation}&sort_field=start_at&limit=50"),
    );
    let payload = |needle: serde_json::Value| {
        let text = needle.to_string();
        let encoded = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC);
        format!("/api/runs?payload={encoded}&limit=50")
    };
    add(
        "payload customer (1 in 1000)",
        payload(serde_json::json!({"customer": "customer-7"})),
    );
    add(
        "payload region and tier (1 in 20)",
        payload(serde_json::json!({"region": "eu", "plan": {"tier": "gold"}})),
    );
    add(
        "payload features list",
        payload(serde_json::json!({"features": ["export"]})),
    );
    add("payload nothing", payload(serde_json::json!({"customer": "nobody"})));
    add("offset=50000", format!("/api/runs?offset={DEEP_OFFSET}&limit=50"));
    add(
        "offset=50000 status=ended",
        format!("/api/runs?offset={DEEP_OFFSET}&status=ended&limit=50"),
    );
    if let Some(cursor) = cursor_at(server, DEEP_OFFSET).await {
        add("cursor after 50000", format!("/api/runs?cursor={cursor}&limit=50"));
    }
    let head = *fixture.ledger.head().borrow();
    let half = head / 2;
    add("as_of=head/2", format!("/api/runs?as_of={half}&limit=50"));
    add(
        "as_of=head/2 status=failed",
        format!("/api/runs?as_of={half}&status=failed&limit=50"),
    );
    add(
        "as_of=head/2 task sort start_at",
        format!("/api/runs?as_of={half}&task_name=task-3&sort_field=start_at&limit=50"),
    );
    add("dlq", "/api/runs/dlq?limit=50".into());
    add("tasks", "/api/tasks".into());
    add("task-3 runs", "/api/tasks/task-3/runs?limit=50".into());
    add(
        "task-3 runs sort status",
        "/api/tasks/task-3/runs?sort_field=status&limit=50".into(),
    );
    add("get run", format!("/api/runs/{id}"));
    add(
        "get run as_of=head/2",
        format!("/api/runs/{}?as_of={half}", fixture.big_run),
    );
    let big = fixture.big_run;
    add("big run events (1000)", format!("/api/runs/{big}/events?limit=1000"));
    add(
        "big run events after 9000",
        format!("/api/runs/{big}/events?after_version=9000&limit=100"),
    );
    q
}

/// The `next_cursor` of the page that ends at row `offset`, if lists have one.
async fn cursor_at(server: &Server, offset: usize) -> Option<String> {
    let page = server.get(&format!("/api/runs?offset={}&limit=1", offset - 1)).await;
    page.get("next_cursor").and_then(Value::as_str).map(str::to_owned)
}

struct Figures {
    p50: f64,
    p99: f64,
    samples: usize,
    /// The status of an answer that was not 200 (e.g. 503 past the request timeout).
    failed: Option<u16>,
}

async fn measure(server: &Server, path: &str, iters: usize) -> Figures {
    let mut failed = None;
    let mut times = Vec::with_capacity(iters);
    let started = Instant::now();
    for i in 0..=iters {
        let t = Instant::now();
        let (status, _) = server.try_get(path).await;
        if status != 200 {
            failed = Some(status);
        }
        if i == 0 {
            continue; // warm-up
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if started.elapsed() > Duration::from_secs(10) && times.len() >= 5 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Figures {
        p50: at(0.5),
        p99: at(0.99),
        samples: times.len(),
        failed,
    }
}

fn sizes(quick: bool) -> Vec<usize> {
    if quick {
        return vec![600];
    }
    std::env::var("RUNLEDGER_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().parse().expect("a size")).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

/// Bytes per event: every table and index of the ledger.
async fn storage(fixture: &Fixture, pg: Option<&PgConnectOptions>) -> (f64, i64) {
    let events: i64 = *fixture.ledger.head().borrow();
    let bytes = match (fixture.location.strip_prefix("sqlite://"), pg) {
        (Some(path), _) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            std::fs::metadata(path).unwrap().len() as i64
        }
        (None, Some(base)) => {
            let schema = fixture.location.rsplit(' ').next().unwrap();
            let mut conn = base.connect().await.unwrap();
            sqlx::query_scalar(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            )
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
        (None, None) => 0,
    };
    (bytes as f64 / events.max(1) as f64, bytes)
}

async fn backend(name: &str, pg: Option<&PgConnectOptions>, sizes: &[usize], iters: usize, only: &str) -> usize {
    let mut results: BTreeMap<usize, Vec<(String, Figures)>> = BTreeMap::new();
    for &size in sizes {
        let fixture = match pg {
            None => Fixture::sqlite(size).await,
            Some(base) => Fixture::postgres(base, size).await,
        };
        let events = *fixture.ledger.head().borrow();
        let built = match fixture.built_in {
            Some(secs) => format!("built in {secs:.0} s ({:.0} events/s)", events as f64 / secs),
            None => "reused".into(),
        };
        let (per_event, bytes) = storage(&fixture, pg).await;
        println!(
            "== {name}, {size} runs: {events} events, {} ({built}); storage {:.0} MB = {per_event:.0} B/event",
            fixture.location,
            bytes as f64 / 1e6
        );
        let server = Server::start(fixture.ledger.clone()).await;
        let mut rows = Vec::new();
        for (query, path) in queries(&server, &fixture).await {
            if !query.contains(only) {
                continue;
            }
            let f = measure(&server, &path, iters).await;
            let failed = f.failed.map(|s| format!(", some answered {s}")).unwrap_or_default();
            println!(
                "  {query:<34} p50 {:>8.2} ms  p99 {:>8.2} ms  ({} requests{failed})",
                f.p50, f.p99, f.samples
            );
            rows.push((query, f));
        }
        server.stop().await;
        results.insert(size, rows);
    }
    let (small, large) = (sizes[0], *sizes.last().unwrap());
    let mut missed = 0;
    println!("== {name}: {large} runs against the goal (p50 ≤ {GOAL_P50_MS} ms, p99 ≤ {GOAL_P99_MS} ms, p50 growth from {small} ≤ {GOAL_GROWTH}×)");
    for (query, f) in &results[&large] {
        let before = results[&small].iter().find(|(q, _)| q == query).map(|(_, f)| f.p50);
        let growth = before.map(|b| f.p50 / b).unwrap_or(f64::NAN);
        let ok = f.failed.is_none()
            && f.p50 <= GOAL_P50_MS
            && f.p99 <= GOAL_P99_MS
            && (sizes.len() < 2 || growth <= GOAL_GROWTH);
        missed += usize::from(!ok);
        println!(
            "  {} {query:<34} p50 {:>8.2} ms  p99 {:>8.2} ms  growth {growth:>5.2}×",
            if ok { "ok  " } else { "MISS" },
            f.p50,
            f.p99
        );
    }
    missed
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let iters: usize = common::setting("RUNLEDGER_BENCH_ITERS", 40);
    let iters = if quick { 2 } else { iters.max(2) };
    let only = std::env::var("RUNLEDGER_BENCH_ONLY").unwrap_or_default();
    let sizes = sizes(quick);
    let backends = std::env::var("RUNLEDGER_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "queries: the real HTTP server on 127.0.0.1, one client, sequential requests, {iters} per query \
         (fewer after 10 s), after one warm-up; {cores} cores (shared); release build"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if backends.contains("sqlite") {
            let sqlite = format!("SQLite {} (WAL, synchronous=FULL)", rusqlite::version());
            let missed = backend(&sqlite, None, &sizes, iters, &only).await;
            println!("SQLite: {missed} queries miss the goal");
        }
        if !backends.contains("postgres") {
            return;
        }
        if let Some((base, _, version)) = common::postgres_from_env().await {
            let missed = backend(&format!("PostgreSQL {version}"), Some(&base), &sizes, iters, &only).await;
            println!("PostgreSQL: {missed} queries miss the goal");
        }
    });
}

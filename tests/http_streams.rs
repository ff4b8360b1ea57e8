//! The global log and the live streams through the real server:
//! `GET /api/events`, `GET /api/events/stream` and `GET /api/runs/{id}/stream`
//! (DESIGN.md §5 guarantees 2 and 7, §6 "Streams").
//!
//! Streams are read with a small Server-Sent Events parser over the raw
//! response body. Every read is wrapped in a generous timeout so that a stream
//! that hangs fails its test instead of hanging it; no test asserts on timing.
//! Exactly-once and ordering checks compare exact position lists, and stream
//! frames are compared with the envelopes `GET /api/events` returns.

mod common;

use common::SendChecked;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Reply, TestServer};
use reqwest::StatusCode;
use runledger::commands::{Command, CreateRun};
use runledger::domain::TaskName;
use runledger::http::HttpConfig;
use runledger_events::Metadata;
use serde_json::{json, Value};

/// How long any single read may wait before the test fails as hung.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// A Server-Sent Events client.

/// One event frame: `id`, `event` and `data` (the envelope).
#[derive(Clone, Debug)]
struct Frame {
    id: i64,
    event: String,
    data: Value,
}

#[derive(Debug)]
enum Item {
    Event(Frame),
    /// A block made only of comment lines (`:` prefix), e.g. a keep-alive.
    Comment(String),
}

/// Parses one block (the text between two blank lines).
fn parse_block(block: &str) -> Item {
    let (mut id, mut event, mut data, mut comments) = (None, None, None::<String>, Vec::new());
    for line in block.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(comment) = line.strip_prefix(':') {
            comments.push(comment.to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => {
                assert!(id.is_none(), "two ids in one frame: {block:?}");
                id = Some(
                    value
                        .parse::<i64>()
                        .unwrap_or_else(|_| panic!("id is not a position: {block:?}")),
                );
            }
            "event" => {
                assert!(event.is_none(), "two event lines in one frame: {block:?}");
                event = Some(value.to_owned());
            }
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            other => panic!("unexpected field {other:?} in frame {block:?}"),
        }
    }
    if id.is_none() && event.is_none() && data.is_none() {
        assert!(!comments.is_empty(), "an empty frame");
        return Item::Comment(comments.join("\n"));
    }
    let (Some(id), Some(event), Some(data)) = (id, event, data) else {
        panic!("a frame needs id, event and data: {block:?}");
    };
    let data: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {block:?}"));
    assert_eq!(data["position"], id, "the id is the envelope's position: {block:?}");
    assert_eq!(
        data["type"],
        event.as_str(),
        "the event is the envelope's type: {block:?}"
    );
    Item::Event(Frame { id, event, data })
}

/// An open `text/event-stream` response, read frame by frame.
struct Sse {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    consumed: usize,
    /// Bytes of `buf` already searched for a frame end.
    searched: usize,
    ended: bool,
}

/// A GET with an optional `Last-Event-ID` header.
async fn get_raw(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = client.get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    tokio::time::timeout(PATIENCE, req.send_checked())
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {url} within {PATIENCE:?}"))
        .expect("request")
}

/// A response as the harness's `Reply`.
async fn reply_of(resp: reqwest::Response) -> Reply {
    TestServer::reply(resp).await
}

/// A GET with a `Last-Event-ID` header, read to the end (for refusals).
async fn get_with_last_event_id(s: &TestServer, path: &str, last_event_id: &str) -> Reply {
    reply_of(get_raw(&s.client, &s.url(path), Some(last_event_id)).await).await
}

impl Sse {
    /// Opens a stream; asserts a 200 `text/event-stream` answer.
    async fn open(s: &TestServer, path: &str, last_event_id: Option<&str>) -> Self {
        Self::open_url(&s.client, &s.url(path), last_event_id).await
    }

    async fn open_url(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let resp = get_raw(client, url, last_event_id).await;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            panic!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default());
        }
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok());
        assert!(
            content_type.is_some_and(|c| c.starts_with("text/event-stream")),
            "GET {url}: content type {content_type:?}"
        );
        Self {
            resp,
            buf: Vec::new(),
            consumed: 0,
            searched: 0,
            ended: false,
        }
    }

    /// The next frame or comment; `None` once the body has ended cleanly.
    /// Panics if nothing arrives within `PATIENCE` or the body breaks.
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            let start = self.searched.max(self.consumed);
            if let Some(i) = self.buf[start..].windows(2).position(|w| w == b"\n\n") {
                let end = start + i;
                let block = std::str::from_utf8(&self.buf[self.consumed..end])
                    .expect("UTF-8 frame")
                    .to_owned();
                self.consumed = end + 2;
                self.searched = self.consumed;
                if self.consumed > 1 << 16 && self.consumed * 2 > self.buf.len() {
                    self.buf.drain(..self.consumed);
                    self.consumed = 0;
                    self.searched = 0;
                }
                return Some(parse_block(&block));
            }
            self.searched = self.buf.len().saturating_sub(1).max(self.consumed);
            if self.ended {
                let rest = String::from_utf8_lossy(&self.buf[self.consumed..]).into_owned();
                assert!(rest.trim().is_empty(), "the stream ended inside a frame: {rest:?}");
                return None;
            }
            match tokio::time::timeout(PATIENCE, self.resp.chunk()).await {
                Err(_) => panic!("nothing arrived on the stream within {PATIENCE:?}"),
                Ok(Err(e)) => panic!("the stream broke instead of ending cleanly: {e}"),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
            }
        }
    }

    /// The next event frame (skipping comments); `None` at the end. Panics
    /// if no event and no end arrives within `PATIENCE`, keep-alives or not.
    async fn next_event(&mut self) -> Option<Frame> {
        let next = async {
            loop {
                match self.next_item().await? {
                    Item::Event(frame) => return Some(frame),
                    Item::Comment(_) => continue,
                }
            }
        };
        match tokio::time::timeout(PATIENCE, next).await {
            Ok(next) => next,
            Err(_) => panic!("neither an event nor the end of the stream within {PATIENCE:?}"),
        }
    }

    async fn expect_event(&mut self) -> Frame {
        self.next_event().await.expect("an event, but the stream ended")
    }

    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.expect_event().await);
        }
        frames
    }

    /// Asserts that the body ends with no further event.
    async fn expect_end(&mut self) {
        if let Some(frame) = self.next_event().await {
            panic!("expected the stream to end, got event {} {}", frame.id, frame.event);
        }
    }
}

fn ids(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(|f| f.id).collect()
}

// ---------------------------------------------------------------------------
// Building the log.

fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

async fn act(s: &TestServer, run: &str, action: &str, body: Value) -> Value {
    s.post(&format!("/api/runs/{run}/{action}"), body).await.ok(200).clone()
}

async fn end(s: &TestServer, run: &str, reason: &str, exit_code: i64) -> Value {
    act(s, run, "end", json!({"end_reason": reason, "exit_code": exit_code})).await
}

/// Appends one `run.created` straight through the ledger.
async fn ledger_create(s: &TestServer, task: &str, project: &str, actor: &str) -> String {
    let mut create = CreateRun::new(TaskName::parse(task).unwrap());
    create.project = project.to_owned();
    match s
        .ledger
        .execute(Command::Create(create), Metadata::actor(actor))
        .await
        .expect("append")
    {
        runledger::commands::Outcome::Created(run) => run.id.to_string(),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// `writers` concurrent tasks each append `per_writer` creates of `task`.
async fn append_creates(s: &TestServer, writers: usize, per_writer: usize, task: &str) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let ledger = s.ledger.clone();
        let task = TaskName::parse(task).unwrap();
        set.spawn(async move {
            for _ in 0..per_writer {
                ledger
                    .execute(Command::Create(CreateRun::new(task.clone())), Metadata::actor("loader"))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("writer task");
    }
}

/// The whole log through `GET /api/events`, paging with `next_after`; it
/// holds every event in the database, at gap-free positions from 1.
async fn whole_log(s: &TestServer) -> Vec<Value> {
    let n = s.event_count().await;
    let log = page_all(s, "").await;
    assert_eq!(
        positions(&log),
        (1..=n).collect::<Vec<_>>(),
        "the log lists every stored event"
    );
    log
}

/// Every event matching `filter` (a query-string fragment), paging with
/// `next_after` until a page examines nothing; checks each page's bounds.
async fn page_all(s: &TestServer, filter: &str) -> Vec<Value> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let reply = s.get(&format!("/api/events?after={after}&limit=10000{filter}")).await;
        let body = reply.ok(200);
        let events = body["events"].as_array().expect("events").clone();
        let next = body["next_after"].as_i64().expect("next_after");
        assert!(next >= after, "next_after {next} went back from {after}");
        for e in &events {
            let p = e["position"].as_i64().unwrap();
            assert!(p > after && p <= next, "event {p} outside ({after}, {next}]");
        }
        if let Some(last) = events.last() {
            assert!(last["position"].as_i64().unwrap() <= next);
        }
        all.extend(events);
        if next == after {
            return all;
        }
        after = next;
    }
}

fn positions(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["position"].as_i64().unwrap()).collect()
}

fn run_of(envelope: &Value) -> String {
    envelope["stream_id"]
        .as_str()
        .and_then(|s| s.strip_prefix("run-"))
        .expect("a run stream")
        .to_owned()
}

/// A small log with several tasks, projects, runs and event types.
struct Mixed {
    /// alpha / default: created, started, ended failed, retried.
    a: String,
    /// beta / other: created, started, heartbeat.
    b: String,
    /// alpha / other: created.
    c: String,
    /// The retry of `a`: alpha / default.
    a2: String,
    /// run id → (task, project).
    runs: HashMap<String, (String, String)>,
    /// (run, type) in the order they were appended; the retry's two events
    /// are one transaction, so their relative order is not checked.
    expected: Vec<(String, &'static str)>,
}

impl Mixed {
    fn task(&self, envelope: &Value) -> &str {
        &self.runs[&run_of(envelope)].0
    }

    fn project(&self, envelope: &Value) -> &str {
        &self.runs[&run_of(envelope)].1
    }
}

async fn mixed_log(s: &TestServer) -> Mixed {
    let a = id_of(&s.create(json!({"task_name": "alpha", "max_attempts": 3})).await);
    let b = id_of(&s.create(json!({"task_name": "beta", "project": "other"})).await);
    act(s, &a, "start", json!({})).await;
    let c = id_of(&s.create(json!({"task_name": "alpha", "project": "other"})).await);
    act(s, &b, "start", json!({})).await;
    end(s, &a, "failed", 1).await;
    let retry = s.post(&format!("/api/runs/{a}/retry"), json!({})).await;
    let a2 = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    act(s, &b, "heartbeat", json!({})).await;
    let runs = HashMap::from([
        (a.clone(), ("alpha".to_owned(), "default".to_owned())),
        (b.clone(), ("beta".to_owned(), "other".to_owned())),
        (c.clone(), ("alpha".to_owned(), "other".to_owned())),
        (a2.clone(), ("alpha".to_owned(), "default".to_owned())),
    ]);
    let expected = vec![
        (a.clone(), "run.created"),
        (b.clone(), "run.created"),
        (a.clone(), "run.started"),
        (c.clone(), "run.created"),
        (b.clone(), "run.started"),
        (a.clone(), "run.ended"),
        (a.clone(), "run.retried"),
        (a2.clone(), "run.created"),
        (b.clone(), "run.heartbeat"),
    ];
    Mixed {
        a,
        b,
        c,
        a2,
        runs,
        expected,
    }
}

/// Asserts that `log` is exactly `mixed.expected` (the retry's two events in
/// either order) at positions 1..=n.
fn check_mixed(mixed: &Mixed, log: &[Value]) {
    assert_eq!(positions(log), (1..=mixed.expected.len() as i64).collect::<Vec<_>>());
    let mut got: Vec<(String, String)> = log
        .iter()
        .map(|e| (run_of(e), e["type"].as_str().unwrap().to_owned()))
        .collect();
    let mut want: Vec<(String, String)> = mixed
        .expected
        .iter()
        .map(|(r, t)| (r.clone(), (*t).to_owned()))
        .collect();
    got[6..8].sort();
    want[6..8].sort();
    assert_eq!(got, want);
    assert_eq!(runs_of(log), mixed.runs, "each run's task and project");
}

/// Positions of the events of `log` that `keep` selects.
fn select(log: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<i64> {
    log.iter()
        .filter(|e| keep(e))
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

fn has_type(e: &Value, t: &str) -> bool {
    e["type"] == t
}

// ---------------------------------------------------------------------------
// 1. GET /api/events

async fn the_log_lists_envelopes_in_position_order(s: TestServer) {
    let empty = s.get("/api/events").await;
    assert_eq!(empty.ok(200), &json!({"events": [], "next_after": 0}));

    let mixed = mixed_log(&s).await;
    let n = s.event_count().await;
    let reply = s.get("/api/events").await;
    let body = reply.ok(200);
    let log = body["events"].as_array().unwrap().clone();
    assert_eq!(body["next_after"], n);
    check_mixed(&mixed, &log);
    assert_eq!(log.len() as i64, n);
    for (i, e) in log.iter().enumerate() {
        for field in ["event_id", "stream_id", "type", "recorded_at", "prev_hash", "hash"] {
            assert!(e[field].is_string(), "{field} of {e}");
        }
        assert!(e["data"].is_object() && e["metadata"].is_object(), "{e}");
        assert!(e["schema_version"].is_i64() && e["stream_version"].is_i64(), "{e}");
        assert_eq!(e["metadata"]["actor"], "anonymous");
        if i > 0 {
            assert_eq!(
                e["prev_hash"],
                log[i - 1]["hash"],
                "the chain links each event to the previous"
            );
        }
    }
    // Each run's events carry its stream versions 1, 2, 3…
    let mut versions: HashMap<String, i64> = HashMap::new();
    for e in &log {
        let v = versions.entry(run_of(e)).or_default();
        *v += 1;
        assert_eq!(e["stream_version"], *v, "{e}");
    }

    // `after` is exclusive; `next_after` is the last position examined.
    for after in [0, 1, 4, n - 1, n] {
        let reply = s.get(&format!("/api/events?after={after}")).await;
        let body = reply.ok(200);
        assert_eq!(body["events"].as_array().unwrap(), &log[after as usize..].to_vec());
        assert_eq!(body["next_after"], n);
    }
    let beyond = s.get(&format!("/api/events?after={}", n + 100)).await;
    assert_eq!(beyond.ok(200), &json!({"events": [], "next_after": n + 100}));

    // `limit` cuts the page; `next_after` continues it.
    let page = s.get("/api/events?limit=3").await;
    let page = page.ok(200);
    assert_eq!(positions(page["events"].as_array().unwrap()), [1, 2, 3]);
    assert_eq!(page["next_after"], 3);
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let reply = s.get(&format!("/api/events?after={after}&limit=2")).await;
        let body = reply.ok(200).clone();
        let events = body["events"].as_array().unwrap();
        if events.is_empty() {
            assert_eq!(body["next_after"], after);
            break;
        }
        assert!(events.len() <= 2);
        assert_eq!(body["next_after"], events.last().unwrap()["position"]);
        paged.extend(events.iter().cloned());
        after = body["next_after"].as_i64().unwrap();
    }
    assert_eq!(paged, log, "paging by 2 returns the same envelopes");
    assert_eq!(
        s.get("/api/events?limit=10000").await.ok(200)["events"]
            .as_array()
            .unwrap(),
        &log
    );
    s.stop().await;
}

async fn every_log_filter_selects_exactly_its_events(s: TestServer) {
    let mixed = mixed_log(&s).await;
    let log = whole_log(&s).await;
    check_mixed(&mixed, &log);
    let all = positions(&log);
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("type=run.started".into(), select(&log, |e| has_type(e, "run.started"))),
        (
            "type=run.created,run.ended".into(),
            select(&log, |e| has_type(e, "run.created") || has_type(e, "run.ended")),
        ),
        (
            "type=run.retried,run.heartbeat,run.paused".into(),
            select(&log, |e| has_type(e, "run.retried") || has_type(e, "run.heartbeat")),
        ),
        ("type=run.dead_lettered".into(), vec![]),
        (format!("run_id={}", mixed.a), select(&log, |e| run_of(e) == mixed.a)),
        (format!("run_id={}", mixed.b), select(&log, |e| run_of(e) == mixed.b)),
        (format!("run_id={}", mixed.a2), select(&log, |e| run_of(e) == mixed.a2)),
        (format!("run_id={}", uuid::Uuid::now_v7()), vec![]),
        ("task_name=alpha".into(), select(&log, |e| mixed.task(e) == "alpha")),
        ("task_name=beta".into(), select(&log, |e| mixed.task(e) == "beta")),
        ("task_name=nothing".into(), vec![]),
        ("project=other".into(), select(&log, |e| mixed.project(e) == "other")),
        (
            "project=default".into(),
            select(&log, |e| mixed.project(e) == "default"),
        ),
        ("actor=anonymous".into(), all.clone()),
        ("actor=someone".into(), vec![]),
        (
            "task_name=alpha&project=other".into(),
            select(&log, |e| run_of(e) == mixed.c),
        ),
        (
            "type=run.created&project=other".into(),
            select(&log, |e| has_type(e, "run.created") && mixed.project(e) == "other"),
        ),
        (
            format!("run_id={}&type=run.started,run.heartbeat", mixed.b),
            select(&log, |e| run_of(e) == mixed.b && e["type"] != "run.created"),
        ),
        (format!("run_id={}&task_name=beta", mixed.a), vec![]),
    ];
    // Sanity: the cases are not vacuous.
    assert_eq!(cases[0].1.len(), 2);
    assert_eq!(cases[1].1.len(), 5);
    assert_eq!(cases[8].1.len(), 6);
    assert_eq!(cases[11].1.len(), 4);
    for (filter, expected) in &cases {
        let reply = s.get(&format!("/api/events?{filter}")).await;
        let body = reply.ok(200);
        let events = body["events"].as_array().unwrap();
        assert_eq!(&positions(events), expected, "{filter}");
        for e in events {
            assert_eq!(e, &log[e["position"].as_i64().unwrap() as usize - 1], "{filter}");
        }
        // Nothing is left after the page: the whole log was examined.
        assert_eq!(body["next_after"], log.len(), "{filter}");
        // Paging one event at a time with `next_after` returns each once.
        let mut after = 0;
        let mut paged = Vec::new();
        for _ in 0..=log.len() {
            let reply = s.get(&format!("/api/events?{filter}&after={after}&limit=1")).await;
            let body = reply.ok(200);
            let next = body["next_after"].as_i64().unwrap();
            let page = positions(body["events"].as_array().unwrap());
            assert!(page.len() <= 1);
            if let Some(&p) = page.first() {
                assert_eq!(next, p, "{filter}: a full page stops at its last event");
            }
            paged.extend(page);
            if next == after {
                break;
            }
            after = next;
        }
        assert_eq!(&paged, expected, "{filter} paged by 1");
    }

    // Events appended by another actor: `actor` tells them apart.
    let robot_run = ledger_create(&s, "delta", "default", "robot").await;
    let robot = s.get("/api/events?actor=robot").await;
    let robot = robot.ok(200)["events"].as_array().unwrap().clone();
    assert_eq!(robot.len(), 1);
    assert_eq!(run_of(&robot[0]), robot_run);
    assert_eq!(robot[0]["metadata"]["actor"], "robot");
    assert_eq!(robot[0]["position"], all.len() + 1);
    let anonymous = s.get("/api/events?actor=anonymous").await;
    assert_eq!(positions(anonymous.ok(200)["events"].as_array().unwrap()), all);
    s.stop().await;
}

/// Filters that skip most of the log: a page stops after a bounded scan and
/// `next_after` lies past its last event; paging still finds every match once.
async fn sparse_filters_page_through_the_log_with_next_after(s: TestServer) {
    let _heavy = HEAVY.lock().await;
    let x = id_of(&s.create(json!({"task_name": "needle"})).await);
    append_creates(&s, 8, 1500, "hay").await;
    act(&s, &x, "start", json!({})).await;
    append_creates(&s, 4, 250, "hay").await;
    end(&s, &x, "success", 0).await;
    let n = s.event_count().await;
    assert_eq!(n, 1 + 12_000 + 1 + 1000 + 1);

    let cases = [
        (format!("run_id={x}"), vec![1, 12_002, n]),
        ("task_name=needle".to_owned(), vec![1, 12_002, n]),
        ("type=run.started".to_owned(), vec![12_002]),
        ("type=run.ended".to_owned(), vec![n]),
        ("type=run.started,run.ended".to_owned(), vec![12_002, n]),
    ];
    for (filter, expected) in &cases {
        let first = s.get(&format!("/api/events?{filter}")).await;
        let first = first.ok(200);
        let returned = positions(first["events"].as_array().unwrap());
        let next = first["next_after"].as_i64().unwrap();
        // The first page stops its scan well before the end of the log, past
        // whatever it found in the part it examined.
        assert!(next < 12_002, "{filter}: the scan is bounded, got next_after {next}");
        let in_scan: Vec<i64> = expected.iter().copied().filter(|&p| p <= next).collect();
        assert_eq!(returned, in_scan, "{filter}: the first page");
        assert!(
            returned.last().is_none_or(|&p| next > p),
            "{filter}: next_after is past the match"
        );
        // Page through with every limit; each match exactly once.
        for limit in [1, 2, 1000] {
            let mut after = 0;
            let mut found = Vec::new();
            let mut pages = 0;
            loop {
                pages += 1;
                assert!(pages < 100, "{filter}: paging does not end");
                let reply = s
                    .get(&format!("/api/events?{filter}&after={after}&limit={limit}"))
                    .await;
                let body = reply.ok(200);
                let next = body["next_after"].as_i64().unwrap();
                let page = positions(body["events"].as_array().unwrap());
                assert!(page.len() <= limit);
                assert!(page.iter().all(|&p| p > after && p <= next));
                found.extend(page);
                if next == after {
                    break;
                }
                after = next;
            }
            assert_eq!(&found, expected, "{filter} with limit {limit}");
            assert_eq!(after, n);
        }
    }
    // Unfiltered: a full page of 10,000, then the rest.
    let page = s.get("/api/events?limit=10000").await;
    let page = page.ok(200);
    assert_eq!(
        positions(page["events"].as_array().unwrap()),
        (1..=10_000).collect::<Vec<_>>()
    );
    assert_eq!(page["next_after"], 10_000);
    assert_eq!(positions(&whole_log(&s).await), (1..=n).collect::<Vec<_>>());
    let hay = page_all(&s, "&task_name=hay").await;
    assert_eq!(hay.len(), 13_000);
    assert!(hay.iter().all(|e| e["type"] == "run.created"));
    s.stop().await;
}

async fn log_queries_refuse_invalid_parameters(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    for (query, location) in [
        ("after=abc", "query.after"),
        ("after=-1", "query.after"),
        ("after=1.5", "query.after"),
        ("after=1&after=2", "query.after"),
        ("limit=0", "query.limit"),
        ("limit=10001", "query.limit"),
        ("limit=-5", "query.limit"),
        ("limit=ten", "query.limit"),
        ("type=run.bogus", "query.type"),
        ("type=run.created,bogus", "query.type"),
        ("run_id=not-a-uuid", "query.run_id"),
        ("task_name=bad%20name", "query.task_name"),
        ("project=a/b", "query.project"),
        ("unknown=1", "query.unknown"),
        ("position=3", "query.position"),
    ] {
        let reply = s.get(&format!("/api/events?{query}")).await;
        let body = reply.invalid_at(location);
        assert_eq!(body["instance"], "/api/events", "{query}");
    }
    // Empty values mean absent.
    let all = s.get("/api/events").await.ok(200).clone();
    assert_eq!(
        s.get("/api/events?type=&run_id=&task_name=&actor=&after=")
            .await
            .ok(200),
        &all
    );
    // Every fault at once.
    let reply = s
        .get("/api/events?after=x&limit=0&type=nope&run_id=x&task_name=%20")
        .await;
    let body = reply.invalid_at("query.after");
    let mut locations: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["location"].as_str().unwrap())
        .collect();
    locations.sort();
    assert_eq!(
        locations,
        [
            "query.after",
            "query.limit",
            "query.run_id",
            "query.task_name",
            "query.type"
        ]
    );
    // The bounds themselves are accepted.
    s.get("/api/events?limit=1").await.ok(200);
    s.get("/api/events?limit=10000").await.ok(200);
    s.stop().await;
}

/// `after` accepts any position up to i64::MAX; the largest one reads as
/// "nothing yet" rather than breaking the request.
async fn the_largest_position_is_an_empty_page(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    let max = i64::MAX;
    // Asked repeatedly, so that some requests come after the node's tail has
    // taken in the new event (it does within milliseconds).
    for attempt in 0..20 {
        let resp = get_raw(&s.client, &s.url(&format!("/api/events?after={max}")), None).await;
        let reply = reply_of(resp).await;
        assert_eq!(
            reply.ok(200),
            &json!({"events": [], "next_after": max}),
            "attempt {attempt}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

/// What a write's acknowledgement promises: the write is in the log.
async fn the_log_shows_every_acknowledged_write(s: TestServer) {
    let mut head = 0;
    for round in 0..30 {
        append_creates(&s, 8, 25, "burst").await;
        let reply = s.get(&format!("/api/events?after={head}")).await;
        let got = positions(reply.ok(200)["events"].as_array().unwrap());
        assert_eq!(
            got,
            ((head + 1)..=(head + 200)).collect::<Vec<_>>(),
            "round {round}: acknowledged events missing from GET /api/events"
        );
        head += 200;
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 2, 3. The global stream: replay, live, head.

async fn the_stream_replays_the_log_then_delivers_live_events(s: TestServer) {
    let mixed = mixed_log(&s).await;
    let log = whole_log(&s).await;
    check_mixed(&mixed, &log);
    let n = log.len();

    let mut stream = Sse::open(&s, "/api/events/stream?after=0", None).await;
    let replay = stream.take(n).await;
    assert_eq!(ids(&replay), (1..=n as i64).collect::<Vec<_>>());
    for (frame, envelope) in replay.iter().zip(&log) {
        assert_eq!(&frame.data, envelope, "a frame's data is the stored envelope");
        assert_eq!(frame.event, envelope["type"].as_str().unwrap());
    }

    // Live: HTTP writes and in-process appends, in commit order.
    let live_run = id_of(&s.create(json!({"task_name": "live"})).await);
    act(&s, &live_run, "start", json!({})).await;
    let robot = ledger_create(&s, "robot-task", "default", "robot").await;
    end(&s, &live_run, "success", 0).await;
    let live = stream.take(4).await;
    assert_eq!(ids(&live), ((n as i64 + 1)..=(n as i64 + 4)).collect::<Vec<_>>());
    let types: Vec<&str> = live.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(types, ["run.created", "run.started", "run.created", "run.ended"]);
    assert_eq!(run_of(&live[2].data), robot);
    assert_eq!(live[2].data["metadata"]["actor"], "robot");
    let log = whole_log(&s).await;
    for frame in &live {
        assert_eq!(&frame.data, &log[frame.id as usize - 1]);
    }

    // `after=k` starts at k + 1.
    let mut from_five = Sse::open(&s, "/api/events/stream?after=5", None).await;
    let frames = from_five.take(log.len() - 5).await;
    assert_eq!(ids(&frames), (6..=log.len() as i64).collect::<Vec<_>>());
    // A position past the head waits for it.
    let mut ahead = Sse::open(&s, &format!("/api/events/stream?after={}", log.len() + 2), None).await;
    append_creates(&s, 1, 3, "later").await;
    assert_eq!(ahead.expect_event().await.id, log.len() as i64 + 3);
    assert_eq!(from_five.take(3).await.last().unwrap().id, log.len() as i64 + 3);
    drop((stream, from_five, ahead));
    s.stop().await;
}

async fn without_a_position_the_stream_starts_at_the_head(s: TestServer) {
    // An empty log: the head is 0.
    let mut stream = Sse::open(&s, "/api/events/stream", None).await;
    s.create(json!({"task_name": "first"})).await;
    assert_eq!(stream.expect_event().await.id, 1);
    drop(stream);
    for round in 0..20 {
        // A burst of acknowledged writes just before connecting…
        append_creates(&s, 8, 25, "before").await;
        // Every one of them is committed and acknowledged: the ledger's head
        // (read in process, so that nothing delays the connection) covers them.
        let head = *s.ledger.head().borrow();
        let mut stream = Sse::open(&s, "/api/events/stream", None).await;
        // …is not sent; what is appended after connecting is.
        let after = id_of(&s.create(json!({"task_name": "after"})).await);
        let first = stream.expect_event().await;
        assert_eq!(
            (first.id, run_of(&first.data)),
            (head + 1, after),
            "round {round}: the first frame of a head stream must be the first event after connecting"
        );
        append_creates(&s, 1, 2, "after").await;
        assert_eq!(ids(&stream.take(2).await), [head + 2, head + 3]);
        assert_eq!(s.event_count().await, head + 3);
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Resuming under concurrent writers.

/// A tiny deterministic generator for read lengths.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// How a reconnect says where to resume.
#[derive(Clone, Copy, Debug)]
enum Resume {
    Header,
    Query,
    /// `Last-Event-ID` with a misleading `?after=`: the header wins.
    HeaderOverQuery,
}

/// Writers append continuously (four over HTTP, spread over `nodes`, and
/// two in process) while a client reads a few frames, drops the connection
/// and resumes, `reconnects` times, from each node in turn.
async fn resume_under_concurrent_writers(s: &TestServer, reconnects: usize, others: &[String]) {
    let nodes: Vec<String> = std::iter::once(s.base.clone()).chain(others.iter().cloned()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let base = nodes[w % nodes.len()].clone();
        let (client, stop, written) = (s.client.clone(), stop.clone(), written.clone());
        writers.spawn(async move {
            let post = |path: String, body: Value| {
                let req = client.post(format!("{base}{path}")).json(&body);
                async move {
                    let resp = req.send_checked().await.expect("write");
                    assert!(resp.status().is_success(), "write answered {}", resp.status());
                    resp.json::<Value>().await.expect("JSON")
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let run = post("/api/runs".into(), json!({"task_name": format!("writer-{w}")})).await;
                let id = id_of(&run);
                post(format!("/api/runs/{id}/start"), json!({})).await;
                post(format!("/api/runs/{id}/end"), json!({"end_reason": "success"})).await;
                written.fetch_add(3, Ordering::Relaxed);
            }
        });
    }
    for _ in 0..2 {
        let (ledger, stop) = (s.ledger.clone(), stop.clone());
        writers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    ledger
                        .execute(
                            Command::Create(CreateRun::new(TaskName::parse("fast").unwrap())),
                            Metadata::actor("fast"),
                        )
                        .await
                        .expect("append");
                }
                tokio::task::yield_now().await;
            }
        });
    }

    let mut rng = Lcg(0x5eed);
    let mut seen: Vec<Frame> = Vec::new();
    let mut last: Option<i64> = None;
    let mut connections = 0;
    let modes = [Resume::Header, Resume::Query, Resume::HeaderOverQuery];
    let written_before = written.load(Ordering::Relaxed);
    while connections <= reconnects {
        let mode = modes[connections % modes.len()];
        let base = &nodes[connections % nodes.len()];
        let (query, header) = match (last, mode) {
            (None, _) => ("?after=0".to_owned(), None),
            (Some(p), Resume::Header) => (String::new(), Some(p.to_string())),
            (Some(p), Resume::Query) => (format!("?after={p}"), None),
            (Some(p), Resume::HeaderOverQuery) => {
                let misleading = if connections % 2 == 0 { 0 } else { p + 1000 };
                (format!("?after={misleading}"), Some(p.to_string()))
            }
        };
        let url = format!("{base}/api/events/stream{query}");
        let mut stream = Sse::open_url(&s.client, &url, header.as_deref()).await;
        connections += 1;
        let k = 1 + rng.below(50) as usize;
        for _ in 0..k {
            let frame = stream.expect_event().await;
            let expected = last.unwrap_or(0) + 1;
            assert_eq!(frame.id, expected, "connection {connections} ({mode:?}) after {last:?}");
            last = Some(frame.id);
            seen.push(frame);
        }
        drop(stream);
    }
    assert!(
        written.load(Ordering::Relaxed) > written_before,
        "the HTTP writers were appending while the client reconnected"
    );
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = writers.join_next().await {
        r.expect("writer");
    }
    let n = s.event_count().await;
    let url = format!("{}/api/events/stream", nodes[nodes.len() - 1]);
    let mut stream = Sse::open_url(&s.client, &url, Some(&last.unwrap().to_string())).await;
    while last.unwrap() < n {
        let frame = stream.expect_event().await;
        assert_eq!(frame.id, last.unwrap() + 1);
        last = Some(frame.id);
        seen.push(frame);
    }
    drop(stream);
    assert_eq!(ids(&seen), (1..=n).collect::<Vec<_>>(), "every position once, in order");
    let log = whole_log(s).await;
    assert_eq!(log.len() as i64, n);
    for (frame, envelope) in seen.iter().zip(&log) {
        assert_eq!(&frame.data, envelope);
    }
}

async fn resuming_under_concurrent_writers_sees_every_event_once(s: TestServer) {
    resume_under_concurrent_writers(&s, 40, &[]).await;
    s.stop().await;
}

/// A tail that holds only 8 events: most resumes read from the log.
async fn resume_with_a_tiny_tail(s: TestServer) {
    resume_under_concurrent_writers(&s, 30, &[]).await;
    s.stop().await;
}

fn tiny_tail() -> HttpConfig {
    HttpConfig {
        tail_capacity: 8,
        ..HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resuming_with_a_tiny_tail_sees_every_event_once() {
    resume_with_a_tiny_tail(TestServer::sqlite_with(tiny_tail()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resuming_with_a_tiny_tail_sees_every_event_once() {
    if let Some(s) = TestServer::postgres_with("resuming_with_a_tiny_tail_sees_every_event_once", tiny_tail()).await {
        resume_with_a_tiny_tail(s).await;
    }
}

/// Two nodes on one PostgreSQL database (this process's server and a
/// `runledger serve` process): writers on both, and a client that resumes on
/// each node in turn sees every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resuming_across_two_nodes_sees_every_event_once() {
    let Some(s) = TestServer::postgres("resuming_across_two_nodes_sees_every_event_once").await else {
        return;
    };
    let other = common::Node::start(&s.database_url());
    resume_under_concurrent_writers(&s, 40, std::slice::from_ref(&other.base)).await;
    drop(other);
    s.stop().await;
}

async fn last_event_id_wins_over_after(s: TestServer) {
    append_creates(&s, 1, 10, "t").await;
    for (after, header, first) in [(0, "5", 6), (8, "2", 3), (3, "0", 1), (0, "10", 11)] {
        let mut stream = Sse::open(&s, &format!("/api/events/stream?after={after}"), Some(header)).await;
        if first <= 10 {
            let frames = stream.take(11 - first).await;
            assert_eq!(
                ids(&frames),
                (first as i64..=10).collect::<Vec<_>>(),
                "after={after}, {header}"
            );
        } else {
            s.create(json!({"task_name": "t"})).await;
            assert_eq!(stream.expect_event().await.id, 11, "after={after}, {header}");
        }
    }
    // The header alone resumes too, and surrounding whitespace is tolerated.
    let mut stream = Sse::open(&s, "/api/events/stream", Some(" 9 ")).await;
    assert_eq!(ids(&stream.take(2).await), [10, 11]);
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 5. A slow consumer.

/// Memory measurements need the process to themselves among the tests that
/// hold thousands of events in memory.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// The absolute memory bound: growth while a client that stopped reading
/// falls 100,000 events behind (the server runs in this process). The ring
/// of recent events (16,384) and the page caches account for tens of
/// megabytes.
const MAX_GROWTH: u64 = 300 * 1024 * 1024;

async fn a_slow_consumer_blocks_no_writer_and_loses_nothing(s: TestServer, events: usize) {
    let _heavy = HEAVY.lock().await;
    s.create(json!({"task_name": "first"})).await;
    let mut stream = Sse::open(&s, "/api/events/stream?after=0", None).await;
    assert_eq!(stream.expect_event().await.id, 1);
    // The client now stops reading, keeping the response open, while the
    // log grows in two halves.
    let writers = 16;
    let half = events / 2;
    let mut rss = vec![rss_bytes()];
    for _ in 0..2 {
        let appended = tokio::time::timeout(
            Duration::from_secs(600),
            append_creates(&s, writers, half / writers, "bulk"),
        )
        .await;
        assert!(appended.is_ok(), "writers did not finish while a client was paused");
        rss.push(rss_bytes());
    }
    let n = s.event_count().await;
    assert_eq!(n as usize, 1 + events);
    let growth = rss[2].saturating_sub(rss[0]);
    let second_half_growth = rss[2].saturating_sub(rss[1]);
    eprintln!(
        "slow consumer: {events} events appended; RSS {} MB -> {} MB -> {} MB",
        rss[0] >> 20,
        rss[1] >> 20,
        rss[2] >> 20
    );
    assert!(
        growth < MAX_GROWTH,
        "RSS grew by {} MB while a client was paused",
        growth >> 20
    );
    // Resume the same response: everything, once, in order.
    let mut expected = 2;
    let mut second_half_bytes = 0;
    while expected <= n {
        let frame = stream.expect_event().await;
        assert_eq!(frame.id, expected, "the paused stream resumes without gap or repeat");
        if frame.id > 1 + half as i64 {
            second_half_bytes += frame.data.to_string().len() as u64;
        }
        expected += 1;
    }
    // Holding the second half's backlog for the client would cost at least
    // its encoded size; a bounded server's memory stays where the first
    // half (which filled the ring of recent events) left it.
    eprintln!(
        "slow consumer: the second half was {} MB of envelopes; RSS grew {} MB meanwhile",
        second_half_bytes >> 20,
        second_half_growth >> 20
    );
    assert!(
        second_half_growth < second_half_bytes,
        "RSS grew by {} MB while the paused client fell {} MB of envelopes further behind",
        second_half_growth >> 20,
        second_half_bytes >> 20
    );
    // And then it is live again.
    s.create(json!({"task_name": "last"})).await;
    assert_eq!(stream.expect_event().await.id, n + 1);
    drop(stream);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_slow_consumer_blocks_no_writer_and_loses_nothing() {
    let s = TestServer::sqlite_with(patient()).await;
    a_slow_consumer_blocks_no_writer_and_loses_nothing(s, 100_000).await;
}

/// The paused client of the slow-consumer scenario pauses for as long as
/// the writers take, beyond the default stalled-client timeout (which would
/// drop it, as `tests/http_connections.rs` shows): it must stay connected.
fn patient() -> runledger::http::HttpConfig {
    runledger::http::HttpConfig {
        stalled_client_timeout: std::time::Duration::from_secs(3_600),
        ..runledger::http::HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_slow_consumer_blocks_no_writer_and_loses_nothing() {
    if let Some(s) = TestServer::postgres_with("a_slow_consumer_blocks_no_writer_and_loses_nothing", patient()).await {
        a_slow_consumer_blocks_no_writer_and_loses_nothing(s, 100_000).await;
    }
}

// ---------------------------------------------------------------------------
// 6. Filters on the stream.

/// run id → (task, project), from the log's `run.created` events.
fn runs_of(log: &[Value]) -> HashMap<String, (String, String)> {
    log.iter()
        .filter(|e| has_type(e, "run.created"))
        .map(|e| {
            let d = &e["data"];
            let text = |k: &str| d[k].as_str().expect("run.created field").to_owned();
            (run_of(e), (text("task_name"), text("project")))
        })
        .collect()
}

/// A write a stream-filter case makes.
enum Write<'a> {
    /// An HTTP create (actor `anonymous`): task, project.
    Create(&'a str, &'a str),
    /// An in-process create: task, project, actor.
    Ledger(&'a str, &'a str, &'a str),
    /// An HTTP action on a run with an empty body.
    Act(&'a str, &'a str),
    /// Create a run over HTTP and start it.
    CreateAndStart(&'a str),
}

async fn perform(s: &TestServer, write: &Write<'_>) {
    match *write {
        Write::Create(task, project) => {
            s.create(json!({"task_name": task, "project": project})).await;
        }
        Write::Ledger(task, project, actor) => {
            ledger_create(s, task, project, actor).await;
        }
        Write::Act(run, action) => {
            act(s, run, action, json!({})).await;
        }
        Write::CreateAndStart(task) => {
            let id = id_of(&s.create(json!({"task_name": task})).await);
            act(s, &id, "start", json!({})).await;
        }
    }
}

type Matches<'a> = Box<dyn Fn(&Value, &(String, String)) -> bool + 'a>;

async fn stream_filters_deliver_exactly_the_matching_events(s: TestServer) {
    let mixed = mixed_log(&s).await;
    ledger_create(&s, "alpha", "default", "robot").await;
    let (b, c) = (mixed.b.as_str(), mixed.c.as_str());
    let actor = |e: &Value| e["metadata"]["actor"].as_str().unwrap().to_owned();
    let cases: Vec<(String, Matches, Vec<Write>, Write)> = vec![
        (
            "type=run.started".into(),
            Box::new(|e, _| has_type(e, "run.started")),
            vec![Write::Create("n", "default"), Write::Act(b, "heartbeat")],
            Write::CreateAndStart("n"),
        ),
        (
            "type=run.ended,run.heartbeat".into(),
            Box::new(|e, _| has_type(e, "run.ended") || has_type(e, "run.heartbeat")),
            vec![Write::CreateAndStart("n"), Write::Act(c, "start")],
            Write::Act(b, "heartbeat"),
        ),
        (
            "task_name=beta".into(),
            Box::new(|_, (task, _)| task == "beta"),
            vec![
                Write::Create("alpha", "other"),
                Write::Ledger("betamax", "default", "x"),
            ],
            Write::Ledger("beta", "default", "x"),
        ),
        (
            format!("run_id={b}"),
            Box::new(|e, _| run_of(e) == b),
            vec![Write::Act(c, "heartbeat"), Write::Create("beta", "other")],
            Write::Act(b, "heartbeat"),
        ),
        (
            "project=other".into(),
            Box::new(|_, (_, project)| project == "other"),
            vec![Write::Create("beta", "default"), Write::Ledger("beta", "others", "x")],
            Write::Create("zeta", "other"),
        ),
        (
            "actor=robot".into(),
            Box::new(|e, _| actor(e) == "robot"),
            vec![
                Write::Create("alpha", "default"),
                Write::Ledger("alpha", "default", "robots"),
            ],
            Write::Ledger("alpha", "other", "robot"),
        ),
        (
            "actor=anonymous".into(),
            Box::new(|e, _| actor(e) == "anonymous"),
            vec![Write::Ledger("alpha", "other", "robot")],
            Write::Create("alpha", "default"),
        ),
        (
            "type=run.created&project=other".into(),
            Box::new(|e, (_, project)| has_type(e, "run.created") && project == "other"),
            vec![Write::Create("alpha", "default"), Write::Act(c, "heartbeat")],
            Write::Create("omega", "other"),
        ),
        (
            "task_name=alpha&type=run.created,run.started&actor=anonymous".into(),
            Box::new(|e, (task, _)| {
                task == "alpha" && (has_type(e, "run.created") || has_type(e, "run.started")) && actor(e) == "anonymous"
            }),
            vec![
                Write::Ledger("alpha", "default", "robot"),
                Write::Create("beta", "default"),
                Write::Act(b, "heartbeat"),
            ],
            Write::Create("alpha", "default"),
        ),
    ];
    for (filter, matches, noise, sentinel) in &cases {
        let log = whole_log(&s).await;
        let runs = runs_of(&log);
        let expected = select(&log, |e| matches(e, &runs[&run_of(e)]));
        assert!(
            !expected.is_empty() && expected.len() < log.len(),
            "{filter}: a discriminating case"
        );
        let mut stream = Sse::open(&s, &format!("/api/events/stream?after=0&{filter}"), None).await;
        let frames = stream.take(expected.len()).await;
        assert_eq!(ids(&frames), expected, "{filter}");
        for frame in &frames {
            assert_eq!(&frame.data, &log[frame.id as usize - 1]);
        }
        let before = s.event_count().await;
        for write in noise {
            perform(&s, write).await;
        }
        perform(&s, sentinel).await;
        let log = whole_log(&s).await;
        let runs = runs_of(&log);
        let live = select(&log[before as usize..], |e| matches(e, &runs[&run_of(e)]));
        assert_eq!(live, [log.len() as i64], "{filter}: only the sentinel matches");
        let next = stream.expect_event().await;
        assert_eq!(
            next.id,
            log.len() as i64,
            "{filter}: the next frame is the sentinel, nothing in between"
        );
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 7. The per-run stream.

async fn a_run_stream_replays_then_goes_live_and_closes_after_run_ended(s: TestServer) {
    let other = id_of(&s.create(json!({"task_name": "other"})).await);
    let run = id_of(&s.create(json!({"task_name": "watched"})).await);
    act(&s, &other, "start", json!({})).await;
    act(&s, &run, "start", json!({})).await;
    let mut stream = Sse::open(&s, &format!("/api/runs/{run}/stream"), None).await;
    let replay = stream.take(2).await;
    assert_eq!(ids(&replay), [2, 4]);
    assert_eq!(replay[0].event, "run.created");
    assert_eq!(replay[1].event, "run.started");
    let log = whole_log(&s).await;
    assert_eq!(replay[0].data, log[1]);
    assert_eq!(replay[1].data, log[3]);

    // Live, with other runs' events in between.
    act(&s, &other, "heartbeat", json!({})).await;
    act(&s, &run, "heartbeat", json!({})).await;
    ledger_create(&s, "noise", "default", "x").await;
    act(&s, &run, "pause", json!({})).await;
    let live = stream.take(2).await;
    assert_eq!(ids(&live), [6, 8]);
    assert_eq!(live[0].event, "run.heartbeat");
    assert_eq!(live[1].event, "run.paused");
    act(&s, &run, "resume", json!({})).await;
    end(&s, &other, "success", 0).await;
    end(&s, &run, "failed", 3).await;
    let rest = stream.take(2).await;
    assert_eq!(ids(&rest), [9, 11]);
    assert_eq!(rest[1].event, "run.ended");
    assert_eq!(rest[1].data["data"]["exit_code"], 3, "{}", rest[1].data);
    // The body ends right after run.ended (a dead-letter of the same append
    // would come before the close; this run has no max_attempts).
    stream.expect_end().await;

    // An ended run replays its whole story and closes.
    let mut again = Sse::open(&s, &format!("/api/runs/{run}/stream"), None).await;
    let story = again.take(6).await;
    assert_eq!(ids(&story), [2, 4, 6, 8, 9, 11]);
    again.expect_end().await;
    // `after` and `Last-Event-ID` resume inside the story.
    let mut resumed = Sse::open(&s, &format!("/api/runs/{run}/stream?after=6"), None).await;
    assert_eq!(ids(&resumed.take(3).await), [8, 9, 11]);
    resumed.expect_end().await;
    let mut resumed = Sse::open(&s, &format!("/api/runs/{run}/stream?after=0"), Some("8")).await;
    assert_eq!(ids(&resumed.take(2).await), [9, 11]);
    resumed.expect_end().await;
    let mut resumed = Sse::open(&s, &format!("/api/runs/{run}/stream"), Some("10")).await;
    assert_eq!(ids(&resumed.take(1).await), [11]);
    resumed.expect_end().await;
    s.stop().await;
}

async fn resuming_a_run_stream_at_or_after_its_end_closes_at_once(s: TestServer) {
    let run = s.run_through("t", json!({}), &["start", "end:success:0"]).await;
    let id = id_of(&run);
    s.create(json!({"task_name": "later"})).await;
    let ended_at = 3;
    for (query, header) in [
        ("", Some("3")),
        ("", Some("4")),
        ("", Some("1000")),
        ("?after=3", None),
        ("?after=99", None),
        ("?after=0", Some("3")),
        ("?follow=false", Some("3")),
    ] {
        let mut stream = Sse::open(&s, &format!("/api/runs/{id}/stream{query}"), header).await;
        stream.expect_end().await;
        let _ = ended_at;
    }
    // Just before the end: run.ended alone, then the close.
    let mut stream = Sse::open(&s, &format!("/api/runs/{id}/stream"), Some("2")).await;
    let frame = stream.expect_event().await;
    assert_eq!((frame.id, frame.event.as_str()), (ended_at, "run.ended"));
    stream.expect_end().await;
    s.stop().await;
}

async fn a_followed_run_stream_stays_open_after_run_ended(s: TestServer) {
    let source = s
        .run_through("t", json!({"max_attempts": 5}), &["start", "end:failed:1"])
        .await;
    let id = id_of(&source);
    let mut stream = Sse::open(&s, &format!("/api/runs/{id}/stream?follow=true"), None).await;
    let story = stream.take(3).await;
    assert_eq!(ids(&story), [1, 2, 3]);
    assert_eq!(story[2].event, "run.ended");
    // Still open: a retry appends run.retried to the source (and creates a
    // new run, which is not this run's event).
    let retry = s.post(&format!("/api/runs/{id}/retry"), json!({})).await;
    let new_id = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    let retried = stream.expect_event().await;
    assert_eq!(retried.event, "run.retried");
    assert_eq!(run_of(&retried.data), id);
    // The new run's events are not delivered; the next of this run is.
    act(&s, &new_id, "start", json!({})).await;
    s.delete(&format!("/api/runs/{id}"), json!({"reason": "cleanup"}))
        .await
        .ok(200);
    let deleted = stream.expect_event().await;
    assert_eq!(deleted.event, "run.deleted");
    assert_eq!(deleted.id, s.event_count().await);
    // Resuming at the end with follow=true stays open for what comes next.
    let mut resumed = Sse::open(&s, &format!("/api/runs/{id}/stream?follow=true"), Some("3")).await;
    let frames = resumed.take(2).await;
    assert_eq!(
        frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["run.retried", "run.deleted"]
    );
    act(&s, &id, "restore", json!({})).await;
    assert_eq!(resumed.expect_event().await.event, "run.restored");
    assert_eq!(stream.expect_event().await.event, "run.restored");
    // A followed run that has not ended passes its run.ended and goes on.
    let open = id_of(&s.create(json!({"task_name": "u", "max_attempts": 5})).await);
    let mut follow = Sse::open(&s, &format!("/api/runs/{open}/stream?follow=1"), None).await;
    assert_eq!(follow.expect_event().await.event, "run.created");
    act(&s, &open, "start", json!({})).await;
    end(&s, &open, "failed", 1).await;
    s.post(&format!("/api/runs/{open}/retry"), json!({})).await.ok(202);
    let frames = follow.take(3).await;
    assert_eq!(
        frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["run.started", "run.ended", "run.retried"]
    );
    drop((stream, resumed, follow));
    s.stop().await;
}

async fn a_run_stream_delivers_the_dead_letter_appended_with_its_end(s: TestServer) {
    let run = id_of(&s.run_through("t", json!({"max_attempts": 1}), &["start"]).await);
    let mut stream = Sse::open(&s, &format!("/api/runs/{run}/stream"), None).await;
    assert_eq!(
        stream
            .take(2)
            .await
            .iter()
            .map(|f| f.event.as_str())
            .collect::<Vec<_>>(),
        ["run.created", "run.started"]
    );
    end(&s, &run, "failed", 1).await;
    let last = stream.take(2).await;
    assert_eq!(
        last.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["run.ended", "run.dead_lettered"]
    );
    stream.expect_end().await;
    // Resuming right after run.ended still gets the dead-letter, then the end.
    let resume = last[0].id.to_string();
    let mut resumed = Sse::open(&s, &format!("/api/runs/{run}/stream"), Some(resume.as_str())).await;
    assert_eq!(resumed.expect_event().await.event, "run.dead_lettered");
    resumed.expect_end().await;
    s.stop().await;
}

async fn a_run_stream_filters_by_type(s: TestServer) {
    let run = s
        .run_through("t", json!({}), &["start", "heartbeat", "heartbeat", "pause", "resume"])
        .await;
    let id = id_of(&run);
    let mut stream = Sse::open(&s, &format!("/api/runs/{id}/stream?type=run.heartbeat,run.ended"), None).await;
    assert_eq!(ids(&stream.take(2).await), [3, 4]);
    act(&s, &id, "heartbeat", json!({})).await;
    assert_eq!(stream.expect_event().await.id, 7);
    end(&s, &id, "success", 0).await;
    let ended = stream.expect_event().await;
    assert_eq!((ended.id, ended.event.as_str()), (8, "run.ended"));
    stream.expect_end().await;
    s.stop().await;
}

/// The close after `run.ended` does not depend on the type filter: a stream
/// that only asks for other types still ends when the run does.
async fn a_filtered_run_stream_still_closes_when_the_run_ends(s: TestServer) {
    let ended = s.run_through("t", json!({}), &["start", "end:success:0"]).await;
    let id = id_of(&ended);
    let mut stream = Sse::open(&s, &format!("/api/runs/{id}/stream?type=run.created"), None).await;
    assert_eq!(stream.expect_event().await.id, 1);
    stream.expect_end().await;

    let live = id_of(&s.create(json!({"task_name": "t"})).await);
    let mut stream = Sse::open(&s, &format!("/api/runs/{live}/stream?type=run.started"), None).await;
    act(&s, &live, "start", json!({})).await;
    assert_eq!(stream.expect_event().await.event, "run.started");
    end(&s, &live, "success", 0).await;
    stream.expect_end().await;
    s.stop().await;
}

async fn run_stream_refusals(s: TestServer) {
    let id = id_of(&s.create(json!({"task_name": "t"})).await);
    let unknown = uuid::Uuid::now_v7();
    let reply = s.get(&format!("/api/runs/{unknown}/stream")).await;
    reply.problem(404, "run_not_found");
    let reply = s.get(&format!("/api/runs/{unknown}/stream?follow=true")).await;
    reply.problem(404, "run_not_found");
    s.get("/api/runs/not-a-uuid/stream").await.invalid_at("path.id");
    // The id is checked with the rest of the request.
    let reply = s.get("/api/runs/nope/stream?after=x").await;
    reply.invalid_at("path.id");
    reply.invalid_at("query.after");
    for (query, location) in [
        ("after=-1", "query.after"),
        ("after=z", "query.after"),
        ("follow=maybe", "query.follow"),
        ("type=run.nope", "query.type"),
        ("task_name=t", "query.task_name"),
        ("bogus=1", "query.bogus"),
    ] {
        s.get(&format!("/api/runs/{id}/stream?{query}"))
            .await
            .invalid_at(location);
    }
    for bad in ["abc", "-1", "", "1.5", "99999999999999999999"] {
        let reply = get_with_last_event_id(&s, &format!("/api/runs/{id}/stream"), bad).await;
        reply.invalid_at("header.Last-Event-ID");
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 8. Keep-alive.

async fn an_idle_stream_receives_keep_alive_comments(s: TestServer) {
    // A head stream opened on the empty log.
    let mut head = Sse::open(&s, "/api/events/stream", None).await;
    s.create(json!({"task_name": "t"})).await;
    let mut global = Sse::open(&s, "/api/events/stream?after=0", None).await;
    assert_eq!(global.expect_event().await.id, 1);
    let run = id_of(&s.create(json!({"task_name": "u"})).await);
    assert_eq!(global.expect_event().await.id, 2);
    assert_eq!(ids(&head.take(2).await), [1, 2]);
    let mut per_run = Sse::open(&s, &format!("/api/runs/{run}/stream"), None).await;
    assert_eq!(per_run.expect_event().await.id, 2);
    let mut resumed = Sse::open(&s, "/api/events/stream", Some("2")).await;
    // Nothing is appended from here on.
    for stream in [&mut global, &mut head, &mut per_run, &mut resumed] {
        let mut comments = Vec::new();
        while comments.len() < 2 {
            match stream.next_item().await {
                Some(Item::Comment(text)) => comments.push(text),
                Some(Item::Event(f)) => panic!("no event was appended, got {}", f.id),
                None => panic!("an idle stream ended"),
            }
        }
    }
    assert_eq!(s.event_count().await, 2);
    drop((global, head, per_run, resumed));
    s.stop().await;
}

fn fast_keep_alive() -> HttpConfig {
    HttpConfig {
        keep_alive: Duration::from_millis(200),
        ..HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_idle_stream_receives_keep_alive_comments() {
    an_idle_stream_receives_keep_alive_comments(TestServer::sqlite_with(fast_keep_alive()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_idle_stream_receives_keep_alive_comments() {
    if let Some(s) = TestServer::postgres_with("an_idle_stream_receives_keep_alive_comments", fast_keep_alive()).await {
        an_idle_stream_receives_keep_alive_comments(s).await;
    }
}

/// The request timeout bounds producing a response, not streaming it: a
/// stream open for several timeouts still delivers.
async fn a_stream_outlives_the_request_timeout(s: TestServer) {
    let run = id_of(&s.create(json!({"task_name": "t"})).await);
    let mut global = Sse::open(&s, "/api/events/stream?after=0", None).await;
    let mut per_run = Sse::open(&s, &format!("/api/runs/{run}/stream"), None).await;
    assert_eq!(global.expect_event().await.id, 1);
    assert_eq!(per_run.expect_event().await.id, 1);
    tokio::time::sleep(SHORT_TIMEOUT * 5).await;
    act(&s, &run, "start", json!({})).await;
    assert_eq!(global.expect_event().await.id, 2);
    assert_eq!(per_run.expect_event().await.id, 2);
    tokio::time::sleep(SHORT_TIMEOUT * 5).await;
    end(&s, &run, "success", 0).await;
    assert_eq!(global.expect_event().await.id, 3);
    assert_eq!(per_run.expect_event().await.event, "run.ended");
    per_run.expect_end().await;
    drop(global);
    s.stop().await;
}

const SHORT_TIMEOUT: Duration = Duration::from_millis(200);

fn short_request_timeout() -> HttpConfig {
    HttpConfig {
        request_timeout: SHORT_TIMEOUT,
        ..HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_stream_outlives_the_request_timeout() {
    a_stream_outlives_the_request_timeout(TestServer::sqlite_with(short_request_timeout()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stream_outlives_the_request_timeout() {
    if let Some(s) = TestServer::postgres_with("a_stream_outlives_the_request_timeout", short_request_timeout()).await {
        a_stream_outlives_the_request_timeout(s).await;
    }
}

// ---------------------------------------------------------------------------
// 9. Shutdown.

async fn shutdown_ends_every_open_stream(mut s: TestServer) {
    // A head stream opened on the empty log sees every event below.
    let head = Sse::open(&s, "/api/events/stream", None).await;
    let ended = s.run_through("done", json!({}), &["start", "end:success:0"]).await;
    let running = s.run_through("busy", json!({}), &["start"]).await;
    let (ended, running) = (id_of(&ended), id_of(&running));
    let mut streams = vec![
        ("replay", Sse::open(&s, "/api/events/stream?after=0", None).await, 5),
        ("head", head, 5),
        (
            "filtered",
            Sse::open(&s, "/api/events/stream?after=0&task_name=busy", None).await,
            2,
        ),
        (
            "followed",
            Sse::open(&s, &format!("/api/runs/{ended}/stream?follow=true"), None).await,
            3,
        ),
        (
            "running",
            Sse::open(&s, &format!("/api/runs/{running}/stream"), None).await,
            2,
        ),
        ("resumed", Sse::open(&s, "/api/events/stream", Some("5")).await, 0),
    ];
    // Every stream has sent what there is, and waits for more.
    for (name, stream, n) in &mut streams {
        assert_eq!(stream.take(*n).await.len(), *n, "{name}");
    }
    let done = tokio::time::timeout(Duration::from_secs(10), s.shutdown()).await;
    assert!(done.is_ok(), "shutdown did not return with streams open");
    for (name, stream, _) in &mut streams {
        let end = tokio::time::timeout(Duration::from_secs(10), stream.expect_end()).await;
        assert!(end.is_ok(), "{name}: the stream's body did not end on shutdown");
    }
    drop(streams);
    s.stop().await;
}

/// A client that stopped reading (its socket full) must not hold the server
/// up when it shuts down.
async fn shutdown_does_not_wait_for_a_client_that_stopped_reading(mut s: TestServer) {
    let _heavy = HEAVY.lock().await;
    s.create(json!({"task_name": "t"})).await;
    let mut stalled = Sse::open(&s, "/api/events/stream?after=0", None).await;
    assert_eq!(stalled.expect_event().await.id, 1);
    // Far more than socket buffers hold.
    append_creates(&s, 8, 2500, "t").await;
    // Generous: the server may give connections a grace period first.
    let done = tokio::time::timeout(PATIENCE, s.shutdown()).await;
    assert!(done.is_ok(), "shutdown hangs while a paused client has an open stream");
    drop(stalled);
    s.stop().await;
}

// ---------------------------------------------------------------------------
// 10. Refusals on the global stream.

async fn stream_refusals(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    for bad in ["abc", "-1", "", "1e3", "0x10", "99999999999999999999"] {
        let reply = get_with_last_event_id(&s, "/api/events/stream", bad).await;
        let body = reply.invalid_at("header.Last-Event-ID");
        assert_eq!(body["instance"], "/api/events/stream");
        // With a valid `after`, the bad header is still refused.
        let reply = get_with_last_event_id(&s, "/api/events/stream?after=0", bad).await;
        reply.invalid_at("header.Last-Event-ID");
    }
    for (query, location) in [
        ("after=-1", "query.after"),
        ("after=x", "query.after"),
        ("after=1&after=2", "query.after"),
        ("type=run.bogus", "query.type"),
        ("type=run.created,,run.ended", "query.type"),
        ("run_id=123", "query.run_id"),
        ("task_name=no%20spaces", "query.task_name"),
        ("limit=10", "query.limit"),
        ("follow=true", "query.follow"),
        ("bogus=1", "query.bogus"),
    ] {
        let reply = s.get(&format!("/api/events/stream?{query}")).await;
        reply.invalid_at(location);
    }
    // Header and query faults together.
    let reply = get_with_last_event_id(&s, "/api/events/stream?after=x&type=nope", "x").await;
    let body = reply.invalid_at("header.Last-Event-ID");
    let mut locations: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["location"].as_str().unwrap())
        .collect();
    locations.sort();
    assert_eq!(locations, ["header.Last-Event-ID", "query.after", "query.type"]);
    s.stop().await;
}

/// The largest `after` / `Last-Event-ID` is valid input: the stream waits
/// (there is nothing after it) instead of breaking.
async fn the_largest_position_is_a_quiet_stream(mut s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    let max = i64::MAX.to_string();
    // Opened repeatedly, so that some come after the node's tail has taken
    // in the new event (it does within milliseconds).
    let mut quiet = Vec::new();
    for _ in 0..10 {
        quiet.push(Sse::open(&s, &format!("/api/events/stream?after={max}"), None).await);
        quiet.push(Sse::open(&s, "/api/events/stream", Some(&max)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A sentinel stream proves the server moved on; the others stay open and
    // silent (a keep-alive comment at most) until shutdown ends them.
    let mut sentinel = Sse::open(&s, "/api/events/stream", Some("1")).await;
    s.create(json!({"task_name": "t"})).await;
    assert_eq!(sentinel.expect_event().await.id, 2);
    drop(sentinel);
    tokio::time::timeout(Duration::from_secs(10), s.shutdown())
        .await
        .expect("shutdown");
    for stream in &mut quiet {
        stream.expect_end().await;
    }
    drop(quiet);
    s.stop().await;
}

backend_tests!(
    the_log_lists_envelopes_in_position_order,
    every_log_filter_selects_exactly_its_events,
    sparse_filters_page_through_the_log_with_next_after,
    log_queries_refuse_invalid_parameters,
    the_largest_position_is_an_empty_page,
    the_log_shows_every_acknowledged_write,
    the_stream_replays_the_log_then_delivers_live_events,
    without_a_position_the_stream_starts_at_the_head,
    resuming_under_concurrent_writers_sees_every_event_once,
    last_event_id_wins_over_after,
    stream_filters_deliver_exactly_the_matching_events,
    a_run_stream_replays_then_goes_live_and_closes_after_run_ended,
    resuming_a_run_stream_at_or_after_its_end_closes_at_once,
    a_followed_run_stream_stays_open_after_run_ended,
    a_run_stream_filters_by_type,
    a_run_stream_delivers_the_dead_letter_appended_with_its_end,
    a_filtered_run_stream_still_closes_when_the_run_ends,
    run_stream_refusals,
    shutdown_ends_every_open_stream,
    shutdown_does_not_wait_for_a_client_that_stopped_reading,
    stream_refusals,
    the_largest_position_is_a_quiet_stream,
);

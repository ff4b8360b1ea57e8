//! LLM chunk streams through the real server, on both backends:
//! `POST /api/runs/{id}/chunks` and `GET /api/runs/{id}/stream/chunks` —
//! ordered delivery across requests, coalescing into `run.chunks` events,
//! resume by `Last-Event-ID` and `?after=`, replay with `after=0`, the close
//! after the run ends, and refusals that append nothing.
//!
//! Streams are read with a small Server-Sent Events parser; every read has a
//! generous timeout so that a hung stream fails instead of hanging. No test
//! asserts on timing: coalescing is made certain by the size trigger.

mod common;

use std::time::Duration;

use common::{SendChecked, TestServer};
use reqwest::Method;
use runledger::http::HttpConfig;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

/// One frame of a chunk stream.
#[derive(Debug, PartialEq)]
enum Frame {
    Chunk {
        id: i64,
        index: i64,
        chunk: String,
        position: i64,
    },
    End(Value),
}

struct ChunkStream {
    resp: reqwest::Response,
    buf: String,
    ended: bool,
}

impl ChunkStream {
    async fn open(s: &TestServer, run: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut req = s.client.get(s.url(&format!("/api/runs/{run}/stream/chunks{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::time::timeout(PATIENCE, req.send_checked())
            .await
            .expect("an answer")
            .expect("request");
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok());
        assert!(
            content_type.is_some_and(|c| c.starts_with("text/event-stream")),
            "{content_type:?}"
        );
        Self {
            resp,
            buf: String::new(),
            ended: false,
        }
    }

    /// The next frame (keep-alives skipped); `None` once the body ended cleanly.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                if let Some(frame) = parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            if self.ended {
                assert!(self.buf.trim().is_empty(), "ended inside a frame: {:?}", self.buf);
                return None;
            }
            match tokio::time::timeout(PATIENCE, self.resp.chunk()).await {
                Err(_) => panic!("nothing arrived on the chunk stream within {PATIENCE:?}"),
                Ok(Err(e)) => panic!("the stream broke instead of ending cleanly: {e}"),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
            }
        }
    }

    async fn chunks(&mut self, n: usize) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for _ in 0..n {
            match self.next().await {
                Some(Frame::Chunk {
                    id,
                    index,
                    chunk,
                    position,
                }) => {
                    assert_eq!(id, index, "the frame id is the chunk index");
                    assert!(position > 0);
                    out.push((index, chunk));
                }
                other => panic!("expected a chunk, got {other:?} after {out:?}"),
            }
        }
        out
    }

    /// The end frame, then the close.
    async fn expect_end(&mut self) -> Value {
        let end = match self.next().await {
            Some(Frame::End(end)) => end,
            other => panic!("expected the end frame, got {other:?}"),
        };
        assert_eq!(self.next().await, None, "the stream closes after its end frame");
        end
    }
}

/// Parses one SSE block; `None` for a comment (keep-alive).
fn parse(block: &str) -> Option<Frame> {
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => id = Some(value.parse::<i64>().expect("a chunk index")),
            "event" => event = Some(value),
            "data" => {
                assert!(data.is_none(), "one data line per frame: {block:?}");
                data = Some(serde_json::from_str::<Value>(&value).expect("JSON data"));
            }
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    let data = data?;
    match event.as_deref() {
        Some("chunk") => Some(Frame::Chunk {
            id: id.expect("a chunk frame has an id"),
            index: data["index"].as_i64().unwrap(),
            chunk: data["chunk"].as_str().unwrap().to_owned(),
            position: data["position"].as_i64().unwrap(),
        }),
        Some("end") => {
            assert!(id.is_none(), "the end frame has no id: {block:?}");
            Some(Frame::End(data))
        }
        other => panic!("unexpected event {other:?}: {block:?}"),
    }
}

async fn running_run(s: &TestServer) -> String {
    let run = s.run_through("llm-answer", json!({}), &["start"]).await;
    run["id"].as_str().unwrap().to_owned()
}

async fn post_chunks(s: &TestServer, run: &str, chunks: &[&str]) -> Value {
    s.post(&format!("/api/runs/{run}/chunks"), json!({ "chunks": chunks }))
        .await
        .ok(200)
        .clone()
}

async fn chunk_events(s: &TestServer, run: &str) -> Vec<Value> {
    let events = s.get(&format!("/api/runs/{run}/events?type=run.chunks")).await;
    events.ok(200)["events"].as_array().unwrap().clone()
}

fn texts(chunks: &[(i64, String)]) -> Vec<&str> {
    chunks.iter().map(|(_, c)| c.as_str()).collect()
}

async fn chunks_arrive_in_order_across_requests_and_the_stream_closes_after_the_end(s: TestServer) {
    let run = running_run(&s).await;
    // Opened before any chunk: live from the start.
    let mut stream = ChunkStream::open(&s, &run, "?after=0", None).await;
    // Another run streams at the same time: none of its chunks show here.
    let other = running_run(&s).await;
    let posts: [&[&str]; 3] = [&["Hel", "lo"], &[", "], &["wor", "ld", "!\n"]];
    let mut expected_first = 1;
    for chunks in posts {
        post_chunks(&s, &other, &["noise"]).await;
        let answer = post_chunks(&s, &run, chunks).await;
        assert_eq!(answer["run_id"], run.as_str());
        assert_eq!(answer["first_index"], expected_first, "{answer}");
        assert_eq!(answer["last_index"], expected_first + chunks.len() as i64 - 1);
        assert!(answer["position"].as_i64().unwrap() > 0);
        expected_first += chunks.len() as i64;
    }
    let got = stream.chunks(6).await;
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(texts(&got).concat(), "Hello, world!\n");
    let state = s.get(&format!("/api/runs/{run}")).await;
    assert_eq!(state.ok(200)["chunks"], 6);

    // A retried POST with the same Idempotency-Key is answered again, and
    // appends nothing.
    let keyed = || {
        s.client
            .post(s.url(&format!("/api/runs/{run}/chunks")))
            .header("Idempotency-Key", "chunk-batch-7")
            .json(&json!({"chunks": ["?"]}))
    };
    let first = TestServer::reply(keyed().send_checked().await.unwrap()).await;
    let events = s.event_count().await;
    let again = TestServer::reply(keyed().send_checked().await.unwrap()).await;
    assert_eq!(again.ok(200), first.ok(200));
    assert_eq!(first.body["first_index"], 7);
    assert_eq!(s.event_count().await, events);
    assert_eq!(stream.chunks(1).await, [(7, "?".into())]);

    s.post(&format!("/api/runs/{run}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    let end = stream.expect_end().await;
    assert_eq!(end, json!({"run_id": run, "chunks": 7, "end_reason": "success"}));

    // The chunks are durable: each event holds its first index and chunks in order.
    let events = chunk_events(&s, &run).await;
    let mut index = 1;
    for event in &events {
        assert_eq!(event["data"]["first_index"], index, "{event}");
        index += event["data"]["chunks"].as_array().unwrap().len() as i64;
        assert_eq!(event["metadata"]["actor"], "anonymous");
    }
    assert_eq!(index, 8);
    s.stop().await;
}

async fn a_stream_resumes_by_last_event_id_and_after_and_replays_from_zero(s: TestServer) {
    let run = running_run(&s).await;
    for chunk in ["a", "b", "c", "d", "e"] {
        post_chunks(&s, &run, &[chunk]).await;
    }
    let mut after = ChunkStream::open(&s, &run, "?after=2", None).await;
    assert_eq!(
        after.chunks(3).await,
        [(3, "c".into()), (4, "d".into()), (5, "e".into())]
    );
    let mut resumed = ChunkStream::open(&s, &run, "", Some("4")).await;
    assert_eq!(resumed.chunks(1).await, [(5, "e".into())]);
    // Last-Event-ID wins over after, as on every stream.
    let mut both = ChunkStream::open(&s, &run, "?after=1", Some("3")).await;
    assert_eq!(both.chunks(2).await, [(4, "d".into()), (5, "e".into())]);
    // Without either: live only, from after the last chunk so far.
    let mut live = ChunkStream::open(&s, &run, "", None).await;
    post_chunks(&s, &run, &["f"]).await;
    assert_eq!(live.chunks(1).await, [(6, "f".into())]);
    for stream in [&mut after, &mut resumed, &mut both] {
        assert_eq!(stream.chunks(1).await, [(6, "f".into())], "every stream goes on live");
    }

    s.post(
        &format!("/api/runs/{run}/end"),
        json!({"end_reason": "failed", "exit_code": 1}),
    )
    .await
    .ok(200);
    for stream in [&mut after, &mut resumed, &mut both, &mut live] {
        assert_eq!(stream.expect_end().await["end_reason"], "failed");
    }
    // A finished run: after=0 replays everything, then the end, then the close.
    let mut replay = ChunkStream::open(&s, &run, "?after=0", None).await;
    assert_eq!(texts(&replay.chunks(6).await), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(replay.expect_end().await["chunks"], 6);
    // Resuming at its last chunk: only the end is left to say.
    let mut done = ChunkStream::open(&s, &run, "", Some("6")).await;
    assert_eq!(done.expect_end().await["chunks"], 6);
    s.stop().await;
}

/// Coalescing, made certain: the window is far longer than the test, so an
/// append goes only when `flush_bytes` of chunks wait.
fn size_triggered() -> HttpConfig {
    HttpConfig {
        chunk_window: Duration::from_secs(3600),
        chunk_flush_bytes: 20,
        ..HttpConfig::default()
    }
}

async fn concurrent_posts_are_coalesced_into_one_event_in_order(s: TestServer) {
    let run = running_run(&s).await;
    let before = chunk_events(&s, &run).await.len();
    assert_eq!(before, 0);
    // Twenty requests of one byte each: they all wait until the twentieth.
    let posts = (0..20).map(|i| {
        let s = &s;
        let run = run.clone();
        async move {
            let chunk = char::from(b'a' + i as u8).to_string();
            let answer = post_chunks(s, &run, &[&chunk]).await;
            (answer, chunk)
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let events = chunk_events(&s, &run).await;
    assert_eq!(events.len(), 1, "twenty requests, one ledger event: {events:?}");
    let stored: Vec<&str> = events[0]["data"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(events[0]["data"]["first_index"], 1);
    let mut indexes = Vec::new();
    for (answer, chunk) in &answers {
        let index = answer["first_index"].as_i64().unwrap();
        assert_eq!(answer["last_index"], index);
        assert_eq!(answer["position"], events[0]["position"], "all in the same event");
        assert_eq!(
            stored[index as usize - 1],
            chunk,
            "each request's chunk is at its index"
        );
        indexes.push(index);
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (1..=20).collect::<Vec<_>>());

    // A stream resumed in the middle of the event starts after its id.
    s.post(&format!("/api/runs/{run}/cancel"), json!({})).await.ok(200);
    let mut stream = ChunkStream::open(&s, &run, "?after=17", None).await;
    let rest = stream.chunks(3).await;
    assert_eq!(rest.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [18, 19, 20]);
    assert_eq!(texts(&rest), &stored[17..]);
    assert_eq!(stream.expect_end().await["end_reason"], "stopped");
    s.stop().await;
}

async fn invalid_chunks_are_refused_at_their_location_and_append_nothing(s: TestServer) {
    let run = running_run(&s).await;
    let path = format!("/api/runs/{run}/chunks");
    let before = s.event_count().await;
    let big = "x".repeat(16 * 1024 + 1);
    let fifteen_k = "y".repeat(15 * 1024);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"chunks": []}), "body.chunks"),
        (json!({"chunks": vec!["t"; 257]}), "body.chunks"),
        (json!({"chunks": ["ok", big]}), "body.chunks.1"),
        (json!({"chunks": vec![fifteen_k.as_str(); 5]}), "body.chunks"),
        (json!({"chunks": ["a\u{0000}b"]}), "body.chunks.0"),
        (json!({"chunks": ["a", 7]}), "body.chunks[1]"),
        (json!({}), "body.chunks"),
        (json!({"chunks": ["a"], "extra": 1}), "body.extra"),
    ];
    for (body, location) in cases {
        let reply = s.post(&path, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.body);
        let locations: Vec<&str> = reply.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["location"].as_str())
            .collect();
        assert!(
            locations.contains(&location),
            "{body}: expected a fault at {location}, got {locations:?}"
        );
    }
    s.post("/api/runs/not-a-uuid/chunks", json!({"chunks": ["a"]}))
        .await
        .invalid_at("path.id");
    let unknown = "0190b6a0-0000-7000-8000-000000000000";
    s.post(&format!("/api/runs/{unknown}/chunks"), json!({"chunks": ["a"]}))
        .await
        .problem(404, "run_not_found");
    let malformed = s
        .send_raw(Method::POST, &path, "application/json", "{\"chunks\": [")
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(s.event_count().await, before, "nothing was appended");

    // An ended run takes no more chunks: 409, naming its status.
    post_chunks(&s, &run, &["last"]).await;
    s.post(&format!("/api/runs/{run}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    let ended = s.event_count().await;
    let refused = s.post(&path, json!({"chunks": ["late"]})).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body["detail"].as_str().unwrap().contains("ended"),
        "{}",
        refused.body
    );
    assert_eq!(s.event_count().await, ended);

    // The stream's own parameters.
    let stream = format!("/api/runs/{run}/stream/chunks");
    s.get(&format!("{stream}?after=-1")).await.invalid_at("query.after");
    s.get(&format!("{stream}?position=1"))
        .await
        .invalid_at("query.position");
    let bad_id = s
        .client
        .get(s.url(&stream))
        .header("Last-Event-ID", "x")
        .send_checked()
        .await
        .unwrap();
    TestServer::reply(bad_id).await.invalid_at("header.Last-Event-ID");
    s.get(&format!("/api/runs/{unknown}/stream/chunks"))
        .await
        .problem(404, "run_not_found");
    s.get("/api/runs/nope/stream/chunks").await.invalid_at("path.id");
    s.stop().await;
}

mod sqlite_coalescing {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_posts_are_coalesced_into_one_event_in_order() {
        super::concurrent_posts_are_coalesced_into_one_event_in_order(TestServer::sqlite_with(size_triggered()).await)
            .await
    }
}

mod postgres_coalescing {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_posts_are_coalesced_into_one_event_in_order() {
        let name = "concurrent_posts_are_coalesced_into_one_event_in_order";
        if let Some(s) = TestServer::postgres_with(name, size_triggered()).await {
            super::concurrent_posts_are_coalesced_into_one_event_in_order(s).await
        }
    }
}

backend_tests!(
    chunks_arrive_in_order_across_requests_and_the_stream_closes_after_the_end,
    a_stream_resumes_by_last_event_id_and_after_and_replays_from_zero,
    invalid_chunks_are_refused_at_their_location_and_append_nothing,
);

//! `Idempotency-Key` on POSTs and `DELETE /api/runs/{id}/idempotency-key`,
//! through the real server, on both backends.

mod common;

use common::SendChecked;

use std::time::Duration;

use common::{Reply, TestServer};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use runledger::auth::Scope;
use runledger::http::HttpConfig;
use serde_json::{json, Value};

/// A response kept byte for byte.
struct Raw {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON body")
    }

    fn reply(&self) -> Reply {
        Reply {
            status: self.status,
            content_type: self.header("content-type").unwrap_or_default().to_owned(),
            headers: self.headers.clone(),
            body: self.json(),
        }
    }

    /// Asserts that `replay` is this response again, marked as a replay.
    #[track_caller]
    fn assert_replayed_by(&self, replay: &Raw) {
        assert!(!self.replayed(), "the first response is not a replay");
        assert!(replay.replayed(), "the second response is a replay");
        assert_eq!(replay.status, self.status);
        assert_eq!(replay.bytes, self.bytes, "byte for byte");
        for name in ["content-type", "location"] {
            assert_eq!(replay.header(name), self.header(name), "{name}");
        }
    }
}

async fn send_keyed(
    s: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    key: Option<HeaderValue>,
    body: &str,
) -> Raw {
    let mut req = s
        .client
        .request(method, s.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send_checked().await.expect("request");
    Raw {
        status: resp.status(),
        headers: resp.headers().clone(),
        bytes: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn post_keyed(s: &TestServer, path: &str, key: &str, body: &str) -> Raw {
    send_keyed(
        s,
        None,
        Method::POST,
        path,
        Some(HeaderValue::from_str(key).unwrap()),
        body,
    )
    .await
}

async fn run_total(s: &TestServer) -> u64 {
    s.get("/api/runs?include_deleted=true").await.ok(200)["total"]
        .as_u64()
        .expect("total")
}

async fn replays_the_first_response_without_appending(s: TestServer) {
    let created = post_keyed(&s, "/api/runs", "create-1", r#"{"task_name":"etl"}"#).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("location"), Some(format!("/api/runs/{id}").as_str()));
    let events = s.event_count().await;
    let again = post_keyed(&s, "/api/runs", "create-1", r#"{"task_name":"etl"}"#).await;
    created.assert_replayed_by(&again);
    assert_eq!(s.event_count().await, events);
    assert_eq!(run_total(&s).await, 1);

    // A transition: run again, it would be refused (the run has started).
    let start = format!("/api/runs/{id}/start");
    let started = post_keyed(&s, &start, "start-1", "{}").await;
    assert_eq!(started.status, StatusCode::OK);
    let events = s.event_count().await;
    let again = post_keyed(&s, &start, "start-1", "{}").await;
    started.assert_replayed_by(&again);
    assert_eq!(s.event_count().await, events);

    // A retry (202 with the new run's Location).
    s.post(&format!("/api/runs/{id}/end"), json!({"end_reason": "failed"}))
        .await
        .ok(200);
    let retry = format!("/api/runs/{id}/retry");
    let retried = post_keyed(&s, &retry, "retry-1", r#"{"reason":"flaky"}"#).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    assert!(retried.header("location").is_some());
    let events = s.event_count().await;
    let again = post_keyed(&s, &retry, "retry-1", r#"{"reason":"flaky"}"#).await;
    retried.assert_replayed_by(&again);
    assert_eq!(s.event_count().await, events);
    assert_eq!(run_total(&s).await, 2);

    // Without a key, nothing is remembered.
    let plain = send_keyed(&s, None, Method::POST, "/api/runs", None, r#"{"task_name":"etl"}"#).await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert!(!plain.replayed());
    assert_eq!(run_total(&s).await, 3);
    s.stop().await;
}

async fn a_key_reused_for_another_request_is_refused(s: TestServer) {
    let first = post_keyed(&s, "/api/runs", "k", r#"{"task_name":"etl"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let events = s.event_count().await;

    let other_body = post_keyed(&s, "/api/runs", "k", r#"{"task_name":"other"}"#).await;
    let problem = other_body.reply();
    problem.problem(422, "idempotency_key_reused");
    assert_eq!(problem.body["errors"][0]["location"], "header.Idempotency-Key");
    let other_path = post_keyed(&s, &format!("/api/runs/{id}/start"), "k", r#"{"task_name":"etl"}"#).await;
    other_path.reply().problem(422, "idempotency_key_reused");
    assert_eq!(s.event_count().await, events);
    assert_eq!(run_total(&s).await, 1);

    // The stored response is still there for the original request.
    first.assert_replayed_by(&post_keyed(&s, "/api/runs", "k", r#"{"task_name":"etl"}"#).await);
    s.stop().await;
}

async fn keys_belong_to_their_caller(s: TestServer) {
    let alice = s
        .ledger
        .create_token("alice", &[Scope::RunsWrite])
        .await
        .expect("token");
    let bob = s.ledger.create_token("bob", &[Scope::RunsWrite]).await.expect("token");
    let key = || Some(HeaderValue::from_static("shared-key"));
    let body = r#"{"task_name":"etl"}"#;
    let by_alice = send_keyed(&s, Some(&alice), Method::POST, "/api/runs", key(), body).await;
    let by_bob = send_keyed(&s, Some(&bob), Method::POST, "/api/runs", key(), body).await;
    assert_eq!(by_alice.status, StatusCode::CREATED);
    assert_eq!(by_bob.status, StatusCode::CREATED, "bob does not see alice's response");
    assert!(!by_bob.replayed());
    assert_ne!(by_alice.json()["id"], by_bob.json()["id"]);
    let events = s.event_count().await;
    by_alice.assert_replayed_by(&send_keyed(&s, Some(&alice), Method::POST, "/api/runs", key(), body).await);
    by_bob.assert_replayed_by(&send_keyed(&s, Some(&bob), Method::POST, "/api/runs", key(), body).await);
    assert_eq!(s.event_count().await, events);
    s.stop().await;
}

async fn refused_requests_are_stored_and_replayed(s: TestServer) {
    let invalid = post_keyed(&s, "/api/runs", "bad-body", r#"{"task_name":"no spaces allowed"}"#).await;
    invalid.reply().invalid_at("body.task_name");
    invalid.assert_replayed_by(&post_keyed(&s, "/api/runs", "bad-body", r#"{"task_name":"no spaces allowed"}"#).await);

    let unknown = "/api/runs/0195f2a0-0000-7000-8000-000000000000/start";
    let missing = post_keyed(&s, unknown, "missing-run", "{}").await;
    missing.reply().problem(404, "run_not_found");
    missing.assert_replayed_by(&post_keyed(&s, unknown, "missing-run", "{}").await);
    assert_eq!(s.event_count().await, 0);
    s.stop().await;
}

async fn invalid_keys_are_refused(s: TestServer) {
    let long = "k".repeat(256);
    let values = [
        HeaderValue::from_static(""),
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_static("two words"),
        HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    ];
    for value in values {
        let reply = send_keyed(
            &s,
            None,
            Method::POST,
            "/api/runs",
            Some(value.clone()),
            r#"{"task_name":"etl"}"#,
        )
        .await;
        reply.reply().invalid_at("header.Idempotency-Key");
    }
    assert_eq!(s.event_count().await, 0);
    // 255 visible characters are a key.
    let longest = "k".repeat(255);
    assert_eq!(
        post_keyed(&s, "/api/runs", &longest, r#"{"task_name":"etl"}"#)
            .await
            .status,
        StatusCode::CREATED
    );
    s.stop().await;
}

async fn concurrent_requests_with_one_key_execute_once(s: TestServer) {
    let events = s.event_count().await;
    let s = std::sync::Arc::new(s);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { post_keyed(&s, "/api/runs", "race", r#"{"task_name":"etl"}"#).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    let executed: Vec<&Raw> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED && !r.replayed())
        .collect();
    assert_eq!(executed.len(), 1, "exactly one request runs");
    for reply in &replies {
        if reply.status == StatusCode::CONFLICT {
            reply.reply().problem(409, "idempotency_key_in_progress");
        } else if reply.replayed() {
            executed[0].assert_replayed_by(reply);
        }
    }
    // One create is one event.
    assert_eq!(s.event_count().await, events + 1);
    assert_eq!(run_total(&s).await, 1);
    match std::sync::Arc::try_unwrap(s) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("the server is still shared"),
    }
}

async fn reset_frees_the_key_of_a_run(s: TestServer) {
    let body = json!({"task_name": "nightly", "idempotency_key": "nightly-2026-11-23"});
    let run = s.create(body.clone()).await;
    let id = run["id"].as_str().unwrap().to_owned();
    // The body field still works: an unfinished holder is returned.
    assert_eq!(s.post("/api/runs", body.clone()).await.ok(200)["id"], run["id"]);

    let events = s.event_count().await;
    let path = format!("/api/runs/{id}/idempotency-key");
    let reset = s.delete(&path, json!({})).await;
    let reset = reset.ok(200);
    assert_eq!(reset["id"], run["id"]);
    assert_eq!(reset["idempotency_key"], Value::Null);
    assert_eq!(s.event_count().await, events + 1);
    let types = s.get(&format!("/api/runs/{id}/events")).await;
    let types: Vec<&str> = types.ok(200)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types.last(), Some(&"run.idempotency_key_reset"));

    let fresh = s.create(body).await;
    assert_ne!(fresh["id"], run["id"], "a create with the freed key makes a new run");

    let events = s.event_count().await;
    s.delete(&path, json!({})).await.problem(409, "illegal_transition");
    let unkeyed = s.create(json!({"task_name": "nightly"})).await;
    let events = events + 1;
    s.delete(
        &format!("/api/runs/{}/idempotency-key", unkeyed["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .problem(409, "illegal_transition");
    s.delete(
        "/api/runs/0195f2a0-0000-7000-8000-000000000000/idempotency-key",
        json!({}),
    )
    .await
    .problem(404, "run_not_found");
    s.delete("/api/runs/not-a-uuid/idempotency-key", json!({}))
        .await
        .invalid_at("path.id");
    assert_eq!(s.event_count().await, events);
    s.stop().await;
}

backend_tests!(
    replays_the_first_response_without_appending,
    a_key_reused_for_another_request_is_refused,
    keys_belong_to_their_caller,
    refused_requests_are_stored_and_replayed,
    invalid_keys_are_refused,
    concurrent_requests_with_one_key_execute_once,
    reset_frees_the_key_of_a_run,
);

/// With a one-second time-to-live: a key used after it has expired runs
/// anew, and expired keys of any caller are purged when a new key is taken.
async fn expired_keys_run_anew(s: TestServer) {
    let body = r#"{"task_name":"etl"}"#;
    let first = post_keyed(&s, "/api/runs", "short-lived", body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let events = s.event_count().await;
    let later = post_keyed(&s, "/api/runs", "short-lived", body).await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(!later.replayed());
    assert_ne!(later.json()["id"], first.json()["id"]);
    assert_eq!(s.event_count().await, events + 1);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        post_keyed(&s, "/api/runs", "another", body).await.status,
        StatusCode::CREATED
    );
    let left = s
        .query_i64("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'short-lived'")
        .await;
    assert_eq!(left, 0, "the expired key was purged");
    s.stop().await;
}

fn short_ttl() -> HttpConfig {
    HttpConfig {
        idempotency_ttl: Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_expired_keys_run_anew() {
    expired_keys_run_anew(TestServer::sqlite_with(short_ttl()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_expired_keys_run_anew() {
    if let Some(s) = TestServer::postgres_with("expired_keys_run_anew", short_ttl()).await {
        expired_keys_run_anew(s).await;
    }
}

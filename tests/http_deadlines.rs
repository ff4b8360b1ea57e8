//! Deadlines the ledger enforces by itself, through the real server: a
//! timeout, an expiry, a missed heartbeat — each an ordinary `run.ended` by
//! the actor `system`, dead-lettering as any end does, shown beforehand as
//! the run's `deadline_at`, and caught up by a server that was down when it
//! passed.

mod common;

use std::time::{Duration, Instant};

use common::{Node, TestServer};
use runledger_events::Timestamp;
use serde_json::{json, Value};

/// Longest a test waits for the enforcer; a deadline is 1–2 s away.
const PATIENCE: Duration = Duration::from_secs(20);

fn time(value: &Value) -> Timestamp {
    Timestamp::parse(value.as_str().unwrap_or_else(|| panic!("not a time: {value}"))).unwrap()
}

/// `secs` from now, as RFC 3339.
fn in_secs(secs: i64) -> String {
    Timestamp::now().plus_secs(secs).unwrap().to_rfc3339()
}

/// Polls the run until it has ended; returns it.
async fn ended(s: &TestServer, id: &str) -> Value {
    let waited = Instant::now();
    loop {
        let run = s.get(&format!("/api/runs/{id}")).await.ok(200).clone();
        if run["status"] == "ended" {
            return run;
        }
        assert!(waited.elapsed() < PATIENCE, "run {id} never ended: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(s: &TestServer, id: &str) -> Vec<Value> {
    s.get(&format!("/api/runs/{id}/events")).await.ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The run's `run.ended` event; there must be exactly one.
fn the_end(events: &[Value]) -> &Value {
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "run.ended").collect();
    assert_eq!(ends.len(), 1, "{:?}", types(events));
    ends[0]
}

async fn a_running_run_past_its_timeout_ends_timeout_by_the_system(s: TestServer) {
    let run = s.create(json!({"task_name": "slow", "timeout_secs": 1})).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["deadline_at"], Value::Null, "a pending run has no timeout yet");
    let started = s
        .post(&format!("/api/runs/{id}/start"), json!({}))
        .await
        .ok(200)
        .clone();
    assert_eq!(started["deadline_reason"], "timeout");
    assert_eq!(
        time(&started["deadline_at"]),
        time(&started["start_at"]).plus_secs(1).unwrap()
    );
    let run = ended(&s, id).await;
    assert_eq!(run["end_reason"], "timeout");
    assert_eq!(run["deadline_at"], Value::Null);
    assert_eq!(run["dead_lettered"], false, "no max_attempts: never dead-lettered");
    let events = events(&s, id).await;
    assert_eq!(types(&events), ["run.created", "run.started", "run.ended"]);
    let end = the_end(&events);
    assert_eq!(end["metadata"]["actor"], "system");
    assert_eq!(end["data"]["end_reason"], "timeout");
    assert!(
        time(&end["recorded_at"]) >= time(&started["deadline_at"]),
        "never early"
    );
    // An ordinary event: in the global log and the audit trail by actor.
    let audit = s.get(&format!("/api/events?run_id={id}&actor=system")).await;
    assert_eq!(audit.ok(200)["events"].as_array().unwrap().len(), 1, "{}", audit.body);
    s.stop().await;
}

async fn a_pending_run_past_expires_at_ends_expired_and_a_started_one_is_unaffected(s: TestServer) {
    let expires_at = in_secs(1);
    let waiting = s.create(json!({"task_name": "queued", "expires_at": expires_at})).await;
    let taken = s.create(json!({"task_name": "queued", "expires_at": expires_at})).await;
    assert_eq!(time(&waiting["deadline_at"]), Timestamp::parse(&expires_at).unwrap());
    assert_eq!(waiting["deadline_reason"], "expired");
    assert_eq!(time(&waiting["expires_at"]), Timestamp::parse(&expires_at).unwrap());
    let (waiting, taken) = (waiting["id"].as_str().unwrap(), taken["id"].as_str().unwrap());
    let started = s.post(&format!("/api/runs/{taken}/start"), json!({})).await;
    assert_eq!(
        started.ok(200)["deadline_at"],
        Value::Null,
        "started: the expiry no longer applies"
    );

    let run = ended(&s, waiting).await;
    assert_eq!(run["end_reason"], "expired");
    assert_eq!(run["dead_lettered"], false, "an expiry is not a failure");
    let log = events(&s, waiting).await;
    assert_eq!(the_end(&log)["metadata"]["actor"], "system");
    assert!(time(&the_end(&log)["recorded_at"]) >= Timestamp::parse(&expires_at).unwrap());

    // The expiry has passed for both, and the enforcer has swept: the
    // started run is untouched.
    let taken_run = s.get(&format!("/api/runs/{taken}")).await.ok(200).clone();
    assert_eq!(taken_run["status"], "running");
    assert_eq!(types(&events(&s, taken).await), ["run.created", "run.started"]);
    // An expiry already past at creation expires at the next sweep.
    let late = s
        .create(json!({"task_name": "queued", "expires_at": in_secs(-60)}))
        .await;
    assert_eq!(ended(&s, late["id"].as_str().unwrap()).await["end_reason"], "expired");
    s.stop().await;
}

async fn a_silent_run_ends_crashed_after_its_heartbeat_timeout_and_a_heartbeat_postpones_it(s: TestServer) {
    let run = s
        .create(json!({"task_name": "worker", "heartbeat_timeout_secs": 1, "timeout_secs": 3600}))
        .await;
    let id = run["id"].as_str().unwrap();
    let started = s
        .post(&format!("/api/runs/{id}/start"), json!({}))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        started["deadline_reason"], "crashed",
        "the heartbeat deadline comes first"
    );
    let first = time(&started["deadline_at"]);
    assert_eq!(first, time(&started["start_at"]).plus_secs(1).unwrap());
    let beat = s.post(&format!("/api/runs/{id}/heartbeat"), json!({})).await;
    let beat = beat.ok(200);
    let postponed = time(&beat["deadline_at"]);
    assert_eq!(postponed, time(&beat["heartbeat_at"]).plus_secs(1).unwrap());
    assert!(postponed > first, "a heartbeat moves the deadline");

    let run = ended(&s, id).await;
    assert_eq!(run["end_reason"], "crashed");
    let events = events(&s, id).await;
    assert_eq!(
        types(&events),
        ["run.created", "run.started", "run.heartbeat", "run.ended"]
    );
    let end = the_end(&events);
    assert_eq!(end["metadata"]["actor"], "system");
    assert!(
        time(&end["recorded_at"]) >= postponed,
        "ended by the postponed deadline, not the first"
    );
    assert!(end["data"]["error"].as_str().unwrap().contains("heartbeat"), "{end}");
    s.stop().await;
}

async fn a_deadline_end_on_the_last_attempt_dead_letters_the_run(s: TestServer) {
    let run = s
        .create(json!({"task_name": "flaky", "timeout_secs": 1, "max_attempts": 2}))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{id}/start"), json!({})).await.ok(200);
    let first = ended(&s, &id).await;
    assert_eq!(
        (first["end_reason"].as_str(), first["dead_lettered"].as_bool()),
        (Some("timeout"), Some(false))
    );
    // The retry keeps the task's timeout (and heartbeat timeout): its
    // second attempt is the last.
    let retry = s.post(&format!("/api/runs/{id}/retry"), json!({})).await;
    let retry_id = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    let second = s.post(&format!("/api/runs/{retry_id}/start"), json!({})).await;
    assert_eq!(second.ok(200)["timeout_secs"], 1);
    let second = ended(&s, &retry_id).await;
    assert_eq!(second["end_reason"], "timeout");
    assert_eq!(second["dead_lettered"], true);
    let events = events(&s, &retry_id).await;
    assert_eq!(
        types(&events)[2..],
        ["run.ended", "run.dead_lettered"],
        "dead-lettered in the same append"
    );
    assert!(events[2..].iter().all(|e| e["metadata"]["actor"] == "system"));
    let dlq = s.get("/api/runs/dlq").await;
    assert_eq!(common::ids(dlq.ok(200)), [retry_id]);
    s.stop().await;
}

async fn deadline_at_is_on_every_read_and_travels_in_time(s: TestServer) {
    let expires_at = in_secs(3600);
    let run = s
        .create(json!({"task_name": "shown", "expires_at": expires_at, "timeout_secs": 7200}))
        .await;
    let id = run["id"].as_str().unwrap();
    let created_at = run["position"].as_i64().unwrap();
    let started = s
        .post(&format!("/api/runs/{id}/start"), json!({}))
        .await
        .ok(200)
        .clone();
    let timeout_at = time(&started["start_at"]).plus_secs(7200).unwrap();
    assert_eq!(time(&started["deadline_at"]), timeout_at);
    let list = s.get("/api/runs?task_name=shown").await;
    assert_eq!(time(&list.ok(200)["runs"][0]["deadline_at"]), timeout_at);
    let then = s.get(&format!("/api/runs/{id}?as_of={created_at}")).await;
    let then = then.ok(200);
    assert_eq!(time(&then["deadline_at"]), Timestamp::parse(&expires_at).unwrap());
    assert_eq!(then["deadline_reason"], "expired");
    let history = s.get(&format!("/api/runs/{id}/history")).await;
    let reasons: Vec<&Value> = history.ok(200)["history"]
        .as_array()
        .map(|h| h.iter().map(|v| &v["state"]["deadline_reason"]).collect())
        .unwrap_or_default();
    assert_eq!(reasons, [&json!("expired"), &json!("timeout")], "{}", history.body);
    s.stop().await;
}

async fn deadline_fields_are_validated_before_anything_is_appended(s: TestServer) {
    let before = s.event_count().await;
    for (body, location) in [
        (json!({"expires_at": "tomorrow"}), "body.expires_at"),
        (json!({"expires_at": 1_700_000_000}), "body.expires_at"),
        (json!({"heartbeat_timeout_secs": 0}), "body.heartbeat_timeout_secs"),
        (
            json!({"heartbeat_timeout_secs": 31_622_401}),
            "body.heartbeat_timeout_secs",
        ),
        (json!({"heartbeat_timeout_secs": 1.5}), "body.heartbeat_timeout_secs"),
        (json!({"heartbeat_timeout_secs": "5"}), "body.heartbeat_timeout_secs"),
    ] {
        let mut body = body;
        body["task_name"] = json!("checked");
        s.post("/api/runs", body).await.invalid_at(location);
    }
    assert_eq!(s.event_count().await, before, "a refused create appends nothing");
    s.stop().await;
}

/// The guard itself: attempts at the same deadline from the same version
/// (as two nodes make them, racing the server's own enforcer here) append
/// one end; every other is a version conflict.
async fn attempts_at_one_deadline_from_one_version_append_one_end(s: TestServer) {
    use runledger::commands::{Action, Command, CommandError, RunCommand};
    use runledger::ledger::LedgerError;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let run = s.create(json!({"task_name": "raced", "expires_at": in_secs(-1)})).await;
        ids.push(run["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap());
    }
    let attempt = |run_id| {
        let command = Command::Run(RunCommand {
            run_id,
            expected_version: Some(1),
            action: Action::EnforceDeadline { now: Timestamp::now() },
        });
        s.ledger.execute(command, runledger_events::Metadata::actor("system"))
    };
    let attempts = ids.iter().flat_map(|id| [attempt(*id), attempt(*id)]);
    let results = futures_util::future::join_all(attempts).await;
    for pair in results.chunks(2) {
        assert!(pair.iter().filter(|r| r.is_ok()).count() <= 1);
        for result in pair.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(result, LedgerError::Command(CommandError::VersionConflict { .. })),
                "{result:?}"
            );
        }
    }
    for id in &ids {
        let run = ended(&s, &id.to_string()).await;
        assert_eq!(run["end_reason"], "expired");
        the_end(&events(&s, &id.to_string()).await);
    }
    s.stop().await;
}

/// A ledger written before deadlines existed (no `deadline_at`, migration
/// 17 not applied, states without deadlines): its first start folds the
/// running runs' `timeout_secs` into deadlines again, and enforces them.
async fn a_ledger_from_before_deadlines_enforces_the_timeouts_it_already_held(mut s: TestServer) {
    let run = s.create(json!({"task_name": "old", "timeout_secs": 1})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{id}/start"), json!({})).await.ok(200);
    s.shutdown().await;
    // Migration 18 came later still: undone too.
    let (migrations, payloads) = match s.backend {
        common::Backend::Sqlite { .. } => (
            "DELETE FROM schema_migrations WHERE version IN (17, 18)",
            "DROP TABLE run_payload_terms",
        ),
        common::Backend::Postgres { .. } => (
            "DELETE FROM _sqlx_migrations WHERE version IN (17, 18)",
            "DROP TABLE run_payloads",
        ),
    };
    for sql in [
        "DROP TABLE run_operations",
        payloads,
        "DROP INDEX runs_deadline_id",
        "DROP INDEX runs_deadline",
        "ALTER TABLE runs DROP COLUMN deadline_at",
        "ALTER TABLE run_history DROP COLUMN deadline_at",
        "UPDATE runs SET state = '{}'",
        migrations,
    ] {
        s.exec_sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let node = Node::start(&s.database_url());
    let client = reqwest::Client::new();
    let waited = Instant::now();
    let run = loop {
        let run = get(&client, &node.base, &format!("/api/runs/{id}")).await;
        if run["status"] == "ended" {
            break run;
        }
        assert!(waited.elapsed() < PATIENCE, "never enforced: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["end_reason"], "timeout");
    drop(node);
    s.stop().await;
}

/// Lists sort by the next deadline (runs with none last, both ways) and
/// filter by `deadline_before`, with the cursor, `as_of` and selectors.
async fn lists_sort_by_deadline_and_filter_by_deadline_before(s: TestServer) {
    let mut ids = Vec::new();
    for hours in [2, 1, 3] {
        let run = s
            .create(json!({"task_name": "queued", "expires_at": in_secs(hours * 3600)}))
            .await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let none = s.create(json!({"task_name": "queued"})).await;
    let none = none["id"].as_str().unwrap().to_owned();
    let (two, one, three) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let listed = |q: String| {
        let s = &s;
        async move { s.get(&format!("/api/runs?task_name=queued&{q}")).await.ok(200).clone() }
    };
    let asc = listed("sort_field=deadline_at&sort_direction=asc".into()).await;
    assert_eq!(
        common::ids(&asc),
        [one.as_str(), two.as_str(), three.as_str(), none.as_str()]
    );
    let desc = listed("sort_field=deadline_at&sort_direction=desc".into()).await;
    assert_eq!(
        common::ids(&desc),
        [three.as_str(), two.as_str(), one.as_str(), none.as_str()]
    );
    // Page by page with the cursor, the same order.
    let mut paged = Vec::new();
    let mut q = "sort_field=deadline_at&sort_direction=asc&limit=1".to_owned();
    loop {
        let page = listed(q.clone()).await;
        paged.extend(common::ids(&page));
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        q = format!("sort_field=deadline_at&sort_direction=asc&limit=1&cursor={cursor}");
    }
    assert_eq!(paged, [one.as_str(), two.as_str(), three.as_str(), none.as_str()]);
    // Due within two and a half hours: the first two.
    let cutoff = in_secs(9000);
    let cutoff_q = cutoff.replace('+', "%2B").replace(':', "%3A");
    let due = listed(format!(
        "deadline_before={cutoff_q}&sort_field=deadline_at&sort_direction=asc"
    ))
    .await;
    assert_eq!(common::ids(&due), [one.as_str(), two.as_str()]);
    assert_eq!(due["total"], 2);
    // Starting a run moves its deadline: no timeout, so none.
    s.post(&format!("/api/runs/{one}/start"), json!({})).await.ok(200);
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    let due = listed(format!("deadline_before={cutoff_q}")).await;
    assert_eq!(common::ids(&due), [two.as_str()]);
    let then = listed(format!("deadline_before={cutoff_q}&as_of={}", head - 1)).await;
    assert_eq!(then["total"], 2, "before the start, as it was");
    let dry = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "filter": {"deadline_before": cutoff}, "dry_run": true}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(dry["affected"], 1);
    // Bad input: nothing appended.
    let events = s.event_count().await;
    s.get("/api/runs?deadline_before=soon")
        .await
        .invalid_at("query.deadline_before");
    s.get("/api/runs?sort_field=deadline")
        .await
        .invalid_at("query.sort_field");
    s.post(
        "/api/runs/bulk/cancel",
        json!({"match_all": true, "filter": {"deadline_before": "tomorrow"}}),
    )
    .await
    .invalid_at("body.filter.deadline_before");
    assert_eq!(s.event_count().await, events);
    s.stop().await;
}

backend_tests!(
    lists_sort_by_deadline_and_filter_by_deadline_before,
    a_ledger_from_before_deadlines_enforces_the_timeouts_it_already_held,
    attempts_at_one_deadline_from_one_version_append_one_end,
    a_running_run_past_its_timeout_ends_timeout_by_the_system,
    a_pending_run_past_expires_at_ends_expired_and_a_started_one_is_unaffected,
    a_silent_run_ends_crashed_after_its_heartbeat_timeout_and_a_heartbeat_postpones_it,
    a_deadline_end_on_the_last_attempt_dead_letters_the_run,
    deadline_at_is_on_every_read_and_travels_in_time,
    deadline_fields_are_validated_before_anything_is_appended,
);

/// A database for the binary: a SQLite file in `dir`, or a fresh schema.
async fn database(backend: &str, dir: &tempfile::TempDir) -> Option<(String, Option<String>)> {
    match backend {
        "sqlite" => Some((format!("sqlite://{}", dir.path().join("runledger.db").display()), None)),
        _ => {
            let url = common::postgres_url("a_server_that_was_down_ends_what_fell_due_when_it_starts")?;
            let (schema, _) = common::postgres_schema(&url).await;
            Some((common::url_with_schema(&url, &schema), Some(schema)))
        }
    }
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    use common::SendChecked;
    let resp = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send_checked()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    use common::SendChecked;
    let resp = client.get(format!("{base}{path}")).send_checked().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// The real binary is stopped while a run's timeout passes; started again,
/// it ends the run at once, from what the database holds.
async fn a_server_that_was_down_ends_what_fell_due_when_it_starts(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, schema)) = database(backend, &dir).await else {
        return;
    };
    let client = reqwest::Client::new();
    let node = Node::start(&url);
    let run = post(
        &client,
        &node.base,
        "/api/runs",
        json!({"task_name": "orphan", "timeout_secs": 1}),
    )
    .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let started = post(&client, &node.base, &format!("/api/runs/{id}/start"), json!({})).await;
    let deadline = time(&started["deadline_at"]);
    drop(node);
    // Down until the deadline has passed.
    while Timestamp::now() <= deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restarted = Timestamp::now();
    let node = Node::start(&url);
    let waited = Instant::now();
    let run = loop {
        let run = get(&client, &node.base, &format!("/api/runs/{id}")).await;
        if run["status"] == "ended" {
            break run;
        }
        assert!(waited.elapsed() < PATIENCE, "never caught up: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["end_reason"], "timeout");
    let events = get(&client, &node.base, &format!("/api/runs/{id}/events")).await;
    let events = events["events"].as_array().unwrap();
    let end = the_end(events);
    assert_eq!(end["metadata"]["actor"], "system");
    assert!(time(&end["recorded_at"]) >= restarted, "ended by the restarted server");
    drop(node);
    if let Some(schema) = schema {
        let url = common::postgres_url("cleanup").unwrap();
        let mut conn = common::pg_connect(&url, &schema).await;
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

mod restart {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_server_that_was_down_ends_what_fell_due_when_it_starts("sqlite").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_server_that_was_down_ends_what_fell_due_when_it_starts("postgres").await
    }
}

/// Two nodes on one PostgreSQL database, both enforcing (every 20 ms) the
/// same deadlines: each run ends exactly once, and a dead-lettered run is
/// dead-lettered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_racing_for_the_same_deadlines_append_one_end_each() {
    let Some(url) = common::postgres_url("two_postgres_nodes_racing_for_the_same_deadlines_append_one_end_each") else {
        return;
    };
    let (schema, options) = common::postgres_schema(&url).await;
    let node_url = common::url_with_schema(&url, &schema);
    let fast = ["--deadline-poll-ms", "20"];
    let nodes: Vec<Node> = (0..2)
        .map(|_| {
            let (child, base) = common::spawn_binary_with(&node_url, "127.0.0.1:0", &fast);
            Node { child, base }
        })
        .collect();
    let client = reqwest::Client::new();
    let expires_at = in_secs(1);
    let mut ids = Vec::new();
    for i in 0..60 {
        let base = &nodes[i % 2].base;
        let body = match i % 3 {
            0 => json!({"task_name": "race", "expires_at": expires_at}),
            1 => json!({"task_name": "race", "timeout_secs": 1, "max_attempts": 1}),
            _ => json!({"task_name": "race", "heartbeat_timeout_secs": 1}),
        };
        let run = post(&client, base, "/api/runs", body).await;
        let id = run["id"].as_str().unwrap().to_owned();
        if i % 3 != 0 {
            post(&client, base, &format!("/api/runs/{id}/start"), json!({})).await;
        }
        ids.push(id);
    }
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let waited = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status <> 'ended'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(waited.elapsed() < PATIENCE, "{open} runs never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both nodes keep sweeping for a while after the last end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream_id, COUNT(*) FILTER (WHERE event_type = 'run.ended'), \
         COUNT(*) FILTER (WHERE event_type = 'run.dead_lettered') FROM events GROUP BY stream_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(counts.len(), ids.len());
    for (stream, ends, dead) in &counts {
        assert_eq!(*ends, 1, "{stream} ended {ends} times");
        assert!(*dead <= 1, "{stream} dead-lettered {dead} times");
    }
    let dead: i64 = counts.iter().map(|c| c.2).sum();
    assert_eq!(dead, 20, "every run out of attempts, once");
    let reasons: Vec<(String, i64)> =
        sqlx::query_as("SELECT end_reason, COUNT(*) FROM runs GROUP BY end_reason ORDER BY end_reason")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        reasons,
        [
            ("crashed".to_owned(), 20),
            ("expired".to_owned(), 20),
            ("timeout".to_owned(), 20)
        ]
    );
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT metadata::json->>'actor' FROM events WHERE event_type IN ('run.ended', 'run.dead_lettered')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(actors, ["system"]);
    drop(nodes);
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await;
}

/// `--deadline-poll-ms 0` (`deadline_poll` zero): the node enforces nothing,
/// so an offline copy under inspection is left as it was. A negative
/// check, so it waits past the default poll once.
async fn a_node_with_enforcement_off_ends_nothing(s: TestServer) {
    let run = s.create(json!({"task_name": "kept", "expires_at": in_secs(-60)})).await;
    assert_eq!(run["deadline_reason"], "expired", "due, but nobody enforces it");
    tokio::time::sleep(runledger::deadlines::DEFAULT_POLL + Duration::from_millis(500)).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/api/runs/{id}")).await.ok(200)["status"], "pending");
    s.stop().await;
}

mod enforcement_off {
    use runledger::http::HttpConfig;

    fn off() -> HttpConfig {
        HttpConfig {
            deadline_poll: std::time::Duration::ZERO,
            ..HttpConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_node_with_enforcement_off_ends_nothing(super::TestServer::sqlite_with(off()).await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(s) = super::TestServer::postgres_with("a_node_with_enforcement_off_ends_nothing", off()).await {
            super::a_node_with_enforcement_off_ends_nothing(s).await
        }
    }
}

//! Issue 18, items 3–5, through the real server on both backends: a run's
//! state (its latest checkpoint), the run fields a ledger fills from its
//! own log (`created_by`, `operation_id`, `execution_trace`), and the
//! `operation_id` and `payload` filters of every list and bulk selector.

#[macro_use]
mod common;

use common::{ids, TestServer};
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

/// `text` for a query string: everything but letters and digits escaped.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn payload_query(needle: &Value) -> String {
    format!("payload={}", encode(&needle.to_string()))
}

async fn a_runs_state_is_its_latest_checkpoint(s: TestServer) {
    let run = s.create(json!({"task_name": "agent"})).await;
    let run_id = id(&run);
    let created_at = run["position"].as_i64().unwrap();
    let path = format!("/api/runs/{run_id}/state");

    // Nothing saved yet: the run exists, its state is null.
    let empty = s.get(&path).await.ok(200).clone();
    assert_eq!(empty["run_id"], run_id.as_str());
    assert_eq!(empty["state"], Value::Null);
    assert_eq!(empty["sequence"], Value::Null);
    assert_eq!(empty["position"], Value::Null);

    s.post(&format!("/api/runs/{run_id}/start"), json!({})).await.ok(200);
    let first = s
        .post(
            &format!("/api/runs/{run_id}/checkpoints"),
            json!({"state": {"step": 1, "messages": ["hi"]}, "source": "planner"}),
        )
        .await
        .ok(201)
        .clone();
    let second = s
        .post(&format!("/api/runs/{run_id}/checkpoints"), json!({"state": [2, "two"]}))
        .await
        .ok(201)
        .clone();
    let latest = s.get(&path).await.ok(200).clone();
    assert_eq!(latest["state"], json!([2, "two"]));
    assert_eq!(latest["sequence"], 2);
    assert_eq!(latest["source"], Value::Null);
    assert_eq!(latest["position"], second["position"]);
    assert_eq!(latest["recorded_at"], second["recorded_at"]);

    // Time travel: the latest checkpoint at each point.
    let at_first = s
        .get(&format!("{path}?as_of={}", first["position"]))
        .await
        .ok(200)
        .clone();
    assert_eq!(at_first["state"], json!({"step": 1, "messages": ["hi"]}));
    assert_eq!(at_first["sequence"], 1);
    assert_eq!(at_first["source"], "planner");
    assert_eq!(at_first["position"], first["position"]);
    let at_creation = s.get(&format!("{path}?as_of={created_at}")).await.ok(200).clone();
    assert_eq!(at_creation["state"], Value::Null);
    let by_time = s
        .get(&format!(
            "{path}?as_of={}",
            encode(first["recorded_at"].as_str().unwrap())
        ))
        .await
        .ok(200)
        .clone();
    assert_eq!(by_time["sequence"], 1);
    // Before the run existed, and a run that never did.
    let before = s.get(&format!("{path}?as_of={}", created_at - 1)).await;
    assert!(before.problem(404, "run_not_found")["detail"]
        .as_str()
        .unwrap()
        .contains(&run_id));
    let unknown = uuid::Uuid::now_v7();
    s.get(&format!("/api/runs/{unknown}/state"))
        .await
        .problem(404, "run_not_found");

    // Bad input.
    s.get("/api/runs/nope/state").await.invalid_at("path.id");
    s.get(&format!("{path}?as_of=yesterday"))
        .await
        .invalid_at("query.as_of");
    s.get(&format!("{path}?after_sequence=1"))
        .await
        .invalid_at("query.after_sequence");
    s.stop().await;
}

async fn events(s: &TestServer, run_id: &str) -> Vec<Value> {
    s.get(&format!("/api/runs/{run_id}/events")).await.ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn runs_show_who_created_them_their_operation_and_their_trace(s: TestServer) {
    let run = s.create(json!({"task_name": "fetch"})).await;
    let run_id = id(&run);
    assert_eq!(run["created_by"], "anonymous", "the actor of run.created");
    assert_eq!(run["operation_id"], Value::Null);
    assert_eq!(run["execution_trace"], Value::Null);

    let started = s
        .post(
            &format!("/api/runs/{run_id}/start"),
            json!({"execution_trace": {"queue_wait_ms": 120, "dequeue_ms": 3, "connect_ms": 40}}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(
        started["execution_trace"],
        json!({"queue_wait_ms": 120, "dequeue_ms": 3, "connect_ms": 40})
    );
    s.post(&format!("/api/runs/{run_id}/heartbeat"), json!({}))
        .await
        .ok(200);
    let ended = s
        .post(
            &format!("/api/runs/{run_id}/end"),
            json!({"end_reason": "success", "execution_trace": {
                "connect_ms": 45, "ttfb_ms": 300, "transfer_ms": 80, "total_ms": 548, "dispatch_ms": 0, "dequeue_ms": null
            }}),
        )
        .await
        .ok(200)
        .clone();
    let merged = json!({
        "queue_wait_ms": 120, "dequeue_ms": 3, "connect_ms": 45, "ttfb_ms": 300,
        "transfer_ms": 80, "total_ms": 548, "dispatch_ms": 0
    });
    assert_eq!(ended["execution_trace"], merged, "the end's members win");
    // Every read shows the fields: the run, the lists, and time travel.
    let got = s.get(&format!("/api/runs/{run_id}")).await.ok(200).clone();
    assert_eq!(got["execution_trace"], merged);
    assert_eq!(got["created_by"], "anonymous");
    let listed = s.get("/api/runs?task_name=fetch").await.ok(200).clone();
    assert_eq!(listed["runs"][0]["execution_trace"], merged);
    assert_eq!(listed["runs"][0]["created_by"], "anonymous");
    let at_start = s
        .get(&format!("/api/runs/{run_id}?as_of={}", started["position"]))
        .await
        .ok(200)
        .clone();
    assert_eq!(at_start["execution_trace"], started["execution_trace"]);
    assert_eq!(at_start["created_by"], "anonymous");
    let listed_then = s
        .get(&format!("/api/runs?task_name=fetch&as_of={}", started["position"]))
        .await
        .ok(200)
        .clone();
    assert_eq!(listed_then["runs"][0]["execution_trace"], started["execution_trace"]);
    let history = s.get(&format!("/api/runs/{run_id}/history")).await.ok(200).clone();
    let traces: Vec<&Value> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["state"]["execution_trace"])
        .collect();
    assert_eq!(
        traces,
        [
            &Value::Null,
            &started["execution_trace"],
            &started["execution_trace"],
            &merged
        ]
    );
    // The executor's report is in the events, as given.
    let events = events(&s, &run_id).await;
    assert_eq!(events[1]["data"]["execution_trace"], started["execution_trace"]);
    assert_eq!(
        events[3]["data"]["execution_trace"],
        json!({"connect_ms": 45, "ttfb_ms": 300, "transfer_ms": 80, "total_ms": 548, "dispatch_ms": 0})
    );

    // A bulk retry's new runs carry its operation; a single retry's do not.
    let failed: Vec<String> = failed_runs(&s, 2).await;
    let single = s
        .post(&format!("/api/runs/{}/retry", failed[0]), json!({}))
        .await
        .ok(202)
        .clone();
    let single_run = s
        .get(&format!("/api/runs/{}", single["new_run_id"].as_str().unwrap()))
        .await
        .ok(200)
        .clone();
    assert_eq!(single_run["operation_id"], Value::Null);
    assert_eq!(single_run["created_by"], "anonymous");
    let bulk = s
        .post("/api/runs/bulk/retry", json!({"ids": failed}))
        .await
        .ok(200)
        .clone();
    let operation = bulk["operation_id"].as_str().unwrap().to_owned();
    let new_runs = bulk["runs"].as_array().unwrap();
    assert_eq!(new_runs.len(), 2);
    for new_run in new_runs {
        assert_eq!(new_run["operation_id"], operation.as_str());
        let stored = s.get(&format!("/api/runs/{}", id(new_run))).await.ok(200).clone();
        assert_eq!(stored["operation_id"], operation.as_str());
        assert_eq!(stored["created_by"], "anonymous");
    }
    // The sources' events share the operation, but the sources were not
    // created by it.
    let source = s.get(&format!("/api/runs/{}", failed[1])).await.ok(200).clone();
    assert_eq!(source["operation_id"], Value::Null);
    s.stop().await;
}

/// `created_by` is the token that created the run, whoever acts on it
/// later: another token's events, or the ledger's own end at a deadline.
async fn created_by_is_the_creating_token_whoever_acts_later(s: TestServer) {
    use reqwest::Method;
    use runledger::auth::Scope;
    let scheduler = s
        .ledger
        .create_token("scheduler-7", &[Scope::RunsWrite, Scope::RunsRead])
        .await
        .expect("token");
    let worker = s
        .ledger
        .create_token("worker-3", &[Scope::RunsWrite, Scope::RunsRead])
        .await
        .expect("token");
    let body = json!({"task_name": "nightly", "heartbeat_timeout_secs": 1});
    let run = s
        .send_as(Some(&scheduler), Method::POST, "/api/runs", Some(body))
        .await
        .ok(201)
        .clone();
    let run_id = id(&run);
    assert_eq!(run["created_by"], "scheduler-7");
    let started = s
        .send_as(
            Some(&worker),
            Method::POST,
            &format!("/api/runs/{run_id}/start"),
            Some(json!({})),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(started["created_by"], "scheduler-7");
    // The enforcer ends it (actor `system`): still created by the scheduler.
    let waited = std::time::Instant::now();
    let ended = loop {
        let got = s
            .send_as(Some(&worker), Method::GET, &format!("/api/runs/{run_id}"), None)
            .await
            .ok(200)
            .clone();
        if got["status"] == "ended" {
            break got;
        }
        assert!(waited.elapsed() < std::time::Duration::from_secs(20), "never ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ended["end_reason"], "crashed");
    assert_eq!(ended["created_by"], "scheduler-7");
    s.stop().await;
}

/// `n` runs of task `flaky` that failed.
async fn failed_runs(s: &TestServer, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(id(&s.run_through("flaky", json!({}), &["start", "end:failed:1"]).await));
    }
    out
}

async fn bad_execution_traces_are_refused_and_nothing_is_appended(s: TestServer) {
    let run = s.create(json!({"task_name": "fetch"})).await;
    let run_id = id(&run);
    let before = s.event_count().await;
    let start = format!("/api/runs/{run_id}/start");
    for (trace, location) in [
        (json!({"latency_ms": 5}), "body.execution_trace.latency_ms"),
        (json!({"ttfb_ms": -1}), "body.execution_trace.ttfb_ms"),
        (json!({"ttfb_ms": 1.5}), "body.execution_trace.ttfb_ms"),
        (json!({"ttfb_ms": "5"}), "body.execution_trace.ttfb_ms"),
        (json!([1, 2]), "body.execution_trace"),
        (json!(5), "body.execution_trace"),
    ] {
        s.post(&start, json!({"execution_trace": trace}))
            .await
            .invalid_at(location);
    }
    assert_eq!(s.event_count().await, before);
    s.post(&start, json!({})).await.ok(200);
    let before = s.event_count().await;
    s.post(
        &format!("/api/runs/{run_id}/end"),
        json!({"end_reason": "success", "execution_trace": {"total_ms": -5}}),
    )
    .await
    .invalid_at("body.execution_trace.total_ms");
    assert_eq!(s.event_count().await, before);
    let run = s.get(&format!("/api/runs/{run_id}")).await.ok(200).clone();
    assert_eq!(run["status"], "running");
    assert_eq!(run["execution_trace"], Value::Null);
    s.stop().await;
}

/// Payloads of different shapes, and the needles that find each: nested
/// objects, arrays (of scalars and of objects), numbers against strings,
/// null, booleans. The expectations are PostgreSQL's `@>`; SQLite must
/// give the same answers.
fn payloads() -> Vec<(&'static str, Value)> {
    vec![
        (
            "acme",
            json!({"customer": "acme", "plan": {"tier": "gold", "seats": 10}, "tags": ["eu", "vip"]}),
        ),
        (
            "acme2",
            json!({"customer": "acme", "plan": {"tier": "free", "seats": 1.0}, "tags": ["us"]}),
        ),
        (
            "globex",
            json!({"customer": "globex", "plan": {"tier": "gold", "seats": "10"}, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}),
        ),
        (
            "flags",
            json!({"customer": null, "active": true, "beta": false, "items": [[1, 2], [3]]}),
        ),
        ("array", json!(["customer", "acme"])),
        ("scalar", json!("acme")),
    ]
}

fn needles() -> Vec<(Value, Vec<&'static str>)> {
    vec![
        (json!({"customer": "acme"}), vec!["acme", "acme2"]),
        (json!({"customer": "ACME"}), vec![]),
        (json!({"plan": {"tier": "gold"}}), vec!["acme", "globex"]),
        (json!({"plan": {"seats": 10}}), vec!["acme"]),
        (json!({"plan": {"seats": 1}}), vec!["acme2"]),
        (json!({"plan": {"seats": "10"}}), vec!["globex"]),
        (json!({"tags": ["vip"]}), vec!["acme"]),
        (json!({"tags": ["vip", "eu"]}), vec!["acme"]),
        (json!({"tags": ["vip", "us"]}), vec![]),
        (json!({"tags": []}), vec!["acme", "acme2"]),
        (json!({"tags": "vip"}), vec![]),
        (json!({"items": [{"sku": "b"}]}), vec!["globex"]),
        (json!({"items": [{"sku": "b", "qty": 2}]}), vec![]),
        (json!({"items": [[3]]}), vec!["flags"]),
        (json!({"items": [3]}), vec![]),
        (json!({"customer": null}), vec!["flags"]),
        (json!({"active": true, "beta": false}), vec!["flags"]),
        (json!({"beta": true}), vec![]),
        (json!({"plan": {}}), vec!["acme", "acme2", "globex"]),
        (json!({}), vec!["acme", "acme2", "globex", "flags"]),
    ]
}

async fn the_payload_filter_is_containment_on_every_list_and_selector(s: TestServer) {
    let mut names = std::collections::HashMap::new();
    for (name, payload) in payloads() {
        let run = s.create(json!({"task_name": "bill", "payload": payload})).await;
        names.insert(id(&run), name);
    }
    // A run with no payload, and one of another task, which no filter finds.
    s.create(json!({"task_name": "bill"})).await;
    let other = s
        .run_through(
            "ship",
            json!({"payload": {"customer": "acme"}, "max_attempts": 1}),
            &["start", "end:failed:1"],
        )
        .await;
    let named = |body: &Value| -> Vec<&str> {
        let mut found: Vec<&str> = ids(body).iter().map(|i| names[i.as_str()]).collect();
        found.sort();
        found
    };
    for (needle, mut expected) in needles() {
        expected.sort();
        let q = payload_query(&needle);
        let listed = s.get(&format!("/api/tasks/bill/runs?{q}")).await.ok(200).clone();
        assert_eq!(named(&listed), expected, "{needle}");
        assert_eq!(listed["total"], expected.len(), "{needle}");
        // Paged, the total stays exact.
        let paged = s
            .get(&format!("/api/runs?{q}&task_name=bill&limit=1"))
            .await
            .ok(200)
            .clone();
        assert_eq!(paged["total"], expected.len(), "{needle}");
        assert_eq!(ids(&paged).len(), expected.len().min(1));
        // A bulk selector selects the same runs.
        let dry = s
            .post(
                "/api/runs/bulk/delete",
                json!({"match_all": true, "filter": {"payload": needle, "task_name": "bill"}, "dry_run": true}),
            )
            .await
            .ok(200)
            .clone();
        assert_eq!(dry["affected"], expected.len(), "{needle}");
    }
    // Across tasks, with other filters, and as the text of the object.
    let acme = payload_query(&json!({"customer": "acme"}));
    let all = s.get(&format!("/api/runs?{acme}")).await.ok(200).clone();
    assert_eq!(all["total"], 3);
    let failed = s.get(&format!("/api/runs?{acme}&status=failed")).await.ok(200).clone();
    assert_eq!(ids(&failed), [id(&other)]);
    let dlq = s.get(&format!("/api/runs/dlq?{acme}")).await.ok(200).clone();
    assert_eq!(ids(&dlq), [id(&other)]);
    let as_text = s
        .post(
            "/api/runs/bulk/delete",
            json!({"match_all": true, "filter": {"payload": "{\"customer\":\"acme\"}"}, "dry_run": true}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(as_text["affected"], 3);

    // In time: a run deleted since is found as it was.
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    let deleted = s
        .post(
            "/api/runs/bulk/delete",
            json!({"match_all": true, "filter": {"payload": {"plan": {"tier": "gold"}}}}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(deleted["affected"], 2);
    let gold = payload_query(&json!({"plan": {"tier": "gold"}}));
    assert_eq!(s.get(&format!("/api/runs?{gold}")).await.ok(200)["total"], 0);
    let then = s.get(&format!("/api/runs?{gold}&as_of={head}")).await.ok(200).clone();
    assert_eq!(then["total"], 2);
    let mut found: Vec<&str> = ids(&then).iter().map(|i| names[i.as_str()]).collect();
    found.sort();
    assert_eq!(found, ["acme", "globex"]);
    let restored = s
        .post(
            "/api/runs/bulk/restore",
            json!({"match_all": true, "filter": {"payload": {"plan": {"tier": "gold"}}}}),
        )
        .await;
    assert_eq!(restored.ok(200)["affected"], 2);
    s.stop().await;
}

async fn the_operation_id_filter_finds_what_one_bulk_call_created(s: TestServer) {
    let mut failed = Vec::new();
    for n in 0..3 {
        failed.push(id(&s
            .run_through("sync", json!({"payload": {"n": n}}), &["start", "end:failed:1"])
            .await));
    }
    let first = s
        .post("/api/runs/bulk/retry", json!({"ids": [failed[0], failed[1]]}))
        .await
        .ok(200)
        .clone();
    let second = s
        .post("/api/runs/bulk/rerun", json!({"ids": [failed[2]]}))
        .await
        .ok(200)
        .clone();
    let op1 = first["operation_id"].as_str().unwrap();
    let op2 = second["operation_id"].as_str().unwrap();
    let mut created: Vec<String> = first["runs"].as_array().unwrap().iter().map(id).collect();
    created.sort();
    let by_op = s
        .get(&format!(
            "/api/runs?operation_id={op1}&sort_field=created_at&sort_direction=asc"
        ))
        .await
        .ok(200)
        .clone();
    assert_eq!(by_op["total"], 2);
    let mut listed = ids(&by_op);
    listed.sort();
    assert_eq!(listed, created);
    let rerun = s
        .get(&format!("/api/tasks/sync/runs?operation_id={op2}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(rerun["total"], 1);
    assert_eq!(rerun["runs"][0]["triggered_by"], "rerun");
    assert_eq!(rerun["runs"][0]["operation_id"], op2);
    // With the other filters, in time, and in a selector.
    let both = s
        .get(&format!(
            "/api/runs?operation_id={op1}&{}",
            payload_query(&json!({"n": 1}))
        ))
        .await
        .ok(200)
        .clone();
    assert_eq!(ids(&both).len(), 1);
    assert_eq!(both["runs"][0]["retry_of_run_id"], failed[1].as_str());
    let before = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_i64().unwrap())
        .min()
        .unwrap()
        - 2;
    assert_eq!(
        s.get(&format!("/api/runs?operation_id={op1}&as_of={before}"))
            .await
            .ok(200)["total"],
        0
    );
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    assert_eq!(
        s.get(&format!("/api/runs?operation_id={op1}&as_of={head}"))
            .await
            .ok(200)["total"],
        2
    );
    let canceled = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "filter": {"operation_id": op1}}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(canceled["canceled"], 2);
    // Bulk calls keep the maintained counts behind totals and tasks, as
    // single commands do: 3 failed, 2 retries (now stopped), 1 rerun.
    let total = |q: &'static str| {
        let s = &s;
        async move { s.get(q).await.ok(200)["total"].as_i64().unwrap() }
    };
    assert_eq!(total("/api/runs?task_name=sync").await, 6);
    assert_eq!(total("/api/runs?task_name=sync&status=stopped").await, 2);
    assert_eq!(total("/api/runs?task_name=sync&status=pending").await, 1);
    let tasks = s.get("/api/tasks").await.ok(200).clone();
    let sync = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_name"] == "sync")
        .unwrap();
    assert_eq!(sync["total"], 6);
    assert_eq!(sync["counts"]["stopped"], 2);
    assert_eq!(sync["counts"]["failed"], 3);
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        s.get(&format!("/api/runs?operation_id={unknown}")).await.ok(200)["total"],
        0
    );
    s.stop().await;
}

async fn bad_filters_are_refused_and_nothing_is_appended(s: TestServer) {
    s.create(json!({"task_name": "bill", "payload": {"a": 1}})).await;
    let before = s.event_count().await;
    for raw in ["[1]", "\"acme\"", "1", "null", "{bad", "{\"a\":1}x"] {
        s.get(&format!("/api/runs?payload={}", encode(raw)))
            .await
            .invalid_at("query.payload");
        s.get(&format!("/api/tasks/bill/runs?payload={}", encode(raw)))
            .await
            .invalid_at("query.payload");
    }
    let long = json!({"k": "x".repeat(4100)}).to_string();
    s.get(&format!("/api/runs?payload={}", encode(&long)))
        .await
        .invalid_at("query.payload");
    s.get("/api/runs?operation_id=batch-7")
        .await
        .invalid_at("query.operation_id");
    s.get("/api/runs/dlq?operation_id=7")
        .await
        .invalid_at("query.operation_id");
    for filter in [
        json!({"payload": [1]}),
        json!({"payload": "[1]"}),
        json!({"payload": 5}),
        json!({"payload": "{nope"}),
    ] {
        s.post("/api/runs/bulk/delete", json!({"match_all": true, "filter": filter}))
            .await
            .invalid_at("body.filter.payload");
    }
    s.post(
        "/api/runs/bulk/delete",
        json!({"match_all": true, "filter": {"operation_id": "x"}}),
    )
    .await
    .invalid_at("body.filter.operation_id");
    assert_eq!(s.event_count().await, before);
    assert_eq!(s.get("/api/runs").await.ok(200)["runs"][0]["deleted"], false);
    s.stop().await;
}

/// A ledger written before these fields: its runs' states lack them and
/// the filter tables are empty. The next start rebuilds the projections
/// from the log, which holds every actor and operation.
async fn a_ledger_from_before_the_fields_fills_them_from_its_log(mut s: TestServer) {
    let failed = id(&s
        .run_through("old", json!({"payload": {"v": 1}}), &["start", "end:failed:1"])
        .await);
    let bulk = s
        .post("/api/runs/bulk/retry", json!({"ids": [failed]}))
        .await
        .ok(200)
        .clone();
    let operation = bulk["operation_id"].as_str().unwrap().to_owned();
    s.shutdown().await;
    let (migrations, payloads) = match s.backend {
        common::Backend::Sqlite { .. } => (
            "DELETE FROM schema_migrations WHERE version = 18",
            "DROP TABLE run_payload_terms",
        ),
        common::Backend::Postgres { .. } => (
            "DELETE FROM _sqlx_migrations WHERE version = 18",
            "DROP TABLE run_payloads",
        ),
    };
    for sql in [
        "DROP TABLE run_operations",
        payloads,
        "DROP INDEX runs_deadline_id",
        "DROP INDEX IF EXISTS runs_deadline_id_desc",
        "UPDATE runs SET state = replace(replace(state, '\"created_by\":\"anonymous\",', ''), '\"operation_id\":', '\"x\":')",
        migrations,
    ] {
        s.exec_sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let db = s.database_url();
    let node = common::Node::start(&db);
    use common::SendChecked;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let base = node.base.clone();
        async move {
            let resp = client.get(format!("{base}{path}")).send_checked().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    let listed = get(format!("/api/runs?operation_id={operation}")).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["runs"][0]["operation_id"], operation.as_str());
    assert_eq!(listed["runs"][0]["created_by"], "anonymous");
    let by_payload = get(format!("/api/runs?{}", payload_query(&json!({"v": 1})))).await;
    assert_eq!(by_payload["total"], 2);
    drop(node);
    s.stop().await;
}

backend_tests!(
    a_runs_state_is_its_latest_checkpoint,
    created_by_is_the_creating_token_whoever_acts_later,
    runs_show_who_created_them_their_operation_and_their_trace,
    bad_execution_traces_are_refused_and_nothing_is_appended,
    the_payload_filter_is_containment_on_every_list_and_selector,
    the_operation_id_filter_finds_what_one_bulk_call_created,
    bad_filters_are_refused_and_nothing_is_appended,
    a_ledger_from_before_the_fields_fills_them_from_its_log,
);

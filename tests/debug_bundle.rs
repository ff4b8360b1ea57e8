//! A run's debug bundle: taken over HTTP, checked against the hash chain,
//! and loaded into an empty ledger with the real CLI — on both backends.

mod common;

use common::TestServer;
use runledger::http::HttpConfig;
use serde_json::{json, Value};

const UNKNOWN: &str = "0190c8a0-0000-7000-8000-000000000000";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A run with every kind of detail, a retry and a child: (run, retry, child).
async fn story(s: &TestServer) -> (String, String, String) {
    let run = s
        .run_through("bundled", json!({"tags": {"team": "a"}, "max_attempts": 3}), &["start"])
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    for (detail, body) in [
        ("checkpoints", json!({"source": "w", "state": {"step": 1}})),
        ("checkpoints", json!({"state": [2]})),
        (
            "logs",
            json!({"level": "warn", "type": "progress", "message": "half", "data": {"n": 1}}),
        ),
        (
            "usage",
            json!({"provider": "p", "model": "m", "prompt_tokens": 3, "completion_tokens": 4, "cost_microusd": 9}),
        ),
        (
            "tool-calls",
            json!({"tool_name": "t", "input": {"a": 1}, "duration_ms": 5, "status": "error"}),
        ),
        (
            "outputs",
            json!({"output_key": "k", "schema": {"type": "integer"}, "value": 7}),
        ),
    ] {
        s.post(&format!("/api/runs/{id}/{detail}"), body).await.ok(201);
    }
    // Another run's event between the run's, so its events are not contiguous in the log.
    let child = s.create(json!({"task_name": "child", "parent_run_id": id})).await;
    s.post(
        &format!("/api/runs/{id}/end"),
        json!({"end_reason": "failed", "exit_code": 2}),
    )
    .await
    .ok(200);
    s.post(&format!("/api/runs/{id}/logs"), json!({"message": "flushed late"}))
        .await
        .ok(201);
    let retry = s
        .post(&format!("/api/runs/{id}/retry"), json!({"reason": "flaky"}))
        .await;
    let retry_id = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    (id, retry_id, child["id"].as_str().unwrap().to_owned())
}

fn ids_of(runs: &Value) -> Vec<&str> {
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

async fn bundle_holds_every_section_and_verifies(s: TestServer) {
    let (id, retry_id, child_id) = story(&s).await;
    let bundle = s.get(&format!("/api/runs/{id}/debug-bundle")).await.ok(200).clone();
    assert_eq!(bundle["format"], "runledger.debug-bundle");
    assert_eq!(bundle["version"], 1);
    assert!(bundle["generated_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let run = s.get(&format!("/api/runs/{id}")).await.ok(200).clone();
    assert_eq!(bundle["run"], run);

    // Every event, in the stored form, as the log holds it.
    let events = bundle["events"].as_array().unwrap();
    assert_eq!(events.len() as i64, run["version"].as_i64().unwrap());
    let stored = s
        .query_strings(&format!(
            "SELECT position || '|' || event_id || '|' || hash || '|' || prev_hash FROM events \
             WHERE stream_id = 'run-{id}' ORDER BY position"
        ))
        .await;
    let bundled: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}|{}",
                e["position"],
                e["event_id"].as_str().unwrap(),
                e["hash"].as_str().unwrap(),
                e["prev_hash"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(bundled, stored);
    let versions: Vec<i64> = events.iter().map(|e| e["stream_version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["type"], "run.retried");

    assert_eq!(bundle["checkpoints"].as_array().unwrap().len(), 2);
    assert_eq!(bundle["checkpoints"][1]["state"], json!([2]));
    let messages: Vec<&str> = bundle["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["half", "flushed late"]);
    assert_eq!(bundle["usage"]["records"].as_array().unwrap().len(), 1);
    assert_eq!(bundle["usage"]["totals"]["total_tokens"], 7);
    assert_eq!(bundle["usage"]["totals"]["cost_microusd"], 9);
    assert_eq!(bundle["usage"]["by_model"][0]["model"], "m");
    assert_eq!(bundle["tool_calls"][0]["tool_name"], "t");
    assert_eq!(bundle["outputs"][0]["value"], 7);
    assert_eq!(ids_of(&bundle["lineage"]), [id.as_str(), retry_id.as_str()]);
    assert_eq!(ids_of(&bundle["children"]), [child_id.as_str()]);
    // The same records the detail endpoints serve.
    for (detail, key, section) in [
        ("checkpoints", "checkpoints", &bundle["checkpoints"]),
        ("logs", "logs", &bundle["logs"]),
        ("usage", "usage", &bundle["usage"]["records"]),
        ("tool-calls", "tool_calls", &bundle["tool_calls"]),
        ("outputs", "outputs", &bundle["outputs"]),
    ] {
        let listed = s.get(&format!("/api/runs/{id}/{detail}")).await.ok(200).clone();
        assert_eq!(&listed[key], section, "{detail}");
    }

    assert_eq!(
        bundle["verification"],
        json!({"verified": true, "events_checked": events.len(), "first_failure": null})
    );

    // The bundle of a run with no details: empty sections, still verified.
    let child = s
        .get(&format!("/api/runs/{child_id}/debug-bundle"))
        .await
        .ok(200)
        .clone();
    assert_eq!(child["checkpoints"], json!([]));
    assert_eq!(child["usage"]["records"], json!([]));
    assert_eq!(child["children"], json!([]));
    assert_eq!(child["verification"]["verified"], true);

    s.get(&format!("/api/runs/{UNKNOWN}/debug-bundle"))
        .await
        .problem(404, "run_not_found");
    s.get("/api/runs/not-a-uuid/debug-bundle").await.invalid_at("path.id");

    let doc = s.get("/openapi.json").await.ok(200).clone();
    let op = &doc["paths"]["/api/runs/{id}/debug-bundle"]["get"];
    assert!(op["responses"]["200"].is_object(), "{op}");
    assert!(doc["components"]["schemas"]["DebugBundle"]["properties"]["verification"].is_object());
    s.stop().await;
}

/// Lets the test alter the log, as an attacker with database access could.
async fn allow_tampering(s: &TestServer) {
    let disable = match &s.backend {
        common::Backend::Sqlite { .. } => {
            "DROP TRIGGER events_are_append_only_update; DROP TRIGGER events_are_append_only_delete"
        }
        common::Backend::Postgres { .. } => "ALTER TABLE events DISABLE TRIGGER USER",
    };
    for statement in disable.split("; ") {
        s.exec_sql(statement).await.unwrap();
    }
}

async fn a_tampered_event_fails_verification_at_its_position(s: TestServer) {
    let (id, _, _) = story(&s).await;
    let position = s
        .query_i64(&format!(
            "SELECT position FROM events WHERE stream_id = 'run-{id}' AND event_type = 'run.tool_called'"
        ))
        .await;
    allow_tampering(&s).await;
    let changed = s
        .exec_sql(&format!(
            "UPDATE events SET data = replace(data, '\"error\"', '\"success\"') WHERE position = {position}"
        ))
        .await;
    assert_eq!(changed, Ok(1));
    let bundle = s.get(&format!("/api/runs/{id}/debug-bundle")).await.ok(200).clone();
    let verification = &bundle["verification"];
    assert_eq!(verification["verified"], false, "{verification}");
    assert_eq!(verification["first_failure"]["position"], position);
    assert!(verification["first_failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("altered"));
    let checked = verification["events_checked"].as_i64().unwrap();
    let index = bundle["events"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["position"] == position)
        .unwrap();
    assert_eq!(checked, index as i64 + 1, "checking stops at the first failure");

    // Such a bundle is refused by import.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tampered.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    let fresh = fresh_like(&s, "bundle_tampered_db").await;
    let out = fresh.cli(&["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("do not verify"), "{}", text(&out));
    assert_eq!(fresh.event_count().await, 0);
    fresh.stop().await;
    s.stop().await;
}

async fn fresh_like(s: &TestServer, name: &str) -> TestServer {
    match &s.backend {
        common::Backend::Sqlite { .. } => TestServer::sqlite().await,
        common::Backend::Postgres { .. } => TestServer::postgres(name).await.expect("postgres"),
    }
}

/// `value` without any `position`, `prev_hash` or `hash`: what an import
/// legitimately changes.
fn unplaced(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for key in ["position", "prev_hash", "hash"] {
                map.remove(key);
            }
            for v in map.values_mut() {
                *v = unplaced(v.take());
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = unplaced(v.take());
            }
        }
        _ => {}
    }
    value
}

async fn import_loads_a_bundle_into_an_empty_ledger(s: TestServer) {
    let (id, _, _) = story(&s).await;
    let bundle = s.get(&format!("/api/runs/{id}/debug-bundle")).await.ok(200).clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, serde_json::to_string_pretty(&bundle).unwrap()).unwrap();

    let copy = fresh_like(&s, "bundle_import_copy").await;
    let out = copy.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("re-sealed"), "{}", text(&out));
    let n = bundle["events"].as_array().unwrap().len() as i64;
    assert_eq!(copy.event_count().await, n);
    // Positions are unique, so n of them from 1 to n are exactly 1..n.
    assert_eq!(copy.query_i64("SELECT MIN(position) FROM events").await, 1);
    assert_eq!(copy.query_i64("SELECT MAX(position) FROM events").await, n);
    let verify = copy.cli(&["verify"]);
    assert!(verify.status.success(), "the new chain is intact: {}", text(&verify));

    // The run: equal but for the position of its last event.
    let original = s.get(&format!("/api/runs/{id}")).await.ok(200).clone();
    let imported = copy.get(&format!("/api/runs/{id}")).await.ok(200).clone();
    assert_eq!(imported["position"], n);
    assert_ne!(original["position"], imported["position"]);
    assert_eq!(unplaced(imported), unplaced(original));

    // Its events: ids, types, data, metadata, times and stream versions kept.
    let path = format!("/api/runs/{id}/events");
    let before = s.get(&path).await.ok(200)["events"].clone();
    let after = copy.get(&path).await.ok(200)["events"].clone();
    assert_eq!(after.as_array().unwrap().len() as i64, n);
    assert_eq!(unplaced(after), unplaced(before));

    // The details, rebuilt from the events.
    for detail in ["checkpoints", "logs", "usage", "tool-calls", "outputs"] {
        let path = format!("/api/runs/{id}/{detail}");
        let before = s.get(&path).await.ok(200).clone();
        let after = copy.get(&path).await.ok(200).clone();
        assert_eq!(unplaced(after), unplaced(before), "{detail}");
    }

    // Not into a ledger that has events.
    let again = copy.cli(&["import", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    assert_eq!(copy.event_count().await, n);
    copy.stop().await;

    // Not an altered bundle, nor a malformed one; nothing is written.
    let fresh = fresh_like(&s, "bundle_import_refused").await;
    let mut altered = bundle.clone();
    altered["events"][1]["data"]["task_name"] = json!("other");
    let tampered = dir.path().join("altered.json");
    std::fs::write(&tampered, altered.to_string()).unwrap();
    let out = fresh.cli(&["import", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("do not verify"), "{}", text(&out));

    let mut removed = bundle.clone();
    removed["events"].as_array_mut().unwrap().remove(2);
    std::fs::write(&tampered, removed.to_string()).unwrap();
    let out = fresh.cli(&["import", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("removed"), "{}", text(&out));

    let malformed = dir.path().join("malformed.json");
    let mut truncated = bundle.to_string();
    truncated.truncate(truncated.len() / 2);
    std::fs::write(&malformed, &truncated).unwrap();
    let out = fresh.cli(&["import", malformed.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("malformed.json"), "{}", text(&out));

    let mut other = bundle.clone();
    other["format"] = json!("something-else");
    std::fs::write(&malformed, other.to_string()).unwrap();
    let out = fresh.cli(&["import", malformed.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not \"runledger.debug-bundle\""),
        "{}",
        text(&out)
    );
    assert_eq!(fresh.event_count().await, 0);
    fresh.stop().await;
    s.stop().await;
}

backend_tests!(
    bundle_holds_every_section_and_verifies,
    a_tampered_event_fails_verification_at_its_position,
    import_loads_a_bundle_into_an_empty_ledger,
);

/// A run with more events than the configured bound is refused, not truncated.
async fn a_run_above_the_bound_is_refused(s: TestServer) {
    let run = s.run_through("big", json!({}), &["start"]).await;
    let id = run["id"].as_str().unwrap();
    s.get(&format!("/api/runs/{id}/debug-bundle")).await.ok(200);
    s.post(&format!("/api/runs/{id}/heartbeat"), json!({})).await.ok(200);
    let refused = s.get(&format!("/api/runs/{id}/debug-bundle")).await;
    let body = refused.invalid_at("path.id");
    assert!(body["detail"].as_str().unwrap().contains("3 events"), "{body}");
    s.stop().await;
}

fn capped() -> HttpConfig {
    HttpConfig {
        bundle_max_events: 2,
        ..HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_run_above_the_bound_is_refused() {
    a_run_above_the_bound_is_refused(TestServer::sqlite_with(capped()).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_run_above_the_bound_is_refused() {
    if let Some(s) = TestServer::postgres_with("bundle_bound", capped()).await {
        a_run_above_the_bound_is_refused(s).await
    }
}

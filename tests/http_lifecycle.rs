//! A run's life through the real server: create, start, heartbeat, pause,
//! resume, end, retry, delete, restore — and the log behind it.

mod common;

use common::SendChecked;

use common::TestServer;
use serde_json::json;

async fn a_run_from_creation_to_retry_through_the_api(s: TestServer) {
    let created = s
        .post(
            "/api/runs",
            json!({"task_name": "nightly-report", "triggered_by": "cron",
        "payload": {"day": "2026-11-23"}, "tags": {"env": "prod"}, "max_attempts": 3}),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201);
    let run = &created.body;
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(created.headers["location"], format!("/api/runs/{id}").as_str());
    assert_eq!(run["status"], "pending");
    assert_eq!(run["triggered_by"], "cron");
    assert_eq!(run["project"], "default");
    assert_eq!(run["version"], 1);
    assert_eq!(id.chars().nth(14), Some('7'), "run ids are UUIDv7");

    for (action, status) in [
        ("start", "running"),
        ("heartbeat", "running"),
        ("pause", "paused"),
        ("resume", "running"),
    ] {
        let r = s.post(&format!("/api/runs/{id}/{action}"), json!({})).await;
        assert_eq!(r.ok(200)["status"], status, "{action}");
    }
    let ended = s
        .post(
            &format!("/api/runs/{id}/end"),
            json!({"end_reason": "failed", "exit_code": 2, "error": "boom"}),
        )
        .await;
    let ended = ended.ok(200);
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["end_reason"], "failed");
    assert_eq!(ended["exit_code"], 2);
    assert_eq!(ended["error"], "boom");
    assert!(ended["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(ended["version"], 6);
    assert_eq!(ended["dead_lettered"], false, "attempt 1 of 3");

    let retry = s
        .post(&format!("/api/runs/{id}/retry"), json!({"reason": "flaky network"}))
        .await;
    assert_eq!(retry.status.as_u16(), 202, "{}", retry.body);
    assert_eq!(retry.body["run_id"], id.as_str());
    assert_eq!(retry.body["action"], "retry");
    assert_eq!(retry.body["status"], "accepted");
    assert!(retry.body["message"].is_string());
    let new_id = retry.body["new_run_id"].as_str().unwrap();
    let new_run = s.get(&format!("/api/runs/{new_id}")).await;
    let new_run = new_run.ok(200);
    assert_eq!(new_run["retry_of_run_id"], id.as_str());
    assert_eq!(new_run["retry_attempt"], 1);
    assert_eq!(new_run["lineage_root"], id.as_str());
    assert_eq!(new_run["triggered_by"], "retry");
    assert_eq!(new_run["payload"], json!({"day": "2026-11-23"}));
    assert_eq!(new_run["status"], "pending");

    let source = s.get(&format!("/api/runs/{id}")).await;
    assert_eq!(source.ok(200)["status"], "ended", "the source run is preserved");
    let events = s.get(&format!("/api/runs/{id}/events")).await;
    let types: Vec<&str> = events.ok(200)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "run.created",
            "run.started",
            "run.heartbeat",
            "run.paused",
            "run.resumed",
            "run.ended",
            "run.retried"
        ]
    );

    let deleted = s.delete(&format!("/api/runs/{id}"), json!({"reason": "noise"})).await;
    assert_eq!(deleted.ok(200)["deleted"], true);
    let listed = s.get("/api/runs").await;
    assert_eq!(
        common::ids(listed.ok(200)),
        vec![new_id.to_owned()],
        "deleted runs are hidden"
    );
    let restored = s.post(&format!("/api/runs/{id}/restore"), json!({})).await;
    assert_eq!(restored.ok(200)["deleted"], false);
    assert_eq!(s.get("/api/runs").await.ok(200)["total"], 2);
    s.stop().await;
}

async fn every_event_carries_position_hash_chain_and_metadata(s: TestServer) {
    let a = s.run_through("a", json!({}), &["start", "end:success:0"]).await;
    let b = s.create(json!({"task_name": "b"})).await;
    let req = s
        .client
        .post(s.url(&format!("/api/runs/{}/start", b["id"].as_str().unwrap())))
        .header("x-request-id", "req-42")
        .header("x-correlation-id", "deploy-7")
        .json(&json!({}))
        .send_checked()
        .await
        .unwrap();
    assert_eq!(req.status().as_u16(), 200);

    let mut all = Vec::new();
    for run in [&a, &b] {
        let r = s
            .get(&format!("/api/runs/{}/events", run["id"].as_str().unwrap()))
            .await;
        all.extend(r.ok(200)["events"].as_array().unwrap().clone());
    }
    all.sort_by_key(|e| e["position"].as_i64().unwrap());
    let positions: Vec<i64> = all.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5], "gap-free positions in commit order");
    assert_eq!(all[0]["prev_hash"], "0".repeat(64));
    for pair in all.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "each event chains to the one before"
        );
    }
    for e in &all {
        assert_eq!(e["metadata"]["actor"], "anonymous");
        assert!(e["metadata"]["request_id"].is_string());
        assert_eq!(e["schema_version"], 1);
        assert!(e["recorded_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(all[4]["metadata"]["request_id"], "req-42");
    assert_eq!(all[4]["metadata"]["correlation_id"], "deploy-7");
    assert_eq!(all[4]["stream_id"], format!("run-{}", b["id"].as_str().unwrap()));
    assert_eq!(all[4]["stream_version"], 2);
    s.stop().await;
}

async fn the_events_table_refuses_updates_and_deletes(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    let update = s.exec_sql("UPDATE events SET data = '{}' WHERE position = 1").await;
    assert!(update.unwrap_err().contains("append-only"));
    let delete = s.exec_sql("DELETE FROM events").await;
    assert!(delete.unwrap_err().contains("append-only"));
    assert_eq!(s.event_count().await, 1);
    s.stop().await;
}

async fn concurrent_commands_on_one_run_never_double_apply(s: TestServer) {
    let s = std::sync::Arc::new(s);
    let run = s.run_through("race", json!({}), &["start"]).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            s.post(
                &format!("/api/runs/{id}/end"),
                json!({"end_reason": "success", "exit_code": 0}),
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 15, "{codes:?}");
    assert_eq!(s.event_count().await, 3);
    std::sync::Arc::try_unwrap(s)
        .ok()
        .expect("all clients done")
        .stop()
        .await;
}

async fn a_stale_expected_version_is_a_conflict_and_appends_nothing(s: TestServer) {
    let run = s.run_through("t", json!({}), &["start"]).await;
    let id = run["id"].as_str().unwrap();
    let before = s.event_count().await;
    let r = s
        .post(&format!("/api/runs/{id}/heartbeat"), json!({"expected_version": 1}))
        .await;
    let problem = r.problem(409, "version_conflict");
    assert_eq!(problem["current_version"], 2);
    assert_eq!(problem["details"], json!({"current_version": 2}));
    assert_eq!(s.event_count().await, before);
    let r = s
        .post(&format!("/api/runs/{id}/heartbeat"), json!({"expected_version": 2}))
        .await;
    assert_eq!(r.ok(200)["version"], 3);
    s.stop().await;
}

async fn idempotency_key_returns_the_unfinished_run_of_the_same_task(s: TestServer) {
    let first = s.create(json!({"task_name": "sync", "idempotency_key": "k-1"})).await;
    let again = s
        .post("/api/runs", json!({"task_name": "sync", "idempotency_key": "k-1"}))
        .await;
    assert_eq!(again.ok(200)["id"], first["id"]);
    let other_task = s.create(json!({"task_name": "other", "idempotency_key": "k-1"})).await;
    assert_ne!(other_task["id"], first["id"]);
    assert_eq!(s.event_count().await, 2);
    let id = first["id"].as_str().unwrap();
    s.post(&format!("/api/runs/{id}/cancel"), json!({})).await.ok(200);
    let after_end = s
        .post("/api/runs", json!({"task_name": "sync", "idempotency_key": "k-1"}))
        .await;
    assert_ne!(
        after_end.ok(201)["id"],
        first["id"],
        "a finished run no longer holds its key"
    );
    s.stop().await;
}

async fn failing_the_last_attempt_dead_letters_the_run(s: TestServer) {
    let run = s
        .run_through("t", json!({"max_attempts": 1}), &["start", "end:crashed:137"])
        .await;
    assert_eq!(run["dead_lettered"], true);
    let events = s
        .get(&format!(
            "/api/runs/{}/events?type=run.dead_lettered",
            run["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(events.ok(200)["events"].as_array().unwrap().len(), 1);
    s.stop().await;
}

/// The document states the rules the parsers apply, so a client generated
/// from it (or a fuzzer) makes valid calls: any-JSON fields, enums, patterns,
/// formats, every status each route can answer, SSE frames, both retry shapes.
async fn the_document_states_what_the_routes_accept_and_answer(s: TestServer) {
    let doc = s.get("/openapi.json").await.ok(200).clone();
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("RunState", "payload"),
        ("RunState", "result"),
        ("Checkpoint", "state"),
        ("OutputRecord", "value"),
        ("ToolCall", "input"),
        ("RunLog", "data"),
        ("FieldError", "value"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert!(property.is_object(), "{schema}.{field}");
        assert!(
            property.get("type").is_none(),
            "{schema}.{field} is any JSON: {property}"
        );
    }
    let create = &schemas["CreateRunRequest"]["properties"];
    assert_eq!(create["task_name"]["pattern"], "^[a-zA-Z0-9._-]{1,100}$");
    assert_eq!(create["parent_run_id"]["format"], "uuid");
    assert_eq!(create["max_attempts"]["maximum"], 1000);
    assert!(create["triggered_by"]
        .to_string()
        .contains("#/components/schemas/TriggeredBy"));
    assert!(schemas["TriggeredBy"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("rerun")));
    assert!(schemas["EndReason"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("log_overflow")));
    assert_eq!(schemas["SortField"]["enum"].as_array().unwrap().len(), 7);
    assert!(schemas["SortField"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("deadline_at")));
    assert_eq!(schemas["RetryKind"]["enum"], json!(["retry", "dlq_replay", "restart"]));
    let problem = &schemas["Problem"];
    for field in ["message", "details", "code", "detail", "status", "title", "type"] {
        assert!(
            problem["required"].as_array().unwrap().contains(&json!(field)),
            "{field}"
        );
    }
    assert_eq!(problem["properties"]["details"]["type"], "object");

    let retry =
        &doc["paths"]["/api/runs/{id}/retry"]["post"]["responses"]["202"]["content"]["application/json"]["schema"];
    let one_of = &schemas[retry["$ref"].as_str().unwrap().rsplit('/').next().unwrap()]["oneOf"];
    assert_eq!(
        one_of,
        &json!([{"$ref": "#/components/schemas/RetryAccepted"}, {"$ref": "#/components/schemas/RetryChildrenAccepted"}])
    );
    for path in ["/api/events/stream", "/api/runs/{id}/stream"] {
        let ok = &doc["paths"][path]["get"]["responses"]["200"];
        let frame = &ok["content"]["text/event-stream"]["schema"];
        assert_eq!(
            frame["properties"]["data"]["contentSchema"]["$ref"],
            "#/components/schemas/EventEnvelope"
        );
        assert!(ok["description"].as_str().unwrap().contains("run.ended"), "{path}");
    }

    let statuses = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let has = |path: &str, method: &str, wanted: &[&str]| {
        let got = statuses(path, method);
        for status in wanted {
            assert!(
                got.iter().any(|g| g == status),
                "{method} {path} documents {status}: {got:?}"
            );
        }
    };
    has("/api/runs", "get", &["200", "400", "401", "403", "422", "429", "503"]);
    has(
        "/api/runs",
        "post",
        &[
            "201", "200", "400", "401", "403", "409", "413", "415", "422", "429", "503",
        ],
    );
    has("/api/runs/{id}", "get", &["404", "503"]);
    has("/api/runs/{id}/end", "post", &["404", "409", "413", "415"]);
    has("/healthz", "get", &["200", "503"]);
    assert!(
        !statuses("/healthz", "get").contains(&"401".to_owned()),
        "health is public"
    );
    let too_many = &doc["components"]["responses"]["RateLimited"];
    for header in [
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-Request-Id",
    ] {
        assert!(too_many["headers"][header].is_object(), "429 documents {header}");
    }
    let id = &doc["paths"]["/api/runs/{id}"]["get"]["parameters"][0];
    assert_eq!(
        (id["name"].as_str(), id["schema"]["format"].as_str()),
        (Some("id"), Some("uuid"))
    );
    s.stop().await;
}

async fn openapi_and_offline_docs_are_served(s: TestServer) {
    let doc = s.get("/openapi.json").await;
    let doc = doc.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/runs",
        "/api/runs/{id}",
        "/api/runs/{id}/start",
        "/api/runs/{id}/end",
        "/api/runs/{id}/retry",
        "/api/runs/{id}/replay",
        "/api/runs/{id}/events",
        "/api/tasks",
        "/api/tasks/{taskName}/runs",
        "/api/runs/{id}/restore",
        "/api/runs/{id}/history",
        "/api/runs/diff",
        "/api/events",
        "/api/events/stream",
        "/api/runs/{id}/stream",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
    let page = s.get("/docs/").await;
    let html = page.ok(200).as_str().unwrap();
    assert!(html.contains("swagger"), "the docs page is Swagger UI");
    assert!(!html.contains("cdn") && !html.contains("unpkg"), "no CDN assets");
    let init = s.get("/docs/swagger-initializer.js").await;
    assert!(init.ok(200).as_str().unwrap().contains("/openapi.json"));
    assert_eq!(s.get("/docs/swagger-ui-bundle.js").await.status.as_u16(), 200);
    assert_eq!(s.get("/healthz").await.ok(200)["status"], "ok");
    assert_eq!(s.get("/readyz").await.ok(200)["status"], "ok");
    s.stop().await;
}

async fn every_response_echoes_the_request_id_recorded_on_its_events(s: TestServer) {
    let given = s
        .client
        .post(s.url("/api/runs"))
        .header("x-request-id", "req-42")
        .json(&json!({"task_name": "t"}))
        .send_checked()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let run: serde_json::Value = given.json().await.unwrap();
    let made = s
        .client
        .post(s.url(&format!("/api/runs/{}/start", run["id"].as_str().unwrap())))
        .json(&json!({}))
        .send_checked()
        .await
        .unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        uuid::Uuid::parse_str(&made_id).is_ok(),
        "the server makes one when none is given: {made_id}"
    );
    let events = s
        .get(&format!("/api/runs/{}/events", run["id"].as_str().unwrap()))
        .await;
    let events = events.ok(200)["events"].as_array().unwrap().clone();
    assert_eq!(events[0]["metadata"]["request_id"], "req-42");
    assert_eq!(events[1]["metadata"]["request_id"], made_id.as_str());
    let problem = s
        .client
        .get(s.url("/api/runs/nope"))
        .header("x-request-id", "req-43")
        .send_checked()
        .await
        .unwrap();
    assert_eq!(problem.headers()["x-request-id"], "req-43", "errors echo it too");
    s.stop().await;
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn metrics_count_requests_by_route_template_and_appends(s: TestServer) {
    let created = r#"http_requests_total{method="POST",route="/api/runs",status="201"}"#;
    let started = r#"http_requests_total{method="POST",route="/api/runs/{id}/start",status="200"}"#;
    let before = s.get("/metrics").await;
    let before_text = before.ok(200).as_str().unwrap().to_owned();
    assert!(before.content_type.starts_with("text/plain"));
    let run = s.create(json!({"task_name": "m"})).await;
    s.post(&format!("/api/runs/{}/start", run["id"].as_str().unwrap()), json!({}))
        .await
        .ok(200);
    let after = s.get("/metrics").await;
    let text = after.ok(200).as_str().unwrap();
    // Other tests in this process share the recorder: compare deltas.
    assert!(counter(text, created) >= counter(&before_text, created) + 1.0, "{text}");
    assert!(
        counter(text, started) >= counter(&before_text, started) + 1.0,
        "the route template, not the id"
    );
    assert!(
        !text.contains(run["id"].as_str().unwrap()),
        "run ids never become labels"
    );
    let appended = "runledger_appended_events_total";
    assert!(
        counter(text, appended) >= counter(&before_text, appended) + 2.0,
        "{text}"
    );
    for series in [
        "runledger_commit_batch_size_bucket",
        "runledger_commit_seconds_bucket",
        "http_request_duration_seconds_bucket",
        "runledger_log_head_position",
        "runledger_stream_tail_lag_events",
    ] {
        assert!(text.contains(series), "{series} missing");
    }
    s.stop().await;
}

backend_tests!(
    metrics_count_requests_by_route_template_and_appends,
    every_response_echoes_the_request_id_recorded_on_its_events,
    a_run_from_creation_to_retry_through_the_api,
    every_event_carries_position_hash_chain_and_metadata,
    the_events_table_refuses_updates_and_deletes,
    a_stale_expected_version_is_a_conflict_and_appends_nothing,
    idempotency_key_returns_the_unfinished_run_of_the_same_task,
    failing_the_last_attempt_dead_letters_the_run,
    openapi_and_offline_docs_are_served,
    the_document_states_what_the_routes_accept_and_answer,
    concurrent_commands_on_one_run_never_double_apply,
);

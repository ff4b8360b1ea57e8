//! Every invalid request gets an RFC 9457 problem with a stable code and the
//! location of each fault, and appends nothing to the log.

mod common;

use common::SendChecked;

use common::{Reply, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// A valid run id that no run has.
const NO_SUCH_RUN: &str = "0190a5b2-7c3e-7000-8000-00000000beef";

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

/// The locations of a problem's errors, sorted.
fn locations(body: &Value) -> Vec<String> {
    let mut all: Vec<String> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "every fault says what is wrong: {body}"
            );
            e["location"].as_str().expect("location").to_owned()
        })
        .collect();
    all.sort();
    all
}

/// Asserts a 422 whose only fault is at `location`.
#[track_caller]
fn only_fault_at(reply: &Reply, location: &str) {
    let body = reply.invalid_at(location);
    assert_eq!(locations(body), [location], "body: {body}");
}

/// Asserts the log still holds `before` events.
async fn nothing_appended(s: &TestServer, before: i64, what: &str) {
    assert_eq!(s.event_count().await, before, "{what} appended events");
}

async fn raw(s: &TestServer, method: Method, path: &str, body: &str) -> Reply {
    s.send_raw(method, path, "application/json", body).await
}

async fn malformed_json_is_a_400_and_appends_nothing(s: TestServer) {
    let run = id(&s.run_through("t", json!({}), &["start"]).await);
    let before = s.event_count().await;
    let end = format!("/api/runs/{run}/end");
    for (path, body) in [
        ("/api/runs", "{"),
        ("/api/runs", r#"{"task_name": "t"} x"#),
        ("/api/runs", r#"{"task_name": "t"}}"#),
        ("/api/runs", r#"{"task_name": "t",}"#),
        ("/api/runs", r#"{"task_name": 't'}"#),
        (end.as_str(), "{"),
        (end.as_str(), r#"{"end_reason": "success"} {"#),
        (end.as_str(), r#"{"end_reason": "success""#),
    ] {
        let reply = raw(&s, Method::POST, path, body).await;
        let problem = reply.problem(400, "malformed_request");
        assert_eq!(locations(problem), ["body"], "{path} {body}: {problem}");
        nothing_appended(&s, before, body).await;
    }
    let state = s.get(&format!("/api/runs/{run}")).await;
    assert_eq!(state.ok(200)["status"], "running");
    s.stop().await;
}

async fn wrong_types_missing_and_unknown_fields_are_422_at_the_field(s: TestServer) {
    let running = id(&s.run_through("t", json!({}), &["start"]).await);
    let pending = id(&s.create(json!({"task_name": "t"})).await);
    let before = s.event_count().await;
    let create = "/api/runs".to_owned();
    let end = format!("/api/runs/{running}/end");
    let start = format!("/api/runs/{pending}/start");
    let reschedule = format!("/api/runs/{pending}/reschedule");
    let cases: Vec<(&String, Value, &str)> = vec![
        // Wrong types.
        (&create, json!({"task_name": 5}), "body.task_name"),
        (&create, json!({"task_name": "t", "tags": []}), "body.tags"),
        (&create, json!({"task_name": "t", "tags": {"env": 1}}), "body.tags.env"),
        (
            &create,
            json!({"task_name": "t", "max_attempts": "3"}),
            "body.max_attempts",
        ),
        (&create, json!({"task_name": "t", "priority": 1.5}), "body.priority"),
        (&create, json!({"task_name": "t", "depends_on": "x"}), "body.depends_on"),
        (
            &end,
            json!({"end_reason": "failed", "exit_code": "x"}),
            "body.exit_code",
        ),
        (&end, json!({"end_reason": 1}), "body.end_reason"),
        (&start, json!({"expected_version": "1"}), "body.expected_version"),
        (&reschedule, json!({"scheduled_at": 5}), "body.scheduled_at"),
        // Missing required fields.
        (&create, json!({}), "body.task_name"),
        (&create, json!({"triggered_by": "cron"}), "body.task_name"),
        (&end, json!({}), "body.end_reason"),
        (&end, json!({"exit_code": 0}), "body.end_reason"),
        (&reschedule, json!({}), "body.scheduled_at"),
        // Unknown fields.
        (&create, json!({"task_name": "t", "colour": "red"}), "body.colour"),
        (&start, json!({"force": true}), "body.force"),
        (&end, json!({"end_reason": "success", "code": 0}), "body.code"),
    ];
    for (path, body, location) in cases {
        let reply = s.post(path, body.clone()).await;
        only_fault_at(&reply, location);
        nothing_appended(&s, before, &format!("{path} {body}")).await;
    }
    // An empty body reads as `{}`.
    let reply = raw(&s, Method::POST, "/api/runs", "").await;
    only_fault_at(&reply, "body.task_name");
    let reply = raw(&s, Method::POST, &end, " ").await;
    only_fault_at(&reply, "body.end_reason");
    let reply = s.post(&format!("/api/runs/{running}/retry"), json!({"why": "x"})).await;
    only_fault_at(&reply, "body.why");
    let reply = s.delete(&format!("/api/runs/{running}"), json!({"reason": 5})).await;
    only_fault_at(&reply, "body.reason");
    nothing_appended(&s, before, "empty and unknown bodies").await;
    s.stop().await;
}

async fn a_body_that_is_not_json_is_415(s: TestServer) {
    let run = id(&s.create(json!({"task_name": "t"})).await);
    let before = s.event_count().await;
    for (path, content_type, body) in [
        ("/api/runs".to_owned(), "text/plain", r#"{"task_name": "t"}"#),
        (
            "/api/runs".to_owned(),
            "application/x-www-form-urlencoded",
            "task_name=t",
        ),
        ("/api/runs".to_owned(), "application/jsonx", r#"{"task_name": "t"}"#),
        (format!("/api/runs/{run}/start"), "text/plain", "{}"),
    ] {
        let reply = s.send_raw(Method::POST, &path, content_type, body).await;
        reply.problem(415, "unsupported_media_type");
        nothing_appended(&s, before, content_type).await;
    }
    // JSON with parameters or a +json suffix is JSON.
    let reply = s
        .send_raw(
            Method::POST,
            "/api/runs",
            "application/json; charset=utf-8",
            r#"{"task_name": "t"}"#,
        )
        .await;
    reply.ok(201);
    assert_eq!(s.event_count().await, before + 1);
    s.stop().await;
}

async fn invalid_values_on_create_are_422_at_the_field(s: TestServer) {
    s.create(json!({"task_name": "existing"})).await;
    let before = s.event_count().await;
    let cases = [
        (json!({"task_name": "has space"}), "body.task_name"),
        (json!({"task_name": "x".repeat(101)}), "body.task_name"),
        (json!({"task_name": ""}), "body.task_name"),
        (json!({"task_name": "ünïcode"}), "body.task_name"),
        (json!({"task_name": "a/b"}), "body.task_name"),
        (json!({"task_name": "t", "triggered_by": "robot"}), "body.triggered_by"),
        (json!({"task_name": "t", "triggered_by": "CRON"}), "body.triggered_by"),
        (json!({"task_name": "t", "project": "has space"}), "body.project"),
        (json!({"task_name": "t", "project": ""}), "body.project"),
        (
            json!({"task_name": "t", "scheduled_at": "tomorrow"}),
            "body.scheduled_at",
        ),
        (
            json!({"task_name": "t", "scheduled_at": "2026-13-01T00:00:00Z"}),
            "body.scheduled_at",
        ),
        (
            json!({"task_name": "t", "scheduled_at": "2026-01-01T00:00:00"}),
            "body.scheduled_at",
        ),
        (
            json!({"task_name": "t", "parent_run_id": "not-a-uuid"}),
            "body.parent_run_id",
        ),
        (
            json!({"task_name": "t", "parent_run_id": NO_SUCH_RUN}),
            "body.parent_run_id",
        ),
        (json!({"task_name": "t", "max_attempts": 0}), "body.max_attempts"),
        (json!({"task_name": "t", "max_attempts": 1001}), "body.max_attempts"),
        (json!({"task_name": "t", "tags": {"a:b": "v"}}), "body.tags.a:b"),
        (json!({"task_name": "t", "timeout_secs": 0}), "body.timeout_secs"),
        (json!({"task_name": "t", "depends_on": ["nope"]}), "body.depends_on.0"),
        (
            json!({"task_name": "t", "depends_on": [NO_SUCH_RUN]}),
            "body.depends_on",
        ),
        (json!({"task_name": "t", "idempotency_key": ""}), "body.idempotency_key"),
    ];
    for (body, location) in cases {
        let reply = s.post("/api/runs", body.clone()).await;
        only_fault_at(&reply, location);
        nothing_appended(&s, before, &body.to_string()).await;
    }
    let reply = s
        .post("/api/runs", json!({"task_name": "t", "parent_run_id": NO_SUCH_RUN}))
        .await;
    let fault = &reply.invalid_at("body.parent_run_id")["errors"][0];
    assert_eq!(fault["value"], NO_SUCH_RUN);
    // The boundaries themselves are accepted.
    s.create(json!({"task_name": "x".repeat(100), "max_attempts": 1})).await;
    s.create(json!({"task_name": "t", "max_attempts": 1000})).await;
    assert_eq!(s.event_count().await, before + 2);
    s.stop().await;
}

async fn invalid_values_on_transitions_are_422_at_the_field(s: TestServer) {
    let running = id(&s.run_through("t", json!({}), &["start"]).await);
    let pending = id(&s.create(json!({"task_name": "t"})).await);
    let before = s.event_count().await;
    let cases = [
        (
            format!("/api/runs/{running}/end"),
            json!({"end_reason": "exploded"}),
            "body.end_reason",
        ),
        (
            format!("/api/runs/{running}/end"),
            json!({"end_reason": "Success"}),
            "body.end_reason",
        ),
        (
            format!("/api/runs/{running}/heartbeat"),
            json!({"expected_version": 0}),
            "body.expected_version",
        ),
        (
            format!("/api/runs/{pending}/start"),
            json!({"expected_version": -1}),
            "body.expected_version",
        ),
        (
            format!("/api/runs/{pending}/start"),
            json!({"replica_index": -1}),
            "body.replica_index",
        ),
        (
            format!("/api/runs/{pending}/reschedule"),
            json!({"scheduled_at": "next week"}),
            "body.scheduled_at",
        ),
        (
            format!("/api/runs/{pending}/cancel"),
            json!({"reason": ""}),
            "body.reason",
        ),
        (
            format!("/api/runs/{running}/pause"),
            json!({"reason": "x".repeat(1001)}),
            "body.reason",
        ),
    ];
    for (path, body, location) in cases {
        let reply = s.post(&path, body).await;
        only_fault_at(&reply, location);
        nothing_appended(&s, before, &path).await;
    }
    let reply = s
        .delete(&format!("/api/runs/{pending}"), json!({"expected_version": 0}))
        .await;
    only_fault_at(&reply, "body.expected_version");
    nothing_appended(&s, before, "delete").await;
    let states = [
        s.get(&format!("/api/runs/{running}")).await.ok(200).clone(),
        s.get(&format!("/api/runs/{pending}")).await.ok(200).clone(),
    ];
    assert_eq!(
        (&states[0]["status"], &states[0]["version"]),
        (&json!("running"), &json!(2))
    );
    assert_eq!(
        (&states[1]["status"], &states[1]["version"], &states[1]["deleted"]),
        (&json!("pending"), &json!(1), &json!(false))
    );
    s.stop().await;
}

async fn every_fault_of_a_body_is_reported_at_once(s: TestServer) {
    let running = id(&s.run_through("t", json!({}), &["start"]).await);
    let before = s.event_count().await;
    let reply = s
        .post(
            "/api/runs",
            json!({
                "task_name": "bad name",
                "triggered_by": "robot",
                "project": "a b",
                "max_attempts": 0,
                "tags": {"a:b": "v"},
                "parent_run_id": "x",
                "scheduled_at": "soon",
            }),
        )
        .await;
    let body = reply.problem(422, "validation_failed");
    assert_eq!(
        locations(body),
        [
            "body.max_attempts",
            "body.parent_run_id",
            "body.project",
            "body.scheduled_at",
            "body.tags.a:b",
            "body.task_name",
            "body.triggered_by",
        ]
    );
    let reply = s
        .post(
            &format!("/api/runs/{running}/end"),
            json!({"end_reason": "nope", "expected_version": 0}),
        )
        .await;
    let body = reply.problem(422, "validation_failed");
    assert_eq!(locations(body), ["body.end_reason", "body.expected_version"]);
    nothing_appended(&s, before, "several faults").await;
    s.stop().await;
}

async fn each_invalid_list_parameter_is_422_at_its_location(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    let before = s.event_count().await;
    let many_tags: String = (0..21).map(|i| format!("tag=k{i}:v&")).collect();
    let cases: Vec<(String, &str)> = [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=abc", "query.limit"),
        ("limit=-1", "query.limit"),
        ("offset=-1", "query.offset"),
        ("offset=x", "query.offset"),
        ("sort_field=size", "query.sort_field"),
        ("sort_field=duration_ms", "query.sort_field"),
        ("sort_direction=up", "query.sort_direction"),
        ("sort_direction=ascending", "query.sort_direction"),
        ("created_after=yesterday", "query.created_after"),
        ("created_after=2026-01-01", "query.created_after"),
        ("created_before=2026-01-01T00:00:00", "query.created_before"),
        (
            "created_after=2026-02-01T00:00:00Z&created_before=2026-01-01T00:00:00Z",
            "query.created_after",
        ),
        ("exit_code_min=5&exit_code_max=1", "query.exit_code_min"),
        ("exit_code_min=x", "query.exit_code_min"),
        ("exit_code_max=1.5", "query.exit_code_max"),
        ("status=done", "query.status"),
        ("status=running,done", "query.status"),
        ("status=Running", "query.status"),
        ("triggered_by=robot", "query.triggered_by"),
        ("triggered_by=cron,robot", "query.triggered_by"),
        ("tag=env", "query.tag"),
        ("tag=:prod", "query.tag"),
        ("tag=env:prod&tag=team", "query.tag"),
        ("parent_run_id=123", "query.parent_run_id"),
        ("include_deleted=maybe", "query.include_deleted"),
        ("retries_only=yes", "query.retries_only"),
        ("task_name=bad%20name", "query.task_name"),
        ("limit=5&limit=6", "query.limit"),
        ("status=running&status=ended", "query.status"),
        ("sort_field=status&sort_field=status", "query.sort_field"),
        ("limt=5", "query.limt"),
        ("as_off=2026-01-01T00:00:00Z", "query.as_off"),
    ]
    .into_iter()
    .map(|(q, l)| (q.to_owned(), l))
    .chain([(many_tags, "query.tag")])
    .collect();
    for (query, location) in &cases {
        for path in ["/api/runs", "/api/tasks/t/runs"] {
            let reply = s.get(&format!("{path}?{query}")).await;
            only_fault_at(&reply, location);
        }
    }
    // The fault carries the offending value.
    let reply = s.get("/api/runs?limit=abc").await;
    let fault = &reply.invalid_at("query.limit")["errors"][0];
    assert_eq!(fault["value"], "abc");
    let reply = s.get("/api/runs?limt=5").await;
    assert_eq!(reply.invalid_at("query.limt")["errors"][0]["value"], "5");
    for (query, location) in [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("offset=-1", "query.offset"),
        ("status=running", "query.status"),
    ] {
        let reply = s.get(&format!("/api/tasks?{query}")).await;
        only_fault_at(&reply, location);
    }
    nothing_appended(&s, before, "list queries").await;
    s.stop().await;
}

/// Every fault of the values is reported at once (a parameter the route
/// does not read is refused before any value is read: see http_contract).
async fn every_fault_of_a_query_is_reported_at_once(s: TestServer) {
    let reply = s
        .get(
            "/api/runs?limit=0&offset=-1&sort_field=size&sort_direction=up&status=done\
             &include_deleted=maybe&tag=env&exit_code_min=9&exit_code_max=1",
        )
        .await;
    let body = reply.problem(422, "validation_failed");
    assert_eq!(
        locations(body),
        [
            "query.exit_code_min",
            "query.include_deleted",
            "query.limit",
            "query.offset",
            "query.sort_direction",
            "query.sort_field",
            "query.status",
            "query.tag",
        ]
    );
    let reply = s.get("/api/tasks/bad%20name/runs?limit=0&task_name=x%20y").await;
    let body = reply.problem(422, "validation_failed");
    assert_eq!(locations(body), ["path.taskName", "query.limit", "query.task_name"]);
    nothing_appended(&s, 0, "invalid queries").await;
    s.stop().await;
}

async fn path_faults_are_422_at_the_path_parameter(s: TestServer) {
    s.create(json!({"task_name": "etl"})).await;
    let before = s.event_count().await;
    for (method, path, body) in [
        (Method::GET, "/api/runs/not-a-uuid", None),
        (Method::GET, "/api/runs/123/events", None),
        (Method::POST, "/api/runs/not-a-uuid/start", Some(json!({}))),
        (
            Method::POST,
            "/api/runs/not-a-uuid/end",
            Some(json!({"end_reason": "success"})),
        ),
        (Method::POST, "/api/runs/not-a-uuid/cancel", Some(json!({}))),
        (Method::POST, "/api/runs/not-a-uuid/retry", Some(json!({}))),
        (Method::DELETE, "/api/runs/not-a-uuid", Some(json!({}))),
    ] {
        let reply = s.send(method, path, body).await;
        only_fault_at(&reply, "path.id");
        assert_eq!(reply.body["errors"][0]["value"], path.split('/').nth(3).unwrap());
    }
    let long = "x".repeat(101);
    for path in [
        "/api/tasks/bad%20name/runs".to_owned(),
        "/api/tasks/b%C3%A4d/runs".to_owned(),
        format!("/api/tasks/{long}/runs"),
    ] {
        let reply = s.get(&path).await;
        only_fault_at(&reply, "path.taskName");
    }
    // A body of the right shape with a bad value: both faults are reported.
    let both = s.post("/api/runs/not-a-uuid/end", json!({"end_reason": "nope"})).await;
    both.invalid_at("path.id");
    both.invalid_at("body.end_reason");
    let reply = s.get("/api/tasks/etl/runs?task_name=other").await;
    only_fault_at(&reply, "query.task_name");
    let reply = s.get("/api/tasks/etl/runs?task_name=etl").await;
    assert_eq!(reply.ok(200)["total"], 1);
    nothing_appended(&s, before, "path faults").await;
    s.stop().await;
}

async fn a_path_parameter_that_is_not_utf8_is_a_problem(s: TestServer) {
    for path in ["/api/runs/%FF", "/api/tasks/%FF/runs"] {
        let reply = s.get(path).await;
        reply.problem(400, "malformed_request");
    }
    s.stop().await;
}

async fn an_unknown_run_is_404_on_every_route(s: TestServer) {
    s.create(json!({"task_name": "t"})).await;
    let before = s.event_count().await;
    let run = format!("/api/runs/{NO_SUCH_RUN}");
    let cases = [
        (Method::GET, run.clone(), None),
        (Method::GET, format!("{run}/events"), None),
        (Method::POST, format!("{run}/start"), Some(json!({}))),
        (Method::POST, format!("{run}/heartbeat"), Some(json!({}))),
        (
            Method::POST,
            format!("{run}/end"),
            Some(json!({"end_reason": "success"})),
        ),
        (Method::POST, format!("{run}/cancel"), Some(json!({}))),
        (Method::POST, format!("{run}/pause"), Some(json!({}))),
        (Method::POST, format!("{run}/resume"), Some(json!({}))),
        (
            Method::POST,
            format!("{run}/reschedule"),
            Some(json!({"scheduled_at": "2030-01-01T00:00:00Z"})),
        ),
        (Method::POST, format!("{run}/restore"), Some(json!({}))),
        (Method::DELETE, run.clone(), Some(json!({}))),
        (Method::POST, format!("{run}/retry"), Some(json!({}))),
        (Method::POST, format!("{run}/replay"), Some(json!({}))),
        (
            Method::POST,
            format!("{run}/start"),
            Some(json!({"expected_version": 1})),
        ),
    ];
    for (method, path, body) in cases {
        let reply = s.send(method.clone(), &path, body).await;
        let problem = reply.problem(404, "run_not_found");
        assert_eq!(problem["instance"], path.as_str());
        assert_eq!(
            problem["details"],
            json!({"resource": "run", "id": NO_SUCH_RUN}),
            "{method} {path}"
        );
        nothing_appended(&s, before, &format!("{method} {path}")).await;
    }
    let upper = format!("/api/runs/{}", NO_SUCH_RUN.to_uppercase());
    let problem = s.get(&upper).await;
    assert_eq!(
        problem.problem(404, "run_not_found")["details"],
        json!({"resource": "run", "id": NO_SUCH_RUN}),
        "the id as the ledger spells it"
    );
    s.stop().await;
}

/// Each run's (status, version, deleted).
async fn versions(s: &TestServer, runs: &[&String]) -> Vec<(Value, Value, Value)> {
    let mut out = Vec::new();
    for run in runs {
        let reply = s.get(&format!("/api/runs/{run}")).await;
        let state = reply.ok(200);
        out.push((
            state["status"].clone(),
            state["version"].clone(),
            state["deleted"].clone(),
        ));
    }
    out
}

async fn illegal_transitions_are_409_with_the_current_status(s: TestServer) {
    let pending = id(&s.create(json!({"task_name": "t"})).await);
    let running = id(&s.run_through("t", json!({}), &["start"]).await);
    let ended = id(&s.run_through("t", json!({}), &["start", "end:success:0"]).await);
    let deleted = id(&s.run_through("t", json!({}), &["delete"]).await);
    let before = s.event_count().await;
    let all = [&pending, &running, &ended, &deleted];
    let versions_before = versions(&s, &all).await;

    let cases = [
        (Method::POST, format!("/api/runs/{ended}/start"), json!({}), "ended"),
        (
            Method::POST,
            format!("/api/runs/{ended}/end"),
            json!({"end_reason": "failed", "exit_code": 1}),
            "ended",
        ),
        (Method::POST, format!("/api/runs/{pending}/pause"), json!({}), "pending"),
        (
            Method::POST,
            format!("/api/runs/{running}/resume"),
            json!({}),
            "running",
        ),
        (
            Method::POST,
            format!("/api/runs/{pending}/heartbeat"),
            json!({}),
            "pending",
        ),
        (Method::POST, format!("/api/runs/{ended}/heartbeat"), json!({}), "ended"),
        (
            Method::POST,
            format!("/api/runs/{running}/reschedule"),
            json!({"scheduled_at": "2030-01-01T00:00:00Z"}),
            "running",
        ),
        (Method::POST, format!("/api/runs/{running}/start"), json!({}), "running"),
        (
            Method::POST,
            format!("/api/runs/{pending}/restore"),
            json!({}),
            "pending",
        ),
        (Method::POST, format!("/api/runs/{ended}/restore"), json!({}), "ended"),
        (Method::DELETE, format!("/api/runs/{deleted}"), json!({}), "pending"),
        (Method::POST, format!("/api/runs/{running}/retry"), json!({}), "running"),
        (
            Method::POST,
            format!("/api/runs/{pending}/replay"),
            json!({}),
            "pending",
        ),
        (Method::POST, format!("/api/runs/{ended}/cancel"), json!({}), "ended"),
        (Method::POST, format!("/api/runs/{ended}/pause"), json!({}), "ended"),
    ];
    for (method, path, body, status) in cases {
        let reply = s.send(method.clone(), &path, Some(body)).await;
        let problem = reply.problem(409, "illegal_transition");
        assert_eq!(problem["current_status"], status, "{method} {path}: {problem}");
        assert_eq!(problem["details"], json!({"current_status": status}), "{method} {path}");
        nothing_appended(&s, before, &format!("{method} {path}")).await;
    }
    assert_eq!(versions(&s, &all).await, versions_before);
    // Ending twice through /end itself.
    let reply = s
        .post(&format!("/api/runs/{running}/end"), json!({"end_reason": "success"}))
        .await;
    reply.ok(200);
    let after_end = s.event_count().await;
    let reply = s
        .post(&format!("/api/runs/{running}/end"), json!({"end_reason": "success"}))
        .await;
    assert_eq!(reply.problem(409, "illegal_transition")["current_status"], "ended");
    nothing_appended(&s, after_end, "a second end").await;
    assert_eq!(after_end, before + 1);
    s.stop().await;
}

/// JSON does not tell `3` from `3.0`: an integer field takes either, and
/// refuses a fraction at its location.
async fn integer_fields_take_whole_floats(s: TestServer) {
    let run = s
        .create(json!({"task_name": "t", "max_attempts": 3.0, "priority": -2.0, "timeout_secs": 1e3}))
        .await;
    assert_eq!(
        (
            run["max_attempts"].clone(),
            run["priority"].clone(),
            run["timeout_secs"].clone()
        ),
        (json!(3), json!(-2), json!(1000))
    );
    let id = id(&run);
    let started = s
        .post(&format!("/api/runs/{id}/start"), json!({"expected_version": 1.0}))
        .await;
    assert_eq!(started.ok(200)["version"], 2);
    let before = s.event_count().await;
    s.post(&format!("/api/runs/{id}/heartbeat"), json!({"expected_version": 2.5}))
        .await
        .invalid_at("body.expected_version");
    s.post("/api/runs", json!({"task_name": "t", "priority": 3e9}))
        .await
        .invalid_at("body.priority");
    nothing_appended(&s, before, "fractions and out-of-range integers").await;
    s.stop().await;
}

/// The harness's OpenAPI check refuses what the document does not allow, so
/// a response that drifts from it fails the test that received it.
async fn the_openapi_check_refuses_undocumented_answers(s: TestServer) {
    let run = id(&s.create(json!({"task_name": "t"})).await);
    let fault = |method: Method, path: String, status: u16, content_type: &'static str, body: Value| {
        let base = s.base.clone();
        async move {
            common::contract_fault(
                &base,
                method,
                &path,
                status,
                Some(content_type),
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let problem = json!({"type": "/problems/x", "title": "T", "status": 404, "detail": "d", "code": "x", "message": "d", "details": {}});
    let run_path = format!("/api/runs/{run}");
    // What the server really answers passes.
    let answered = s.get(&run_path).await;
    fault(
        Method::GET,
        run_path.clone(),
        200,
        "application/json",
        answered.body.clone(),
    )
    .await
    .expect("the real answer is documented");
    fault(
        Method::GET,
        run_path.clone(),
        404,
        "application/problem+json",
        problem.clone(),
    )
    .await
    .expect("a documented problem");
    // A status the operation does not document.
    let e = fault(
        Method::GET,
        run_path.clone(),
        418,
        "application/problem+json",
        problem.clone(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("GET /api/runs/{id}: status 418 is not documented"), "{e}");
    // A body that breaks the documented schema names the field.
    let mut broken = answered.body.clone();
    broken["status"] = json!("exploded");
    let e = fault(Method::GET, run_path.clone(), 200, "application/json", broken)
        .await
        .unwrap_err();
    assert!(e.contains("/status"), "{e}");
    // A problem without `details` is not a problem of this API.
    let mut bare = problem.clone();
    bare.as_object_mut().unwrap().remove("details");
    let e = fault(Method::GET, run_path.clone(), 404, "application/problem+json", bare)
        .await
        .unwrap_err();
    assert!(e.contains("details"), "{e}");
    // An undocumented content type.
    let e = fault(Method::GET, run_path, 200, "text/html", json!("<p>"))
        .await
        .unwrap_err();
    assert!(e.contains("text/html is not documented"), "{e}");
    s.stop().await;
}

async fn unknown_routes_and_methods_are_problems(s: TestServer) {
    let run = id(&s.create(json!({"task_name": "t"})).await);
    let before = s.event_count().await;
    for (method, path) in [
        (Method::GET, "/api/nope".to_owned()),
        (Method::GET, "/api/runs/".to_owned()),
        (Method::POST, format!("/api/runs/{run}/explode")),
        (Method::GET, format!("/api/runs/{run}/events/extra")),
        (Method::GET, "/api/tasks/t".to_owned()),
    ] {
        let reply = s.send(method.clone(), &path, Some(json!({}))).await;
        let problem = reply.problem(404, "route_not_found");
        assert_eq!(problem["instance"], path.as_str(), "{method} {path}");
        assert_eq!(
            problem["details"],
            json!({"resource": "route", "id": path}),
            "{method} {path}"
        );
        nothing_appended(&s, before, &format!("{method} {path}")).await;
    }
    for (method, path) in [
        (Method::PUT, "/api/runs".to_owned()),
        (Method::DELETE, "/api/runs".to_owned()),
        (Method::PATCH, format!("/api/runs/{run}")),
        (Method::GET, format!("/api/runs/{run}/start")),
        (Method::POST, "/api/tasks".to_owned()),
        // The method is refused before its query string is read: a
        // parameter of the route's other methods is not the fault.
        (Method::TRACE, "/api/tasks?limit=100&offset=0".to_owned()),
        (Method::PATCH, format!("/api/runs/{run}?as_of=0")),
        (Method::PUT, "/api/runs/diff?from=0&to=1".to_owned()),
        (Method::TRACE, "/api/events/stream?after=0".to_owned()),
        (Method::POST, "/healthz?zzz=1".to_owned()),
    ] {
        let reply = s.send(method.clone(), &path, Some(json!({}))).await;
        reply.problem(405, "method_not_allowed");
        nothing_appended(&s, before, &format!("{method} {path}")).await;
    }
    s.stop().await;
}

async fn a_body_over_8_mib_is_413(s: TestServer) {
    let before = s.event_count().await;
    let big = format!(
        r#"{{"task_name": "big", "payload": "{}"}}"#,
        "x".repeat(9 * 1024 * 1024)
    );
    // The server answers 413 as soon as the body passes the limit and closes
    // the connection; a client still uploading may see the close before the
    // answer. That is the client's race, so it gets a few tries to read it.
    let mut reply = None;
    for _ in 0..5 {
        let req = s
            .client
            .post(s.url("/api/runs"))
            .header("content-type", "application/json")
            .body(big.clone());
        match req.send_checked().await {
            Ok(resp) => {
                reply = Some(TestServer::reply(resp).await);
                break;
            }
            Err(e) if e.is_request() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    reply
        .expect("the 413 answer was read")
        .problem(413, "payload_too_large");
    nothing_appended(&s, before, "a 9 MiB body").await;
    // Just under the limit is accepted.
    let fits = format!(
        r#"{{"task_name": "big", "payload": "{}"}}"#,
        "x".repeat(8 * 1024 * 1024 - 64)
    );
    // On a new connection: the pooled one may be the one the server is closing.
    let fresh = reqwest::Client::new()
        .post(s.url("/api/runs"))
        .header("content-type", "application/json")
        .body(fits)
        .send_checked()
        .await
        .expect("request");
    TestServer::reply(fresh).await.ok(201);
    assert_eq!(s.event_count().await, before + 1);
    s.stop().await;
}

/// A query string over 8 KiB, or with over 64 parameters, is refused whole.
async fn oversized_query_strings_are_422(s: TestServer) {
    let long = format!("/api/runs?search={}", "x".repeat(9 * 1024));
    let body = s.get(&long).await.invalid_at("query").clone();
    assert!(body["detail"].as_str().unwrap().contains("at most 8192"), "{body}");
    let many: Vec<String> = (0..65).map(|i| format!("tag=k{i}:v")).collect();
    s.get(&format!("/api/runs?{}", many.join("&")))
        .await
        .invalid_at("query");
    s.get("/api/events?after=0&limit=1").await.ok(200);
    s.stop().await;
}

backend_tests!(
    oversized_query_strings_are_422,
    malformed_json_is_a_400_and_appends_nothing,
    wrong_types_missing_and_unknown_fields_are_422_at_the_field,
    a_body_that_is_not_json_is_415,
    invalid_values_on_create_are_422_at_the_field,
    invalid_values_on_transitions_are_422_at_the_field,
    every_fault_of_a_body_is_reported_at_once,
    each_invalid_list_parameter_is_422_at_its_location,
    every_fault_of_a_query_is_reported_at_once,
    path_faults_are_422_at_the_path_parameter,
    a_path_parameter_that_is_not_utf8_is_a_problem,
    an_unknown_run_is_404_on_every_route,
    illegal_transitions_are_409_with_the_current_status,
    the_openapi_check_refuses_undocumented_answers,
    integer_fields_take_whole_floats,
    unknown_routes_and_methods_are_problems,
    a_body_over_8_mib_is_413,
);

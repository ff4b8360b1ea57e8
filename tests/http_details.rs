//! A run's details and relations through the real server: checkpoints, log
//! lines, usage, tool calls, outputs, debug mode, children, lineage and
//! dependency status — and every refusal appends nothing.

mod common;

use common::{Reply, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const UNKNOWN: &str = "0190f5e2-0000-7000-8000-000000000000";

async fn started(s: &TestServer, task: &str) -> String {
    let run = s.run_through(task, json!({}), &["start"]).await;
    run["id"].as_str().unwrap().to_owned()
}

/// Sends `body` to `path` and checks it is refused with a 422 at `location`
/// and that nothing was appended.
async fn refused_at(s: &TestServer, path: &str, body: Value, location: &str) {
    let before = s.event_count().await;
    s.post(path, body.clone()).await.invalid_at(location);
    assert_eq!(s.event_count().await, before, "{path} {body} appended on refusal");
}

/// A GET refused with a 422 at `location`.
async fn get_refused_at(s: &TestServer, path: &str, location: &str) {
    s.get(path).await.invalid_at(location);
}

async fn unknown_and_malformed_runs(s: &TestServer, detail: &str, body: Value) {
    let before = s.event_count().await;
    let r = s.post(&format!("/api/runs/{UNKNOWN}/{detail}"), body.clone()).await;
    r.problem(404, "run_not_found");
    s.get(&format!("/api/runs/{UNKNOWN}/{detail}"))
        .await
        .problem(404, "run_not_found");
    s.post(&format!("/api/runs/nope/{detail}"), body)
        .await
        .invalid_at("path.id");
    get_refused_at(s, &format!("/api/runs/nope/{detail}"), "path.id").await;
    let r = s
        .send_raw(
            Method::POST,
            &format!("/api/runs/{UNKNOWN}/{detail}"),
            "application/json",
            "{",
        )
        .await;
    r.problem(400, "malformed_request");
    assert_eq!(s.event_count().await, before);
}

async fn checkpoints_are_numbered_and_paged(s: TestServer) {
    let id = started(&s, "ckpt").await;
    let path = format!("/api/runs/{id}/checkpoints");
    for n in 1..=3 {
        let r = s.post(&path, json!({"source": "worker-1", "state": {"step": n}})).await;
        let c = r.ok(201);
        assert_eq!(c["sequence"], n);
        assert_eq!(c["run_id"], id.as_str());
        assert_eq!(c["state"], json!({"step": n}));
        assert_eq!(c["source"], "worker-1");
        assert!(c["position"].as_i64().unwrap() > 0 && c["recorded_at"].is_string());
    }
    let all = s.get(&path).await;
    let all = all.ok(200);
    let seqs: Vec<i64> = all["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(all["next_after_sequence"].is_null());
    let first = s.get(&format!("{path}?limit=2")).await;
    assert_eq!(first.ok(200)["checkpoints"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["next_after_sequence"], 2);
    let rest = s.get(&format!("{path}?after_sequence=2&limit=2")).await;
    assert_eq!(rest.ok(200)["checkpoints"][0]["sequence"], 3);
    assert!(rest.body["next_after_sequence"].is_null());
    let run = s.get(&format!("/api/runs/{id}")).await;
    assert_eq!(run.ok(200)["last_checkpoint_sequence"], 3);
    // A run's sequence is its own.
    let other = started(&s, "ckpt").await;
    let r = s
        .post(&format!("/api/runs/{other}/checkpoints"), json!({"state": [1]}))
        .await;
    assert_eq!(r.ok(201)["sequence"], 1);

    refused_at(&s, &path, json!({}), "body.state").await;
    refused_at(&s, &path, json!({"state": null}), "body.state").await;
    refused_at(&s, &path, json!({"state": {}, "source": ""}), "body.source").await;
    refused_at(
        &s,
        &path,
        json!({"state": {}, "source": "x".repeat(201)}),
        "body.source",
    )
    .await;
    refused_at(&s, &path, json!({"state": {}, "extra": 1}), "body.extra").await;
    get_refused_at(&s, &format!("{path}?limit=0"), "query.limit").await;
    get_refused_at(&s, &format!("{path}?limit=1001"), "query.limit").await;
    get_refused_at(&s, &format!("{path}?after_sequence=-1"), "query.after_sequence").await;
    get_refused_at(&s, &format!("{path}?bogus=1"), "query.bogus").await;
    unknown_and_malformed_runs(&s, "checkpoints", json!({"state": {}})).await;

    // Ended runs take no more checkpoints.
    s.post(&format!("/api/runs/{id}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    let before = s.event_count().await;
    let r = s.post(&path, json!({"state": {}})).await;
    assert_eq!(r.problem(409, "illegal_transition")["current_status"], "ended");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

async fn logs_keep_their_level_and_type_and_are_taken_after_the_end(s: TestServer) {
    let id = started(&s, "logs").await;
    let path = format!("/api/runs/{id}/logs");
    let lines = [
        json!({"level": "debug", "message": "starting", "type": "lifecycle"}),
        json!({"level": "info", "message": "row 1", "type": "progress", "data": {"rows": 1}}),
        json!({"level": "warn", "message": "slow disk"}),
        json!({"message": "default level"}),
        json!({"level": "error", "message": "row 2 failed", "type": "progress"}),
    ];
    for line in &lines {
        let r = s.post(&path, line.clone()).await;
        let got = r.ok(201);
        assert_eq!(got["message"], line["message"]);
        assert_eq!(got["run_id"], id.as_str());
    }
    let all = s.get(&path).await;
    let logs = all.ok(200)["logs"].as_array().unwrap().clone();
    assert_eq!(logs.len(), 5);
    assert_eq!(logs[1]["data"], json!({"rows": 1}));
    assert_eq!(logs[1]["type"], "progress");
    assert_eq!(logs[3]["level"], "info", "level defaults to info");
    let messages = |r: &Reply| -> Vec<String> {
        r.body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let bad = s.get(&format!("{path}?level=warn,error")).await;
    assert_eq!(messages(&bad), ["slow disk", "row 2 failed"]);
    let progress = s.get(&format!("{path}?type=progress")).await;
    assert_eq!(messages(&progress), ["row 1", "row 2 failed"]);
    let both = s.get(&format!("{path}?type=progress&level=error")).await;
    assert_eq!(messages(&both), ["row 2 failed"]);
    let page = s.get(&format!("{path}?limit=2")).await;
    assert_eq!(messages(&page), ["starting", "row 1"]);
    let after = page.body["next_after_position"].as_i64().unwrap();
    let next = s.get(&format!("{path}?limit=2&after_position={after}")).await;
    assert_eq!(messages(&next), ["slow disk", "default level"]);

    // Shippers flush after the end.
    s.post(&format!("/api/runs/{id}/end"), json!({"end_reason": "failed"}))
        .await
        .ok(200);
    s.post(&path, json!({"message": "flushed late"})).await.ok(201);

    // Levels are the executor's own words, stored and filtered as given.
    for level in ["WARNING", "fatal", "trace", "Информация"] {
        let r = s.post(&path, json!({"level": level, "message": level})).await;
        assert_eq!(r.ok(201)["level"], level);
    }
    let own = s.get(&format!("{path}?level=WARNING,fatal")).await;
    assert_eq!(messages(&own), ["WARNING", "fatal"]);
    let stored = s
        .query_strings(&format!(
            "SELECT level FROM run_logs WHERE run_id = '{id}' AND level = 'Информация'"
        ))
        .await;
    assert_eq!(stored, ["Информация"]);

    refused_at(&s, &path, json!({"level": "", "message": "x"}), "body.level").await;
    refused_at(
        &s,
        &path,
        json!({"level": "x".repeat(201), "message": "x"}),
        "body.level",
    )
    .await;
    refused_at(&s, &path, json!({"level": "in\u{0}fo", "message": "x"}), "body.level").await;
    refused_at(&s, &path, json!({"level": "in\nfo", "message": "x"}), "body.level").await;
    refused_at(&s, &path, json!({"type": "", "message": "x"}), "body.type").await;
    refused_at(&s, &path, json!({"type": "a\u{7}b", "message": "x"}), "body.type").await;
    refused_at(&s, &path, json!({"level": "info"}), "body.message").await;
    refused_at(&s, &path, json!({"message": ""}), "body.message").await;
    refused_at(&s, &path, json!({"message": "x".repeat(10_001)}), "body.message").await;
    refused_at(&s, &path, json!({"message": "x", "type": "x".repeat(201)}), "body.type").await;
    refused_at(&s, &path, json!({"message": 5}), "body.message").await;
    get_refused_at(&s, &format!("{path}?level=info,{}", "x".repeat(201)), "query.level").await;
    get_refused_at(&s, &format!("{path}?after_position=x"), "query.after_position").await;
    unknown_and_malformed_runs(&s, "logs", json!({"message": "x"})).await;
    s.stop().await;
}

async fn usage_has_run_and_task_totals(server: TestServer) {
    usage_totals(&server).await;
    server.stop().await;
}

async fn usage_totals(s: &TestServer) {
    let a = started(s, "agent").await;
    let b = started(s, "agent").await;
    let other = started(s, "other-task").await;
    let record = |id: &str, body: Value| {
        let path = format!("/api/runs/{id}/usage");
        async move { s.post(&path, body).await }
    };
    let r = record(
        &a,
        json!({"provider": "openai", "model": "gpt-x", "prompt_tokens": 100, "completion_tokens": 20, "cost_microusd": 1500}),
    )
    .await;
    let u = r.ok(201);
    assert_eq!(u["total_tokens"], 120, "total defaults to the sum");
    assert_eq!(u["cost_microusd"], 1500);
    record(
        &a,
        json!({"provider": "anthropic", "model": "claude", "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40, "cost_microusd": 7}),
    )
    .await
    .ok(201);
    // Usage billed after the end is still recorded.
    s.post(&format!("/api/runs/{b}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    record(
        &b,
        json!({"provider": "openai", "model": "gpt-x", "prompt_tokens": 1, "completion_tokens": 1}),
    )
    .await
    .ok(201);
    record(
        &other,
        json!({"provider": "openai", "model": "gpt-x", "prompt_tokens": 1000, "completion_tokens": 1000, "cost_microusd": 1}),
    )
    .await
    .ok(201);

    let run = s.get(&format!("/api/runs/{a}/usage")).await;
    let run = run.ok(200);
    assert_eq!(run["usage"].as_array().unwrap().len(), 2);
    assert_eq!(
        run["totals"],
        json!({"records": 2, "prompt_tokens": 110, "completion_tokens": 25, "total_tokens": 160, "cost_microusd": 1507})
    );
    assert_eq!(run["by_model"].as_array().unwrap().len(), 2);
    assert_eq!(run["by_model"][0]["provider"], "anthropic");
    let paged = s.get(&format!("/api/runs/{a}/usage?limit=1")).await;
    assert_eq!(paged.ok(200)["usage"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["totals"]["records"], 2, "totals cover every record");
    assert!(paged.body["next_after_position"].is_i64());

    let task = s.get("/api/tasks/agent/usage").await;
    let task = task.ok(200);
    assert_eq!(task["task_name"], "agent");
    assert_eq!(
        task["totals"],
        json!({"records": 3, "prompt_tokens": 111, "completion_tokens": 26, "total_tokens": 162, "cost_microusd": 1507})
    );
    assert_eq!(
        task["by_model"],
        json!([
            {"provider": "anthropic", "model": "claude", "records": 1, "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40, "cost_microusd": 7},
            {"provider": "openai", "model": "gpt-x", "records": 2, "prompt_tokens": 101, "completion_tokens": 21, "total_tokens": 122, "cost_microusd": 1500},
        ])
    );
    // Any provider and model, as the executor names them.
    let local = started(s, "local-agent").await;
    for (provider, model) in [
        ("my-gpu-box", "Llama 3.1 70B (q4_K_M)"),
        ("Mistral AI", "mistral-large-2411"),
    ] {
        let r = record(
            &local,
            json!({"provider": provider, "model": model, "prompt_tokens": 1, "completion_tokens": 2}),
        )
        .await;
        let u = r.ok(201);
        assert_eq!(
            (u["provider"].as_str(), u["model"].as_str()),
            (Some(provider), Some(model))
        );
    }
    let by_model = s.get("/api/tasks/local-agent/usage").await;
    let by_model: Vec<(String, String)> = by_model.ok(200)["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["provider"].as_str().unwrap().into(),
                m["model"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [
            ("Mistral AI".to_owned(), "mistral-large-2411".to_owned()),
            ("my-gpu-box".to_owned(), "Llama 3.1 70B (q4_K_M)".to_owned())
        ]
    );

    let none = s.get("/api/tasks/nothing-here/usage").await;
    assert_eq!(none.ok(200)["totals"]["records"], 0);
    assert_eq!(none.body["by_model"], json!([]));
    get_refused_at(s, "/api/tasks/bad%20name/usage", "path.taskName").await;
    get_refused_at(s, "/api/tasks/agent/usage?x=1", "query.x").await;

    let path = format!("/api/runs/{a}/usage");
    let ok = json!({"provider": "p", "model": "m", "prompt_tokens": 1, "completion_tokens": 2});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    refused_at(s, &path, with("provider", json!("")), "body.provider").await;
    refused_at(s, &path, with("provider", json!("a\u{0}b")), "body.provider").await;
    refused_at(s, &path, with("model", json!("")), "body.model").await;
    refused_at(s, &path, with("model", json!("m\tx")), "body.model").await;
    refused_at(s, &path, with("model", json!("m".repeat(201))), "body.model").await;
    refused_at(s, &path, with("prompt_tokens", json!(-1)), "body.prompt_tokens").await;
    refused_at(
        s,
        &path,
        with("completion_tokens", json!(1.5)),
        "body.completion_tokens",
    )
    .await;
    refused_at(s, &path, with("cost_microusd", json!(-5)), "body.cost_microusd").await;
    refused_at(s, &path, with("total_tokens", json!(2)), "body.total_tokens").await;
    refused_at(s, &path, json!({"provider": "p", "model": "m"}), "body.prompt_tokens").await;
    get_refused_at(s, &format!("{path}?limit=5000"), "query.limit").await;
    unknown_and_malformed_runs(s, "usage", ok.clone()).await;
}

async fn tool_calls_are_recorded_as_reported_and_filtered(s: TestServer) {
    let id = started(&s, "tools").await;
    let path = format!("/api/runs/{id}/tool-calls");
    let r = s
        .post(
            &path,
            json!({"tool_name": "search", "input": {"q": "x"}, "output": ["a", "b"], "duration_ms": 12, "status": "success"}),
        )
        .await;
    let call = r.ok(201);
    assert_eq!(call["input"], json!({"q": "x"}));
    assert_eq!(call["output"], json!(["a", "b"]));
    assert_eq!(call["duration_ms"], 12);
    s.post(&path, json!({"tool_name": "fetch", "status": "error"}))
        .await
        .ok(201);
    s.post(
        &path,
        json!({"tool_name": "search", "status": "timeout", "duration_ms": 0}),
    )
    .await
    .ok(201);
    let all = s.get(&path).await;
    assert_eq!(all.ok(200)["tool_calls"].as_array().unwrap().len(), 3);
    let search = s.get(&format!("{path}?tool_name=search")).await;
    let statuses: Vec<&str> = search.ok(200)["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "timeout"]);
    let errors = s.get(&format!("{path}?status=error,timeout")).await;
    assert_eq!(errors.ok(200)["tool_calls"].as_array().unwrap().len(), 2);

    refused_at(&s, &path, json!({"status": "success"}), "body.tool_name").await;
    // Statuses are the executor's own words: `ok` and `succeeded` are
    // recorded as reported, returned and filtered as given.
    for status in ["ok", "succeeded", "Partial Success"] {
        let r = s.post(&path, json!({"tool_name": "lookup", "status": status})).await;
        assert_eq!(r.ok(201)["status"], status);
    }
    let lookups = s.get(&format!("{path}?tool_name=lookup")).await;
    let statuses: Vec<&str> = lookups.ok(200)["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "succeeded", "Partial Success"]);
    let ok = s.get(&format!("{path}?status=ok,succeeded")).await;
    assert_eq!(ok.ok(200)["tool_calls"].as_array().unwrap().len(), 2);
    let stored = s
        .query_strings(&format!(
            "SELECT status FROM run_tool_calls WHERE run_id = '{id}' ORDER BY position"
        ))
        .await;
    assert_eq!(
        stored,
        ["success", "error", "timeout", "ok", "succeeded", "Partial Success"]
    );
    let none = s.get(&format!("{path}?status=meh")).await;
    assert_eq!(none.ok(200)["tool_calls"], json!([]));

    refused_at(&s, &path, json!({"tool_name": "x"}), "body.status").await;
    refused_at(&s, &path, json!({"tool_name": "x", "status": ""}), "body.status").await;
    refused_at(
        &s,
        &path,
        json!({"tool_name": "x", "status": "x".repeat(201)}),
        "body.status",
    )
    .await;
    refused_at(&s, &path, json!({"tool_name": "x", "status": "o\u{0}k"}), "body.status").await;
    refused_at(&s, &path, json!({"tool_name": "x", "status": "ok\r\n"}), "body.status").await;
    refused_at(
        &s,
        &path,
        json!({"tool_name": "x", "status": "error", "duration_ms": -1}),
        "body.duration_ms",
    )
    .await;
    get_refused_at(&s, &format!("{path}?status={}", "x".repeat(201)), "query.status").await;
    unknown_and_malformed_runs(&s, "tool-calls", json!({"tool_name": "x", "status": "success"})).await;
    s.stop().await;
}

async fn outputs_are_checked_against_their_schema(s: TestServer) {
    let id = started(&s, "outputs").await;
    let path = format!("/api/runs/{id}/outputs");
    let schema = json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}
    });
    let value = json!({"items": [{"name": "a"}, {"name": "b"}]});
    let r = s
        .post(
            &path,
            json!({"output_key": "report", "schema": schema.clone(), "value": value.clone()}),
        )
        .await;
    let out = r.ok(201);
    assert_eq!(out["value"], value);
    assert_eq!(out["schema"], schema);
    s.post(&path, json!({"output_key": "count", "value": 3})).await.ok(201);
    s.post(&path, json!({"output_key": "nothing", "value": null}))
        .await
        .ok(201);
    let all = s.get(&path).await;
    assert_eq!(all.ok(200)["outputs"].as_array().unwrap().len(), 3);
    let one = s.get(&format!("{path}?output_key=count")).await;
    assert_eq!(one.ok(200)["outputs"][0]["value"], 3);
    assert_eq!(one.body["outputs"].as_array().unwrap().len(), 1);

    let bad_value = json!({"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]});
    refused_at(
        &s,
        &path,
        json!({"output_key": "report", "schema": schema.clone(), "value": bad_value}),
        "body.value.items[2].name",
    )
    .await;
    refused_at(
        &s,
        &path,
        json!({"output_key": "report", "schema": schema.clone(), "value": {}}),
        "body.value",
    )
    .await;
    refused_at(
        &s,
        &path,
        json!({"output_key": "report", "schema": {"type": "no-such-type"}, "value": 1}),
        "body.schema",
    )
    .await;
    refused_at(&s, &path, json!({"output_key": "", "value": 1}), "body.output_key").await;
    refused_at(&s, &path, json!({"output_key": "k"}), "body.value").await;
    unknown_and_malformed_runs(&s, "outputs", json!({"output_key": "k", "value": 1})).await;

    s.post(&format!("/api/runs/{id}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    let before = s.event_count().await;
    s.post(&path, json!({"output_key": "late", "value": 1}))
        .await
        .problem(409, "illegal_transition");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

async fn debug_mode_is_set_on_the_run(s: TestServer) {
    let id = started(&s, "dbg").await;
    let path = format!("/api/runs/{id}/debug");
    let on = s.post(&path, json!({"enabled": true})).await;
    assert_eq!(on.ok(200)["debug_mode"], true);
    assert_eq!(s.get(&format!("/api/runs/{id}")).await.ok(200)["debug_mode"], true);
    let off = s.post(&path, json!({"enabled": false})).await;
    assert_eq!(off.ok(200)["debug_mode"], false);
    let events = s.get(&format!("/api/runs/{id}/events?type=run.debug_mode_set")).await;
    assert_eq!(events.ok(200)["events"].as_array().unwrap().len(), 2);
    refused_at(&s, &path, json!({}), "body.enabled").await;
    refused_at(&s, &path, json!({"enabled": "yes"}), "body.enabled").await;
    let before = s.event_count().await;
    s.post(&path, json!({"enabled": true, "expected_version": 1}))
        .await
        .problem(409, "version_conflict");
    s.post(&format!("/api/runs/{UNKNOWN}/debug"), json!({"enabled": true}))
        .await
        .problem(404, "run_not_found");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

async fn children_lineage_and_dependencies(s: TestServer) {
    let parent = s.create(json!({"task_name": "parent"})).await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    let mut children = Vec::new();
    for _ in 0..3 {
        let c = s
            .create(json!({"task_name": "child", "parent_run_id": parent_id}))
            .await;
        children.push(c["id"].as_str().unwrap().to_owned());
    }
    s.create(json!({"task_name": "unrelated"})).await;
    let listed = s
        .get(&format!("/api/runs/{parent_id}/children?sort_direction=asc"))
        .await;
    assert_eq!(common::ids(listed.ok(200)), children);
    assert_eq!(listed.body["total"], 3);
    let page = s
        .get(&format!(
            "/api/runs/{parent_id}/children?sort_direction=asc&limit=2&offset=2"
        ))
        .await;
    assert_eq!(common::ids(page.ok(200)), children[2..]);
    get_refused_at(&s, &format!("/api/runs/{parent_id}/children?limit=0"), "query.limit").await;
    get_refused_at(
        &s,
        &format!("/api/runs/{parent_id}/children?parent_run_id={UNKNOWN}"),
        "query.parent_run_id",
    )
    .await;
    s.get(&format!("/api/runs/{UNKNOWN}/children"))
        .await
        .problem(404, "run_not_found");

    // Lineage: root → retry → continuation of the retry → its retry.
    let root = s.run_through("chain", json!({}), &["start", "end:failed:1"]).await;
    let root_id = root["id"].as_str().unwrap().to_owned();
    let retry = s.post(&format!("/api/runs/{root_id}/retry"), json!({})).await;
    let retry_id = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    let cont = s
        .create(json!({"task_name": "chain", "continuation_of": retry_id}))
        .await;
    let cont_id = cont["id"].as_str().unwrap().to_owned();
    assert_eq!(cont["lineage_root"], root_id.as_str());
    assert_eq!(cont["lineage_depth"], 2);
    for step in ["start", "end"] {
        let body = if step == "end" {
            json!({"end_reason": "crashed"})
        } else {
            json!({})
        };
        s.post(&format!("/api/runs/{cont_id}/{step}"), body).await.ok(200);
    }
    let again = s.post(&format!("/api/runs/{cont_id}/retry"), json!({})).await;
    let again_id = again.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    for from in [&root_id, &retry_id, &cont_id, &again_id] {
        let lineage = s.get(&format!("/api/runs/{from}/lineage")).await;
        let lineage = lineage.ok(200);
        assert_eq!(lineage["root_run_id"], root_id.as_str());
        let chain: Vec<(String, i64)> = lineage["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["lineage_depth"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            chain,
            [
                (root_id.clone(), 0),
                (retry_id.clone(), 1),
                (cont_id.clone(), 2),
                (again_id.clone(), 3)
            ]
        );
    }
    let alone = s.get(&format!("/api/runs/{parent_id}/lineage")).await;
    assert_eq!(alone.ok(200)["runs"].as_array().unwrap().len(), 1);
    s.get(&format!("/api/runs/{UNKNOWN}/lineage"))
        .await
        .problem(404, "run_not_found");
    get_refused_at(&s, "/api/runs/nope/lineage", "path.id").await;

    // Dependency status follows the dependencies as they end.
    let a = s.run_through("dep-a", json!({}), &["start"]).await;
    let b = s.create(json!({"task_name": "dep-b"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let waiting = s
        .create(json!({"task_name": "joined", "depends_on": [a_id, b_id]}))
        .await;
    let status_path = format!("/api/runs/{}/dependency-status", waiting["id"].as_str().unwrap());
    let status = s.get(&status_path).await;
    let status = status.ok(200);
    assert_eq!(status["dependencies_satisfied"], false);
    assert_eq!(status["dependencies"][0]["run_id"], a_id);
    assert_eq!(status["dependencies"][0]["status"], "running");
    assert_eq!(status["dependencies"][1]["status"], "pending");
    s.post(&format!("/api/runs/{a_id}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    s.post(&format!("/api/runs/{b_id}/cancel"), json!({})).await.ok(200);
    let status = s.get(&status_path).await;
    let status = status.ok(200);
    assert_eq!(status["dependencies"][0]["succeeded"], true);
    assert_eq!(status["dependencies"][1]["end_reason"], "stopped");
    assert_eq!(status["dependencies"][1]["succeeded"], false);
    assert_eq!(
        status["dependencies_satisfied"], false,
        "a canceled dependency never satisfies"
    );
    let both = s.create(json!({"task_name": "joined", "depends_on": [a_id]})).await;
    let ok = s
        .get(&format!("/api/runs/{}/dependency-status", both["id"].as_str().unwrap()))
        .await;
    assert_eq!(ok.ok(200)["dependencies_satisfied"], true);
    let none = s.get(&format!("/api/runs/{parent_id}/dependency-status")).await;
    assert_eq!(none.ok(200)["dependencies_satisfied"], true);
    assert_eq!(none.body["dependencies"], json!([]));
    s.get(&format!("/api/runs/{UNKNOWN}/dependency-status"))
        .await
        .problem(404, "run_not_found");
    s.stop().await;
}

async fn every_detail_route_is_documented(s: TestServer) {
    let doc = s.get("/openapi.json").await;
    let paths = doc.ok(200)["paths"].as_object().unwrap().clone();
    for (path, methods) in [
        ("/api/runs/{id}/checkpoints", &["get", "post"][..]),
        ("/api/runs/{id}/logs", &["get", "post"]),
        ("/api/runs/{id}/usage", &["get", "post"]),
        ("/api/runs/{id}/tool-calls", &["get", "post"]),
        ("/api/runs/{id}/outputs", &["get", "post"]),
        ("/api/runs/{id}/debug", &["post"]),
        ("/api/runs/{id}/children", &["get"]),
        ("/api/runs/{id}/lineage", &["get"]),
        ("/api/runs/{id}/dependency-status", &["get"]),
        ("/api/tasks/{taskName}/usage", &["get"]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path} is not documented");
        }
    }
    s.stop().await;
}

backend_tests!(
    checkpoints_are_numbered_and_paged,
    logs_keep_their_level_and_type_and_are_taken_after_the_end,
    usage_has_run_and_task_totals,
    tool_calls_are_recorded_as_reported_and_filtered,
    outputs_are_checked_against_their_schema,
    debug_mode_is_set_on_the_run,
    children_lineage_and_dependencies,
    every_detail_route_is_documented,
);

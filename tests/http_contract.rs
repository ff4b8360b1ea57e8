//! The API reads or refuses every input: an unread query parameter is a 422
//! on every route and method, an empty value means absent, a bulk selection
//! is what its command can act on, and a rerun names its source.

mod common;

use common::{ids, TestServer};
use reqwest::Method;
use runledger::http::HttpConfig;
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

async fn status_of(s: &TestServer, run: &str) -> Value {
    s.get(&format!("/api/runs/{run}")).await.ok(200).clone()
}

/// Every operation of the served document, with its path parameters filled.
async fn operations(s: &TestServer, run: &str) -> Vec<(Method, String)> {
    let doc = s.get("/openapi.json").await.ok(200).clone();
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let path = template
                .replace("{id}", run)
                .replace("{taskName}", "t")
                .replace("{name}", "t");
            assert!(
                !path.contains('{'),
                "a path parameter this test does not fill: {template}"
            );
            out.push((method.to_uppercase().parse().unwrap(), path));
        }
    }
    assert!(out.len() > 40, "the document lists every route: {}", out.len());
    out
}

async fn every_route_refuses_an_unread_query_parameter(s: TestServer) {
    let run = id(&s.run_through("t", json!({}), &["start"]).await);
    let before = s.event_count().await;
    for (method, path) in operations(&s, &run).await {
        let body = (method != Method::GET).then(|| json!({}));
        let reply = s
            .send(method.clone(), &format!("{path}?zzz_unread=1"), body.clone())
            .await;
        let problem = reply.invalid_at("query.zzz_unread");
        assert_eq!(
            problem["errors"].as_array().unwrap().len(),
            1,
            "{method} {path}: {problem}"
        );
        // An empty value of an unread parameter is still refused.
        s.send(method.clone(), &format!("{path}?zzz_unread="), body)
            .await
            .invalid_at("query.zzz_unread");
        assert_eq!(s.event_count().await, before, "{method} {path} appended");
    }
    // A parameter one method reads is refused on another.
    s.post("/api/runs?limit=5", json!({"task_name": "t"}))
        .await
        .invalid_at("query.limit");
    s.post("/api/runs?zzz=1", json!({"task_name": "t"}))
        .await
        .invalid_at("query.zzz");
    assert_eq!(s.event_count().await, before);
    // What a route does read still works.
    assert_eq!(
        s.get("/api/runs?limit=1").await.ok(200)["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.stop().await;
}

/// A ported client scopes its cancel-all with a query parameter: the call
/// must be refused, not act on every run of every project.
async fn a_bulk_call_scoped_by_query_acts_on_nothing(s: TestServer) {
    let billing = id(&s.run_through("t", json!({"project": "billing"}), &["start"]).await);
    let other = id(&s.run_through("t", json!({"project": "other"}), &["start"]).await);
    let before = s.event_count().await;
    for path in [
        "/api/runs/bulk/cancel?project=billing",
        "/api/runs/bulk/cancel?project_id=billing",
        "/api/runs/bulk/delete?task_name=x",
    ] {
        let reply = s.post(path, json!({"match_all": true})).await;
        let name = path.split(['?', '=']).nth(1).unwrap();
        reply.invalid_at(&format!("query.{name}"));
    }
    assert_eq!(s.event_count().await, before);
    for run in [&billing, &other] {
        let state = status_of(&s, run).await;
        assert_eq!(
            (state["status"].as_str(), state["deleted"].as_bool()),
            (Some("running"), Some(false))
        );
    }
    // Scoped in the body, as documented, it cancels billing's run only.
    let cancel = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "filter": {"project": "billing"}}),
        )
        .await;
    assert_eq!(cancel.ok(200)["canceled"], 1);
    assert_eq!(status_of(&s, &billing).await["status"], "ended");
    assert_eq!(status_of(&s, &other).await["status"], "running");
    s.stop().await;
}

async fn empty_values_mean_absent(s: TestServer) {
    let a = id(&s.run_through("a", json!({}), &["start", "end:failed:1"]).await);
    let b = id(&s.create(json!({"task_name": "b"})).await);
    let plain = s.get("/api/runs").await.ok(200).clone();
    assert_eq!(ids(&plain), [b.clone(), a.clone()]);
    for query in [
        "sort_field=&sort_direction=",
        "status=&task_name=&triggered_by=&search=&tag=&limit=&offset=&as_of=",
        "created_after=&created_before=&exit_code_min=&exit_code_max=&retries_only=&include_deleted=&parent_run_id=&project=",
        "operation_id=&payload=",
    ] {
        let reply = s.get(&format!("/api/runs?{query}")).await;
        assert_eq!(reply.ok(200), &plain, "{query}");
        let task = s.get(&format!("/api/tasks/a/runs?{query}")).await;
        assert_eq!(ids(task.ok(200)), [a.as_str()], "{query}");
    }
    // A given value still counts.
    assert_eq!(
        ids(s.get("/api/runs?status=failed&sort_field=").await.ok(200)),
        [a.as_str()]
    );
    // In a bulk filter, an empty value is absent too.
    let dry = s
        .post(
            "/api/runs/bulk/delete",
            json!({"match_all": true, "dry_run": true, "filter": {"status": "", "task_name": "a"}}),
        )
        .await;
    assert_eq!(dry.ok(200)["selected"], 1);
    s.stop().await;
}

fn dry(mut selector: Value) -> Value {
    selector["dry_run"] = json!(true);
    selector
}

/// Each bulk command selects among the runs it can change: restore among
/// deleted runs, dlq-replay among dead-lettered ones, cancel among unfinished
/// ones, retry among ended ones, delete among live ones; `selected`,
/// `affected` and the dry-run count agree.
async fn a_selection_is_what_its_command_can_act_on(s: TestServer) {
    let pending = id(&s.create(json!({"task_name": "etl"})).await);
    let running = id(&s.run_through("etl", json!({}), &["start"]).await);
    let ok = id(&s.run_through("etl", json!({}), &["start", "end:success:0"]).await);
    let dead = id(&s
        .run_through("etl", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await);
    let gone = id(&s
        .run_through("etl", json!({}), &["start", "end:failed:1", "delete"])
        .await);
    let other = id(&s.run_through("other", json!({}), &["delete"]).await);
    let etl = json!({"match_all": true, "filter": {"task_name": "etl"}});
    let count = |path: &'static str| {
        let selector = dry(etl.clone());
        let s = &s;
        async move {
            let body = s.post(path, selector).await.ok(200).clone();
            assert_eq!(body["selected"], body["affected"], "{path}: {body}");
            body["selected"].as_i64().unwrap()
        }
    };
    assert_eq!(count("/api/runs/bulk/restore").await, 1, "the deleted etl run");
    assert_eq!(count("/api/runs/bulk/dlq-replay").await, 1, "the dead-lettered run");
    assert_eq!(count("/api/runs/bulk/cancel").await, 2, "pending and running");
    assert_eq!(count("/api/runs/bulk/retry").await, 2, "the ended live runs");
    assert_eq!(count("/api/runs/bulk/delete").await, 4, "the live runs");

    // Restore, as seed 000 has it: the filter need not name deletion.
    let before = s.event_count().await;
    let restored = s.post("/api/runs/bulk/restore", etl.clone()).await.ok(200).clone();
    assert_eq!(
        (restored["selected"].as_i64(), restored["affected"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(status_of(&s, &gone).await["deleted"], false);
    assert_eq!(status_of(&s, &other).await["deleted"], true, "outside the filter");
    assert_eq!(s.event_count().await, before + 1);

    // dlq-replay with match_all replays the dead letter and lists no failures.
    let replayed = s
        .post("/api/runs/bulk/dlq-replay", json!({"match_all": true}))
        .await
        .ok(200)
        .clone();
    assert_eq!(replayed["selected"], 1);
    assert_eq!(replayed["failed"], json!([]));
    assert_eq!(replayed["runs"][0]["retry_of_run_id"], dead.as_str());

    // Cancel selects the unfinished runs only: nothing is reported as failed.
    let canceled = s.post("/api/runs/bulk/cancel", etl.clone()).await.ok(200).clone();
    assert_eq!(
        (
            canceled["total"].as_i64(),
            canceled["canceled"].as_i64(),
            canceled["failed"].as_i64()
        ),
        (Some(3), Some(3), Some(0)),
        "pending, running and the replay's new run: {canceled}"
    );
    for run in [&pending, &running] {
        assert_eq!(status_of(&s, run).await["end_reason"], "stopped");
    }
    assert_eq!(status_of(&s, &ok).await["end_reason"], "success");
    // Explicit ids are still each acted on or reported.
    let named = s
        .post("/api/runs/bulk/cancel", json!({"ids": [ok]}))
        .await
        .ok(200)
        .clone();
    assert_eq!((named["total"].as_i64(), named["failed"].as_i64()), (Some(1), Some(1)));
    s.stop().await;
}

async fn events_of(s: &TestServer, run: &str) -> Vec<Value> {
    s.get(&format!("/api/runs/{run}/events")).await.ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// A rerun appends `run.retried` to its source and links the new run to it,
/// in one transaction; `/lineage` shows the link.
async fn a_rerun_names_its_source(s: TestServer) {
    let first = id(&s
        .run_through("r", json!({"payload": {"n": 1}}), &["start", "end:failed:1"])
        .await);
    let latest = id(&s.run_through("r", json!({"payload": {"n": 2}}), &["start"]).await);
    let before = s.event_count().await;
    let rerun = s
        .post(
            "/api/runs/bulk/rerun",
            json!({"match_all": true, "filter": {"task_name": "r"}, "reason": "new deploy"}),
        )
        .await
        .ok(200)
        .clone();
    let new_run = rerun["runs"]["r"].clone();
    assert_eq!(new_run["triggered_by"], "rerun");
    assert_eq!(
        new_run["retry_of_run_id"],
        latest.as_str(),
        "the task's most recent run"
    );
    assert_eq!(new_run["lineage_root"], latest.as_str());
    assert_eq!(new_run["payload"], json!({"n": 2}));
    assert_eq!(s.event_count().await, before + 2, "run.retried and run.created");
    let last = events_of(&s, &latest).await.pop().unwrap();
    assert_eq!(last["type"], "run.retried");
    assert_eq!(last["data"]["new_run_id"], new_run["id"]);
    assert_eq!(last["data"]["action"], "rerun");
    assert_eq!(last["data"]["reason"], "new deploy");
    let created = events_of(&s, new_run["id"].as_str().unwrap()).await.remove(0);
    assert_eq!(created["position"], last["position"].as_i64().unwrap() + 1);
    assert_eq!(created["metadata"]["operation_id"], last["metadata"]["operation_id"]);
    // The source is otherwise untouched: still running.
    assert_eq!(status_of(&s, &latest).await["status"], "running");
    assert_eq!(status_of(&s, &first).await["version"], 3);
    let lineage = s
        .get(&format!("/api/runs/{}/lineage", new_run["id"].as_str().unwrap()))
        .await
        .ok(200)
        .clone();
    let chain: Vec<&str> = lineage["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("{lineage}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(chain, [latest.as_str(), new_run["id"].as_str().unwrap()]);
    s.stop().await;
}

backend_tests!(
    every_route_refuses_an_unread_query_parameter,
    a_bulk_call_scoped_by_query_acts_on_nothing,
    empty_values_mean_absent,
    a_selection_is_what_its_command_can_act_on,
    a_rerun_names_its_source,
);

fn capped() -> HttpConfig {
    HttpConfig {
        bulk_cap: 2,
        ..HttpConfig::default()
    }
}

/// `retry` with `failed_only` honours the configured bulk cap.
async fn failed_only_honours_the_bulk_cap(s: TestServer) {
    let parent = id(&s.run_through("p", json!({}), &["start", "end:failed:1"]).await);
    for _ in 0..3 {
        s.run_through("c", json!({"parent_run_id": parent}), &["start", "end:failed:1"])
            .await;
    }
    let before = s.event_count().await;
    let refused = s
        .post(&format!("/api/runs/{parent}/retry"), json!({"failed_only": true}))
        .await;
    let body = refused.invalid_at("body.failed_only");
    assert!(body["detail"].as_str().unwrap().contains('2'), "{body}");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

mod capped {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_failed_only_honours_the_bulk_cap() {
        let s = crate::common::TestServer::sqlite_with(super::capped()).await;
        super::failed_only_honours_the_bulk_cap(s).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_failed_only_honours_the_bulk_cap() {
        let name = "failed_only_honours_the_bulk_cap";
        if let Some(s) = crate::common::TestServer::postgres_with(name, super::capped()).await {
            super::failed_only_honours_the_bulk_cap(s).await
        }
    }
}

//! Nothing one client sends can hurt another: text the ledger cannot store
//! is refused at the boundary, a unit that fails inside the database fails
//! alone, lists and positions are bounded, metric labels come from closed sets.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

async fn text_the_ledger_cannot_store_is_422_and_appends_nothing(s: TestServer) {
    let run = id(&s.run_through("t", json!({}), &["start"]).await);
    let before = s.event_count().await;
    for (path, body, location) in [
        (
            "/api/runs",
            r#"{"task_name":"x","tags":{"k":"a\u0000b"}}"#,
            "body.tags.k",
        ),
        (
            "/api/runs",
            r#"{"task_name":"x","metadata":{"k":"\u0000"}}"#,
            "body.metadata.k",
        ),
        (
            "/api/runs",
            r#"{"task_name":"x","payload":{"a":[1,"\u0000"]}}"#,
            "body.payload.a.1",
        ),
        (
            "/api/runs",
            r#"{"task_name":"x","payload":{"a":"\ud800"}}"#,
            "body.payload.a",
        ),
        ("/api/runs", r#"{"task_name":"x","payload":"\udc00x"}"#, "body.payload"),
    ] {
        let reply = s.send_raw(Method::POST, path, "application/json", body).await;
        reply.invalid_at(location);
    }
    let logs = format!("/api/runs/{run}/logs");
    s.send_raw(Method::POST, &logs, "application/json", r#"{"message":"a\u0000"}"#)
        .await
        .invalid_at("body.message");
    let end = format!("/api/runs/{run}/end");
    s.send_raw(
        Method::POST,
        &end,
        "application/json",
        r#"{"end_reason":"success","result":{"\u0000":1}}"#,
    )
    .await
    .invalid_at("body.result.\\0");
    assert_eq!(s.event_count().await, before);
    // An escaped backslash followed by "u0000" is ordinary text.
    let ok = s
        .send_raw(
            Method::POST,
            "/api/runs",
            "application/json",
            r#"{"task_name":"x","payload":"\\u0000"}"#,
        )
        .await;
    assert_eq!(ok.ok(201)["payload"], "\\u0000");
    // In a query: NUL, and bytes that are not UTF-8.
    for (query, location) in [
        ("tag=k:%00", "query.tag"),
        ("search=%FF%FE", "query.search"),
        ("task_name=%C3", "query.task_name"),
    ] {
        for path in ["/api/runs", "/api/runs/dlq", "/api/tasks/t/runs"] {
            s.get(&format!("{path}?{query}")).await.invalid_at(location);
        }
    }
    s.post("/api/runs?zzz=%00", json!({"task_name": "x"}))
        .await
        .invalid_at("query.zzz");
    assert_eq!(s.event_count().await, before + 1);
    // The document says so: a text field with no shape of its own refuses
    // U+0000, so a client generated from it never sends one.
    let doc = s.get("/openapi.json").await.ok(200).clone();
    let no_nul = json!("^[^\\u0000]*$");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateRunRequest"]["properties"]["metadata"]["additionalProperties"]["pattern"],
        no_nul
    );
    assert_eq!(schemas["LogRequest"]["properties"]["message"]["pattern"], no_nul);
    s.stop().await;
}

/// Makes every write of a run of task `boom` fail inside the database, as
/// a constraint the ledger did not foresee would.
async fn install_a_failing_trigger(s: &TestServer) {
    let sql = match &s.backend {
        common::Backend::Sqlite { .. } => "CREATE TRIGGER boom BEFORE INSERT ON runs WHEN NEW.task_name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END"
            .to_owned(),
        common::Backend::Postgres { .. } => "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.task_name = 'boom' THEN RAISE EXCEPTION 'forced failure'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER boom BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION boom()"
            .to_owned(),
    };
    s.exec_sql(&sql).await.expect("install the failing trigger");
}

/// Ordinary writers share group-commit batches with writers whose units
/// fail inside the database: every ordinary write commits, each failing one
/// gets its own error, and nothing of the failing ones is kept.
async fn a_unit_that_fails_in_the_database_fails_alone(server: TestServer) {
    install_a_failing_trigger(&server).await;
    const ORDINARY: usize = 16;
    const FAILING: usize = 2;
    const EACH: usize = 25;
    let s = &server;
    let writer = |task: &'static str| async move {
        let mut statuses = Vec::with_capacity(EACH);
        for _ in 0..EACH {
            let reply = s.post("/api/runs", json!({"task_name": task})).await;
            statuses.push(reply.status.as_u16());
        }
        statuses
    };
    let ordinary = futures_util::future::join_all((0..ORDINARY).map(|_| writer("ordinary")));
    let failing = futures_util::future::join_all((0..FAILING).map(|_| writer("boom")));
    let (ordinary, failing) = tokio::join!(ordinary, failing);
    let ordinary: Vec<u16> = ordinary.into_iter().flatten().collect();
    let failing: Vec<u16> = failing.into_iter().flatten().collect();
    let failed_neighbours = ordinary.iter().filter(|s| **s != 201).count();
    assert_eq!(failed_neighbours, 0, "ordinary writes that failed: {ordinary:?}");
    assert!(failing.iter().all(|s| *s == 500), "{failing:?}");
    assert_eq!(s.event_count().await, (ORDINARY * EACH) as i64);
    let listed = s.get("/api/runs?task_name=ordinary&limit=1").await.ok(200)["total"].clone();
    assert_eq!(listed, (ORDINARY * EACH) as i64);
    assert_eq!(s.get("/api/runs?task_name=boom").await.ok(200)["total"], 0);
    // The chain is whole: the rolled-back attempts left no trace in it.
    let verified = s.cli(&["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    s.get("/api/runs?limit=1").await.ok(200);
    server.stop().await;
}

async fn long_lists_are_bounded_and_flat(s: TestServer) {
    s.run_through("t", json!({}), &["start", "end:failed:1"]).await;
    let repeated = vec!["failed"; 999].join(",");
    let distinct: String = (0..65).map(|i| format!("v{i}")).collect::<Vec<_>>().join(",");
    for path in ["/api/runs", "/api/runs/dlq", "/api/tasks/t/runs"] {
        // Repeated values count once: no deep expression, no 500.
        let reply = s.get(&format!("{path}?status={repeated}")).await;
        reply.ok(200);
        let refused = s.get(&format!("{path}?status={distinct}")).await;
        let body = refused.invalid_at("query.status");
        assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    }
    let all_statuses = "pending,running,paused,ended,success,failed,stopped,timeout,crashed,skipped,log_overflow,expired,deleted,dead_letter";
    let wide = s.get(&format!("/api/runs?status={all_statuses}")).await;
    assert_eq!(wide.ok(200)["total"], 1);
    let bulk = s
        .post(
            "/api/runs/bulk/delete",
            json!({"match_all": true, "dry_run": true, "filter": {"status": vec!["failed"; 999]}}),
        )
        .await;
    assert_eq!(bulk.ok(200)["selected"], 1);
    let names: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
    s.post(
        "/api/runs/bulk/delete",
        json!({"match_all": true, "dry_run": true, "filter": {"status": names}}),
    )
    .await
    .invalid_at("body.filter.status");
    s.stop().await;
}

const LARGEST: i64 = i64::MAX;

async fn a_position_past_the_head_is_the_present(s: TestServer) {
    let run = id(&s.run_through("t", json!({}), &["start"]).await);
    let now = s.get("/api/runs").await.ok(200).clone();
    let far = s.get(&format!("/api/runs?as_of={LARGEST}")).await;
    assert_eq!(far.ok(200), &now);
    let one = s.get(&format!("/api/runs/{run}?as_of={LARGEST}")).await;
    assert_eq!(one.ok(200)["status"], "running");
    let diff = s.get(&format!("/api/runs/diff?from=0&to={LARGEST}")).await;
    assert_eq!(diff.ok(200)["total"], 1);
    let past_head = s.event_count().await + 1;
    assert_eq!(s.get(&format!("/api/runs?as_of={past_head}")).await.ok(200), &now);
    let dry = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "dry_run": true, "as_of": LARGEST}),
        )
        .await;
    let body = dry.ok(200).clone();
    assert_eq!((body["selected"].as_i64(), body["as_of"].as_i64()), (Some(1), Some(2)));
    s.stop().await;
}

async fn invented_methods_share_one_metric_label(s: TestServer) {
    for i in 0..50 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let reply = s.client.request(method, s.url("/api/runs")).send().await.unwrap();
        assert!(reply.status().is_client_error());
    }
    let metrics = s.get("/metrics").await;
    let text = metrics.ok(200).as_str().unwrap().to_owned();
    assert!(!text.contains("BREW"), "an invented method became a label");
    assert!(text.contains(r#"method="other""#), "{text}");
    s.stop().await;
}

/// A body must say it is JSON: a browser page can send one with no content
/// type and no preflight. A request with no body needs no content type.
async fn a_body_without_a_content_type_is_415(s: TestServer) {
    let run = id(&s.create(json!({"task_name": "t"})).await);
    let before = s.event_count().await;
    let untyped = |path: String, body: &'static str| {
        let request = s.client.post(s.url(&path)).body(body);
        async move { TestServer::reply(request.send().await.unwrap()).await }
    };
    untyped("/api/runs".into(), r#"{"task_name":"t"}"#)
        .await
        .problem(415, "unsupported_media_type");
    untyped("/api/runs/bulk/delete".into(), r#"{"match_all":true}"#)
        .await
        .problem(415, "unsupported_media_type");
    assert_eq!(s.event_count().await, before);
    let started = untyped(format!("/api/runs/{run}/start"), "").await;
    assert_eq!(started.ok(200)["status"], "running");
    s.stop().await;
}

backend_tests!(
    text_the_ledger_cannot_store_is_422_and_appends_nothing,
    a_unit_that_fails_in_the_database_fails_alone,
    long_lists_are_bounded_and_flat,
    a_position_past_the_head_is_the_present,
    invented_methods_share_one_metric_label,
    a_body_without_a_content_type_is_415,
);

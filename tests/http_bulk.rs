//! Bulk operations by selector through the real server, on both backends.

mod common;

use common::TestServer;
use reqwest::Method;
use runledger::http::HttpConfig;
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

async fn run_state(s: &TestServer, run: &str) -> Value {
    s.get(&format!("/api/runs/{run}")).await.ok(200).clone()
}

async fn events_of(s: &TestServer, run: &str) -> Vec<Value> {
    s.get(&format!("/api/runs/{run}/events")).await.ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn delete_and_restore_by_ids_and_by_filter(s: TestServer) {
    let a = id(&s.run_through("a", json!({}), &["start", "end:failed:1"]).await);
    let b = id(&s.run_through("a", json!({}), &["start", "end:failed:2"]).await);
    let c = id(&s.run_through("b", json!({}), &["start", "end:success:0"]).await);
    let unknown = "0195f2a0-0000-7000-8000-000000000000";

    // Ids: duplicates count once, unknown ids are reported, not fatal.
    let deleted = s
        .post(
            "/api/runs/bulk/delete",
            json!({"ids": [a, b, a, unknown], "reason": "cleanup"}),
        )
        .await;
    let body = deleted.ok(200).clone();
    assert_eq!(body["affected"], 2);
    assert_eq!(body["selected"], 2);
    assert_eq!(body["unknown_ids"], json!([unknown]));
    let operation = body["operation_id"].as_str().unwrap().to_owned();
    assert_eq!(run_state(&s, &a).await["deleted"], true);
    assert_eq!(run_state(&s, &c).await["deleted"], false);
    // Its events share the operation's id.
    for run in [&a, &b] {
        let last = events_of(&s, run).await.pop().unwrap();
        assert_eq!(last["type"], "run.deleted");
        assert_eq!(last["metadata"]["operation_id"], operation.as_str());
        assert_eq!(last["data"]["reason"], "cleanup");
    }
    let record = s.get(&format!("/api/operations/{operation}")).await.ok(200).clone();
    assert_eq!(record["kind"], "delete");
    assert_eq!(record["actor"], "anonymous");
    assert_eq!(record["affected"], 2);
    assert_eq!(record["selector"]["ids"].as_array().unwrap().len(), 4);
    let mut changed: Vec<&str> = record["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    changed.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(changed, expected);

    // Again: nothing left to change.
    let again = s.post("/api/runs/bulk/delete", json!({"ids": [a, b]})).await;
    assert_eq!(again.ok(200)["affected"], 0);

    // By filter: restore what is deleted, except b.
    let restored = s
        .post(
            "/api/runs/bulk/restore",
            json!({"match_all": true, "filter": {"status": ["deleted"], "task_name": "a"}, "except_ids": [b]}),
        )
        .await;
    assert_eq!(restored.ok(200)["affected"], 1);
    assert_eq!(run_state(&s, &a).await["deleted"], false);
    assert_eq!(run_state(&s, &b).await["deleted"], true);
    // A restore by filter selects among deleted runs: none of task b is.
    let none = s
        .post(
            "/api/runs/bulk/restore",
            json!({"match_all": true, "filter": {"task_name": "b"}}),
        )
        .await;
    assert_eq!(none.ok(200)["affected"], 0);
    assert_eq!(none.body["selected"], 0);
    // Restoring a named run that is not deleted changes nothing.
    let named = s.post("/api/runs/bulk/restore", json!({"ids": [c]})).await;
    assert_eq!(
        (named.ok(200)["selected"].as_i64(), named.body["affected"].as_i64()),
        (Some(1), Some(0))
    );
    s.stop().await;
}

async fn cancel_retry_dlq_replay_and_rerun(s: TestServer) {
    let pending = id(&s.create(json!({"task_name": "c"})).await);
    let running = id(&s.run_through("c", json!({}), &["start"]).await);
    let ended = id(&s.run_through("c", json!({}), &["start", "end:success:0"]).await);
    let cancel = s
        .post("/api/runs/bulk/cancel", json!({"ids": [pending, running, ended]}))
        .await;
    let body = cancel.ok(200).clone();
    assert_eq!(
        (
            body["total"].as_i64(),
            body["canceled"].as_i64(),
            body["failed"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
    for r in body["results"].as_array().unwrap() {
        let expected = if r["id"] == ended.as_str() {
            "failed"
        } else {
            "canceled"
        };
        assert_eq!(r["status"], expected, "{r}");
        assert_eq!(r["error"].is_null(), expected == "canceled", "{r}");
    }
    for run in [&pending, &running] {
        let state = run_state(&s, run).await;
        assert_eq!(
            (state["status"].as_str(), state["end_reason"].as_str()),
            (Some("ended"), Some("stopped"))
        );
    }

    // Retry every failed run; an unfinished one cannot be retried.
    let f1 = id(&s
        .run_through("r", json!({"payload": {"n": 1}}), &["start", "end:failed:1"])
        .await);
    let f2 = id(&s
        .run_through("r", json!({"payload": {"n": 2}}), &["start", "end:failed:1"])
        .await);
    let open = id(&s.run_through("r", json!({}), &["start"]).await);
    let retried = s
        .post(
            "/api/runs/bulk/retry",
            json!({"ids": [f1, f2, open], "reason": "flaky network"}),
        )
        .await;
    let body = retried.ok(200).clone();
    assert_eq!(body["affected"], 2);
    let new_runs = body["runs"].as_array().unwrap();
    assert_eq!(new_runs.len(), 2);
    for new_run in new_runs {
        assert_eq!(new_run["triggered_by"], "retry");
        assert_eq!(new_run["retry_attempt"], 1);
        assert!([f1.as_str(), f2.as_str()].contains(&new_run["retry_of_run_id"].as_str().unwrap()));
    }
    assert_eq!(body["failed"][0]["id"], open.as_str());
    let operation = body["operation_id"].as_str().unwrap();
    let record = s.get(&format!("/api/operations/{operation}")).await.ok(200).clone();
    assert!(record["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["new_run_id"].is_string()));

    // Dead letters: the last attempt fails; dlq-replay retries and clears the flag.
    let dead = id(&s
        .run_through("d", json!({"max_attempts": 1}), &["start", "end:crashed:137"])
        .await);
    assert_eq!(run_state(&s, &dead).await["dead_lettered"], true);
    let replayed = s
        .post(
            "/api/runs/bulk/dlq-replay",
            json!({"match_all": true, "filter": {"status": "dead_letter"}}),
        )
        .await;
    let body = replayed.ok(200).clone();
    assert_eq!(body["affected"], 1);
    assert_eq!(body["runs"][0]["retry_of_run_id"], dead.as_str());
    assert_eq!(run_state(&s, &dead).await["dead_lettered"], false);
    // Nothing is dead-lettered any more; a run that is not is refused, with its reason.
    let none = s.post("/api/runs/bulk/dlq-replay", json!({"ids": [dead]})).await;
    assert_eq!(none.ok(200)["affected"], 0);
    assert!(none.body["failed"][0]["error"]
        .as_str()
        .unwrap()
        .contains("dead-lettered"));
    // The single-run endpoint does the same.
    let dead2 = id(&s
        .run_through("d", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await);
    let one = s.post(&format!("/api/runs/{dead2}/dlq-replay"), json!({})).await;
    assert_eq!(one.ok(202)["action"], "dlq_replay");
    s.post(&format!("/api/runs/{dead2}/dlq-replay"), json!({}))
        .await
        .problem(409, "illegal_transition");

    // Rerun: one new run per task, from the task's most recent selected run.
    let rerun = s
        .post(
            "/api/runs/bulk/rerun",
            json!({"match_all": true, "filter": {"task_name": "r", "status": "failed"}}),
        )
        .await;
    let body = rerun.ok(200).clone();
    let runs = body["runs"].as_object().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs["r"]["triggered_by"], "rerun");
    assert_eq!(runs["r"]["payload"], json!({"n": 2}), "the most recent run's payload");
    assert_eq!(runs["r"]["status"], "pending");
    let both = s
        .post("/api/runs/bulk/rerun", json!({"ids": [pending, running, dead]}))
        .await;
    let mut tasks: Vec<&String> = both.ok(200)["runs"].as_object().unwrap().keys().collect();
    tasks.sort();
    assert_eq!(tasks, ["c", "d"]);
    assert_eq!(both.body["affected"], 2);
    s.stop().await;
}

/// A dry run counts exactly and writes nothing; a call pinned to its
/// `as_of` acts on exactly the runs that matched then, while other writes
/// change what matches now.
async fn dry_run_then_pinned_execution(s: TestServer) {
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(id(&s
            .run_through("x", json!({}), &["start", &format!("end:failed:{i}")])
            .await));
    }
    let before = s.event_count().await;
    let selector = json!({"match_all": true, "filter": {"task_name": "x", "status": "failed"}});
    let mut dry = selector.clone();
    dry["dry_run"] = json!(true);
    let counted = s.post("/api/runs/bulk/delete", dry).await;
    let body = counted.ok(200).clone();
    assert_eq!(body["affected"], 5);
    assert_eq!(body["dry_run"], true);
    assert!(body["operation_id"].is_null());
    let as_of = body["as_of"].as_i64().unwrap();
    assert_eq!(as_of, before);
    assert_eq!(s.event_count().await, before, "a dry run writes nothing");

    // Meanwhile: one of them is deleted by hand, two new runs match.
    s.delete(&format!("/api/runs/{}", runs[0]), json!({})).await.ok(200);
    let mut later = Vec::new();
    for _ in 0..2 {
        later.push(id(&s.run_through("x", json!({}), &["start", "end:failed:9"]).await));
    }
    // Writes go on while the pinned call runs.
    let mut pinned = selector.clone();
    pinned["as_of"] = json!(as_of);
    let writes = async {
        for _ in 0..5 {
            s.create(json!({"task_name": "x"})).await;
        }
    };
    let (deleted, ()) = tokio::join!(s.post("/api/runs/bulk/delete", pinned), writes);
    let body = deleted.ok(200).clone();
    assert_eq!(body["selected"], 5, "the runs that matched at {as_of}");
    assert_eq!(body["affected"], 4, "one was deleted already");
    assert_eq!(body["as_of"], as_of);
    for run in &runs {
        assert_eq!(run_state(&s, run).await["deleted"], true);
    }
    for run in &later {
        assert_eq!(run_state(&s, run).await["deleted"], false, "matched only after {as_of}");
    }
    // By time as well as by position.
    let at = events_of(&s, &runs[4]).await[3]["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut by_time = selector.clone();
    by_time["as_of"] = json!(at);
    by_time["dry_run"] = json!(true);
    let counted = s.post("/api/runs/bulk/restore", by_time).await;
    assert_eq!(counted.ok(200)["selected"], 5);
    assert_eq!(counted.body["affected"], 5, "all five are deleted now");
    s.stop().await;
}

async fn invalid_selectors_are_422_at_their_location_and_change_nothing(s: TestServer) {
    let run = id(&s.run_through("t", json!({}), &["start"]).await);
    let before = s.event_count().await;
    let cases = [
        (json!({}), "body"),
        (json!({"ids": [run], "match_all": true}), "body.ids"),
        (json!({"ids": []}), "body.ids"),
        (json!({"ids": [run, "nope"]}), "body.ids[1]"),
        (json!({"match_all": false}), "body.match_all"),
        (json!({"ids": [run], "filter": {"task_name": "t"}}), "body.filter"),
        (json!({"ids": [run], "except_ids": [run]}), "body.except_ids"),
        (json!({"ids": [run], "as_of": 1}), "body.as_of"),
        (
            json!({"match_all": true, "filter": {"status": "bogus"}}),
            "body.filter.status",
        ),
        (
            json!({"match_all": true, "filter": {"created_after": "yesterday"}}),
            "body.filter.created_after",
        ),
        (
            json!({"match_all": true, "filter": {"colour": "red"}}),
            "body.filter.colour",
        ),
        (json!({"match_all": true, "filter": {"limit": 5}}), "body.filter.limit"),
        (
            json!({"match_all": true, "filter": {"tag": ["nocolon"]}}),
            "body.filter.tag",
        ),
        (
            json!({"match_all": true, "filter": {"task_name": {"a": 1}}}),
            "body.filter.task_name",
        ),
        (
            json!({"match_all": true, "filter": {"exit_code_min": 5, "exit_code_max": 1}}),
            "body.filter.exit_code_min",
        ),
        (json!({"match_all": true, "except_ids": ["x"]}), "body.except_ids[0]"),
        (json!({"match_all": true, "as_of": "soon"}), "body.as_of"),
        (json!({"match_all": true, "as_of": -1}), "body.as_of"),
        (json!({"match_all": true, "colour": 1}), "body.colour"),
        (json!({"match_all": true, "dry_run": "yes"}), "body.dry_run"),
        (json!({"match_all": true, "reason": ""}), "body.reason"),
    ];
    for path in ["delete", "restore", "cancel", "retry", "dlq-replay", "rerun"] {
        for (body, location) in &cases {
            let reply = s.post(&format!("/api/runs/bulk/{path}"), body.clone()).await;
            assert_eq!(reply.status, 422, "{path} {body}: {}", reply.body);
            reply.invalid_at(location);
        }
        let malformed = s
            .send_raw(
                Method::POST,
                &format!("/api/runs/bulk/{path}"),
                "application/json",
                "{\"ids\": [",
            )
            .await;
        malformed.problem(400, "malformed_request");
    }
    assert_eq!(s.event_count().await, before);
    // An empty except_ids leaves nothing out, so it may stand beside ids.
    let counted = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"ids": [run], "except_ids": [], "dry_run": true}),
        )
        .await;
    assert_eq!(counted.ok(200)["selected"], 1, "{}", counted.body);
    assert_eq!(s.event_count().await, before);
    s.get("/api/operations/nope").await.invalid_at("path.id");
    s.get(&format!("/api/operations/{run}?limit=0"))
        .await
        .invalid_at("query.limit");
    s.get(&format!("/api/operations/{run}"))
        .await
        .problem(404, "operation_not_found");
    s.stop().await;
}

fn capped() -> HttpConfig {
    HttpConfig {
        bulk_cap: 3,
        ..HttpConfig::default()
    }
}

/// Above the cap a selection is refused whole, with its size.
async fn selections_above_the_cap_are_refused_with_their_size(s: TestServer) {
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(id(&s.create(json!({"task_name": "many"})).await));
    }
    let before = s.event_count().await;
    let refused = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "filter": {"task_name": "many"}}),
        )
        .await;
    let body = refused.invalid_at("body").clone();
    assert_eq!(body["errors"][0]["value"], 5);
    assert!(body["detail"].as_str().unwrap().contains("5 runs"), "{body}");
    let ids = s.post("/api/runs/bulk/cancel", json!({"ids": runs[..4]})).await;
    ids.invalid_at("body.ids");
    assert_eq!(s.event_count().await, before);
    // except_ids can bring a selection under the cap.
    let fits = s
        .post(
            "/api/runs/bulk/cancel",
            json!({"match_all": true, "filter": {"task_name": "many"}, "except_ids": [runs[0], runs[1]]}),
        )
        .await;
    assert_eq!(fits.ok(200)["canceled"], 3);
    s.stop().await;
}

mod sqlite_capped {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn selections_above_the_cap_are_refused_with_their_size() {
        super::selections_above_the_cap_are_refused_with_their_size(TestServer::sqlite_with(capped()).await).await
    }
}

mod postgres_capped {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn selections_above_the_cap_are_refused_with_their_size() {
        let name = "selections_above_the_cap_are_refused_with_their_size";
        if let Some(s) = TestServer::postgres_with(name, capped()).await {
            super::selections_above_the_cap_are_refused_with_their_size(s).await
        }
    }
}

backend_tests!(
    delete_and_restore_by_ids_and_by_filter,
    cancel_retry_dlq_replay_and_rerun,
    dry_run_then_pinned_execution,
    invalid_selectors_are_422_at_their_location_and_change_nothing,
);

/// The dead-letter queue lists only dead-lettered runs, with the list's
/// filters (ANDed) and `as_of`; a replay takes a run out of it.
async fn the_dead_letter_queue_lists_and_replays(s: TestServer) {
    let dead_a = id(&s
        .run_through("a", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await);
    let dead_b = id(&s
        .run_through("b", json!({"max_attempts": 1}), &["start", "end:timeout"])
        .await);
    let alive = id(&s
        .run_through("a", json!({"max_attempts": 3}), &["start", "end:failed:1"])
        .await);
    let dlq = s.get("/api/runs/dlq").await.ok(200).clone();
    assert_eq!(dlq["total"], 2);
    let mut ids: Vec<&str> = dlq["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![dead_a.as_str(), dead_b.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(!ids.contains(&alive.as_str()));
    let a_only = s.get("/api/runs/dlq?task_name=a&status=failed").await;
    assert_eq!(a_only.ok(200)["total"], 1);
    assert_eq!(a_only.body["runs"][0]["id"], dead_a.as_str());
    let position = s.event_count().await;
    s.post(&format!("/api/runs/{dead_a}/dlq-replay"), json!({}))
        .await
        .ok(202);
    assert_eq!(s.get("/api/runs/dlq").await.ok(200)["total"], 1);
    // As it was before the replay.
    assert_eq!(
        s.get(&format!("/api/runs/dlq?as_of={position}")).await.ok(200)["total"],
        2
    );
    s.get("/api/runs/dlq?status=nope").await.invalid_at("query.status");
    s.get("/api/runs/dlq?colour=red").await.invalid_at("query.colour");
    s.stop().await;
}

/// Restart: an unfinished run ends as `stopped` and is retried at once,
/// with an optional new payload; an ended run is simply retried.
async fn restart_cancels_and_retries(s: TestServer) {
    let run = id(&s.run_through("job", json!({"payload": {"v": 1}}), &["start"]).await);
    let reply = s
        .post(
            &format!("/api/runs/{run}/restart"),
            json!({"reason": "stuck", "payload": {"v": 2}}),
        )
        .await;
    let body = reply.ok(202).clone();
    assert_eq!(body["action"], "restart");
    let new_run = body["new_run_id"].as_str().unwrap().to_owned();
    let source = run_state(&s, &run).await;
    assert_eq!(
        (source["status"].as_str(), source["end_reason"].as_str()),
        (Some("ended"), Some("stopped"))
    );
    assert_eq!(source["error"], "restarted: stuck");
    let types: Vec<String> = events_of(&s, &run)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&types[types.len() - 2..], ["run.ended", "run.retried"]);
    let fresh = run_state(&s, &new_run).await;
    assert_eq!(fresh["payload"], json!({"v": 2}));
    assert_eq!(fresh["retry_of_run_id"], run.as_str());
    assert_eq!(fresh["status"], "pending");
    // An ended run: just the retry, with its own payload.
    let again = s.post(&format!("/api/runs/{run}/restart"), json!({})).await;
    let again = again.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    assert_eq!(run_state(&s, &again).await["payload"], json!({"v": 1}));

    let before = s.event_count().await;
    s.post("/api/runs/0195f2a0-0000-7000-8000-000000000000/restart", json!({}))
        .await
        .problem(404, "run_not_found");
    s.post("/api/runs/nope/restart", json!({})).await.invalid_at("path.id");
    s.post(&format!("/api/runs/{run}/restart"), json!({"failed_only": true}))
        .await
        .invalid_at("body.failed_only");
    s.post(&format!("/api/runs/{run}/restart"), json!({"reason": 5}))
        .await
        .invalid_at("body.reason");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

/// `failed_only` retries a run's failed children, in one operation.
async fn retry_failed_only_retries_the_failed_children(s: TestServer) {
    let parent = id(&s.run_through("pipeline", json!({}), &["start"]).await);
    let child = |end: &'static str| {
        let steps: Vec<&str> = if end.is_empty() {
            vec!["start"]
        } else {
            vec!["start", end]
        };
        let extra = json!({"parent_run_id": parent});
        let s = &s;
        async move { id(&s.run_through("step", extra, &steps).await) }
    };
    let failed = child("end:failed:1").await;
    let timed_out = child("end:timeout").await;
    let ok = child("end:success:0").await;
    let running = child("").await;
    let reply = s
        .post(
            &format!("/api/runs/{parent}/retry"),
            json!({"failed_only": true, "reason": "rerun failed steps"}),
        )
        .await;
    let body = reply.ok(202).clone();
    let new_ids: Vec<String> = body["new_run_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(new_ids.len(), 2);
    let mut sources = Vec::new();
    for new_id in &new_ids {
        let run = run_state(&s, new_id).await;
        assert_eq!(run["parent_run_id"], parent.as_str(), "the retry stays a child");
        sources.push(run["retry_of_run_id"].as_str().unwrap().to_owned());
    }
    sources.sort();
    let mut expected = vec![failed.clone(), timed_out.clone()];
    expected.sort();
    assert_eq!(sources, expected);
    for untouched in [&ok, &running, &parent] {
        assert!(events_of(&s, untouched)
            .await
            .iter()
            .all(|e| e["type"] != "run.retried"));
    }
    let operation = body["operation_id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("/api/operations/{operation}")).await.ok(200)["affected"],
        2
    );

    // No failed children: nothing to do, said so.
    let lonely = id(&s.run_through("solo", json!({}), &["start", "end:success:0"]).await);
    let none = s
        .post(&format!("/api/runs/{lonely}/retry"), json!({"failed_only": true}))
        .await;
    assert_eq!(none.ok(202)["new_run_ids"], json!([]));
    let before = s.event_count().await;
    s.post(
        &format!("/api/runs/{parent}/retry"),
        json!({"failed_only": true, "payload": {}}),
    )
    .await
    .invalid_at("body.payload");
    s.post(
        "/api/runs/0195f2a0-0000-7000-8000-000000000000/retry",
        json!({"failed_only": true}),
    )
    .await
    .problem(404, "run_not_found");
    s.post(&format!("/api/runs/{parent}/retry"), json!({"failed_only": "yes"}))
        .await
        .invalid_at("body.failed_only");
    s.post(&format!("/api/runs/{parent}/dlq-replay"), json!({"failed_only": true}))
        .await
        .invalid_at("body.failed_only");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

mod operate {
    use super::*;
    backend_tests!(
        the_dead_letter_queue_lists_and_replays,
        restart_cancels_and_retries,
        retry_failed_only_retries_the_failed_children,
    );
}

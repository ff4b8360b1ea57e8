//! Time travel through the real server: a run at any past position or time,
//! its history event by event, and what changed between two points.

mod common;

use common::TestServer;
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

async fn events(s: &TestServer, run: &str) -> Vec<Value> {
    s.get(&format!("/api/runs/{run}/events")).await.ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_run_as_of_any_position_or_time(s: TestServer) {
    let run = s.run_through("etl", json!({}), &["start", "end:failed:3"]).await;
    let run = id(&run);
    let evs = events(&s, &run).await;
    assert_eq!(evs.len(), 3);
    for (position, status) in [(1, "pending"), (2, "running"), (3, "ended"), (99, "ended")] {
        let r = s.get(&format!("/api/runs/{run}?as_of={position}")).await;
        assert_eq!(r.ok(200)["status"], status, "as_of={position}");
        assert_eq!(r.body["version"], position.min(3));
    }
    assert_eq!(s.get(&format!("/api/runs/{run}?as_of=3")).await.body["exit_code"], 3);
    s.get(&format!("/api/runs/{run}?as_of=0"))
        .await
        .problem(404, "run_not_found");

    // By time: the state after the last event recorded at or before it.
    let started_at = evs[1]["recorded_at"].as_str().unwrap();
    let r = s.get(&format!("/api/runs/{run}?as_of={started_at}")).await;
    assert_eq!(r.ok(200)["status"], "running");
    s.get(&format!("/api/runs/{run}?as_of=2000-01-01T00:00:00Z"))
        .await
        .problem(404, "run_not_found");
    let now = s.get(&format!("/api/runs/{run}?as_of=2999-01-01T00:00:00Z")).await;
    assert_eq!(
        now.ok(200),
        s.get(&format!("/api/runs/{run}")).await.ok(200),
        "the future is the present"
    );
    s.stop().await;
}

async fn history_shows_each_event_with_the_state_after_it(s: TestServer) {
    let run = id(&s
        .run_through("etl", json!({}), &["start", "pause", "resume", "end:success:0"])
        .await);
    let h = s.get(&format!("/api/runs/{run}/history")).await;
    let items = h.ok(200)["history"].as_array().unwrap().clone();
    let pairs: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["event"]["type"].as_str().unwrap().to_owned(),
                i["state"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("run.created", "pending"),
        ("run.started", "running"),
        ("run.paused", "paused"),
        ("run.resumed", "running"),
        ("run.ended", "ended"),
    ];
    assert_eq!(pairs, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["state"]["version"], i as i64 + 1);
        assert_eq!(item["state"]["position"], item["event"]["position"]);
    }
    let page = s.get(&format!("/api/runs/{run}/history?after_version=2&limit=2")).await;
    let page: Vec<&str> = page.ok(200)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["run.paused", "run.resumed"]);
    s.stop().await;
}

async fn diff_lists_the_runs_that_changed_with_before_and_after(s: TestServer) {
    let a = id(&s.create(json!({"task_name": "a"})).await); // position 1
    let b = id(&s.create(json!({"task_name": "b"})).await); // position 2
    s.post(&format!("/api/runs/{a}/start"), json!({})).await.ok(200); // 3
    s.post(&format!("/api/runs/{a}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200); // 4
    let c = id(&s.create(json!({"task_name": "c"})).await); // 5

    let d = s.get("/api/runs/diff?from=2&to=4").await;
    let d = d.ok(200);
    assert_eq!(
        (d["from"].as_i64(), d["to"].as_i64(), d["total"].as_i64()),
        (Some(2), Some(4), Some(1))
    );
    let runs = d["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "b did not change after position 2");
    assert_eq!(runs[0]["id"], a.as_str());
    assert_eq!(runs[0]["before"]["status"], "pending");
    assert_eq!(runs[0]["after"]["status"], "ended");

    let d = s.get("/api/runs/diff?from=0&to=5").await;
    let d = d.ok(200);
    assert_eq!(d["total"], 3);
    let mut ids: Vec<&str> = d["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![a.as_str(), b.as_str(), c.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        d["runs"].as_array().unwrap().iter().all(|r| r["before"].is_null()),
        "none existed at 0"
    );

    let paged = s.get("/api/runs/diff?from=0&to=5&limit=2").await;
    assert_eq!(paged.ok(200)["runs"].as_array().unwrap().len(), 2);
    assert_eq!(paged.body["total"], 3);

    // By time: from the creation of b to now.
    let b_created = events(&s, &b).await[0]["recorded_at"].as_str().unwrap().to_owned();
    let d = s
        .get(&format!("/api/runs/diff?from={b_created}&to=2999-01-01T00:00:00Z"))
        .await;
    assert_eq!(d.ok(200)["from"], 2);
    assert_eq!(d.body["to"], 5);
    s.stop().await;
}

async fn bad_time_travel_inputs_are_problems_and_append_nothing(s: TestServer) {
    let run = id(&s.run_through("etl", json!({}), &["start"]).await);
    let before = s.event_count().await;
    s.get(&format!("/api/runs/{run}?as_of=-1"))
        .await
        .invalid_at("query.as_of");
    s.get(&format!("/api/runs/{run}?as_of=yesterday"))
        .await
        .invalid_at("query.as_of");
    s.get(&format!("/api/runs/{run}?as_of=1&as_of=2"))
        .await
        .invalid_at("query.as_of");
    s.get("/api/runs/not-a-run?as_of=1").await.invalid_at("path.id");
    s.get(&format!("/api/runs/{run}/history?limit=0"))
        .await
        .invalid_at("query.limit");
    s.get(&format!("/api/runs/{run}/history?after_version=-1"))
        .await
        .invalid_at("query.after_version");
    s.get("/api/runs/01a20900-0000-7000-8000-000000000000/history")
        .await
        .problem(404, "run_not_found");
    s.get("/api/runs/diff?to=2").await.invalid_at("query.from");
    s.get("/api/runs/diff?from=1").await.invalid_at("query.to");
    s.get("/api/runs/diff?from=x&to=2").await.invalid_at("query.from");
    s.get("/api/runs/diff?from=2&to=1").await.invalid_at("query.from");
    s.get("/api/runs/diff?from=1&to=2&limit=1001")
        .await
        .invalid_at("query.limit");
    s.get("/api/runs/diff?from=1&to=2&bogus=1")
        .await
        .invalid_at("query.bogus");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

/// Each run's state at every position, folded from its own history (the
/// event-by-event fold, independent of the history projection).
async fn folded_states(s: &TestServer, runs: &[String]) -> Vec<Vec<(i64, Value)>> {
    let mut out = Vec::new();
    for run in runs {
        let h = s.get(&format!("/api/runs/{run}/history")).await.ok(200).clone();
        let versions = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["event"]["position"].as_i64().unwrap(), i["state"].clone()))
            .collect();
        out.push(versions);
    }
    out
}

/// The state of each run at `position`, from the fold.
fn at(folded: &[Vec<(i64, Value)>], position: i64) -> Vec<Value> {
    folded
        .iter()
        .filter_map(|versions| {
            versions
                .iter()
                .rev()
                .find(|(p, _)| *p <= position)
                .map(|(_, s)| s.clone())
        })
        .collect()
}

/// `GET /api/runs/{id}?as_of=position` of each run equals its fold there
/// (404 before it existed).
async fn each_run_as_of_is_the_fold(s: &TestServer, runs: &[String], folded: &[Vec<(i64, Value)>], position: i64) {
    for (run, versions) in runs.iter().zip(folded) {
        let one = s.get(&format!("/api/runs/{run}?as_of={position}")).await;
        match versions.iter().rev().find(|(p, _)| *p <= position) {
            Some((_, state)) => assert_eq!(one.ok(200), state, "{run} as_of={position}"),
            None => {
                one.problem(404, "run_not_found");
            }
        }
    }
}

fn by_id(mut runs: Vec<Value>) -> Vec<Value> {
    runs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    runs
}

/// The runs list at every position of a history with retries, dead letters,
/// deletes and restores equals the fold of every run up to there; filters,
/// sorts, totals and the per-task list apply to the runs as they were.
async fn the_runs_list_as_of_every_position_matches_the_fold(s: TestServer) {
    let a = s
        .run_through(
            "etl",
            json!({"tags": {"env": "prod"}, "max_attempts": 2}),
            &["start", "end:failed:1"],
        )
        .await;
    let retry = s.post(&format!("/api/runs/{}/retry", id(&a)), json!({})).await;
    let b = retry.ok(202)["new_run_id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{b}/start"), json!({})).await.ok(200);
    // The last attempt fails: ended and dead-lettered in one append.
    s.post(
        &format!("/api/runs/{b}/end"),
        json!({"end_reason": "failed", "exit_code": 2}),
    )
    .await
    .ok(200);
    let c = s
        .run_through("report", json!({"tags": {"env": "dev"}}), &["start"])
        .await;
    s.delete(&format!("/api/runs/{}", id(&c)), json!({"reason": "noise"}))
        .await
        .ok(200);
    s.post(&format!("/api/runs/{}/restore", id(&c)), json!({}))
        .await
        .ok(200);
    let d = s.run_through("etl", json!({}), &["start", "end:success:0"]).await;
    let runs = vec![id(&a), b.clone(), id(&c), id(&d)];
    let folded = folded_states(&s, &runs).await;
    let head = s.event_count().await;
    assert!(head >= 14, "head {head}");

    for position in 0..=head + 1 {
        let expected = at(&folded, position);
        let all = s
            .get(&format!("/api/runs?as_of={position}&include_deleted=true&limit=1000"))
            .await;
        let all = all.ok(200).clone();
        assert_eq!(all["total"], expected.len(), "as_of={position}");
        assert_eq!(
            by_id(all["runs"].as_array().unwrap().clone()),
            by_id(expected.clone()),
            "as_of={position}"
        );

        // Default: deleted runs hidden, as they were then.
        let visible: Vec<Value> = expected.iter().filter(|r| r["deleted"] == false).cloned().collect();
        let listed = s.get(&format!("/api/runs?as_of={position}&limit=1000")).await;
        assert_eq!(
            by_id(listed.ok(200)["runs"].as_array().unwrap().clone()),
            by_id(visible.clone())
        );
        assert_eq!(listed.body["total"], visible.len(), "total as_of={position}");

        // A filter and a sort, on the values then.
        let running: Vec<Value> = visible.iter().filter(|r| r["status"] == "running").cloned().collect();
        let mut running_ids: Vec<&str> = running.iter().map(|r| r["id"].as_str().unwrap()).collect();
        running_ids.sort_by(|x, y| y.cmp(x));
        let listed = s
            .get(&format!(
                "/api/runs?as_of={position}&status=running&sort_field=task_name&sort_direction=desc"
            ))
            .await;
        let listed = listed.ok(200);
        let mut got: Vec<(&str, &str)> = listed["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["task_name"].as_str().unwrap(), r["id"].as_str().unwrap()))
            .collect();
        let mut want: Vec<(&str, &str)> = running
            .iter()
            .map(|r| (r["task_name"].as_str().unwrap(), r["id"].as_str().unwrap()))
            .collect();
        want.sort_by(|x, y| y.cmp(x));
        assert_eq!(got, want, "running at {position}, by task name desc");
        got.clear();

        // Tags (set at creation) and the task's own list.
        let prod = s.get(&format!("/api/runs?as_of={position}&tag=env:prod")).await;
        let prod_expected = visible.iter().filter(|r| r["tags"]["env"] == "prod").count();
        assert_eq!(prod.ok(200)["total"], prod_expected, "env:prod at {position}");
        let etl = s
            .get(&format!(
                "/api/tasks/etl/runs?as_of={position}&status=ended,dead_letter"
            ))
            .await;
        let etl_expected = visible
            .iter()
            .filter(|r| r["task_name"] == "etl" && (r["status"] == "ended" || r["dead_lettered"] == true))
            .count();
        assert_eq!(etl.ok(200)["total"], etl_expected, "etl ended at {position}");

        // One run, from the same projection.
        each_run_as_of_is_the_fold(&s, &runs, &folded, position).await;
    }

    // By time: the list as it was when b's retry was created.
    let b_created = events(&s, &b).await[0]["recorded_at"].as_str().unwrap().to_owned();
    let b_position = events(&s, &b).await[0]["position"].as_i64().unwrap();
    let by_time = s
        .get(&format!("/api/runs?as_of={b_created}&include_deleted=true&limit=1000"))
        .await;
    let by_position = s
        .get(&format!("/api/runs?as_of={b_position}&include_deleted=true&limit=1000"))
        .await;
    assert_eq!(by_time.ok(200), by_position.ok(200));

    // The present is the runs table.
    let now = s.get("/api/runs?include_deleted=true&limit=1000").await;
    let future = s
        .get("/api/runs?include_deleted=true&limit=1000&as_of=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(
        by_id(now.ok(200)["runs"].as_array().unwrap().clone()),
        by_id(future.ok(200)["runs"].as_array().unwrap().clone())
    );

    let before = s.event_count().await;
    s.get("/api/runs?as_of=-3").await.invalid_at("query.as_of");
    s.get("/api/runs?as_of=soon").await.invalid_at("query.as_of");
    s.get("/api/tasks/etl/runs?as_of=1&as_of=2")
        .await
        .invalid_at("query.as_of");
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

/// Events that change no column a list filters or sorts by (log lines,
/// heartbeats, a checkpoint) store no version of their own, but one every
/// 64 events of a run all the same; a run or the list at any position
/// still answers the fold, from the version before it with the run's
/// events since folded on.
async fn versions_that_change_no_column_are_folded_on_from_the_one_before(s: TestServer) {
    let run = id(&s.run_through("chatty", json!({}), &["start"]).await);
    let other = id(&s.run_through("quiet", json!({}), &["start"]).await);
    for n in 0..70 {
        let line = json!({"message": format!("line {n}"), "data": {"n": n}});
        s.post(&format!("/api/runs/{run}/logs"), line).await.ok(201);
        if n % 30 == 0 {
            s.post(&format!("/api/runs/{run}/heartbeat"), json!({})).await.ok(200);
            s.post(&format!("/api/runs/{other}/heartbeat"), json!({})).await.ok(200);
        }
    }
    s.post(&format!("/api/runs/{run}/checkpoints"), json!({"state": {"at": 70}}))
        .await
        .ok(201);
    s.post(
        &format!("/api/runs/{run}/end"),
        json!({"end_reason": "success", "exit_code": 0}),
    )
    .await
    .ok(200);
    let evs = events(&s, &run).await;
    assert_eq!(evs.len(), 77);
    // Created, started, the 64th event and the end.
    let stored = s
        .query_i64(&format!("SELECT COUNT(*) FROM run_history WHERE id = '{run}'"))
        .await;
    assert_eq!(stored, 4, "versions stored of 77");
    assert_eq!(
        s.query_i64(&format!("SELECT COUNT(*) FROM run_history WHERE id = '{other}'"))
            .await,
        2
    );

    let runs = vec![run.clone(), other.clone()];
    let folded = folded_states(&s, &runs).await;
    let head = s.event_count().await;
    for position in 1..=head {
        let expected = at(&folded, position);
        let listed = s.get(&format!("/api/runs?as_of={position}&limit=1000")).await;
        assert_eq!(
            by_id(listed.ok(200)["runs"].as_array().unwrap().clone()),
            by_id(expected.clone()),
            "as_of={position}"
        );
        let running = s
            .get(&format!(
                "/api/runs?as_of={position}&status=running&sort_field=start_at"
            ))
            .await;
        let want = expected.iter().filter(|r| r["status"] == "running").count();
        assert_eq!(running.ok(200)["total"], want, "running as_of={position}");
        assert_eq!(running.body["runs"].as_array().unwrap().len(), want);
        each_run_as_of_is_the_fold(&s, &runs, &folded, position).await;
    }
    s.stop().await;
}

backend_tests!(
    versions_that_change_no_column_are_folded_on_from_the_one_before,
    the_runs_list_as_of_every_position_matches_the_fold,
    a_run_as_of_any_position_or_time,
    history_shows_each_event_with_the_state_after_it,
    diff_lists_the_runs_that_changed_with_before_and_after,
    bad_time_travel_inputs_are_problems_and_append_nothing,
);

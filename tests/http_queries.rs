//! Reading runs through the real server: every filter and sort of
//! `GET /api/runs` and `GET /api/tasks/{taskName}/runs`, and `GET /api/tasks`.
//! Each test builds data that a wrong implementation (an ignored filter, an
//! exclusive bound, the wrong sort column, nulls first, a total counted after
//! the limit) would answer differently, and compares exact ordered id lists.

mod common;

use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use common::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const NONE: [&str; 0] = [];

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

/// Asserts that `path` lists exactly `expected`, in order, and that `total` is
/// the number of matching runs.
async fn expect_list<S: AsRef<str>>(s: &TestServer, path: &str, expected: &[S], total: i64) {
    let reply = s.get(path).await;
    let body = reply.ok(200);
    let expected: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
    assert_eq!(common::ids(body), expected, "runs of {path}");
    assert_eq!(body["total"], total, "total of {path}");
}

/// Posts a transition with an empty body and returns the run.
async fn act(s: &TestServer, run: &str, action: &str) -> Value {
    s.post(&format!("/api/runs/{run}/{action}"), json!({}))
        .await
        .ok(200)
        .clone()
}

async fn end(s: &TestServer, run: &str, reason: &str, exit_code: Option<i64>) -> Value {
    s.post(
        &format!("/api/runs/{run}/end"),
        json!({"end_reason": reason, "exit_code": exit_code}),
    )
    .await
    .ok(200)
    .clone()
}

async fn retry(s: &TestServer, run: &str) -> String {
    let r = s.post(&format!("/api/runs/{run}/retry"), json!({})).await;
    r.ok(202)["new_run_id"].as_str().unwrap().to_owned()
}

/// The two ids ordered as the server breaks ties: by id.
fn by_id<'a>(a: &'a String, b: &'a String) -> (&'a String, &'a String) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

fn reversed<'a>(list: &[&'a String]) -> Vec<&'a String> {
    list.iter().rev().copied().collect()
}

fn shift_micros(time: &str, micros: i64) -> String {
    let t = DateTime::parse_from_rfc3339(time).unwrap() + chrono::Duration::microseconds(micros);
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn the_default_order_is_newest_first_and_pages_concatenate_to_it(s: TestServer) {
    let mut created = Vec::new();
    for task in ["e", "a", "d", "b", "g", "c", "f"] {
        created.push(id(&s.create(json!({"task_name": task})).await));
    }
    let hidden = s.run_through("hidden", json!({}), &["delete"]).await;
    let oldest_first: Vec<&String> = created.iter().collect();
    let newest_first = reversed(&oldest_first);

    expect_list(&s, "/api/runs", &newest_first, 7).await;
    expect_list(&s, "/api/runs?sort_field=created_at", &newest_first, 7).await;
    expect_list(&s, "/api/runs?sort_direction=desc", &newest_first, 7).await;
    expect_list(&s, "/api/runs?sort_direction=asc", &oldest_first, 7).await;
    expect_list(
        &s,
        "/api/runs?sort_field=created_at&sort_direction=asc",
        &oldest_first,
        7,
    )
    .await;

    for (direction, full) in [("desc", &newest_first), ("asc", &oldest_first)] {
        for limit in [1usize, 2, 3, 7] {
            let mut pages = Vec::new();
            for offset in (0..7).step_by(limit) {
                let path = format!("/api/runs?sort_direction={direction}&limit={limit}&offset={offset}");
                let reply = s.get(&path).await;
                let body = reply.ok(200);
                let page = common::ids(body);
                assert_eq!(page.len(), limit.min(7 - offset), "{path}");
                assert_eq!(body["total"], 7, "the total ignores limit and offset: {path}");
                pages.extend(page);
            }
            let full: Vec<&str> = full.iter().map(|s| s.as_str()).collect();
            assert_eq!(pages, full, "pages of {limit} ({direction})");
        }
    }
    expect_list(&s, "/api/runs?limit=3&offset=5", &newest_first[5..], 7).await;
    expect_list(&s, "/api/runs?offset=7", &NONE, 7).await;
    expect_list(&s, "/api/runs?limit=1000&offset=1000", &NONE, 7).await;
    expect_list(&s, "/api/runs?limit=1000", &newest_first, 7).await;

    let hidden = id(&hidden);
    let mut with_deleted = vec![&hidden];
    with_deleted.extend(newest_first.iter().copied());
    expect_list(&s, "/api/runs?include_deleted=true&limit=2", &with_deleted[..2], 8).await;
    s.stop().await;
}

async fn the_default_page_is_fifty_runs_and_the_total_counts_them_all(s: TestServer) {
    let mut created = Vec::new();
    for i in 0..53 {
        created.push(id(&s.create(json!({"task_name": format!("bulk-{i}")})).await));
    }
    created.reverse();
    expect_list(&s, "/api/runs", &created[..50], 53).await;
    expect_list(&s, "/api/runs?offset=50", &created[50..], 53).await;
    expect_list(&s, "/api/runs?limit=51", &created[..51], 53).await;
    s.stop().await;
}

async fn sorting_by_task_name_both_ways_breaks_ties_by_id(s: TestServer) {
    let charlie = id(&s.create(json!({"task_name": "charlie"})).await);
    let alpha_1 = id(&s.create(json!({"task_name": "alpha"})).await);
    let delta = id(&s.create(json!({"task_name": "delta"})).await);
    let bravo = id(&s.create(json!({"task_name": "bravo"})).await);
    let alpha_2 = id(&s.create(json!({"task_name": "alpha"})).await);
    let (alpha_lo, alpha_hi) = by_id(&alpha_1, &alpha_2);

    let asc = [alpha_lo, alpha_hi, &bravo, &charlie, &delta];
    expect_list(&s, "/api/runs?sort_field=task_name&sort_direction=asc", &asc, 5).await;
    let desc = [&delta, &charlie, &bravo, alpha_hi, alpha_lo];
    expect_list(&s, "/api/runs?sort_field=task_name&sort_direction=desc", &desc, 5).await;
    expect_list(&s, "/api/runs?sort_field=task_name", &desc, 5).await;
    expect_list(
        &s,
        "/api/runs?sort_field=task_name&sort_direction=asc&limit=2&offset=1",
        &asc[1..3],
        5,
    )
    .await;
    s.stop().await;
}

async fn sorting_by_status_orders_the_status_text(s: TestServer) {
    let running = id(&s.run_through("t", json!({}), &["start"]).await);
    let ended = id(&s.run_through("t", json!({}), &["start", "end:success:0"]).await);
    let pending_1 = id(&s.create(json!({"task_name": "t"})).await);
    let paused = id(&s.run_through("t", json!({}), &["start", "pause"]).await);
    let pending_2 = id(&s.create(json!({"task_name": "t"})).await);
    let (pending_lo, pending_hi) = by_id(&pending_1, &pending_2);

    // `ended` < `paused` < `pending` < `running`.
    let asc = [&ended, &paused, pending_lo, pending_hi, &running];
    expect_list(&s, "/api/runs?sort_field=status&sort_direction=asc", &asc, 5).await;
    expect_list(
        &s,
        "/api/runs?sort_field=status&sort_direction=desc",
        &reversed(&asc),
        5,
    )
    .await;
    expect_list(&s, "/api/runs?sort_field=status", &reversed(&asc), 5).await;
    s.stop().await;
}

async fn sorting_by_start_time_puts_never_started_runs_last_both_ways(s: TestServer) {
    let a = id(&s.create(json!({"task_name": "a"})).await);
    let b = id(&s.create(json!({"task_name": "b"})).await);
    let c = id(&s.create(json!({"task_name": "c"})).await);
    let d = id(&s.create(json!({"task_name": "d"})).await);
    let e = id(&s.create(json!({"task_name": "e"})).await);
    // Started in an order unlike the creation order; b and d never start.
    act(&s, &c, "start").await;
    act(&s, &a, "start").await;
    act(&s, &e, "start").await;
    end(&s, &a, "success", Some(0)).await;
    act(&s, &d, "cancel").await;
    let (null_lo, null_hi) = by_id(&b, &d);

    expect_list(
        &s,
        "/api/runs?sort_field=start_at&sort_direction=asc",
        &[&c, &a, &e, null_lo, null_hi],
        5,
    )
    .await;
    let desc = [&e, &a, &c, null_hi, null_lo];
    expect_list(&s, "/api/runs?sort_field=start_at&sort_direction=desc", &desc, 5).await;
    expect_list(&s, "/api/runs?sort_field=start_at", &desc, 5).await;
    expect_list(
        &s,
        "/api/runs?sort_field=start_at&sort_direction=asc&limit=2&offset=2",
        &[&e, null_lo],
        5,
    )
    .await;
    s.stop().await;
}

async fn sorting_by_exit_code_puts_runs_without_one_last_both_ways(s: TestServer) {
    let two = id(&s.run_through("t", json!({}), &["start", "end:failed:2"]).await);
    let killed = id(&s.run_through("t", json!({}), &["start", "end:crashed:137"]).await);
    let pending = id(&s.create(json!({"task_name": "t"})).await);
    let zero = id(&s.run_through("t", json!({}), &["start", "end:success:0"]).await);
    let one = id(&s.run_through("t", json!({}), &["start", "end:failed:1"]).await);
    let no_code = id(&s.run_through("t", json!({}), &["start", "end:success"]).await);
    let (null_lo, null_hi) = by_id(&pending, &no_code);

    let asc = [&zero, &one, &two, &killed, null_lo, null_hi];
    expect_list(&s, "/api/runs?sort_field=exit_code&sort_direction=asc", &asc, 6).await;
    let desc = [&killed, &two, &one, &zero, null_hi, null_lo];
    expect_list(&s, "/api/runs?sort_field=exit_code&sort_direction=desc", &desc, 6).await;
    expect_list(&s, "/api/runs?sort_field=exit_code", &desc, 6).await;
    for (offset, page) in [(0, &asc[0..4]), (4, &asc[4..6])] {
        let path = format!("/api/runs?sort_field=exit_code&sort_direction=asc&limit=4&offset={offset}");
        expect_list(&s, &path, page, 6).await;
    }
    s.stop().await;
}

async fn sorting_by_duration_puts_unfinished_runs_last_both_ways(s: TestServer) {
    let long = id(&s.create(json!({"task_name": "long"})).await);
    let middle = id(&s.create(json!({"task_name": "middle"})).await);
    let short = id(&s.create(json!({"task_name": "short"})).await);
    let never_started = id(&s.create(json!({"task_name": "never"})).await);
    let unfinished = id(&s.create(json!({"task_name": "unfinished"})).await);
    let canceled = id(&s.create(json!({"task_name": "canceled"})).await);
    // `long` spans the other two, so it is the longest whatever the machine's
    // load; creation, start and end orders all differ from the duration order.
    act(&s, &long, "start").await;
    act(&s, &middle, "start").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    end(&s, &middle, "failed", Some(1)).await;
    act(&s, &short, "start").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    end(&s, &short, "success", Some(0)).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    end(&s, &long, "success", Some(0)).await;
    act(&s, &unfinished, "start").await;
    act(&s, &canceled, "cancel").await;

    // The expected order comes from each run's own duration_ms.
    let mut timed = Vec::new();
    let mut untimed = Vec::new();
    for run in [&long, &middle, &short, &never_started, &unfinished, &canceled] {
        let state = s.get(&format!("/api/runs/{run}")).await.ok(200).clone();
        match state["duration_ms"].as_i64() {
            Some(ms) => timed.push((ms, run.clone())),
            None => untimed.push(run.clone()),
        }
    }
    timed.sort();
    untimed.sort();
    let mut finished: Vec<&String> = timed.iter().map(|(_, id)| id).collect();
    finished.sort();
    let mut expected_finished = vec![&long, &middle, &short];
    expected_finished.sort();
    assert_eq!(
        finished, expected_finished,
        "only ended runs that started have a duration"
    );
    assert!(
        timed.last().unwrap().1 == long,
        "the run that spans the others is the longest: {timed:?}"
    );

    let mut asc: Vec<&String> = timed.iter().map(|(_, id)| id).collect();
    asc.extend(untimed.iter());
    let mut desc: Vec<&String> = timed.iter().rev().map(|(_, id)| id).collect();
    desc.extend(untimed.iter().rev());
    expect_list(&s, "/api/runs?sort_field=duration&sort_direction=asc", &asc, 6).await;
    expect_list(&s, "/api/runs?sort_field=duration&sort_direction=desc", &desc, 6).await;
    expect_list(&s, "/api/runs?sort_field=duration", &desc, 6).await;
    expect_list(
        &s,
        "/api/runs?sort_field=duration&sort_direction=asc&limit=2&offset=2",
        &asc[2..4],
        6,
    )
    .await;
    s.stop().await;
}

async fn the_status_filter_matches_phases_end_reasons_and_flags(s: TestServer) {
    let none = json!({});
    let pending = id(&s.run_through("st", none.clone(), &[]).await);
    let running = id(&s.run_through("st", none.clone(), &["start"]).await);
    let paused = id(&s.run_through("st", none.clone(), &["start", "pause"]).await);
    let success = id(&s.run_through("st", none.clone(), &["start", "end:success:0"]).await);
    let failed = id(&s.run_through("st", none.clone(), &["start", "end:failed:1"]).await);
    let timeout = id(&s.run_through("st", none.clone(), &["start", "end:timeout"]).await);
    let crashed = id(&s.run_through("st", none.clone(), &["start", "end:crashed:137"]).await);
    let stopped = id(&s.run_through("st", none.clone(), &["cancel"]).await);
    let dead = s
        .run_through("st", json!({"max_attempts": 1}), &["start", "end:failed:2"])
        .await;
    assert_eq!(dead["dead_lettered"], true);
    let dead = id(&dead);
    let deleted_pending = id(&s.run_through("st", none.clone(), &["delete"]).await);
    let deleted_failed = id(&s.run_through("st", none, &["start", "end:failed:3", "delete"]).await);

    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("pending", vec![&pending]),
        ("running", vec![&running]),
        ("paused", vec![&paused]),
        ("ended", vec![&dead, &stopped, &crashed, &timeout, &failed, &success]),
        ("success", vec![&success]),
        ("failed", vec![&dead, &failed]),
        ("timeout", vec![&timeout]),
        ("crashed", vec![&crashed]),
        ("stopped", vec![&stopped]),
        ("skipped", vec![]),
        ("dead_letter", vec![&dead]),
        ("deleted", vec![&deleted_failed, &deleted_pending]),
        ("pending,failed", vec![&dead, &failed, &pending]),
        ("running,paused,success", vec![&success, &paused, &running]),
        ("timeout,stopped,dead_letter", vec![&dead, &stopped, &timeout]),
        ("running, crashed", vec![&crashed, &running]),
        ("deleted,pending", vec![&deleted_failed, &deleted_pending, &pending]),
        (
            "failed,deleted",
            vec![&deleted_failed, &deleted_pending, &dead, &failed],
        ),
    ];
    for (status, expected) in &cases {
        let total = expected.len() as i64;
        expect_list(&s, &format!("/api/runs?status={status}"), expected, total).await;
    }
    // With include_deleted a status value no longer hides deleted runs.
    expect_list(
        &s,
        "/api/runs?status=failed&include_deleted=true",
        &[&deleted_failed, &dead, &failed],
        3,
    )
    .await;
    expect_list(
        &s,
        "/api/runs?status=pending&include_deleted=true",
        &[&deleted_pending, &pending],
        2,
    )
    .await;
    expect_list(
        &s,
        "/api/runs?status=ended&sort_direction=asc",
        &[&success, &failed, &timeout, &crashed, &stopped, &dead],
        6,
    )
    .await;
    expect_list(&s, "/api/runs?status=ended&limit=2&offset=1", &[&stopped, &crashed], 6).await;
    let all = [
        &dead, &stopped, &crashed, &timeout, &failed, &success, &paused, &running, &pending,
    ];
    expect_list(&s, "/api/runs", &all, 9).await;
    s.stop().await;
}

async fn deleted_runs_are_hidden_unless_asked_for(s: TestServer) {
    let a = id(&s.create(json!({"task_name": "a"})).await);
    let b = id(&s.run_through("b", json!({}), &["start", "end:success:0"]).await);
    let c = id(&s.create(json!({"task_name": "c"})).await);
    s.delete(&format!("/api/runs/{b}"), json!({"reason": "noise"}))
        .await
        .ok(200);

    expect_list(&s, "/api/runs", &[&c, &a], 2).await;
    expect_list(&s, "/api/runs?include_deleted=false", &[&c, &a], 2).await;
    expect_list(&s, "/api/runs?include_deleted=0", &[&c, &a], 2).await;
    expect_list(&s, "/api/runs?include_deleted=true", &[&c, &b, &a], 3).await;
    expect_list(&s, "/api/runs?include_deleted=1", &[&c, &b, &a], 3).await;
    expect_list(&s, "/api/runs?include_deleted=true&limit=1", &[&c], 3).await;
    expect_list(&s, "/api/runs?include_deleted=true&limit=1&offset=1", &[&b], 3).await;
    expect_list(&s, "/api/runs?limit=1&offset=1", &[&a], 2).await;
    expect_list(&s, "/api/runs?status=success", &NONE, 0).await;
    expect_list(&s, "/api/runs?status=success&include_deleted=true", &[&b], 1).await;
    expect_list(&s, "/api/tasks/b/runs", &NONE, 0).await;
    expect_list(&s, "/api/tasks/b/runs?include_deleted=true", &[&b], 1).await;

    act(&s, &b, "restore").await;
    expect_list(&s, "/api/runs", &[&c, &b, &a], 3).await;
    expect_list(&s, "/api/runs?status=deleted", &NONE, 0).await;
    s.stop().await;
}

async fn task_name_and_project_filters_are_exact(s: TestServer) {
    let alpha = id(&s.create(json!({"task_name": "alpha"})).await);
    let alpha_other = id(&s.create(json!({"task_name": "alpha", "project": "other"})).await);
    let alpha_2 = id(&s.create(json!({"task_name": "alpha-2"})).await);
    let alph = id(&s.create(json!({"task_name": "alph"})).await);
    let beta_other = id(&s.create(json!({"task_name": "beta", "project": "other"})).await);

    expect_list(&s, "/api/runs?task_name=alpha", &[&alpha_other, &alpha], 2).await;
    expect_list(&s, "/api/runs?task_name=alph", &[&alph], 1).await;
    expect_list(&s, "/api/runs?task_name=alpha-2", &[&alpha_2], 1).await;
    expect_list(&s, "/api/runs?task_name=Alpha", &NONE, 0).await;
    expect_list(&s, "/api/runs?task_name=gamma", &NONE, 0).await;
    expect_list(&s, "/api/runs?project=other", &[&beta_other, &alpha_other], 2).await;
    expect_list(&s, "/api/runs?project=default", &[&alph, &alpha_2, &alpha], 3).await;
    expect_list(&s, "/api/runs?project=othe", &NONE, 0).await;
    expect_list(&s, "/api/runs?task_name=alpha&project=default", &[&alpha], 1).await;
    expect_list(&s, "/api/runs?task_name=alpha&project=other", &[&alpha_other], 1).await;
    expect_list(&s, "/api/runs?task_name=alph&project=other", &NONE, 0).await;
    expect_list(&s, "/api/tasks/alpha/runs?project=other", &[&alpha_other], 1).await;
    s.stop().await;
}

async fn the_triggered_by_filter_takes_one_source_or_several(s: TestServer) {
    let cron = id(&s.create(json!({"task_name": "t", "triggered_by": "cron"})).await);
    let manual = id(&s.create(json!({"task_name": "t", "triggered_by": "manual"})).await);
    let api = s.create(json!({"task_name": "t"})).await;
    assert_eq!(api["triggered_by"], "api");
    let api = id(&api);
    let event = id(&s.create(json!({"task_name": "t", "triggered_by": "event"})).await);
    let workflow = id(&s.create(json!({"task_name": "t", "triggered_by": "workflow"})).await);

    expect_list(&s, "/api/runs?triggered_by=cron", &[&cron], 1).await;
    expect_list(&s, "/api/runs?triggered_by=api", &[&api], 1).await;
    expect_list(&s, "/api/runs?triggered_by=cron,manual", &[&manual, &cron], 2).await;
    expect_list(
        &s,
        "/api/runs?triggered_by=event,api,workflow",
        &[&workflow, &event, &api],
        3,
    )
    .await;
    expect_list(&s, "/api/runs?triggered_by=rerun", &NONE, 0).await;
    expect_list(&s, "/api/runs?triggered_by=retry", &NONE, 0).await;

    act(&s, &cron, "cancel").await;
    let retried = retry(&s, &cron).await;
    expect_list(&s, "/api/runs?triggered_by=retry", &[&retried], 1).await;
    expect_list(&s, "/api/runs?triggered_by=retry,cron", &[&retried, &cron], 2).await;
    expect_list(
        &s,
        "/api/runs?triggered_by=cron,manual&sort_direction=asc&limit=1",
        &[&cron],
        2,
    )
    .await;
    s.stop().await;
}

async fn created_bounds_are_inclusive(s: TestServer) {
    let mut runs = Vec::new();
    let mut times = Vec::new();
    for i in 0..5 {
        let run = s.create(json!({"task_name": format!("r{i}")})).await;
        times.push(run["created_at"].as_str().unwrap().to_owned());
        runs.push(id(&run));
    }
    let [r0, r1, r2, r3, r4] = [&runs[0], &runs[1], &runs[2], &runs[3], &runs[4]];
    let t = |i: usize| times[i].clone();

    expect_list(&s, &format!("/api/runs?created_after={}", t(2)), &[r4, r3, r2], 3).await;
    expect_list(&s, &format!("/api/runs?created_before={}", t(2)), &[r2, r1, r0], 3).await;
    expect_list(
        &s,
        &format!("/api/runs?created_after={}&created_before={}", t(2), t(2)),
        &[r2],
        1,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/runs?created_after={}&created_before={}", t(1), t(3)),
        &[r3, r2, r1],
        3,
    )
    .await;
    // One microsecond past the run's own time leaves it out.
    let after_r2 = shift_micros(&t(2), 1);
    let before_r2 = shift_micros(&t(2), -1);
    expect_list(&s, &format!("/api/runs?created_after={after_r2}"), &[r4, r3], 2).await;
    expect_list(&s, &format!("/api/runs?created_before={before_r2}"), &[r1, r0], 2).await;
    expect_list(
        &s,
        &format!("/api/runs?created_after={}", shift_micros(&t(4), 1)),
        &NONE,
        0,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/runs?created_before={}", shift_micros(&t(0), -1)),
        &NONE,
        0,
    )
    .await;
    // The same instant written with another offset.
    let plus_two = DateTime::parse_from_rfc3339(&t(2))
        .unwrap()
        .with_timezone(&FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Micros, false);
    assert!(plus_two.ends_with("+02:00"));
    let encoded = plus_two.replace('+', "%2B");
    expect_list(&s, &format!("/api/runs?created_after={encoded}"), &[r4, r3, r2], 3).await;
    expect_list(&s, &format!("/api/runs?created_before={encoded}"), &[r2, r1, r0], 3).await;
    expect_list(
        &s,
        &format!("/api/runs?created_after={}&sort_direction=asc&limit=2", t(1)),
        &[r1, r2],
        4,
    )
    .await;
    // A deleted run in the window leaves the list and its total, unless asked for.
    s.delete(&format!("/api/runs/{r3}"), json!({})).await.ok(200);
    let window = format!("created_after={}&created_before={}", t(1), t(3));
    expect_list(&s, &format!("/api/runs?{window}"), &[r2, r1], 2).await;
    expect_list(
        &s,
        &format!("/api/runs?{window}&include_deleted=true"),
        &[r3, r2, r1],
        3,
    )
    .await;
    expect_list(&s, &format!("/api/runs?{window}&status=deleted"), &[r3], 1).await;
    s.stop().await;
}

async fn exit_code_bounds_are_inclusive_and_skip_runs_without_a_code(s: TestServer) {
    let two = id(&s.run_through("t", json!({}), &["start", "end:failed:2"]).await);
    let killed = id(&s.run_through("t", json!({}), &["start", "end:crashed:137"]).await);
    let no_code = id(&s.run_through("t", json!({}), &["start", "end:success"]).await);
    let zero = id(&s.run_through("t", json!({}), &["start", "end:success:0"]).await);
    let one = id(&s.run_through("t", json!({}), &["start", "end:failed:1"]).await);
    let negative = id(&s.run_through("t", json!({}), &["start", "end:failed:-1"]).await);
    let pending = id(&s.create(json!({"task_name": "t"})).await);

    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("exit_code_min=1", vec![&one, &killed, &two]),
        ("exit_code_min=2", vec![&killed, &two]),
        ("exit_code_min=137", vec![&killed]),
        ("exit_code_min=138", vec![]),
        ("exit_code_min=0", vec![&one, &zero, &killed, &two]),
        ("exit_code_max=1", vec![&negative, &one, &zero]),
        ("exit_code_max=0", vec![&negative, &zero]),
        ("exit_code_max=-1", vec![&negative]),
        ("exit_code_max=-2", vec![]),
        ("exit_code_min=1&exit_code_max=2", vec![&one, &two]),
        ("exit_code_min=2&exit_code_max=2", vec![&two]),
        ("exit_code_min=0&exit_code_max=136", vec![&one, &zero, &two]),
        (
            "exit_code_min=-1&exit_code_max=137",
            vec![&negative, &one, &zero, &killed, &two],
        ),
        ("exit_code_min=3&exit_code_max=136", vec![]),
    ];
    for (query, expected) in &cases {
        let total = expected.len() as i64;
        expect_list(&s, &format!("/api/runs?{query}"), expected, total).await;
    }
    expect_list(
        &s,
        "/api/runs",
        &[&pending, &negative, &one, &zero, &no_code, &killed, &two],
        7,
    )
    .await;
    expect_list(
        &s,
        "/api/runs?exit_code_min=0&sort_field=exit_code&sort_direction=asc",
        &[&zero, &one, &two, &killed],
        4,
    )
    .await;
    s.stop().await;
}

async fn retries_only_lists_the_retries(s: TestServer) {
    let first = id(&s.run_through("flaky", json!({}), &["start", "end:failed:1"]).await);
    let other = id(&s.run_through("steady", json!({}), &["start", "end:success:0"]).await);
    let attempt_1 = retry(&s, &first).await;
    act(&s, &attempt_1, "start").await;
    end(&s, &attempt_1, "failed", Some(1)).await;
    let attempt_2 = retry(&s, &attempt_1).await;
    let pending = id(&s.create(json!({"task_name": "flaky"})).await);
    let state = s.get(&format!("/api/runs/{attempt_2}")).await;
    assert_eq!(state.ok(200)["retry_attempt"], 2);

    expect_list(&s, "/api/runs?retries_only=true", &[&attempt_2, &attempt_1], 2).await;
    expect_list(&s, "/api/runs?retries_only=1", &[&attempt_2, &attempt_1], 2).await;
    let all = [&pending, &attempt_2, &attempt_1, &other, &first];
    expect_list(&s, "/api/runs?retries_only=false", &all, 5).await;
    expect_list(&s, "/api/runs", &all, 5).await;
    expect_list(&s, "/api/runs?retries_only=true&status=pending", &[&attempt_2], 1).await;
    expect_list(&s, "/api/runs?retries_only=true&status=failed", &[&attempt_1], 1).await;
    expect_list(&s, "/api/runs?retries_only=true&task_name=steady", &NONE, 0).await;
    expect_list(&s, "/api/runs?retries_only=true&limit=1", &[&attempt_2], 2).await;
    s.stop().await;
}

async fn search_matches_task_names_and_ids_literally_ignoring_case(s: TestServer) {
    let a_b = id(&s.create(json!({"task_name": "a_b"})).await);
    let axb = id(&s.create(json!({"task_name": "axb"})).await);
    let prod = id(&s.create(json!({"task_name": "Deploy-Prod"})).await);
    let dev = id(&s.create(json!({"task_name": "deploy-dev"})).await);
    let nightly = id(&s.create(json!({"task_name": "nightly"})).await);
    let all = [&a_b, &axb, &prod, &dev, &nightly];

    // Ids are hexadecimal: none of these letters can match an id.
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("_", vec![&a_b]),
        ("a_b", vec![&a_b]),
        ("%", vec![]),
        ("a%25b", vec![]),
        ("x", vec![&axb]),
        ("X", vec![&axb]),
        ("AxB", vec![&axb]),
        ("deploy", vec![&dev, &prod]),
        ("DEPLOY", vec![&dev, &prod]),
        ("prod", vec![&prod]),
        ("y-p", vec![&prod]),
        ("nightly", vec![&nightly]),
        ("ightl", vec![&nightly]),
        ("nightly-", vec![]),
    ];
    for (search, expected) in &cases {
        let total = expected.len() as i64;
        expect_list(&s, &format!("/api/runs?search={search}"), expected, total).await;
    }

    // A fragment of an id: the last 12 hex digits are random.
    let fragment = &nightly[nightly.len() - 12..];
    let holders: Vec<&&String> = all.iter().filter(|r| r.contains(fragment)).collect();
    assert_eq!(holders, [&&nightly], "the fragment names one run");
    expect_list(&s, &format!("/api/runs?search={fragment}"), &[&nightly], 1).await;
    let upper = fragment.to_uppercase();
    expect_list(&s, &format!("/api/runs?search={upper}"), &[&nightly], 1).await;
    expect_list(&s, &format!("/api/runs?search={prod}"), &[&prod], 1).await;
    expect_list(&s, &format!("/api/runs?search={}", &axb[9..23]), &[&axb], 1).await;
    expect_list(&s, "/api/runs?search=deploy&task_name=deploy-dev", &[&dev], 1).await;
    expect_list(&s, "/api/runs?search=deploy&sort_direction=asc&limit=1", &[&prod], 2).await;

    // A needle that could be part of an id is looked for in both.
    let cafe = id(&s.create(json!({"task_name": "Cafe-Beef"})).await);
    expect_list(&s, "/api/runs?search=FE-b", &[&cafe], 1).await;
    let tail = &cafe[cafe.len() - 8..];
    expect_list(&s, &format!("/api/runs?search={tail}"), &[&cafe], 1).await;

    // Task names are matched whether their runs are deleted or not.
    s.delete(&format!("/api/runs/{nightly}"), json!({})).await.ok(200);
    expect_list(&s, "/api/runs?search=nightly", &NONE, 0).await;
    expect_list(&s, "/api/runs?search=nightly&include_deleted=true", &[&nightly], 1).await;
    s.stop().await;
}

/// A search page is merged from one index range per matching task (and,
/// for a needle that can be in an id, the runs of other tasks whose id holds
/// it): every page, by offset and by cursor, both ways, with a status too,
/// is the slice of the whole list filtered here.
async fn search_pages_by_offset_and_cursor_are_slices_of_the_list(s: TestServer) {
    for i in 0..24 {
        let task = ["deploy-a", "Deploy-B", "nightly", "cab-x"][i % 4];
        let steps: &[&str] = if i % 3 == 0 { &["start", "end:failed:1"] } else { &[] };
        s.run_through(task, json!({}), steps).await;
    }
    let all = s.get("/api/runs?limit=1000").await.ok(200).clone();
    for (needle, filter) in [
        ("deploy", ""),
        ("a", ""),
        ("ab", ""),
        ("b-", ""),
        ("deploy", "&status=failed"),
        ("a", "&status=pending"),
    ] {
        for dir in ["desc", "asc"] {
            let mut expected: Vec<String> = all["runs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| {
                    let task = r["task_name"].as_str().unwrap().to_lowercase();
                    let id = r["id"].as_str().unwrap();
                    (task.contains(needle) || id.contains(needle))
                        && match filter {
                            "&status=failed" => r["end_reason"] == "failed",
                            "&status=pending" => r["status"] == "pending",
                            _ => true,
                        }
                })
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect();
            if dir == "asc" {
                expected.reverse();
            }
            let path = format!("/api/runs?search={needle}{filter}&sort_direction={dir}");
            let whole = s.get(&format!("{path}&limit=1000")).await.ok(200).clone();
            assert_eq!(common::ids(&whole), expected, "{path}");
            assert_eq!(whole["total"], expected.len() as i64, "total of {path}");
            assert_eq!(walk(&s, &path, 3).await.concat(), expected, "cursor pages of {path}");
            for offset in [0, 2, 5] {
                let page = s.get(&format!("{path}&limit=3&offset={offset}")).await.ok(200).clone();
                let slice: Vec<String> = expected.iter().skip(offset).take(3).cloned().collect();
                assert_eq!(common::ids(&page), slice, "{path} at {offset}");
            }
        }
    }
    s.stop().await;
}

async fn tag_filters_are_anded_and_values_may_contain_colons(s: TestServer) {
    let prod_core = id(&s
        .create(json!({"task_name": "t", "tags": {"env": "prod", "team": "core"}}))
        .await);
    let prod_web = id(&s
        .create(json!({"task_name": "t", "tags": {"env": "prod", "team": "web"}}))
        .await);
    let dev_core = id(&s
        .create(json!({"task_name": "t", "tags": {"env": "dev", "team": "core"}}))
        .await);
    let url = id(&s.create(json!({"task_name": "t", "tags": {"url": "http://x"}})).await);
    let untagged = id(&s.create(json!({"task_name": "t"})).await);
    let prod_eu = id(&s.create(json!({"task_name": "t", "tags": {"env": "prod:eu"}})).await);

    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("tag=env:prod", vec![&prod_web, &prod_core]),
        ("tag=team:core", vec![&dev_core, &prod_core]),
        ("tag=env:prod&tag=team:core", vec![&prod_core]),
        ("tag=team:core&tag=env:prod", vec![&prod_core]),
        ("tag=env:prod&tag=team:web", vec![&prod_web]),
        ("tag=env:prod&tag=team:none", vec![]),
        ("tag=env:prod&tag=env:dev", vec![]),
        ("tag=env:Prod", vec![]),
        ("tag=team:", vec![]),
        ("tag=url:http://x", vec![&url]),
        ("tag=url%3Ahttp%3A%2F%2Fx", vec![&url]),
        ("tag=url:http", vec![]),
        ("tag=env:prod:eu", vec![&prod_eu]),
        ("tag=env:prod:eu&tag=team:core", vec![]),
        (
            "tag=team:core&status=pending&sort_direction=asc",
            vec![&prod_core, &dev_core],
        ),
    ];
    for (query, expected) in &cases {
        let total = expected.len() as i64;
        expect_list(&s, &format!("/api/runs?{query}"), expected, total).await;
    }
    expect_list(
        &s,
        "/api/runs",
        &[&prod_eu, &untagged, &url, &dev_core, &prod_web, &prod_core],
        6,
    )
    .await;
    expect_list(&s, "/api/runs?tag=env:prod&limit=1&offset=1", &[&prod_core], 2).await;
    s.stop().await;
}

async fn parent_run_id_lists_the_direct_children(s: TestServer) {
    let parent_1 = id(&s.create(json!({"task_name": "parent"})).await);
    let parent_2 = id(&s.create(json!({"task_name": "parent"})).await);
    let child_1 = id(&s.create(json!({"task_name": "child", "parent_run_id": parent_1})).await);
    let child_2 = id(&s.create(json!({"task_name": "child", "parent_run_id": parent_2})).await);
    let child_3 = id(&s.create(json!({"task_name": "child", "parent_run_id": parent_1})).await);
    let grandchild = id(&s
        .create(json!({"task_name": "grandchild", "parent_run_id": child_1}))
        .await);
    let loner = id(&s.create(json!({"task_name": "loner"})).await);

    expect_list(
        &s,
        &format!("/api/runs?parent_run_id={parent_1}"),
        &[&child_3, &child_1],
        2,
    )
    .await;
    expect_list(&s, &format!("/api/runs?parent_run_id={parent_2}"), &[&child_2], 1).await;
    expect_list(&s, &format!("/api/runs?parent_run_id={child_1}"), &[&grandchild], 1).await;
    expect_list(&s, &format!("/api/runs?parent_run_id={loner}"), &NONE, 0).await;
    let upper = parent_1.to_uppercase();
    expect_list(
        &s,
        &format!("/api/runs?parent_run_id={upper}"),
        &[&child_3, &child_1],
        2,
    )
    .await;
    expect_list(
        &s,
        "/api/runs?parent_run_id=00000000-0000-4000-8000-000000000000",
        &NONE,
        0,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/runs?parent_run_id={parent_1}&sort_direction=asc&limit=1"),
        &[&child_1],
        2,
    )
    .await;
    act(&s, &child_3, "cancel").await;
    expect_list(
        &s,
        &format!("/api/runs?parent_run_id={parent_1}&status=pending"),
        &[&child_1],
        1,
    )
    .await;
    s.send(Method::DELETE, &format!("/api/runs/{child_1}"), Some(json!({})))
        .await
        .ok(200);
    expect_list(&s, &format!("/api/runs?parent_run_id={parent_1}"), &[&child_3], 1).await;
    s.stop().await;
}

async fn filters_combine_with_and(s: TestServer) {
    let matching = json!({"triggered_by": "cron", "tags": {"env": "prod"}});
    let with = |change: Value| {
        let mut body = matching.clone();
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        body
    };
    let failing = ["start", "end:failed:3"];
    // Each run but `first` and `second` fails exactly one of the filters.
    let too_early = id(&s.run_through("job", matching.clone(), &failing).await);
    let first = s.run_through("job", matching.clone(), &failing).await;
    let bound = first["created_at"].as_str().unwrap().to_owned();
    let first = id(&first);
    let second = id(&s
        .run_through("job", matching.clone(), &["start", "end:timeout:9"])
        .await);
    let other_task = id(&s.run_through("job2", matching.clone(), &failing).await);
    let succeeded = id(&s
        .run_through("job", matching.clone(), &["start", "end:success:3"])
        .await);
    let low_code = id(&s.run_through("job", matching.clone(), &["start", "end:failed:1"]).await);
    let high_code = id(&s
        .run_through("job", matching.clone(), &["start", "end:failed:11"])
        .await);
    let dev = id(&s
        .run_through("job", with(json!({"tags": {"env": "dev"}})), &failing)
        .await);
    let manual = id(&s
        .run_through("job", with(json!({"triggered_by": "manual"})), &failing)
        .await);
    let other_project = id(&s.run_through("job", with(json!({"project": "other"})), &failing).await);
    let deleted = id(&s
        .run_through("job", matching.clone(), &["start", "end:failed:3", "delete"])
        .await);

    let query = format!(
        "task_name=job&project=default&status=failed,timeout&triggered_by=cron,event\
         &exit_code_min=2&exit_code_max=10&tag=env:prod&created_after={bound}"
    );
    expect_list(&s, &format!("/api/runs?{query}"), &[&second, &first], 2).await;
    expect_list(
        &s,
        &format!("/api/runs?{query}&sort_direction=asc&limit=1"),
        &[&first],
        2,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/runs?{query}&sort_field=exit_code&limit=1&offset=1"),
        &[&first],
        2,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/runs?{query}&include_deleted=true"),
        &[&deleted, &second, &first],
        3,
    )
    .await;
    expect_list(&s, &format!("/api/runs?{query}&search=job2"), &NONE, 0).await;
    expect_list(&s, &format!("/api/runs?{query}&retries_only=true"), &NONE, 0).await;
    let task_query = query.replace("task_name=job&", "");
    expect_list(&s, &format!("/api/tasks/job/runs?{task_query}"), &[&second, &first], 2).await;

    // Without any filter every run but the deleted one is listed.
    let all = [
        &other_project,
        &manual,
        &dev,
        &high_code,
        &low_code,
        &succeeded,
        &other_task,
        &second,
        &first,
        &too_early,
    ];
    expect_list(&s, "/api/runs", &all, 10).await;
    s.stop().await;
}

async fn task_runs_lists_one_tasks_runs_with_the_same_filters(s: TestServer) {
    let a_pending = id(&s.create(json!({"task_name": "alpha"})).await);
    let b_pending = id(&s.create(json!({"task_name": "beta"})).await);
    let a_running = id(&s.run_through("alpha", json!({}), &["start"]).await);
    let a_failed = id(&s
        .run_through("alpha", json!({"tags": {"env": "prod"}}), &["start", "end:failed:1"])
        .await);
    let b_failed = id(&s.run_through("beta", json!({}), &["start", "end:failed:1"]).await);
    let a_deleted = id(&s.run_through("alpha", json!({}), &["delete"]).await);
    let alpha_2 = id(&s.create(json!({"task_name": "alpha-2"})).await);

    let alpha = [&a_failed, &a_running, &a_pending];
    expect_list(&s, "/api/tasks/alpha/runs", &alpha, 3).await;
    expect_list(&s, "/api/tasks/beta/runs", &[&b_failed, &b_pending], 2).await;
    expect_list(&s, "/api/tasks/alpha-2/runs", &[&alpha_2], 1).await;
    expect_list(&s, "/api/tasks/nobody/runs", &NONE, 0).await;
    expect_list(&s, "/api/tasks/alpha/runs?task_name=alpha", &alpha, 3).await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?status=pending,failed",
        &[&a_failed, &a_pending],
        2,
    )
    .await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?include_deleted=true",
        &[&a_deleted, &a_failed, &a_running, &a_pending],
        4,
    )
    .await;
    expect_list(&s, "/api/tasks/alpha/runs?status=deleted", &[&a_deleted], 1).await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?sort_direction=asc&limit=2",
        &[&a_pending, &a_running],
        3,
    )
    .await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?sort_direction=asc&limit=2&offset=2",
        &[&a_failed],
        3,
    )
    .await;
    expect_list(&s, "/api/tasks/alpha/runs?exit_code_min=1", &[&a_failed], 1).await;
    expect_list(&s, "/api/tasks/alpha/runs?tag=env:prod", &[&a_failed], 1).await;
    expect_list(&s, "/api/tasks/beta/runs?tag=env:prod", &NONE, 0).await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?sort_field=status",
        &[&a_running, &a_pending, &a_failed],
        3,
    )
    .await;
    expect_list(
        &s,
        "/api/tasks/alpha/runs?sort_field=start_at&sort_direction=asc",
        &[&a_running, &a_failed, &a_pending],
        3,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/tasks/alpha/runs?search={}", &b_failed[24..]),
        &NONE,
        0,
    )
    .await;
    expect_list(
        &s,
        &format!("/api/tasks/beta/runs?search={}", &b_failed[24..]),
        &[&b_failed],
        1,
    )
    .await;
    s.stop().await;
}

/// The summary row of `task` in a `GET /api/tasks` body.
fn summary<'a>(body: &'a Value, task: &str) -> &'a Value {
    body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_name"] == task)
        .unwrap_or_else(|| panic!("no row for {task}: {body}"))
}

fn task_names(body: &Value) -> Vec<&str> {
    body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_name"].as_str().unwrap())
        .collect()
}

fn counts(pairs: &[(&str, i64)]) -> Value {
    let mut all = json!({
        "pending": 0, "running": 0, "paused": 0, "ended": 0,
        "success": 0, "failed": 0, "stopped": 0, "timeout": 0, "crashed": 0,
        "skipped": 0, "log_overflow": 0, "expired": 0, "dead_letter": 0,
    });
    for (key, n) in pairs {
        all[*key] = json!(n);
    }
    all
}

async fn task_summaries_count_by_status_and_name_the_last_run_success_and_failure(s: TestServer) {
    let zeta = id(&s.run_through("zeta", json!({}), &["start", "end:success:0"]).await);

    let older = id(&s.create(json!({"task_name": "etl"})).await);
    let newer = id(&s.create(json!({"task_name": "etl"})).await);
    act(&s, &older, "start").await;
    act(&s, &newer, "start").await;
    // The newer run succeeds first: the last success is the one that ended last.
    end(&s, &newer, "success", Some(0)).await;
    end(&s, &older, "success", Some(0)).await;
    let dead = s
        .run_through("etl", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await;
    assert_eq!(dead["dead_lettered"], true);
    // Failed with attempts left: a failure, not a dead letter.
    let retryable = s
        .run_through("etl", json!({"max_attempts": 2}), &["start", "end:failed:1"])
        .await;
    assert_eq!(retryable["dead_lettered"], false);
    let timed_out = id(&s.run_through("etl", json!({}), &["start", "end:timeout"]).await);
    // Stopped is not a failure.
    s.run_through("etl", json!({}), &["cancel"]).await;
    s.run_through("etl", json!({}), &["start"]).await;
    s.run_through("etl", json!({}), &["start", "pause"]).await;
    let last = id(&s.create(json!({"task_name": "etl"})).await);
    // Deleted runs count for nothing, even the latest ones.
    s.run_through("etl", json!({}), &["start", "end:success:0", "delete"])
        .await;
    s.run_through("etl", json!({}), &["start", "end:crashed:137", "delete"])
        .await;

    let beta = id(&s.create(json!({"task_name": "beta"})).await);
    let gone = id(&s.run_through("gone", json!({}), &["delete"]).await);

    let reply = s.get("/api/tasks").await;
    let body = reply.ok(200);
    assert_eq!(
        task_names(body),
        ["beta", "etl", "zeta"],
        "by name; deleted-only tasks absent"
    );
    assert_eq!(body["total"], 3);

    let etl = summary(body, "etl");
    assert_eq!(etl["total"], 9);
    assert_eq!(
        etl["counts"],
        counts(&[
            ("pending", 1),
            ("running", 1),
            ("paused", 1),
            ("ended", 6),
            ("success", 2),
            ("failed", 2),
            ("timeout", 1),
            ("stopped", 1),
            ("dead_letter", 1),
        ])
    );
    assert_eq!(etl["last_run"]["id"], last.as_str());
    assert_eq!(etl["last_run"]["status"], "pending");
    assert_eq!(etl["last_success"]["id"], older.as_str());
    assert_eq!(etl["last_success"]["end_reason"], "success");
    assert_eq!(etl["last_failure"]["id"], timed_out.as_str());
    assert_eq!(etl["last_failure"]["end_reason"], "timeout");

    let beta_row = summary(body, "beta");
    assert_eq!(beta_row["total"], 1);
    assert_eq!(beta_row["counts"], counts(&[("pending", 1)]));
    assert_eq!(beta_row["last_run"]["id"], beta.as_str());
    assert_eq!(beta_row["last_success"], Value::Null);
    assert_eq!(beta_row["last_failure"], Value::Null);

    let zeta_row = summary(body, "zeta");
    assert_eq!(zeta_row["total"], 1);
    assert_eq!(zeta_row["counts"], counts(&[("ended", 1), ("success", 1)]));
    assert_eq!(zeta_row["last_run"]["id"], zeta.as_str());
    assert_eq!(zeta_row["last_success"]["id"], zeta.as_str());
    assert_eq!(zeta_row["last_failure"], Value::Null);

    // A failure after the timeout becomes the last failure; restoring a task's
    // only run brings the task back.
    let crashed = id(&s.run_through("etl", json!({}), &["start", "end:crashed:137"]).await);
    act(&s, &gone, "restore").await;
    let reply = s.get("/api/tasks").await;
    let body = reply.ok(200);
    assert_eq!(task_names(body), ["beta", "etl", "gone", "zeta"]);
    assert_eq!(body["total"], 4);
    let etl = summary(body, "etl");
    assert_eq!(etl["total"], 10);
    assert_eq!(etl["counts"]["crashed"], 1);
    assert_eq!(etl["counts"]["ended"], 7);
    assert_eq!(etl["counts"]["dead_letter"], 1);
    assert_eq!(etl["last_failure"]["id"], crashed.as_str());
    assert_eq!(etl["last_run"]["id"], crashed.as_str());
    assert_eq!(etl["last_success"]["id"], older.as_str());
    assert_eq!(summary(body, "gone")["last_run"]["id"], gone.as_str());
    s.stop().await;
}

async fn task_summaries_page_by_name_with_a_full_total(s: TestServer) {
    for task in ["delta", "alpha", "echo", "charlie", "bravo"] {
        s.create(json!({"task_name": task})).await;
    }
    s.create(json!({"task_name": "alpha"})).await;
    s.run_through("zulu", json!({}), &["delete"]).await;

    for (query, names) in [
        ("", vec!["alpha", "bravo", "charlie", "delta", "echo"]),
        ("?limit=2", vec!["alpha", "bravo"]),
        ("?limit=2&offset=2", vec!["charlie", "delta"]),
        ("?limit=2&offset=4", vec!["echo"]),
        ("?offset=5", vec![]),
        ("?limit=1&offset=3", vec!["delta"]),
        ("?limit=1000", vec!["alpha", "bravo", "charlie", "delta", "echo"]),
    ] {
        let reply = s.get(&format!("/api/tasks{query}")).await;
        let body = reply.ok(200);
        assert_eq!(task_names(body), names, "/api/tasks{query}");
        assert_eq!(
            body["total"], 5,
            "the total ignores limit and offset: /api/tasks{query}"
        );
    }
    let reply = s.get("/api/tasks?limit=1").await;
    let alpha = &reply.ok(200)["tasks"][0];
    assert_eq!(alpha["total"], 2);
    assert_eq!(alpha["counts"], counts(&[("pending", 2)]));
    s.stop().await;
}

/// Follows `next_cursor` from the first page of `path` (which has no `?`
/// parameters of paging); every page's ids, in order.
async fn walk(s: &TestServer, path: &str, limit: usize) -> Vec<Vec<String>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut next = format!("{path}{sep}limit={limit}");
    loop {
        let reply = s.get(&next).await;
        let body = reply.ok(200).clone();
        let ids = common::ids(&body);
        assert!(ids.len() <= limit);
        let cursor = body["next_cursor"].as_str().map(str::to_owned);
        assert_eq!(
            cursor.is_some(),
            ids.len() == limit,
            "a cursor follows exactly the full pages of {next}"
        );
        pages.push(ids);
        match cursor {
            Some(c) => next = format!("{path}{sep}limit={limit}&cursor={c}"),
            None => return pages,
        }
        assert!(pages.len() < 100, "the cursor of {path} does not end");
    }
}

/// For every sort both ways, with runs that lack the sort value (never
/// started, no exit code) among them and ties on it, the pages a cursor
/// walks concatenate to the whole list in the same order.
async fn cursor_pages_concatenate_to_the_list_in_every_sort(s: TestServer) {
    for (task, steps) in [
        ("b", vec!["start", "end:failed:2"]),
        ("a", vec![]),
        ("c", vec!["start"]),
        ("a", vec!["start", "end:success:0"]),
        ("b", vec![]),
        ("c", vec!["start", "end:failed:2"]),
        ("a", vec!["start", "end:failed:1"]),
        ("b", vec!["start"]),
    ] {
        s.run_through(task, json!({}), &steps).await;
    }
    for field in ["created_at", "start_at", "task_name", "status", "exit_code", "duration"] {
        for dir in ["asc", "desc"] {
            let path = format!("/api/runs?sort_field={field}&sort_direction={dir}");
            let whole = common::ids(s.get(&format!("{path}&limit=1000")).await.ok(200));
            assert_eq!(whole.len(), 8);
            for limit in [1, 3] {
                let pages = walk(&s, &path, limit).await;
                assert_eq!(pages.concat(), whole, "cursor pages of {path} by {limit}");
            }
            // A filter most runs match: a small page walks the sort's index
            // (SQLite), a page of all of them sorts them; the same order.
            let most = format!("{path}&status=running,ended");
            let sorted = common::ids(s.get(&format!("{most}&limit=1000")).await.ok(200));
            assert_eq!(sorted.len(), 6);
            assert_eq!(walk(&s, &most, 2).await.concat(), sorted, "cursor pages of {most}");
            let second = common::ids(s.get(&format!("{most}&limit=2&offset=2")).await.ok(200));
            assert_eq!(second, sorted[2..4], "an offset page of {most}");
        }
    }
    let failed = common::ids(s.get("/api/runs?status=failed&limit=1000").await.ok(200));
    let pages = walk(&s, "/api/runs?status=failed&sort_field=exit_code", 2).await;
    assert_eq!(pages.concat().len(), failed.len(), "filters apply to every page");
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    let as_of = walk(&s, &format!("/api/runs?as_of={head}"), 3).await;
    assert_eq!(as_of.concat().len(), 8, "as_of lists page by cursor too");
}

/// A run created between two pages moves every offset page by one (the
/// second page repeats the first's last run); the cursor's page does not.
async fn a_cursor_page_is_stable_under_concurrent_inserts(s: TestServer) {
    for task in ["a", "b", "c", "d"] {
        s.create(json!({"task_name": task})).await;
    }
    let first = s.get("/api/runs?limit=2").await.ok(200).clone();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let rest_before = common::ids(s.get("/api/runs?limit=2&offset=2").await.ok(200));
    s.create(json!({"task_name": "new"})).await;
    let by_offset = common::ids(s.get("/api/runs?limit=2&offset=2").await.ok(200));
    assert_eq!(by_offset[0], common::ids(&first)[1], "the offset page moved");
    let by_cursor = s
        .get(&format!("/api/runs?limit=2&cursor={cursor}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(common::ids(&by_cursor), rest_before);
    assert_eq!(by_cursor["total"], 5, "the total is of the list now");
    for path in ["/api/runs/dlq", "/api/tasks/a/runs"] {
        assert!(s.get(path).await.ok(200)["next_cursor"].is_null(), "{path}");
    }
}

/// A cursor that is not one the server answered, one for another sort, or
/// one beside an offset is refused with the parameter named.
async fn a_bad_cursor_is_refused(s: TestServer) {
    for task in ["a", "b"] {
        s.create(json!({"task_name": task})).await;
    }
    let cursor = s.get("/api/runs?limit=1").await.ok(200)["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = hex_of(r#"["created_at","desc","soon","01890000-0000-7000-8000-000000000000"]"#);
    let null_on_required = hex_of(r#"["task_name","asc",null,"01890000-0000-7000-8000-000000000000"]"#);
    for bad in [
        "zz".to_owned(),
        "abc".to_owned(),
        hex_of("[1,2]"),
        forged,
        null_on_required,
        format!("{cursor}&sort_field=task_name"),
        format!("{cursor}&sort_direction=asc"),
        format!("{cursor}&offset=1"),
    ] {
        s.get(&format!("/api/runs?cursor={bad}"))
            .await
            .invalid_at("query.cursor");
    }
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn total(s: &TestServer, path: &str) -> Value {
    s.get(path).await.ok(200)["total"].clone()
}

/// The total of one tag alone comes from maintained counts: deleting and
/// restoring a run moves it, and other filters beside the tag still count.
async fn a_tags_total_follows_deletes_and_restores(s: TestServer) {
    let mut ids = Vec::new();
    for env in ["prod", "prod", "dev"] {
        ids.push(id(&s.create(json!({"task_name": "t", "tags": {"env": env}})).await));
    }
    assert_eq!(total(&s, "/api/runs?tag=env:prod").await, 2);
    s.delete(&format!("/api/runs/{}", ids[0]), json!({})).await.ok(200);
    assert_eq!(total(&s, "/api/runs?tag=env:prod").await, 1);
    assert_eq!(total(&s, "/api/runs?tag=env:prod&include_deleted=true").await, 2);
    assert_eq!(total(&s, "/api/runs?tag=env:prod&status=deleted").await, 1);
    s.post(&format!("/api/runs/{}/restore", ids[0]), json!({}))
        .await
        .ok(200);
    assert_eq!(total(&s, "/api/runs?tag=env:prod").await, 2);
    assert_eq!(total(&s, "/api/runs?tag=env:dev").await, 1);
    assert_eq!(total(&s, "/api/runs?tag=env:none").await, 0);
    assert_eq!(s.query_i64("SELECT COUNT(*) FROM tag_counts").await, 2);
}

/// Several phases or end reasons are merged from one index range each: the
/// pages at every offset, both ways, are slices of the one order.
async fn pages_of_several_statuses_are_slices_of_one_order(s: TestServer) {
    let mut failures = Vec::new();
    for (i, reason) in ["failed", "success", "timeout", "failed", "timeout", "crashed", "failed"]
        .iter()
        .enumerate()
    {
        let run = s
            .run_through(&format!("t{i}"), json!({}), &["start", &format!("end:{reason}:1")])
            .await;
        if *reason != "success" {
            failures.push(id(&run));
        }
    }
    s.run_through("running", json!({}), &["start"]).await;
    let newest_first: Vec<String> = failures.iter().rev().cloned().collect();
    for (dir, order) in [("desc", newest_first.clone()), ("asc", failures.clone())] {
        for offset in 0..=failures.len() {
            let path = format!("/api/runs?status=failed,timeout,crashed&sort_direction={dir}&limit=2&offset={offset}");
            let end = (offset + 2).min(order.len());
            expect_list(&s, &path, &order[offset..end], order.len() as i64).await;
        }
    }
    let phases = common::ids(s.get("/api/runs?status=running,ended&limit=100").await.ok(200));
    assert_eq!(phases.len(), 8);
}

backend_tests!(
    pages_of_several_statuses_are_slices_of_one_order,
    a_tags_total_follows_deletes_and_restores,
    cursor_pages_concatenate_to_the_list_in_every_sort,
    a_cursor_page_is_stable_under_concurrent_inserts,
    a_bad_cursor_is_refused,
    the_default_order_is_newest_first_and_pages_concatenate_to_it,
    the_default_page_is_fifty_runs_and_the_total_counts_them_all,
    sorting_by_task_name_both_ways_breaks_ties_by_id,
    sorting_by_status_orders_the_status_text,
    sorting_by_start_time_puts_never_started_runs_last_both_ways,
    sorting_by_exit_code_puts_runs_without_one_last_both_ways,
    sorting_by_duration_puts_unfinished_runs_last_both_ways,
    the_status_filter_matches_phases_end_reasons_and_flags,
    deleted_runs_are_hidden_unless_asked_for,
    task_name_and_project_filters_are_exact,
    the_triggered_by_filter_takes_one_source_or_several,
    created_bounds_are_inclusive,
    exit_code_bounds_are_inclusive_and_skip_runs_without_a_code,
    retries_only_lists_the_retries,
    search_matches_task_names_and_ids_literally_ignoring_case,
    search_pages_by_offset_and_cursor_are_slices_of_the_list,
    tag_filters_are_anded_and_values_may_contain_colons,
    parent_run_id_lists_the_direct_children,
    filters_combine_with_and,
    task_runs_lists_one_tasks_runs_with_the_same_filters,
    task_summaries_count_by_status_and_name_the_last_run_success_and_failure,
    task_summaries_page_by_name_with_a_full_total,
);

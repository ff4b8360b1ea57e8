//! `runledger runs …` and `runledger tasks`: the real binary against a real
//! server, on both backends, checking what it prints and what it changed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{SendChecked, TestServer};
use runledger::auth::Scope;
use serde_json::{json, Value};

/// Runs the binary with `args` against `server` (no `RUNLEDGER_` variables
/// from the environment leak in).
async fn cli_env(server: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .env_remove("RUNLEDGER_SERVER")
        .env_remove("RUNLEDGER_TOKEN")
        .env("RUNLEDGER_SERVER", server)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run runledger"))
        .await
        .unwrap()
}

async fn cli(s: &TestServer, args: &[&str]) -> Output {
    cli_env(&s.base, args, &[]).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

#[track_caller]
fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", stdout(out)))
}

#[track_caller]
fn exit_code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

/// The rows of a table: every line after the header, split on whitespace.
#[track_caller]
fn rows(table: &str, header_starts: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with(header_starts), "header {header:?} in:\n{table}");
    lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn id_set(runs: &Value) -> BTreeSet<String> {
    runs.as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

async fn failed_nightly(s: &TestServer, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let run = s
            .run_through("nightly", json!({"tags": {"env": "prod"}}), &["start", "end:failed:2"])
            .await;
        ids.push(id(&run));
    }
    ids
}

async fn list_filters_pages_and_formats(s: TestServer) {
    let failed: BTreeSet<String> = failed_nightly(&s, 3).await.into_iter().collect();
    let first = failed.iter().next().unwrap().clone();
    let success = s.run_through("nightly", json!({}), &["start", "end:success:0"]).await;
    let staging = s
        .run_through(
            "nightly",
            json!({"tags": {"env": "staging"}}),
            &["start", "end:failed:1"],
        )
        .await;
    let pending = [
        s.create(json!({"task_name": "etl"})).await,
        s.create(json!({"task_name": "etl"})).await,
    ];
    let dead = s
        .run_through("etl", json!({"max_attempts": 1}), &["start", "end:crashed"])
        .await;

    // A table: one row per run, its id, task and end reason.
    let out = cli(
        &s,
        &[
            "runs",
            "list",
            "--task-name",
            "nightly",
            "--status",
            "failed",
            "--tag",
            "env:prod",
        ],
    )
    .await;
    let table = rows(&ok(&out), "ID");
    let shown: BTreeSet<String> = table.iter().map(|r| r[0].clone()).collect();
    assert_eq!(shown, failed, "{}", stdout(&out));
    assert!(table
        .iter()
        .all(|r| r[1] == "nightly" && r[2] == "failed" && r[3] == "2"));

    // --json is the server's page, as the API answers the same query.
    let out = cli(
        &s,
        &[
            "runs",
            "list",
            "--json",
            "--task-name",
            "nightly",
            "--status",
            "failed,timeout",
            "--status",
            "crashed",
        ],
    )
    .await;
    let page = json_of(&out);
    let api = s
        .get("/api/runs?task_name=nightly&status=failed,timeout,crashed")
        .await
        .ok(200)
        .clone();
    assert_eq!(page, api);
    let mut expected = failed.clone();
    expected.insert(id(&staging));
    assert_eq!(id_set(&page["runs"]), expected);

    // Every other flag is the query parameter of the same name.
    let out = cli(
        &s,
        &["runs", "list", "--json", "--exit-code-min", "0", "--exit-code-max", "0"],
    )
    .await;
    assert_eq!(id_set(&json_of(&out)["runs"]), BTreeSet::from([id(&success)]));
    let out = cli(
        &s,
        &[
            "runs",
            "list",
            "--json",
            "--triggered-by",
            "api",
            "--search",
            "etl",
            "--status",
            "pending",
        ],
    )
    .await;
    assert_eq!(id_set(&json_of(&out)["runs"]), pending.iter().map(id).collect());
    let out = cli(&s, &["runs", "list", "--json", "--dlq"]).await;
    assert_eq!(id_set(&json_of(&out)["runs"]), BTreeSet::from([id(&dead)]));

    // --all follows next_cursor across pages of 2: every run, once, in order.
    let out = cli(
        &s,
        &[
            "runs",
            "list",
            "--json",
            "--all",
            "--limit",
            "2",
            "--sort-field",
            "created_at",
            "--sort-direction",
            "asc",
        ],
    )
    .await;
    let all = json_of(&out);
    let api = s
        .get("/api/runs?limit=1000&sort_field=created_at&sort_direction=asc")
        .await
        .ok(200)
        .clone();
    assert_eq!(all.as_array().unwrap().len(), 8);
    assert_eq!(all, api["runs"], "--all is every row, in the list's order");
    // Without --all: one page, and where the next one starts.
    let out = cli(&s, &["runs", "list", "--limit", "2"]).await;
    assert_eq!(rows(&ok(&out), "ID").len(), 2);
    assert!(stderr(&out).contains("--cursor"), "{}", stderr(&out));

    // --as-of: the list as it was after the first failed run was created.
    let position = s.get(&format!("/api/runs/{first}/events")).await.ok(200)["events"][0]["position"]
        .as_i64()
        .unwrap();
    let out = cli(&s, &["runs", "list", "--json", "--as-of", &position.to_string()]).await;
    let then = json_of(&out);
    assert_eq!(id_set(&then["runs"]), BTreeSet::from([first.clone()]));
    assert_eq!(then["runs"][0]["status"], "pending");

    // The server's problem, its field, and the refused exit status.
    let before = s.event_count().await;
    let out = cli(&s, &["runs", "list", "--status", "bogus", "--limit", "5000"]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("query.status") && err.contains("query.limit"), "{err}");
    assert!(stdout(&out).is_empty());
    assert_eq!(s.event_count().await, before);
    s.stop().await;
}

async fn get_events_and_history(s: TestServer) {
    let run = s
        .run_through("report", json!({"tags": {"team": "data"}}), &["start", "end:failed:3"])
        .await;
    let id = id(&run);

    let out = cli(&s, &["runs", "get", &id]).await;
    let fields: Vec<Vec<String>> = rows(&ok(&out), "FIELD");
    let field = |name: &str| fields.iter().find(|r| r[0] == name).map(|r| r[1..].join(" "));
    assert_eq!(field("id"), Some(id.clone()));
    assert_eq!(field("task_name").as_deref(), Some("report"));
    assert_eq!(field("end_reason").as_deref(), Some("failed"));
    assert_eq!(field("exit_code").as_deref(), Some("3"));
    assert_eq!(field("tags").as_deref(), Some(r#"{"team":"data"}"#));
    let out = cli(&s, &["runs", "get", &id, "--json"]).await;
    assert_eq!(json_of(&out), s.get(&format!("/api/runs/{id}")).await.ok(200).clone());
    let started =
        s.get(&format!("/api/runs/{id}/events?type=run.started")).await.ok(200)["events"][0]["position"].to_string();
    let out = cli(&s, &["runs", "get", &id, "--json", "--as-of", &started]).await;
    assert_eq!(json_of(&out)["status"], "running");

    let out = cli(&s, &["runs", "events", &id]).await;
    let types: Vec<String> = rows(&ok(&out), "POSITION").iter().map(|r| r[2].clone()).collect();
    assert_eq!(types, ["run.created", "run.started", "run.ended"]);
    let out = cli(&s, &["runs", "events", &id, "--json"]).await;
    assert_eq!(
        json_of(&out)["events"],
        s.get(&format!("/api/runs/{id}/events")).await.ok(200)["events"]
    );
    let out = cli(&s, &["runs", "events", &id, "--json", "--type", "run.ended"]).await;
    let ended = json_of(&out);
    assert_eq!(ended["events"].as_array().unwrap().len(), 1);
    assert_eq!(ended["events"][0]["data"]["exit_code"], 3);

    let out = cli(&s, &["runs", "history", &id]).await;
    let history: Vec<(String, String)> = rows(&ok(&out), "VERSION")
        .iter()
        .map(|r| (r[2].clone(), r[3].clone()))
        .collect();
    assert_eq!(
        history,
        [
            ("run.created".to_owned(), "pending".to_owned()),
            ("run.started".to_owned(), "running".to_owned()),
            ("run.ended".to_owned(), "failed".to_owned())
        ]
    );
    let out = cli(&s, &["runs", "history", &id, "--json"]).await;
    assert_eq!(
        json_of(&out)["history"],
        s.get(&format!("/api/runs/{id}/history")).await.ok(200)["history"]
    );

    // Not found: the server's detail, exit 3; a bad id is refused, exit 4.
    let missing = "0195f2a0-0000-7000-8000-000000000000";
    for args in [
        vec!["runs", "get", missing],
        vec!["runs", "events", missing],
        vec!["runs", "history", missing],
        vec!["runs", "cancel", missing],
    ] {
        let out = cli(&s, &args).await;
        assert_eq!(exit_code(&out), 3, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(missing), "{}", stderr(&out));
    }
    let out = cli(&s, &["runs", "get", "not-a-uuid"]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("path.id"), "{}", stderr(&out));
    s.stop().await;
}

async fn retry_cancel_delete_and_restore_change_the_run(s: TestServer) {
    let failed = id(&s.run_through("nightly", json!({}), &["start", "end:failed:2"]).await);
    let out = cli(&s, &["runs", "retry", &failed, "--reason", "disk cleaned"]).await;
    assert!(ok(&out).contains("attempt 1"), "{}", stdout(&out));
    let lineage = s
        .get("/api/runs?task_name=nightly&retries_only=true")
        .await
        .ok(200)
        .clone();
    assert_eq!(lineage["runs"].as_array().unwrap().len(), 1);
    assert_eq!(lineage["runs"][0]["retry_of_run_id"], failed.as_str());
    let out = cli(&s, &["runs", "retry", &failed, "--json"]).await;
    let answer = json_of(&out);
    assert_eq!(
        (answer["run_id"].as_str(), answer["action"].as_str()),
        (Some(failed.as_str()), Some("retry"))
    );
    let second = answer["new_run_id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/api/runs/{second}")).await.ok(200)["retry_attempt"], 1);

    // --failed-only retries the failed children.
    let parent = id(&s.run_through("batch", json!({}), &["start"]).await);
    let child = id(&s
        .run_through(
            "batch-part",
            json!({"parent_run_id": parent}),
            &["start", "end:failed:1"],
        )
        .await);
    let out = cli(&s, &["runs", "retry", &parent, "--failed-only", "--json"]).await;
    let new_ids = json_of(&out)["new_run_ids"].clone();
    assert_eq!(new_ids.as_array().unwrap().len(), 1);
    let new_child = s
        .get(&format!("/api/runs/{}", new_ids[0].as_str().unwrap()))
        .await
        .ok(200)
        .clone();
    assert_eq!(new_child["retry_of_run_id"], child.as_str());

    let pending = id(&s.create(json!({"task_name": "etl"})).await);
    let out = cli(&s, &["runs", "cancel", &pending, "--reason", "not needed"]).await;
    assert!(
        ok(&out).contains(&format!("run {pending} canceled")),
        "{}",
        stdout(&out)
    );
    let run = s.get(&format!("/api/runs/{pending}")).await.ok(200).clone();
    assert_eq!(
        (run["status"].as_str(), run["end_reason"].as_str()),
        (Some("ended"), Some("stopped"))
    );
    // Cancel it again: the server refuses (409), naming its status; exit 4.
    let before = s.event_count().await;
    let out = cli(&s, &["runs", "cancel", &pending]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("ended"), "{}", stderr(&out));
    assert_eq!(s.event_count().await, before);

    let out = cli(&s, &["runs", "delete", &failed, "--reason", "noise", "--json"]).await;
    assert_eq!(json_of(&out)["deleted"], true);
    assert_eq!(s.get(&format!("/api/runs/{failed}")).await.ok(200)["deleted"], true);
    let out = cli(
        &s,
        &["runs", "list", "--json", "--status", "deleted", "--include-deleted"],
    )
    .await;
    assert_eq!(id_set(&json_of(&out)["runs"]), BTreeSet::from([failed.clone()]));
    let out = cli(&s, &["runs", "restore", &failed]).await;
    assert!(ok(&out).contains("restored"), "{}", stdout(&out));
    assert_eq!(s.get(&format!("/api/runs/{failed}")).await.ok(200)["deleted"], false);
    let reasons: Vec<Value> = s
        .get(&format!("/api/runs/{failed}/events?type=run.deleted"))
        .await
        .ok(200)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("noise")]);
    s.stop().await;
}

async fn bulk_counts_first_and_acts_only_with_yes(s: TestServer) {
    let failed: BTreeSet<String> = failed_nightly(&s, 3).await.into_iter().collect();
    let kept = id(&s.run_through("nightly", json!({}), &["start", "end:success"]).await);

    // Without --yes: the count and its position, exit 0, nothing changed.
    let (events, runs) = (s.event_count().await, s.query_i64("SELECT COUNT(*) FROM runs").await);
    let out = cli(
        &s,
        &["runs", "bulk", "retry", "--task-name", "nightly", "--status", "failed"],
    )
    .await;
    let said = ok(&out);
    let head = s.get("/api/events?after=0&limit=1000").await.ok(200)["next_after"]
        .as_i64()
        .unwrap();
    assert!(
        said.contains(&format!("would retry 3 runs (3 selected) as of position {head}")),
        "{said}"
    );
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(s.event_count().await, events);
    assert_eq!(s.query_i64("SELECT COUNT(*) FROM runs").await, runs);
    let out = cli(
        &s,
        &[
            "runs",
            "bulk",
            "retry",
            "--task-name",
            "nightly",
            "--status",
            "failed",
            "--json",
        ],
    )
    .await;
    let dry = json_of(&out);
    assert_eq!(
        (dry["affected"].as_u64(), dry["dry_run"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(s.event_count().await, events);

    // With --yes: exactly the counted runs, pinned at the counted position.
    let out = cli(
        &s,
        &[
            "runs",
            "bulk",
            "retry",
            "--task-name",
            "nightly",
            "--status",
            "failed",
            "--reason",
            "db outage",
            "--yes",
            "--json",
        ],
    )
    .await;
    let done = json_of(&out);
    assert!(stderr(&out).contains(&format!("would retry 3 runs (3 selected) as of position {head}")));
    assert_eq!(done["as_of"], head, "acted at the counted position: {done}");
    assert_eq!(done["affected"], 3);
    let sources: BTreeSet<String> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retry_of_run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources, failed);
    let retries = s
        .get("/api/runs?task_name=nightly&retries_only=true")
        .await
        .ok(200)
        .clone();
    assert_eq!(retries["total"], 3, "{retries}");
    // The maintained counts moved with the bulk call (both backends).
    let tasks = s.get("/api/tasks").await.ok(200).clone();
    assert_eq!(tasks["tasks"][0]["task_name"], "nightly");
    assert_eq!(tasks["tasks"][0]["total"], 7, "{tasks}");
    assert_eq!(tasks["tasks"][0]["counts"]["pending"], 3, "{tasks}");
    let operation = done["operation_id"].as_str().unwrap();
    let record = s.get(&format!("/api/operations/{operation}")).await.ok(200).clone();
    assert_eq!(record["runs"].as_array().unwrap().len(), 3, "{record}");
    assert_eq!(record["as_of"], head, "the operation was pinned: {record}");

    // By ids, as a table; then restore them.
    let ids: Vec<&String> = failed.iter().take(2).collect();
    let list = format!("{},{}", ids[0], ids[1]);
    let out = cli(&s, &["runs", "bulk", "delete", "--ids", &list, "--yes"]).await;
    let said = ok(&out);
    assert!(
        said.contains("would delete 2 runs") && said.contains("deleted 2 runs"),
        "{said}"
    );
    for id in &ids {
        assert_eq!(s.get(&format!("/api/runs/{id}")).await.ok(200)["deleted"], true);
    }
    assert_eq!(s.get(&format!("/api/runs/{kept}")).await.ok(200)["deleted"], false);
    let out = cli(
        &s,
        &["runs", "bulk", "restore", "--match-all", "--except-id", ids[1], "--yes"],
    )
    .await;
    assert!(ok(&out).contains("restored 1 runs"), "{}", stdout(&out));
    assert_eq!(s.get(&format!("/api/runs/{}", ids[0])).await.ok(200)["deleted"], false);
    assert_eq!(s.get(&format!("/api/runs/{}", ids[1])).await.ok(200)["deleted"], true);

    // Cancel: an unfinished run; nothing to do when none matches.
    let pending = id(&s.create(json!({"task_name": "etl"})).await);
    let out = cli(&s, &["runs", "bulk", "cancel", "--task-name", "etl", "--yes"]).await;
    assert!(ok(&out).contains("canceled 1 runs, 0 failed"), "{}", stdout(&out));
    assert_eq!(
        s.get(&format!("/api/runs/{pending}")).await.ok(200)["end_reason"],
        "stopped"
    );
    let events = s.event_count().await;
    let out = cli(&s, &["runs", "bulk", "cancel", "--task-name", "etl", "--yes"]).await;
    assert!(ok(&out).contains("would cancel 0 runs"), "{}", stdout(&out));
    assert_eq!(s.event_count().await, events);

    // A bad selector: the server's fields, exit 4; no selector at all: refused here.
    let out = cli(&s, &["runs", "bulk", "delete", "--status", "bogus", "--yes"]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("body.filter.status"), "{}", stderr(&out));
    let out = cli(&s, &["runs", "bulk", "delete", "--yes"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--match-all"), "{}", stderr(&out));
    assert_eq!(s.event_count().await, events);
    s.stop().await;
}

async fn tasks_lists_every_task(s: TestServer) {
    failed_nightly(&s, 2).await;
    s.run_through("etl", json!({}), &["start", "end:success"]).await;
    let out = cli(&s, &["tasks"]).await;
    let table = rows(&ok(&out), "TASK");
    let row = |name: &str| table.iter().find(|r| r[0] == name).cloned().unwrap();
    // TASK TOTAL PENDING RUNNING SUCCESS FAILED DEAD_LETTER LAST_RUN LAST_STATUS
    assert_eq!(row("nightly")[1..7], ["2", "0", "0", "0", "2", "0"]);
    assert_eq!(row("etl")[4], "1");
    assert_eq!(row("etl")[8], "success");
    let out = cli(&s, &["tasks", "--json"]).await;
    assert_eq!(json_of(&out), s.get("/api/tasks").await.ok(200).clone());
    let out = cli(&s, &["tasks", "--json", "--limit", "1", "--offset", "1"]).await;
    let page = json_of(&out);
    assert_eq!(
        (page["tasks"][0]["task_name"].as_str(), page["total"].as_i64()),
        (Some("nightly"), Some(2))
    );
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);

    // A server that fails (its task projection is gone): a 500, exit 6.
    s.exec_sql("DROP TABLE task_counts").await.expect("drop");
    let out = cli(&s, &["tasks"]).await;
    assert_eq!(exit_code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    s.stop().await;
}

async fn a_token_is_sent_and_its_absence_refused(s: TestServer) {
    let secret = s.ledger.create_token("ops", &Scope::ALL).await.expect("token");
    let created = s
        .send_as(
            Some(&secret),
            reqwest::Method::POST,
            "/api/runs",
            Some(json!({"task_name": "guarded"})),
        )
        .await;
    let run = id(created.ok(201));
    let out = cli(&s, &["runs", "list"]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).to_lowercase().contains("token"), "{}", stderr(&out));
    let out = cli(&s, &["runs", "list", "--json", "--token", &secret]).await;
    assert_eq!(id_set(&json_of(&out)["runs"]), BTreeSet::from([run.clone()]));
    let out = cli_env(
        &s.base,
        &["runs", "get", &run, "--json"],
        &[("RUNLEDGER_TOKEN", &secret)],
    )
    .await;
    assert_eq!(json_of(&out)["id"], run.as_str());
    let out = cli_env(&s.base, &["tasks", "--json"], &[("RUNLEDGER_TOKEN", "rl_wrong")]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    s.stop().await;
}

/// Reads the NDJSON lines of a running `tail` as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next `n` lines (a generous guard against a hang, not a measurement).
fn take(rx: &mpsc::Receiver<String>, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("line {i} of {n}: {e}"));
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect()
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send_checked()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

/// Three events on `base`: a run created, started, ended.
async fn three_events(base: &str, task: &str) {
    let run = post(base, "/api/runs", json!({"task_name": task})).await;
    let id = run["id"].as_str().unwrap();
    post(base, &format!("/api/runs/{id}/start"), json!({})).await;
    post(base, &format!("/api/runs/{id}/end"), json!({"end_reason": "success"})).await;
}

async fn tail_resumes_after_a_restart_and_never_repeats(s: TestServer) {
    let url = s.database_url();
    let node = common::Node::start(&url);
    let base = node.base.clone();
    three_events(&base, "before").await;
    three_events(&base, "before").await;

    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["runs", "tail", "--after", "0", "--json", "--server", &base])
        .env_remove("RUNLEDGER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tail");
    let rx = lines_of(&mut tail);
    let mut seen = take(&rx, 6);
    three_events(&base, "live").await;
    seen.extend(take(&rx, 3));

    // The server goes away (killed) and comes back on the same port and
    // database; events are appended after the restart.
    drop(node);
    let port = base.rsplit(':').next().unwrap();
    let (child, again) = common::spawn_binary_on(&url, &format!("127.0.0.1:{port}"));
    let node = common::Node { child, base: again };
    assert_eq!(node.base, base);
    three_events(&base, "after").await;
    three_events(&base, "after").await;
    seen.extend(take(&rx, 6));

    let log = s.get("/api/events?after=0").await.ok(200)["events"].clone();
    assert_eq!(log.as_array().unwrap().len(), 15);
    assert_eq!(
        Value::Array(seen.clone()),
        log,
        "every event once, in order, as the log holds it"
    );
    three_events(&base, "last").await;
    let last = take(&rx, 3);
    assert_eq!(last[0]["position"], 16, "no event printed twice: {last:?}");
    let _ = tail.kill();
    let out = tail.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("reconnecting after position 9"),
        "it says where it resumes: {said}"
    );

    // Filters and the text form: only the ended events, one line each.
    let mut ended = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args([
            "runs",
            "tail",
            "--after",
            "0",
            "--type",
            "run.ended",
            "--task-name",
            "after",
        ])
        .env("RUNLEDGER_SERVER", &base)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tail");
    let rx = lines_of(&mut ended);
    let lines: Vec<String> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(120)).unwrap())
        .collect();
    for (line, position) in lines.iter().zip(["12", "15"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (fields[0], fields[2], fields[4]),
            (position, "run.ended", "anonymous"),
            "{line}"
        );
    }
    let _ = ended.kill();
    let _ = ended.wait();

    // A bad filter is refused at once, not retried.
    let out = cli_env(&base, &["runs", "tail", "--type", "run.nothing"], &[]).await;
    assert_eq!(exit_code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("query.type"), "{}", stderr(&out));
    drop(node);
    s.stop().await;
}

backend_tests!(
    list_filters_pages_and_formats,
    get_events_and_history,
    retry_cancel_delete_and_restore_change_the_run,
    bulk_counts_first_and_acts_only_with_yes,
    tasks_lists_every_task,
    a_token_is_sent_and_its_absence_refused,
    tail_resumes_after_a_restart_and_never_repeats,
);

#[tokio::test]
async fn an_unreachable_server_has_its_own_exit_status() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["runs", "list"],
        vec!["tasks"],
        vec!["runs", "bulk", "retry", "--match-all"],
    ] {
        let out = cli_env(&server, &args, &[]).await;
        assert_eq!(exit_code(&out), 5, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&server), "{}", stderr(&out));
    }
    let out = cli_env("not a url", &["runs", "list"], &[]).await;
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    // A usage error is clap's: 2.
    let out = cli_env(&server, &["runs", "bulk", "explode"], &[]).await;
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
}

#[tokio::test]
async fn completions_and_help_describe_the_client() {
    let out = cli_env("http://127.0.0.1:9477", &["completions", "bash"], &[]).await;
    let script = ok(&out);
    assert!(
        script.contains("_runledger()") && script.contains("complete -F _runledger"),
        "{script}"
    );
    assert!(
        script.contains("dlq-replay") && script.contains("--task-name"),
        "every subcommand and flag"
    );
    let out = cli_env("http://127.0.0.1:9477", &["completions", "zsh"], &[]).await;
    assert!(ok(&out).starts_with("#compdef runledger"));
    let out = cli_env("http://127.0.0.1:9477", &["runs", "--help"], &[]).await;
    let help = ok(&out);
    for text in [
        "RUNLEDGER_SERVER",
        "RUNLEDGER_TOKEN",
        "3 not found",
        "5 server unreachable",
    ] {
        assert!(help.contains(text), "{text}: {help}");
    }
}

//! `GET /api/tasks` from the maintained `task_counts`: every append moves
//! its run between counts, deletion and restore take it out and back, and a
//! rebuild refills the same counts.

mod common;

use common::TestServer;
use serde_json::{json, Value};

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_owned()
}

async fn task(s: &TestServer, name: &str) -> Option<Value> {
    let tasks = s.get("/api/tasks").await.ok(200).clone();
    tasks["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{tasks}"))
        .iter()
        .find(|t| t["task_name"] == name)
        .cloned()
}

async fn task_counts_follow_every_append_and_survive_a_rebuild(s: TestServer) {
    let failed = id(&s
        .run_through("etl", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await);
    let ok = id(&s.run_through("etl", json!({}), &["start", "end:success:0"]).await);
    let running = id(&s.run_through("etl", json!({}), &["start"]).await);
    let lone = id(&s.create(json!({"task_name": "lone"})).await);
    let etl = task(&s, "etl").await.expect("etl is listed");
    assert_eq!(etl["total"], 3);
    let counts = &etl["counts"];
    assert_eq!(
        (
            counts["running"].as_i64(),
            counts["ended"].as_i64(),
            counts["failed"].as_i64()
        ),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(
        (counts["success"].as_i64(), counts["dead_letter"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(etl["last_success"]["id"], ok.as_str());
    assert_eq!(etl["last_failure"]["id"], failed.as_str());
    assert_eq!(etl["last_run"]["id"], running.as_str());
    // A deleted run leaves the counts and the latest runs; a task with no
    // live run leaves the list.
    s.delete(&format!("/api/runs/{failed}"), json!({})).await.ok(200);
    let etl = task(&s, "etl").await.unwrap();
    assert_eq!(
        (etl["total"].as_i64(), etl["counts"]["failed"].as_i64()),
        (Some(2), Some(0))
    );
    assert_eq!(etl["counts"]["dead_letter"], 0);
    assert_eq!(etl["last_failure"], Value::Null, "its only failure is deleted");
    s.delete(&format!("/api/runs/{running}"), json!({})).await.ok(200);
    let etl = task(&s, "etl").await.unwrap();
    assert_eq!(etl["last_run"]["id"], ok.as_str(), "the latest run still live");
    // Restored, a run is the latest again where it is the latest.
    s.post(&format!("/api/runs/{failed}/restore"), json!({})).await.ok(200);
    s.post(&format!("/api/runs/{running}/restore"), json!({})).await.ok(200);
    let etl = task(&s, "etl").await.unwrap();
    assert_eq!(
        (etl["last_run"]["id"].as_str(), etl["last_failure"]["id"].as_str()),
        (Some(running.as_str()), Some(failed.as_str()))
    );
    assert_eq!(etl["last_success"]["id"], ok.as_str());
    s.delete(&format!("/api/runs/{failed}"), json!({})).await.ok(200);
    s.delete(&format!("/api/runs/{lone}"), json!({})).await.ok(200);
    assert!(task(&s, "lone").await.is_none());
    let listed = s.get("/api/tasks").await.ok(200).clone();
    assert_eq!(listed["total"], 1);
    s.post(&format!("/api/runs/{lone}/restore"), json!({})).await.ok(200);
    assert_eq!(task(&s, "lone").await.unwrap()["counts"]["pending"], 1);
    // A rebuild refills exactly what the appends maintained.
    let before = s.get("/api/tasks").await.ok(200).clone();
    s.exec_sql("UPDATE task_counts SET total = 99").await.unwrap();
    let rebuilt = s.cli(&["rebuild"]);
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    assert_eq!(s.get("/api/tasks").await.ok(200), &before);
    s.stop().await;
}

/// A ledger from before migrations 22 and 24: `task_counts` without the
/// latest runs, `runs` without ordinals. The next start fills both from
/// what is there, the same as the appends since keep them.
async fn an_older_ledger_gains_latest_runs_and_ordinals_at_start(mut s: TestServer) {
    let failed = id(&s.run_through("etl", json!({}), &["start", "end:failed:1"]).await);
    s.run_through("etl", json!({}), &["start", "end:success:0"]).await;
    let gone = id(&s.create(json!({"task_name": "etl"})).await);
    s.run_through("report", json!({}), &["start"]).await;
    s.delete(&format!("/api/runs/{gone}"), json!({})).await.ok(200);
    let first = s.get(&format!("/api/runs/{failed}")).await.ok(200)["created_at"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let window = format!("/api/runs?created_after={first}");
    let (tasks, listed) = (
        s.get("/api/tasks").await.ok(200).clone(),
        s.get(&window).await.ok(200).clone(),
    );
    assert_eq!(listed["total"], 3, "the deleted run is not counted");
    let seqs = "SELECT id || ':' || seq FROM runs ORDER BY id";
    let before = s.query_strings(seqs).await;
    s.shutdown().await;
    let migrations = match s.backend {
        common::Backend::Sqlite { .. } => "DELETE FROM schema_migrations WHERE version IN (22, 24)",
        common::Backend::Postgres { .. } => "DELETE FROM _sqlx_migrations WHERE version IN (22, 24)",
    };
    let mut undo = vec![
        "DROP INDEX runs_created_id".to_owned(),
        "ALTER TABLE runs DROP COLUMN seq".to_owned(),
        "CREATE INDEX runs_created_id ON runs (created_at, id, deleted)".to_owned(),
    ];
    for kind in ["run", "success", "failure"] {
        for part in ["at", "id"] {
            undo.push(format!("ALTER TABLE task_counts DROP COLUMN last_{kind}_{part}"));
        }
    }
    undo.push(migrations.to_owned());
    for sql in &undo {
        s.exec_sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let node = common::Node::start(&s.database_url());
    let get = |path: String| {
        let base = node.base.clone();
        async move {
            let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{path}");
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(get("/api/tasks".into()).await, tasks);
    assert_eq!(get(window.clone()).await["total"], 3);
    assert_eq!(
        s.query_strings(seqs).await,
        before,
        "the same ordinals as the appends gave"
    );
    drop(node);
    s.stop().await;
}

/// A bulk delete takes the latest runs of several tasks out at once: each
/// task's row goes back to its latest run still live.
async fn a_bulk_delete_sets_each_tasks_latest_runs_back(s: TestServer) {
    let etl = id(&s.run_through("etl", json!({}), &["start", "end:failed:1"]).await);
    let report = id(&s.run_through("report", json!({}), &["start", "end:failed:1"]).await);
    let mut newer = Vec::new();
    for task in ["etl", "report", "etl"] {
        newer.push(id(&s.run_through(task, json!({}), &["start", "end:failed:2"]).await));
    }
    s.post("/api/runs/bulk/delete", json!({"ids": newer})).await.ok(200);
    for (name, left) in [("etl", &etl), ("report", &report)] {
        let row = task(&s, name).await.unwrap();
        assert_eq!(row["last_run"]["id"], left.as_str(), "{name}");
        assert_eq!(row["last_failure"]["id"], left.as_str(), "{name}");
    }
    s.stop().await;
}

backend_tests!(
    task_counts_follow_every_append_and_survive_a_rebuild,
    a_bulk_delete_sets_each_tasks_latest_runs_back,
    an_older_ledger_gains_latest_runs_and_ordinals_at_start,
);

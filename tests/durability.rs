//! An acknowledged write survives `kill -9` of the server: the real binary
//! takes a write storm, is killed mid-flight, restarts on the same file, and
//! every acknowledged event is there, with a gap-free, intact chain.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

mod common;

/// What the server acknowledged: run id → the version of its last acked event.
type Acked = Arc<Mutex<Vec<(String, i64)>>>;

async fn writer(client: reqwest::Client, base: String, acked: Acked) {
    loop {
        let Ok(resp) = client
            .post(format!("{base}/api/runs"))
            .json(&json!({"task_name": "storm"}))
            .send()
            .await
        else {
            return;
        };
        let Ok(run) = resp.json::<Value>().await else { return };
        let id = run["id"].as_str().unwrap().to_owned();
        acked.lock().unwrap().push((id.clone(), 1));
        for (step, body) in [
            ("start", json!({})),
            ("end", json!({"end_reason": "success", "exit_code": 0})),
        ] {
            let Ok(resp) = client
                .post(format!("{base}/api/runs/{id}/{step}"))
                .json(&body)
                .send()
                .await
            else {
                return;
            };
            let Ok(run) = resp.json::<Value>().await else { return };
            let version = run["version"].as_i64().unwrap();
            acked.lock().unwrap().push((id.clone(), version));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storm.db");
    let (mut child, base) = common::spawn_binary(&format!("sqlite://{}", db.display()));
    let acked: Acked = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let writers: Vec<_> = (0..32)
        .map(|_| tokio::spawn(writer(client.clone(), base.clone(), acked.clone())))
        .collect();
    // Kill once enough writes were acknowledged that the storm is in full swing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 3_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 3_000,
        "the storm acknowledged only {} writes",
        acked.len()
    );

    let (mut child, base) = common::spawn_binary(&format!("sqlite://{}", db.display()));
    let mut latest = std::collections::HashMap::new();
    for (id, version) in &acked {
        let v = latest.entry(id.clone()).or_insert(0);
        *v = (*v).max(*version);
    }
    for (id, version) in &latest {
        let run: Value = client
            .get(format!("{base}/api/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = run["version"]
            .as_i64()
            .unwrap_or_else(|| panic!("acknowledged run {id} is missing: {run}"));
        assert!(
            found >= *version,
            "run {id}: acknowledged version {version}, found {found}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let conn = rusqlite::Connection::open(&db).unwrap();
    let report = runledger_events::sqlite::verify_chain(&conn).unwrap();
    assert!(report.is_intact(), "{report:?}");
    let acked_events: i64 = latest.values().sum();
    assert!(
        report.events >= acked_events,
        "log has {} events, {} were acknowledged",
        report.events,
        acked_events
    );
    let runs: i64 = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert!(runs >= latest.len() as i64);
    let torn: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM runs r WHERE r.version <> \
             (SELECT MAX(stream_version) FROM events e WHERE e.stream_id = 'run-' || r.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(torn, 0, "the runs projection is committed with the events it folds");
}

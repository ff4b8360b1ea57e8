//! The operator's command line against a real ledger: verify, rebuild,
//! export and import — on both backends.

mod common;

use common::TestServer;
use serde_json::json;

/// Every row of every projection table, in a stable order.
async fn dump(s: &TestServer) -> Vec<String> {
    let mut rows = s
        .query_strings(
            "SELECT id || '|' || status || '|' || version || '|' || position || '|' || deleted || '|' || \
             dead_lettered || '|' || created_at || '|' || state FROM runs ORDER BY id",
        )
        .await;
    rows.extend(
        s.query_strings("SELECT run_id || '|' || key || '|' || value FROM run_tags ORDER BY run_id, key")
            .await,
    );
    rows
}

/// A ledger with some history: ended, failed and retried, deleted, tagged runs.
async fn history(s: &TestServer) {
    for i in 0..5 {
        let run = s
            .run_through(
                &format!("task-{}", i % 2),
                json!({"tags": {"n": i.to_string()}, "max_attempts": 1}),
                &["start"],
            )
            .await;
        let id = run["id"].as_str().unwrap();
        let reason = if i % 2 == 0 { "success" } else { "failed" };
        s.post(
            &format!("/api/runs/{id}/end"),
            json!({"end_reason": reason, "exit_code": i}),
        )
        .await
        .ok(200);
        if i == 1 {
            assert_eq!(
                s.post(&format!("/api/runs/{id}/retry"), json!({}))
                    .await
                    .status
                    .as_u16(),
                202
            );
        }
        if i == 3 {
            s.delete(&format!("/api/runs/{id}"), json!({"reason": "noise"}))
                .await
                .ok(200);
        }
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn verify_reports_an_intact_chain_and_the_first_altered_position(mut s: TestServer) {
    history(&s).await;
    s.shutdown().await;
    let out = s.cli(&["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let events = s.event_count().await;
    assert!(text(&out).contains(&format!("ok: {events} events")), "{}", text(&out));

    // Tamper with the file/database directly, as an attacker with access would.
    let disable = match &s.backend {
        common::Backend::Sqlite { .. } => {
            "DROP TRIGGER events_are_append_only_update; DROP TRIGGER events_are_append_only_delete"
        }
        common::Backend::Postgres { .. } => "ALTER TABLE events DISABLE TRIGGER USER",
    };
    for statement in disable.split("; ") {
        s.exec_sql(statement).await.unwrap();
    }
    // Position 4 is the second run's run.created.
    let changed = s
        .exec_sql("UPDATE events SET data = replace(data, 'task-1', 'task-9') WHERE position = 4")
        .await;
    assert_eq!(changed, Ok(1));
    let out = s.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("broken at position 4"), "{}", text(&out));
    s.stop().await;
}

async fn rebuild_replays_the_log_into_identical_projections(mut s: TestServer) {
    history(&s).await;
    s.shutdown().await;
    let before = dump(&s).await;
    assert!(before.len() > 6);
    s.exec_sql("DELETE FROM run_tags").await.unwrap();
    s.exec_sql("UPDATE runs SET status = 'pending', state = '{}'")
        .await
        .unwrap();
    let out = s.cli(&["rebuild"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rebuilt 6 runs from"), "{}", text(&out));
    assert_eq!(
        dump(&s).await,
        before,
        "rebuilt projections differ from the ones kept live"
    );
    s.stop().await;
}

async fn export_then_import_round_trips_the_log_and_projections(mut s: TestServer) {
    history(&s).await;
    s.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson");
    let out = s.cli(&["export", "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count() as i64, s.event_count().await);

    let copy = match &s.backend {
        common::Backend::Sqlite { .. } => TestServer::sqlite().await,
        common::Backend::Postgres { .. } => TestServer::postgres("export_import_copy").await.expect("postgres"),
    };
    let out = copy.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let log = "SELECT position || '|' || event_id || '|' || stream_id || '|' || stream_version || '|' || \
               event_type || '|' || data || '|' || metadata || '|' || recorded_at || '|' || prev_hash || '|' || hash \
               FROM events ORDER BY position";
    assert_eq!(
        copy.query_strings(log).await,
        s.query_strings(log).await,
        "the log, hashes included, is identical"
    );
    assert_eq!(dump(&copy).await, dump(&s).await, "the projections are identical");
    assert!(copy.cli(&["verify"]).status.success());

    // A second import into the now non-empty ledger is refused.
    let again = copy.cli(&["import", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    copy.stop().await;

    // An altered export is refused before anything is written.
    let tampered = dir.path().join("tampered.ndjson");
    std::fs::write(&tampered, exported.replacen("\"exit_code\":2", "\"exit_code\":0", 1)).unwrap();
    let fresh = match &s.backend {
        common::Backend::Sqlite { .. } => TestServer::sqlite().await,
        common::Backend::Postgres { .. } => TestServer::postgres("export_import_tampered").await.expect("postgres"),
    };
    let out = fresh.cli(&["import", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("breaks the hash chain"), "{}", text(&out));
    assert_eq!(fresh.event_count().await, 0);
    fresh.stop().await;
    s.stop().await;
}

backend_tests!(
    verify_reports_an_intact_chain_and_the_first_altered_position,
    rebuild_replays_the_log_into_identical_projections,
    export_then_import_round_trips_the_log_and_projections,
);

//! The operator's command line against a real ledger: verify, rebuild,
//! export and import — on both backends.

mod common;

use common::SendChecked;

use common::TestServer;
use serde_json::json;

/// Every row of every projection table, in a stable order.
async fn dump(s: &TestServer) -> Vec<String> {
    let mut rows = s
        .query_strings(
            "SELECT id || '|' || status || '|' || version || '|' || position || '|' || deleted || '|' || \
             dead_lettered || '|' || created_at || '|' || COALESCE(deadline_at, -1) || '|' || seq || '|' || state \
             FROM runs ORDER BY id",
        )
        .await;
    rows.extend(
        s.query_strings("SELECT run_id || '|' || key || '|' || value FROM run_tags ORDER BY run_id, key")
            .await,
    );
    rows.extend(
        s.query_strings(
            "SELECT id || '|' || version || '|' || status || '|' || position || '|' || valid_to || '|' || \
             valid_from_at || '|' || COALESCE(valid_to_at, -1) || '|' || changes FROM run_history ORDER BY id, version",
        )
        .await,
    );
    for sql in [
        "SELECT run_id || '|' || sequence || '|' || position || '|' || record FROM run_checkpoints \
         ORDER BY run_id, sequence",
        "SELECT run_id || '|' || position || '|' || level || '|' || COALESCE(log_type, '-') || '|' || record \
         FROM run_logs ORDER BY run_id, position",
        "SELECT run_id || '|' || position || '|' || task_name || '|' || provider || '|' || model || '|' || \
         prompt_tokens || '|' || completion_tokens || '|' || total_tokens || '|' || cost_microusd || '|' || record \
         FROM run_usage ORDER BY run_id, position",
        "SELECT run_id || '|' || position || '|' || tool_name || '|' || status || '|' || record FROM run_tool_calls \
         ORDER BY run_id, position",
        "SELECT run_id || '|' || position || '|' || output_key || '|' || record FROM run_outputs \
         ORDER BY run_id, position",
        "SELECT run_id || '|' || COALESCE(source_run_id, '-') FROM run_lineage ORDER BY run_id",
        "SELECT task_name || '|' || total || '|' || pending || '|' || running || '|' || paused || '|' || ended || '|' || \
         success || '|' || failed || '|' || stopped || '|' || timeout || '|' || crashed || '|' || skipped || '|' || \
         log_overflow || '|' || expired || '|' || dead_letter || '|' || COALESCE(last_run_id, '-') || '|' || \
         COALESCE(last_success_id, '-') || '|' || COALESCE(last_failure_id, '-') || '|' || \
         COALESCE(CAST(last_run_at AS TEXT), '-') || '|' || COALESCE(CAST(last_success_at AS TEXT), '-') || '|' || \
         COALESCE(CAST(last_failure_at AS TEXT), '-') FROM task_counts ORDER BY task_name",
        "SELECT key || '|' || n FROM run_counts ORDER BY key",
        "SELECT key || '|' || value || '|' || n FROM tag_counts ORDER BY key, value",
        "SELECT operation_id || '|' || run_id FROM run_operations ORDER BY operation_id, run_id",
    ] {
        rows.extend(s.query_strings(sql).await);
    }
    let payloads = if s.database_url().starts_with("sqlite") {
        "SELECT run_id || '|' || term FROM run_payload_terms ORDER BY run_id, term"
    } else {
        "SELECT run_id || '|' || payload::text FROM run_payloads ORDER BY run_id"
    };
    rows.extend(s.query_strings(payloads).await);
    // The indexes too: a SQLite rebuild drops them while it fills the tables.
    let indexes = if s.database_url().starts_with("sqlite") {
        "SELECT name || ' ' || sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
    } else {
        "SELECT indexname || ' ' || replace(indexdef, current_schema() || '.', '') FROM pg_indexes \
         WHERE schemaname = current_schema() ORDER BY indexname"
    };
    let indexes = s.query_strings(indexes).await;
    assert!(
        indexes.iter().any(|i| i.starts_with("run_history_valid ")),
        "{indexes:?}"
    );
    rows.extend(indexes);
    rows
}

/// Every kind of detail on a run: a checkpoint, log lines, usage, a tool
/// call and an output, some after the end.
async fn details(s: &TestServer) {
    let run = s.run_through("detailed", json!({}), &["start"]).await;
    let id = run["id"].as_str().unwrap();
    for (detail, body) in [
        ("checkpoints", json!({"source": "w", "state": {"step": 1}})),
        ("checkpoints", json!({"state": [2]})),
        (
            "logs",
            json!({"level": "warn", "type": "progress", "message": "half", "data": {"n": 1}}),
        ),
        (
            "usage",
            json!({"provider": "p", "model": "m", "prompt_tokens": 3, "completion_tokens": 4, "cost_microusd": 9}),
        ),
        (
            "tool-calls",
            json!({"tool_name": "t", "input": {"a": 1}, "duration_ms": 5, "status": "error"}),
        ),
        (
            "outputs",
            json!({"output_key": "k", "schema": {"type": "integer"}, "value": 7}),
        ),
        ("debug", json!({"enabled": true})),
    ] {
        let r = s.post(&format!("/api/runs/{id}/{detail}"), body).await;
        assert!(r.status.is_success(), "{detail}: {}", r.body);
    }
    s.post(&format!("/api/runs/{id}/end"), json!({"end_reason": "success"}))
        .await
        .ok(200);
    s.post(&format!("/api/runs/{id}/logs"), json!({"message": "flushed"}))
        .await
        .ok(201);
    let parent = s.create(json!({"task_name": "detailed"})).await;
    s.create(json!({"task_name": "detailed", "continuation_of": parent["id"]}))
        .await;
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
    details(&s).await;
    // Concurrent writes to the same runs, so that one group commit holds
    // several appends of one run (each closing the version the one before
    // it opened).
    let ids: Vec<String> = s
        .query_strings("SELECT id FROM runs WHERE status = 'ended' ORDER BY id")
        .await;
    // Far-off deadlines: the rebuild must fold the same `deadline_at`.
    let live = s
        .create(json!({"task_name": "busy", "timeout_secs": 3600, "heartbeat_timeout_secs": 3600}))
        .await;
    let live = live["id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{live}/start"), json!({})).await.ok(200);
    // Log lines store no version of their own, but every 64th event does.
    let log = format!("/api/runs/{live}/logs");
    let lines = (0..70).map(|n| s.post(&log, json!({"message": format!("line {n}")})));
    for reply in futures_util::future::join_all(lines).await {
        reply.ok(201);
    }
    let beat = format!("/api/runs/{live}/heartbeat");
    let beats = (0..40).map(|_| s.post(&beat, json!({})));
    for reply in futures_util::future::join_all(beats).await {
        reply.ok(200);
    }
    assert!(!ids.is_empty());
    // What a run keeps from its creation: its payload, and the bulk
    // operation that created it.
    s.create(json!({"task_name": "paid", "payload": {"customer": "acme", "lines": [1, {"sku": "a"}]}}))
        .await;
    s.post("/api/runs/bulk/rerun", json!({"ids": [live]})).await.ok(200);
    s.shutdown().await;
    let before = dump(&s).await;
    assert!(before.len() > 6);
    let current = s
        .query_i64("SELECT COUNT(*) FROM run_history WHERE valid_to = 9223372036854775807")
        .await;
    assert_eq!(
        current,
        s.query_i64("SELECT COUNT(*) FROM runs").await,
        "one current version per run"
    );
    let broken = s
        .query_i64(
            "SELECT COUNT(*) FROM run_history h JOIN run_history n ON n.id = h.id \
             AND n.position = (SELECT MIN(x.position) FROM run_history x WHERE x.id = h.id AND x.position > h.position) \
             WHERE h.valid_to <> n.position OR h.valid_to_at <> n.valid_from_at",
        )
        .await;
    assert_eq!(broken, 0, "each version ends where the next begins");
    for table in [
        "run_checkpoints",
        "run_logs",
        "run_usage",
        "run_tool_calls",
        "run_outputs",
        "run_lineage",
        "task_counts",
        "run_counts",
        "run_operations",
    ] {
        assert!(
            s.query_i64(&format!("SELECT COUNT(*) FROM {table}")).await > 0,
            "{table} has rows to rebuild"
        );
    }
    s.exec_sql("DELETE FROM run_tags").await.unwrap();
    s.exec_sql("DELETE FROM run_operations").await.unwrap();
    let payloads = if s.database_url().starts_with("sqlite") {
        "DELETE FROM run_payload_terms"
    } else {
        "DELETE FROM run_payloads"
    };
    s.exec_sql(payloads).await.unwrap();
    s.exec_sql("DELETE FROM run_history WHERE version > 1").await.unwrap();
    s.exec_sql("DELETE FROM run_logs").await.unwrap();
    s.exec_sql("DELETE FROM run_lineage").await.unwrap();
    s.exec_sql("UPDATE task_counts SET failed = failed + 7, last_success_id = NULL, last_run_at = 0")
        .await
        .unwrap();
    s.exec_sql("UPDATE run_counts SET n = n + 3").await.unwrap();
    s.exec_sql("UPDATE tag_counts SET n = n + 3").await.unwrap();
    s.exec_sql("UPDATE run_usage SET cost_microusd = 0").await.unwrap();
    s.exec_sql("UPDATE runs SET status = 'pending', deadline_at = NULL, seq = 0, state = '{}'")
        .await
        .unwrap();
    let out = s.cli(&["rebuild"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rebuilt 12 runs from"), "{}", text(&out));
    assert_eq!(
        dump(&s).await,
        before,
        "rebuilt projections differ from the ones kept live"
    );
    s.stop().await;
}

/// What a database from before a projection existed (or before its format
/// changed, as migration 10 did to `run_history`) looks like: the projection
/// empty while runs exist. The server rebuilds it at start-up.
async fn a_server_rebuilds_an_empty_history_at_start_up(mut s: TestServer) {
    history(&s).await;
    details(&s).await;
    s.shutdown().await;
    let before = dump(&s).await;
    s.exec_sql("DELETE FROM run_history").await.unwrap();
    s.exec_sql("DELETE FROM run_lineage").await.unwrap();
    s.exec_sql("UPDATE task_counts SET failed = failed + 7").await.unwrap();
    s.exec_sql("DELETE FROM run_counts").await.unwrap();
    assert_ne!(dump(&s).await, before);
    let node = common::Node::start(&s.database_url());
    let run = s.query_strings("SELECT id FROM runs ORDER BY id LIMIT 1").await;
    let reply = reqwest::get(format!("{}/api/runs/{}/history", node.base, run[0]))
        .await
        .expect("request");
    assert_eq!(reply.status().as_u16(), 200);
    drop(node);
    assert_eq!(dump(&s).await, before, "the rebuilt projections differ");
    s.stop().await;
}

async fn export_then_import_round_trips_the_log_and_projections(mut s: TestServer) {
    history(&s).await;
    details(&s).await;
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

/// `token create|list|revoke` from the command line; a server on a
/// non-loopback address starts only once a token exists, and then needs it.
async fn tokens_from_the_cli_guard_a_server_on_any_address(s: TestServer) {
    let refused = s.cli(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("refusing to serve an unauthenticated API"),
        "{}",
        text(&refused)
    );

    let created = s.cli(&["token", "create", "--name", "ci-reader", "--scopes", "runs:read"]);
    assert!(created.status.success(), "{}", text(&created));
    let secret = String::from_utf8(created.stdout.clone()).unwrap().trim().to_owned();
    assert!(secret.starts_with("rl_") && secret.len() == 67, "{secret:?}");
    // Only the hash is stored.
    let stored = s.query_strings("SELECT secret_sha256 FROM api_tokens").await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&secret[3..]));

    let bad = s.cli(&["token", "create", "--name", "x", "--scopes", "runs:everything"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown scope"), "{}", text(&bad));
    let again = s.cli(&["token", "create", "--name", "ci-reader", "--scopes", "runs:read"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    let listed = s.cli(&["token", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("one JSON line");
    assert_eq!(listed["name"], "ci-reader");
    assert_eq!(listed["scopes"], json!(["runs:read"]));
    assert!(listed["revoked_at"].is_null());
    assert!(!listed.to_string().contains(&secret));

    let (mut child, base) = common::spawn_binary_on(&s.database_url(), "0.0.0.0:0");
    let client = reqwest::Client::new();
    let status = |token: Option<String>| {
        let mut req = client.get(format!("{base}/api/runs"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send_checked().await.expect("request").status().as_u16() }
    };
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some(secret.clone())).await, 200);

    let revoked = s.cli(&["token", "revoke", "ci-reader"]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    // Another process revoked it: the server reads its tokens again within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status(Some(secret.clone())).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked token is still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let gone = s.cli(&["token", "revoke", "ci-reader"]);
    assert!(!gone.status.success());
    s.stop().await;
}

/// A `run.usage_recorded` stored at schema version 1 (cost as a float, no
/// total) reads back in the current shape everywhere the API shows events;
/// the fold, rebuild and verify accept it; export keeps the stored form.
async fn an_event_stored_at_an_old_schema_version_reads_back_upcast(s: TestServer) {
    use runledger_events::{EventEnvelope, Metadata, NewEvent, Sealer};
    // A run made by the API, exported, and one v1 event sealed after it.
    let run = s.run_through("agent", json!({}), &["start"]).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.ndjson");
    let out = s.cli(&["export", "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let mut envelopes: Vec<EventEnvelope> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = envelopes.last().unwrap().clone();
    let v1 = json!({"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1200, "completion_tokens": 300, "cost_usd": 0.0105});
    let old = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "run.usage_recorded".into(),
        schema_version: 1,
        data: v1.clone(),
    };
    let mut sealer = Sealer::new(last.position, last.hash.clone(), Some(last.recorded_at));
    let sealed = sealer.seal(
        &last.stream_id,
        last.stream_version,
        &[old],
        &Metadata::actor("importer"),
    );
    envelopes.push(sealed[0].envelope.clone());
    let ndjson: String = envelopes
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(&file, ndjson).unwrap();

    let copy = match &s.backend {
        common::Backend::Sqlite { .. } => TestServer::sqlite().await,
        common::Backend::Postgres { .. } => TestServer::postgres("upcast_copy").await.expect("postgres"),
    };
    let out = copy.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stored = copy
        .query_strings("SELECT schema_version || '|' || data FROM events WHERE event_type = 'run.usage_recorded'")
        .await;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].starts_with("1|") && stored[0].contains("cost_usd"),
        "stored as written: {}",
        stored[0]
    );

    let current = json!({"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1200, "completion_tokens": 300,
        "total_tokens": 1500, "cost_microusd": 10500});
    let events = copy.get(&format!("/api/runs/{id}/events")).await.ok(200).clone();
    let usage = &events["events"][2];
    assert_eq!(usage["type"], "run.usage_recorded");
    assert_eq!(usage["schema_version"], 2);
    assert_eq!(usage["data"], current);
    let log = copy.get("/api/events?type=run.usage_recorded").await.ok(200).clone();
    assert_eq!(log["events"][0]["data"], current);
    // Time travel folds it: the run's version 3 is the one after it.
    let history = copy.get(&format!("/api/runs/{id}/history")).await.ok(200).clone();
    assert_eq!(history["history"][2]["event"]["data"], current);
    assert_eq!(history["history"][2]["state"]["version"], 3);
    let position = usage["position"].as_i64().unwrap();
    let then = copy
        .get(&format!("/api/runs/{id}?as_of={position}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(then["version"], 3);
    assert_eq!(then, copy.get(&format!("/api/runs/{id}")).await.ok(200).clone());

    // Rebuild folds the stored form again; verify checks it as stored.
    let before = dump(&copy).await;
    assert!(copy.cli(&["rebuild"]).status.success());
    assert_eq!(dump(&copy).await, before);
    assert!(copy.cli(&["verify"]).status.success());
    // Export gives the stored form back, byte for byte the same chain.
    let again = dir.path().join("again.ndjson");
    assert!(copy
        .cli(&["export", "--output", again.to_str().unwrap()])
        .status
        .success());
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&file).unwrap()
    );
    copy.stop().await;
    s.stop().await;
}

backend_tests!(
    an_event_stored_at_an_old_schema_version_reads_back_upcast,
    tokens_from_the_cli_guard_a_server_on_any_address,
    verify_reports_an_intact_chain_and_the_first_altered_position,
    rebuild_replays_the_log_into_identical_projections,
    a_server_rebuilds_an_empty_history_at_start_up,
    export_then_import_round_trips_the_log_and_projections,
);

/// The `runledger` binary run in `dir` with only its own arguments: the
/// default database (`sqlite://runledger.db`) is the one in `dir`.
fn runledger_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run runledger")
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every admin command but `migrate` (and `serve`), with its arguments.
const ADMIN_COMMANDS: &[&[&str]] = &[
    &["verify"],
    &["rebuild"],
    &["export", "--output", "export.ndjson"],
    &["import", "empty.ndjson"],
    &["token", "create", "--name", "ops", "--scopes", "runs:read"],
    &["token", "list"],
    &["token", "revoke", "ops"],
];

/// `verify` in a folder with no database used to create an empty one and
/// report an intact chain. Now every admin command refuses a ledger that is
/// not there, names the path and creates nothing; only `migrate` (and
/// `serve`) create one, and then every command works on it.
#[test]
fn admin_commands_never_invent_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("empty.ndjson"), "").unwrap();
    for args in ADMIN_COMMANDS {
        for url in [None, Some("sqlite://elsewhere/typo.db")] {
            let mut all = args.to_vec();
            all.extend(url.iter().flat_map(|u| ["--database-url", u]));
            let out = runledger_in(dir, &all);
            assert!(!out.status.success(), "{all:?} succeeded: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let path = url.map_or("runledger.db", |_| "elsewhere/typo.db");
            assert!(
                stderr.contains(&format!("no ledger at {path}: the file does not exist")),
                "{all:?}: {stderr}"
            );
            assert_eq!(files_in(dir), ["empty.ndjson"], "{all:?} created a file");
        }
    }

    // A file that is not a ledger (here: empty) is refused and left alone.
    std::fs::write(dir.join("runledger.db"), "").unwrap();
    let out = runledger_in(dir, &["verify"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no ledger at runledger.db: the database has no events table"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::metadata(dir.join("runledger.db")).unwrap().len(), 0);
    std::fs::remove_file(dir.join("runledger.db")).unwrap();

    let out = runledger_in(dir, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    for args in ADMIN_COMMANDS {
        let out = runledger_in(dir, args);
        assert!(out.status.success(), "{args:?} on a new ledger: {}", text(&out));
    }
    let out = runledger_in(dir, &["verify"]);
    assert!(text(&out).contains("ok: 0 events"), "{}", text(&out));
}

/// On PostgreSQL a database always exists at the URL; a schema without a
/// ledger is refused the same way, and the admin commands do not migrate it.
#[tokio::test]
async fn admin_commands_refuse_a_postgres_schema_without_a_ledger() {
    let Some(url) = common::postgres_url("admin_commands_refuse_a_postgres_schema_without_a_ledger") else {
        return;
    };
    let (schema, _) = common::postgres_schema(&url).await;
    let database_url = common::url_with_schema(&url, &schema);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.ndjson"), "").unwrap();
    let tables = || async {
        let mut conn = common::pg_connect(&url, &schema).await;
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    for args in ADMIN_COMMANDS {
        let mut all = args.to_vec();
        all.extend(["--database-url", &database_url]);
        let out = runledger_in(dir.path(), &all);
        assert!(!out.status.success(), "{args:?} succeeded: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("schema {schema}: it has no events table")),
            "{args:?}: {}",
            text(&out)
        );
        assert_eq!(tables().await, 0, "{args:?} created tables");
    }
    let out = runledger_in(dir.path(), &["migrate", "--database-url", &database_url]);
    assert!(out.status.success(), "{}", text(&out));
    for args in ADMIN_COMMANDS {
        let mut all = args.to_vec();
        all.extend(["--database-url", &database_url]);
        let out = runledger_in(dir.path(), &all);
        assert!(out.status.success(), "{args:?} on a new ledger: {}", text(&out));
    }
    let mut conn = common::pg_connect(&url, &schema).await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

//! The README's walkthrough, run as written: every `sh` block between its
//! `<!-- walkthrough -->` and `<!-- /walkthrough -->` markers, in order, as
//! one `bash -euo pipefail` script against the real `runledger serve`, on
//! both backends. The README text is the script, so it cannot drift.

mod common;

use std::path::Path;

use common::TestServer;
use serde_json::Value;

const README: &str = include_str!("../README.md");
const OPEN: &str = "<!-- walkthrough -->";
const CLOSE: &str = "<!-- /walkthrough -->";

/// The lines of every ```sh block inside the marked regions, in order.
fn walkthrough(readme: &str) -> String {
    let (mut script, mut marked, mut in_block, mut blocks) = (String::new(), false, false, 0);
    for (n, line) in readme.lines().enumerate() {
        match line.trim_end() {
            OPEN => {
                assert!(!marked && !in_block, "README.md:{}: {OPEN} inside a walkthrough", n + 1);
                marked = true;
            }
            CLOSE => {
                assert!(marked && !in_block, "README.md:{}: {CLOSE} without {OPEN}", n + 1);
                marked = false;
            }
            "```sh" if marked && !in_block => {
                in_block = true;
                blocks += 1;
            }
            "```" if in_block => in_block = false,
            _ if in_block => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!marked && !in_block, "README.md: a walkthrough or block is not closed");
    assert!(blocks >= 5, "README.md has {blocks} walkthrough blocks");
    script
}

#[test]
fn the_walkthrough_is_every_marked_sh_block_in_order() {
    let text = "```sh\nnot run\n```\n<!-- walkthrough -->\n```sh\none\n```\nprose\n```text\nnot run\n```\n\
                ```sh\ntwo\n```\n<!-- /walkthrough -->\n```sh\nnot run\n```\n<!-- walkthrough -->\n\
                ```sh\nthree\n```\n```sh\nfour\n```\n```sh\nfive\n```\n<!-- /walkthrough -->\n";
    assert_eq!(walkthrough(text), "one\ntwo\nthree\nfour\nfive\n");
    let script = walkthrough(README);
    assert!(script.starts_with("API=${API:-"), "the walkthrough sets API first");
}

async fn get(base: &str, path: &str) -> Value {
    let reply = reqwest::get(format!("{base}{path}")).await.expect("request");
    assert_eq!(reply.status().as_u16(), 200, "GET {path}");
    reply.json().await.expect("JSON")
}

fn types(events: &Value) -> Vec<&str> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

async fn the_readme_walkthrough_runs_as_written(s: TestServer) {
    let database_url = s.database_url();
    let node = common::Node::start(&database_url);
    let bin = Path::new(env!("CARGO_BIN_EXE_runledger")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let scratch = tempfile::tempdir().unwrap();
    let mut bash = std::process::Command::new("bash");
    bash.args(["-xeuo", "pipefail", "-c", &walkthrough(README)])
        .env("API", &node.base)
        .env("PATH", path)
        .env("RUST_LOG", "warn");
    // As the README says: run in the server's folder, where the admin
    // commands find its ./runledger.db. PostgreSQL has no folder; its URL
    // goes by environment.
    match &s.backend {
        common::Backend::Sqlite { path, .. } => {
            bash.current_dir(path.parent().unwrap())
                .env_remove("RUNLEDGER_DATABASE_URL");
        }
        common::Backend::Postgres { .. } => {
            bash.current_dir(scratch.path())
                .env("RUNLEDGER_DATABASE_URL", &database_url);
        }
    }
    let out = tokio::task::spawn_blocking(move || bash.output().expect("run bash"))
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the walkthrough failed ({}); the last commands:\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // What the walkthrough said happened, read back from the server.
    let base = node.base.as_str();
    let reports = get(
        base,
        "/api/runs?task_name=nightly-report&sort_field=created_at&sort_direction=asc",
    )
    .await;
    let runs = reports["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "the failed run, its retry and the bulk retry: {reports}");
    let (run, retry, bulk) = (&runs[0], &runs[1], &runs[2]);
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        (run["end_reason"].as_str(), run["deleted"].as_bool()),
        (Some("failed"), Some(false))
    );
    let events = get(base, &format!("/api/runs/{id}/events")).await;
    assert_eq!(
        types(&events),
        [
            "run.created",
            "run.started",
            "run.ended",
            "run.retried",
            "run.deleted",
            "run.restored",
            "run.retried"
        ],
        "retried, deleted, restored, retried in bulk"
    );
    for new in [retry, bulk] {
        assert_eq!(new["retry_of_run_id"], id);
    }
    assert_eq!(
        (retry["end_reason"].as_str(), retry["debug_mode"].as_bool()),
        (Some("success"), Some(true))
    );
    let retry_id = retry["id"].as_str().unwrap();
    let calls = get(base, &format!("/api/runs/{retry_id}/tool-calls")).await;
    assert_eq!(calls["tool_calls"][0]["status"], "ok");
    let outputs = get(base, &format!("/api/runs/{retry_id}/outputs")).await;
    assert_eq!(outputs["outputs"][0]["value"]["text"], "…");
    let lineage = get(base, &format!("/api/runs/{retry_id}/lineage")).await;
    assert_eq!(lineage["runs"][0]["id"], id, "{lineage}");

    // Two nightly-etl runs (the key freed in between), both deleted in one operation.
    let etl = get(base, "/api/runs?task_name=nightly-etl&include_deleted=true").await;
    let etl = etl["runs"].as_array().unwrap();
    assert_eq!(etl.len(), 2);
    assert!(etl.iter().all(|r| r["deleted"] == true), "{etl:?}");
    assert!(
        stdout.to_ascii_lowercase().contains("idempotent-replayed: true"),
        "the second create with the same Idempotency-Key was not replayed"
    );

    // The admin commands ran on the server's ledger: the copy and the
    // offline bundle hold its events.
    let dir = match &s.backend {
        common::Backend::Sqlite { path, .. } => path.parent().unwrap().to_owned(),
        common::Backend::Postgres { .. } => scratch.path().to_owned(),
    };
    let events = s.event_count().await;
    assert!(
        stdout.contains(&format!("ok: {events} events")),
        "verify ran on the server's ledger"
    );
    let exported = std::fs::read_to_string(dir.join("ledger.ndjson")).unwrap();
    assert_eq!(exported.lines().count() as i64, events);
    for copy in ["copy.db", "offline.db"] {
        let url = format!("sqlite://{}", dir.join(copy).display());
        let verify = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(["verify", "--database-url", &url])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{copy}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    drop(node);
    s.stop().await;
}

backend_tests!(the_readme_walkthrough_runs_as_written);

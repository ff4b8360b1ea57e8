//! The log through the real binary, on both backends: `--log-format json`
//! (or `RUNLEDGER_LOG_FORMAT=json`) writes one JSON object per line with
//! level, message and target, and the request span's fields; text written
//! to a file carries no ANSI escape codes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;

use common::TestServer;
use serde_json::Value;

/// Runs `runledger serve` against the test's ledger (its own server
/// stopped first) with stderr going to a file; sends it a request with
/// `X-Request-Id: log-42` and a write, stops it with SIGTERM and returns
/// what it logged.
async fn serve_and_log(s: &mut TestServer, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    s.shutdown().await;
    let log = dir.join("stderr.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &s.database_url()])
        .arg("--anchors")
        .arg(dir.join("anchors"))
        .args(args)
        .env_remove("RUNLEDGER_LOG_FORMAT")
        .env("RUST_LOG", "info,tower_http=debug")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = command.spawn().expect("start runledger");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("ready line");
    let base = line.trim().rsplit(' ').next().expect("address").to_owned();
    let client = reqwest::Client::new();
    let listed = client
        .get(format!("{base}/api/runs"))
        .header("x-request-id", "log-42")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let created = client
        .post(format!("{base}/api/runs"))
        .json(&serde_json::json!({"task_name": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "serve stops cleanly on SIGTERM");
    std::fs::read_to_string(&log).unwrap()
}

/// Every line of `log` as a JSON object with a level, a message and a
/// target; panics naming the first line that is not.
fn json_lines(log: &str) -> Vec<Value> {
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let level = event["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
            assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level), "{line}");
            assert!(event["message"].is_string(), "no message: {line}");
            assert!(
                event["target"].as_str().is_some_and(|t| !t.is_empty()),
                "no target: {line}"
            );
            assert!(event["timestamp"].is_string(), "no timestamp: {line}");
            event
        })
        .collect();
    assert!(!lines.is_empty(), "nothing was logged");
    lines
}

fn assert_json_log(log: &str) {
    assert!(!log.contains("\x1b["), "ANSI codes in a JSON log: {log}");
    let events = json_lines(log);
    let ready = events
        .iter()
        .find(|e| e["message"] == "runledger is ready")
        .unwrap_or_else(|| panic!("no ready event in {log}"));
    assert_eq!(
        (ready["level"].as_str(), ready["target"].as_str()),
        (Some("INFO"), Some("runledger::cli"))
    );
    assert!(
        ready["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{ready}"
    );
    // The request's span and its fields come with the events inside it.
    let in_request = events
        .iter()
        .find(|e| e["span"]["request_id"] == "log-42")
        .unwrap_or_else(|| panic!("no event in the request's span: {log}"));
    assert_eq!(in_request["span"]["route"], "/api/runs", "{in_request}");
    assert!(events.iter().any(|e| e["message"] == "runledger stopped"), "{log}");
}

async fn log_format_json_writes_one_object_per_line(mut s: TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let log = serve_and_log(&mut s, dir.path(), &["--log-format", "json"], &[]).await;
    assert_json_log(&log);
    s.stop().await;
}

async fn the_log_format_can_come_from_the_environment(mut s: TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let log = serve_and_log(&mut s, dir.path(), &[], &[("RUNLEDGER_LOG_FORMAT", "json")]).await;
    assert_json_log(&log);
    s.stop().await;
}

async fn text_logs_to_a_file_have_no_colour(mut s: TestServer) {
    let dir = tempfile::tempdir().unwrap();
    for (args, envs) in [
        (&[][..], &[][..]),
        (&["--log-format", "text"][..], &[][..]),
        (&[][..], &[("RUNLEDGER_LOG_FORMAT", "text")][..]),
    ] {
        let log = serve_and_log(&mut s, dir.path(), args, envs).await;
        assert!(!log.contains("\x1b["), "ANSI codes written to a file: {log:?}");
        let ready = log
            .lines()
            .find(|l| l.contains("runledger is ready"))
            .unwrap_or_else(|| panic!("no ready line in {log}"));
        assert!(ready.contains(" INFO ") && ready.contains("runledger::cli"), "{ready}");
        assert!(log.lines().all(|l| !l.starts_with('{')), "text, not JSON: {log}");
        assert!(log.contains("request_id=log-42"), "the request's span: {log}");
    }
    s.stop().await;
}

backend_tests!(
    log_format_json_writes_one_object_per_line,
    the_log_format_can_come_from_the_environment,
    text_logs_to_a_file_have_no_colour,
);

fn runledger(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    runledger_in(&std::env::temp_dir(), args, envs)
}

/// The binary run in `dir` (where a default `runledger.db` would go).
fn runledger_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .output()
        .expect("run runledger")
}

/// The admin commands log in the same format, a failure included: a JSON
/// log stays JSON to its last line.
#[test]
fn admin_commands_log_in_the_chosen_format() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let migrated = runledger(&["migrate", "--database-url", &url, "--log-format", "json"], &[]);
    assert!(migrated.status.success());
    let log = String::from_utf8(migrated.stderr).unwrap();
    let events = json_lines(&log);
    assert!(
        events.iter().any(|e| e["message"] == "applied SQLite migrations"),
        "{log}"
    );
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let failed = runledger(
        &["verify", "--database-url", &missing],
        &[("RUNLEDGER_LOG_FORMAT", "json")],
    );
    assert_eq!(failed.status.code(), Some(1));
    let log = String::from_utf8(failed.stderr).unwrap();
    let last = json_lines(&log).pop().unwrap();
    assert_eq!(last["level"], "ERROR", "{log}");
    assert!(
        last["error"].as_str().is_some_and(|e| e.contains("no ledger at")),
        "{last}"
    );
    let text = runledger(
        &[
            "migrate",
            "--database-url",
            &format!("sqlite://{}", dir.path().join("t.db").display()),
        ],
        &[],
    );
    let log = String::from_utf8(text.stderr).unwrap();
    assert!(
        log.contains("applied SQLite migrations") && !log.contains("\x1b["),
        "{log:?}"
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (args, envs) in [
        (&["migrate", "--log-format", "xml"][..], &[][..]),
        (&["migrate"][..], &[("RUNLEDGER_LOG_FORMAT", "yaml")][..]),
    ] {
        let out = runledger_in(dir.path(), args, envs);
        assert_eq!(out.status.code(), Some(2), "{args:?} {envs:?}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing is created"
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("--log-format") && err.contains("text") && err.contains("json"),
            "{err}"
        );
    }
}

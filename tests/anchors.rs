//! The head anchored outside the database, through the real binary on both
//! backends: the server writes anchors while it runs and when it stops;
//! `verify` reports a truncated tail, a re-sealed chain and a forged
//! anchor; `serve` and `rebuild` refuse a log behind its anchors.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Backend, Node, TestServer};
use runledger_events::{EventEnvelope, Sealer};
use serde_json::{json, Value};

/// A folder for the anchors file and the key, outside the database.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn anchors(&self) -> PathBuf {
        self.dir.path().join("ledger.anchors")
    }

    fn key(&self) -> PathBuf {
        let path = self.dir.path().join("anchor.key");
        if !path.exists() {
            std::fs::write(&path, "c2VjcmV0IGtleSBvZiB0aGUgb3BlcmF0b3IsIDMyIGJ5dGVz\n").unwrap();
        }
        path
    }

    /// The anchors file, one JSON object a line.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.anchors())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn positions(&self) -> Vec<i64> {
        self.lines().iter().map(|a| a["position"].as_i64().unwrap()).collect()
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn serve(s: &TestServer, args: &[&str]) -> Node {
    let (child, base) = common::spawn_binary_with(&s.database_url(), "127.0.0.1:0", args);
    Node { child, base }
}

/// Stops the server as an operator does (SIGTERM) and waits for it.
fn stop(mut node: Node) {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = node.child.wait().unwrap();
    assert!(status.success(), "the server stopped with {status}");
}

/// Runs `serve`, which must refuse to start; returns what it said.
fn refused_start(s: &TestServer, args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &s.database_url()])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve started on a log behind its anchors: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    text(&out)
}

/// Creates `n` runs, one after the other (one event each).
async fn create_runs(node: &Node, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let reply = client
            .post(format!("{}/api/runs", node.base))
            .json(&json!({"task_name": format!("anchored-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 201);
    }
}

fn verify(s: &TestServer, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["verify"];
    all.extend(args);
    let out = s.cli(&all);
    (out.status.code(), text(&out))
}

/// Lets the test change the log as an attacker with access to the database
/// would: the append-only guards go first.
async fn disable_guards(s: &TestServer) {
    let statements: &[&str] = match &s.backend {
        Backend::Sqlite { .. } => &[
            "DROP TRIGGER events_are_append_only_update",
            "DROP TRIGGER events_are_append_only_delete",
        ],
        Backend::Postgres { .. } => &["ALTER TABLE events DISABLE TRIGGER USER"],
    };
    for sql in statements {
        s.exec_sql(sql).await.unwrap();
    }
}

async fn hash_at(s: &TestServer, position: i64) -> String {
    s.query_strings(&format!("SELECT hash FROM events WHERE position = {position}"))
        .await
        .remove(0)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// (a) and (d): an intact ledger verifies and serves again; after its last
/// events are deleted, verify names the first missing position and neither
/// serve nor rebuild runs on it.
async fn a_truncated_tail_is_reported_and_refused(mut s: TestServer) {
    s.shutdown().await;
    let outside = Outside::new();
    let anchors = outside.anchors();
    let node = serve(&s, &["--anchors", arg(&anchors), "--anchor-every-events", "4"]);
    create_runs(&node, 10).await;
    stop(node);
    let head = s.event_count().await;
    assert_eq!(head, 10);
    assert_eq!(outside.positions().last(), Some(&head), "{:?}", outside.lines());

    let (code, out) = verify(&s, &["--anchors", arg(&anchors)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("hash chain intact") && out.contains("agree with the log"),
        "{out}"
    );
    // An intact ledger serves again, and its new head is anchored too.
    let node = serve(&s, &["--anchors", arg(&anchors)]);
    create_runs(&node, 1).await;
    stop(node);
    assert_eq!(outside.positions().last(), Some(&11));

    disable_guards(&s).await;
    assert_eq!(s.exec_sql("DELETE FROM events WHERE position > 8").await, Ok(3));
    let (code, out) = verify(&s, &["--anchors", arg(&anchors)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("hash chain intact"),
        "the chain itself still verifies: {out}"
    );
    assert!(
        out.contains("truncated at position 9: the log ends at position 8") && out.contains("records position 11"),
        "{out}"
    );
    let refused = refused_start(&s, &["--anchors", arg(&anchors)]);
    assert!(
        refused.contains("refusing to start: the log is behind its anchors file")
            && refused.contains("truncated at position 9"),
        "{refused}"
    );
    let rebuild = s.cli(&["rebuild", "--anchors", arg(&anchors)]);
    assert!(!rebuild.status.success());
    assert!(text(&rebuild).contains("refusing to rebuild"), "{}", text(&rebuild));
    s.stop().await;
}

/// (b): an event edited and every hash after it recomputed with the public
/// chain function passes the chain check, not the anchors.
async fn a_resealed_chain_is_reported_at_the_anchored_position(mut s: TestServer) {
    s.shutdown().await;
    let outside = Outside::new();
    let anchors = outside.anchors();
    let node = serve(&s, &["--anchors", arg(&anchors), "--anchor-every-events", "4"]);
    create_runs(&node, 10).await;
    stop(node);
    let anchored = outside.positions();
    assert!(anchored.len() >= 2 && anchored[0] >= 2, "{anchored:?}");

    // The attacker edits position 2 and re-seals it and everything after it.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("log.ndjson");
    assert!(s.cli(&["export", "--output", arg(&export)]).status.success());
    let events: Vec<EventEnvelope> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut sealer = Sealer::new(1, events[0].hash.clone(), Some(events[0].recorded_at));
    disable_guards(&s).await;
    for mut event in events.into_iter().skip(1) {
        if event.position == 2 {
            event.data["task_name"] = json!("rewritten");
        }
        let sealed = sealer.reseal(event);
        let e = &sealed.envelope;
        let sql = format!(
            "UPDATE events SET data = '{}', prev_hash = '{}', hash = '{}' WHERE position = {}",
            sealed.data.replace('\'', "''"),
            e.prev_hash,
            e.hash,
            e.position
        );
        assert_eq!(s.exec_sql(&sql).await, Ok(1));
    }

    let (code, out) = verify(&s, &["--anchors", arg(&anchors)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("hash chain intact"),
        "the re-sealed chain is consistent: {out}"
    );
    assert!(
        out.contains(&format!("re-sealed at position {}", anchored[0])) && out.contains("positions 1.."),
        "{out}"
    );
    let refused = refused_start(&s, &["--anchors", arg(&anchors)]);
    assert!(
        refused.contains(&format!("re-sealed at position {}", anchored.last().unwrap())),
        "{refused}"
    );
    s.stop().await;
}

/// (c): with a key, an anchor line someone else wrote is reported, and the
/// server refuses the anchors file; the right key is needed to trust it.
async fn with_a_key_a_forged_anchor_is_reported(mut s: TestServer) {
    s.shutdown().await;
    let outside = Outside::new();
    let (anchors, key) = (outside.anchors(), outside.key());
    let keyed = ["--anchors", arg(&anchors), "--anchor-key-file", arg(&key)];
    let mut args = keyed.to_vec();
    args.extend(["--anchor-every-events", "3"]);
    let node = serve(&s, &args);
    create_runs(&node, 7).await;
    stop(node);
    let lines = outside.lines();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(
        lines.iter().all(|a| a["hmac"].as_str().is_some_and(|h| h.len() == 64)),
        "{lines:?}"
    );
    let (code, out) = verify(&s, &keyed);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("signatures checked with the anchor key"), "{out}");

    // Someone without the key moves the first anchor back to position 1, with
    // that event's real hash, keeping the old signature.
    let mut forged = lines.clone();
    forged[0]["position"] = json!(1);
    forged[0]["hash"] = json!(hash_at(&s, 1).await);
    let text_of = |lines: &[Value]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(&anchors, text_of(&forged)).unwrap();
    let (code, out) = verify(&s, &keyed);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("forged anchor on line 1 (position 1): its signature does not verify"),
        "{out}"
    );
    let refused = refused_start(&s, &keyed);
    assert!(
        refused.contains("refusing to start") && refused.contains("forged anchor on line 1"),
        "{refused}"
    );

    // An unsigned line appended, and another key: both are forgeries to it.
    std::fs::write(&anchors, text_of(&lines)).unwrap();
    let unsigned = json!({"position": 2, "hash": hash_at(&s, 2).await, "at": "2026-01-01T00:00:00.000000Z"});
    std::fs::write(&anchors, text_of(&lines) + &format!("{unsigned}\n")).unwrap();
    let (code, out) = verify(&s, &keyed);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "forged anchor on line {} (position 2): it is not signed",
            lines.len() + 1
        )),
        "{out}"
    );
    std::fs::write(&anchors, text_of(&lines)).unwrap();
    let (code, out) = verify(
        &s,
        &[
            "--anchors",
            arg(&anchors),
            "--anchor-key",
            "another key of enough bytes",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("forged anchor on line 1"), "{out}");
    // Without a key the signatures are not checked, and the log agrees.
    let (code, out) = verify(&s, &["--anchors", arg(&anchors)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no anchor key was given: signatures not checked"), "{out}");
    s.stop().await;
}

/// (e): anchors are written while the server runs, by count and by time,
/// each recording the hash at its position, and once more when it stops.
async fn the_server_anchors_its_head_while_serving_and_at_shutdown(mut s: TestServer) {
    s.shutdown().await;
    let outside = Outside::new();
    let anchors = outside.anchors();
    let node = serve(
        &s,
        &[
            "--anchors",
            arg(&anchors),
            "--anchor-every-events",
            "3",
            "--anchor-every-secs",
            "0",
        ],
    );
    for expected in [3, 6] {
        create_runs(&node, 3).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while outside.positions().last() != Some(&expected) {
            assert!(
                Instant::now() < deadline,
                "no anchor at {expected}: {:?}",
                outside.positions()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // One more event is fewer than three: not anchored while serving.
    create_runs(&node, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outside.positions(), [3, 6]);
    stop(node);
    let all = outside.positions();
    assert_eq!(all.last(), Some(&7), "the head is anchored at shutdown: {all:?}");
    for anchor in outside.lines() {
        let position = anchor["position"].as_i64().unwrap();
        assert_eq!(anchor["hash"], hash_at(&s, position).await);
        assert!(anchor.get("hmac").is_none(), "no key, no signature");
    }

    // By time alone: one event, anchored within the period.
    let node = serve(
        &s,
        &[
            "--anchors",
            arg(&anchors),
            "--anchor-every-events",
            "0",
            "--anchor-every-secs",
            "1",
        ],
    );
    create_runs(&node, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while outside.positions().last() != Some(&8) {
        assert!(
            Instant::now() < deadline,
            "no anchor by time: {:?}",
            outside.positions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(node);
    assert_eq!(
        outside.positions().last(),
        Some(&8),
        "nothing new to anchor at shutdown"
    );
    assert_eq!(outside.positions().iter().filter(|p| **p == 8).count(), 1);
    s.stop().await;
}

/// The default place: beside a SQLite database, or named after the
/// PostgreSQL database and schema in the working folder.
async fn the_anchors_file_has_a_default_place(mut s: TestServer) {
    s.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let node = {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &s.database_url()])
            .current_dir(dir.path())
            .env_remove("RUNLEDGER_ANCHORS")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().rsplit(':').next().unwrap().to_owned();
        Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    };
    create_runs(&node, 2).await;
    stop(node);
    let expected = match &s.backend {
        Backend::Sqlite { path, .. } => PathBuf::from(format!("{}.anchors", path.display())),
        Backend::Postgres { url, schema } => {
            let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
            dir.path().join(format!("runledger-{database}.{schema}.anchors"))
        }
    };
    let written = std::fs::read_to_string(&expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    assert_eq!(written.lines().count(), 1, "{written}");
    assert!(written.contains("\"position\":2"), "{written}");
    if let Backend::Sqlite { .. } = &s.backend {
        let (code, out) = verify(&s, &[]);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("1 anchors in") && out.contains("agree with the log"),
            "{out}"
        );
    }
    s.stop().await;
}

backend_tests!(
    a_truncated_tail_is_reported_and_refused,
    a_resealed_chain_is_reported_at_the_anchored_position,
    with_a_key_a_forged_anchor_is_reported,
    the_server_anchors_its_head_while_serving_and_at_shutdown,
    the_anchors_file_has_a_default_place,
);

//! Writers against the `runledger` binary, `kill -9` mid-storm, a restart
//! on the same database: every acknowledged run must be found.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::CONTENT_TYPE;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use crate::fixtures::{Backend, Db};
use crate::{Checks, Plan};

/// The `runledger` binary serving `url`, started as an operator would.
struct Process {
    child: tokio::process::Child,
    base: String,
}

impl Process {
    /// `cwd` is where the server keeps what it writes beside the database
    /// (a PostgreSQL ledger's anchors file), so nothing lands in the checkout.
    async fn start(url: &str, cwd: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
            .current_dir(cwd)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .args(["--rate-limit-per-second", "0"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start runledger");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(base) = line.strip_prefix("runledger listening on ") {
                    return base.to_owned();
                }
            }
            panic!("runledger exited before it listened");
        })
        .await
        .expect("runledger listened within 60 s");
        // Keep reading, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base }
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL runledger");
    }
}

/// Writers creating runs until the process is killed; returns the ids of
/// the acknowledged runs and the writes that failed before the kill.
async fn storm_writer(client: reqwest::Client, base: String, killed: Arc<AtomicBool>) -> (Vec<String>, usize) {
    let (mut acknowledged, mut failed) = (Vec::new(), 0);
    loop {
        let reply = client
            .post(format!("{base}/api/runs"))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"task_name":"storm"}"#)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let id = match reply {
            Ok(reply) if reply.status() == 201 => reply
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|run| run["id"].as_str().map(str::to_owned)),
            _ => None,
        };
        match id {
            Some(id) => acknowledged.push(id),
            None if killed.load(Ordering::SeqCst) => return (acknowledged, failed),
            None => failed += 1,
        }
    }
}

pub async fn storms(backend: &Backend, plan: &Plan, checks: &mut Checks) {
    const WRITERS: usize = 32;
    let db = Db::fresh(backend).await;
    println!(
        "storm: {} storms of {WRITERS} writers against {} serve (rate limit off), kill -9 after 2.5-3.5 s, \
         restart on the same database, GET every acknowledged run",
        plan.storms,
        env!("CARGO_BIN_EXE_runledger")
    );
    let cwd = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut process = Process::start(&db.url(), cwd.path()).await;
    let (mut total_acknowledged, mut total_found) = (0, 0);
    for storm in 1..=plan.storms {
        let client = reqwest::Client::new();
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| tokio::spawn(storm_writer(client.clone(), process.base.clone(), killed.clone())))
            .collect();
        // A different moment of the storm each time.
        let kill_after = Duration::from_millis(2_500 + (Uuid::new_v4().as_u128() % 1_000) as u64);
        tokio::time::sleep(kill_after).await;
        killed.store(true, Ordering::SeqCst);
        process.kill().await;
        let (mut acknowledged, mut failed) = (Vec::new(), 0);
        for writer in writers {
            let (ids, fails) = writer.await.unwrap();
            acknowledged.extend(ids);
            failed += fails;
        }
        let restart = Instant::now();
        process = Process::start(&db.url(), cwd.path()).await;
        let restarted_in = restart.elapsed();
        let found = found(&process.base, &acknowledged).await;
        println!(
            "  storm {storm}: killed at {:.2} s; {} acknowledged, {found} found after a restart of {:.2} s; \
             {failed} writes failed before the kill",
            kill_after.as_secs_f64(),
            acknowledged.len(),
            restarted_in.as_secs_f64()
        );
        checks.expect(
            found == acknowledged.len(),
            format!("storm {storm}: {} acknowledged runs lost", acknowledged.len() - found),
        );
        checks.expect(
            failed == 0,
            format!("storm {storm}: {failed} writes failed before the kill"),
        );
        total_acknowledged += acknowledged.len();
        total_found += found;
    }
    process.kill().await;
    println!("  total: {total_acknowledged} acknowledged, {total_found} found");
    db.remove().await;
}

/// How many of `ids` the server has.
async fn found(base: &str, ids: &[String]) -> usize {
    let client = reqwest::Client::new();
    let hits = AtomicUsize::new(0);
    let misses = Mutex::new(Vec::new());
    futures_util::stream::iter(ids)
        .for_each_concurrent(16, |id| {
            let (client, hits, misses) = (&client, &hits, &misses);
            async move {
                let reply = client
                    .get(format!("{base}/api/runs/{id}"))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match reply.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    other => misses.lock().unwrap().push(format!("{id}: {other:?}")),
                }
            }
        })
        .await;
    for miss in misses.lock().unwrap().iter().take(5) {
        println!("  not found: {miss}");
    }
    hits.into_inner()
}

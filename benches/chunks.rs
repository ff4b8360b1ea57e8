//! LLM chunk streams: RUNS runs streaming at once through the real binary
//! (SQLite). Each run has one producer POSTing to `/api/runs/{id}/chunks`
//! at RATE chunks/s (paced, up to 64 requests in flight per run, as a token
//! stream does not wait for each acknowledgement) and one subscriber on
//! `/api/runs/{id}/stream/chunks?after=0`. Reports chunks/s ingested
//! (acknowledged as durable), the `run.chunks` events they were coalesced
//! into, and chunk-to-subscriber latency (from just before the POST of a
//! chunk to its arrival at the subscriber; one machine's clock) at
//! p50/p99/max. Checks that every subscriber got each acknowledged chunk of
//! its run exactly once, in index order.
//!
//! `cargo bench --bench chunks`; environment: `RUNS` (default 100), `RATE`
//! chunks/s per run (default 50), `CHUNKS_PER_POST` (default 1), `SECONDS`
//! (default 10), `CHUNK_WINDOW_MS` (the server's coalescing window,
//! default 100).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{setting, Checks};

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

/// What one run's subscriber saw: the indexes in arrival order.
struct Seen {
    indexes: Vec<i64>,
    latencies: Vec<u32>,
}

/// Reads one chunk stream to its end (or until `stop`); each chunk's text
/// starts with the microsecond time it was sent at.
async fn subscribe(url: String, stop: Arc<AtomicBool>, delivered: Arc<AtomicU64>) -> Seen {
    let mut seen = Seen {
        indexes: Vec::new(),
        latencies: Vec::new(),
    };
    let client = reqwest::Client::new();
    let Ok(mut resp) = client.get(&url).send().await else {
        return seen;
    };
    let mut buf = String::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(_) => break,
            Err(_) => continue,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if !frame.lines().any(|l| l == "event: chunk") {
                continue;
            }
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(data) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let sent: Option<i64> = data["chunk"].as_str().and_then(|c| c.split(' ').next()?.parse().ok());
            if let (Some(index), Some(sent)) = (data["index"].as_i64(), sent) {
                seen.indexes.push(index);
                seen.latencies.push((now_micros() - sent).max(0) as u32);
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    seen
}

/// Paced POSTs of one run's chunks; returns the chunks acknowledged and
/// the event positions that hold them.
async fn produce(
    client: reqwest::Client,
    base: String,
    run: String,
    rate: u64,
    per_post: u64,
    seconds: u64,
) -> (u64, Vec<i64>) {
    let posts = rate * seconds / per_post.max(1);
    let interval = Duration::from_secs_f64(per_post as f64 / rate.max(1) as f64);
    let inflight = Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..posts {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let permit = inflight.clone().acquire_owned().await.unwrap();
        let (client, url) = (client.clone(), format!("{base}/api/runs/{run}/chunks"));
        tasks.push(tokio::spawn(async move {
            let sent = now_micros();
            let chunks: Vec<String> = (0..per_post).map(|k| format!("{sent} tok{i}-{k} ")).collect();
            let resp = client
                .post(url)
                .json(&serde_json::json!({ "chunks": chunks }))
                .send()
                .await;
            drop(permit);
            let body: serde_json::Value = resp.ok()?.json().await.ok()?;
            Some((per_post, body["position"].as_i64()?))
        }));
    }
    let (mut acked, mut positions) = (0, Vec::new());
    for t in tasks {
        if let Ok(Some((n, position))) = t.await {
            acked += n;
            positions.push(position);
        }
    }
    (acked, positions)
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let runs: usize = if quick { 4 } else { setting("RUNS", 100) };
    let rate: u64 = if quick { 20 } else { setting("RATE", 50) };
    let per_post: u64 = setting("CHUNKS_PER_POST", 1u64).max(1);
    let seconds: u64 = if quick { 1 } else { setting("SECONDS", 10) };
    let window_ms: u64 = setting("CHUNK_WINDOW_MS", 100);

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit-per-second", "0"])
        .args(["--chunk-window-ms", &window_ms.to_string()])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.path().join("chunks.db").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start runledger");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut checks = Checks::default();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut ids = Vec::with_capacity(runs);
        for i in 0..runs {
            let run: serde_json::Value = client
                .post(format!("{base}/api/runs"))
                .json(&serde_json::json!({"task_name": format!("llm-{}", i % 10)}))
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("a run");
            let id = run["id"].as_str().expect("an id").to_owned();
            client
                .post(format!("{base}/api/runs/{id}/start"))
                .json(&serde_json::json!({}))
                .send()
                .await
                .expect("start");
            ids.push(id);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let subscribers: Vec<_> = ids
            .iter()
            .map(|id| {
                let url = format!("{base}/api/runs/{id}/stream/chunks?after=0");
                tokio::spawn(subscribe(url, stop.clone(), delivered.clone()))
            })
            .collect();
        let started = Instant::now();
        let producers: Vec<_> = ids
            .iter()
            .map(|id| tokio::spawn(produce(client.clone(), base.clone(), id.clone(), rate, per_post, seconds)))
            .collect();
        let mut acked = Vec::with_capacity(runs);
        let mut events = std::collections::HashSet::new();
        for p in producers {
            let (n, positions) = p.await.expect("a producer");
            acked.push(n);
            events.extend(positions);
        }
        let ingest_secs = started.elapsed().as_secs_f64();
        let total: u64 = acked.iter().sum();
        // End every run: each stream closes once it has sent every chunk.
        for id in &ids {
            let _ = client
                .post(format!("{base}/api/runs/{id}/end"))
                .json(&serde_json::json!({"end_reason": "success"}))
                .send()
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let all: Vec<Seen> = futures_util::future::join_all(subscribers)
            .await
            .into_iter()
            .map(|s| s.expect("a subscriber"))
            .collect();
        let mut latencies: Vec<u32> = all.iter().flat_map(|s| s.latencies.iter().copied()).collect();
        latencies.sort_unstable();
        for (i, seen) in all.iter().enumerate() {
            let expected: Vec<i64> = (1..=acked[i] as i64).collect();
            checks.expect(
                seen.indexes == expected,
                format!(
                    "run {i}: {} chunks delivered for {} acknowledged, in order and once each",
                    seen.indexes.len(),
                    acked[i]
                ),
            );
        }
        println!(
            "LLM chunk streams: {runs} runs at once, {rate} chunks/s each ({per_post} per POST, up to 64 POSTs in flight per run) for {seconds} s; coalescing window {window_ms} ms / 64 KiB; one subscriber per run from after=0"
        );
        println!(
            "server: the runledger binary of this build profile on SQLite (WAL, synchronous=FULL), {} cores shared with the clients",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "ingested {total} chunks in {ingest_secs:.1} s: {:.0} chunks/s acknowledged durable, in {} run.chunks events ({:.1} chunks per event)",
            total as f64 / ingest_secs,
            events.len(),
            total as f64 / events.len().max(1) as f64
        );
        println!(
            "chunk-to-subscriber latency ms (POST sent to SSE frame read, window included): p50 {:.1}  p99 {:.1}  max {:.1}  ({} frames)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            latencies.len()
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    checks.finish();
}

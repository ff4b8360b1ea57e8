//! SSE fan-out: N subscribers on one node (the real binary, SQLite) while an
//! appender creates runs at a fixed rate. Reports append→deliver latency
//! (from each event's `recorded_at` to its arrival at the subscriber; both
//! clocks are this machine's) at p50/p99/max, deliveries/s, and the server's
//! peak RSS.
//!
//! `cargo bench --bench streams`; environment: `SUBSCRIBERS` (default 200),
//! `RATE` events/s (default 1000), `SECONDS` (default 10), `FILTER`
//! (`none`: every subscriber follows the whole log; `task`: subscriber i
//! follows task `t-(i mod 100)`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Reads one SSE response, recording the latency of every frame.
async fn subscribe(url: String, latencies: Arc<Mutex<Vec<u32>>>, delivered: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let Ok(mut resp) = client.get(&url).send().await else {
        return;
    };
    let mut buf = String::new();
    let mut local = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(_) => break,
            Err(_) => continue,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                if let Some(at) = data.split("\"recorded_at\":\"").nth(1).and_then(|r| r.get(..27)) {
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
                        let latency = (now_micros() - t.timestamp_micros()).max(0) as u32;
                        local.push(latency);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if local.len() >= 1024 {
            latencies.lock().unwrap().append(&mut local);
        }
    }
    latencies.lock().unwrap().append(&mut local);
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let subscribers = if quick { 4 } else { env("SUBSCRIBERS", 200) };
    let rate = if quick { 100 } else { env("RATE", 1000) };
    let seconds = if quick { 1 } else { env("SECONDS", 10) };
    let by_task = std::env::var("FILTER").is_ok_and(|f| f == "task");

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit-per-second",
            "0",
            "--database-url",
        ])
        .arg(format!("sqlite://{}", dir.path().join("streams.db").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start runledger");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    let pid = server.id();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut subs = Vec::new();
        for i in 0..subscribers {
            let url = if by_task {
                format!("{base}/api/events/stream?after=0&task_name=t-{}", i % 100)
            } else {
                format!("{base}/api/events/stream?after=0")
            };
            subs.push(tokio::spawn(subscribe(url, latencies.clone(), delivered.clone(), stop.clone())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_idle = rss_kib(pid);
        let client = reqwest::Client::new();
        let total = rate * seconds;
        let started = Instant::now();
        let peak = Arc::new(AtomicU64::new(rss_idle));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        // Paced appends: request i is sent at i / rate seconds.
        let mut inflight = Vec::new();
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let (client, base) = (client.clone(), base.clone());
            inflight.push(tokio::spawn(async move {
                let body = serde_json::json!({"task_name": format!("t-{}", i % 100)});
                client.post(format!("{base}/api/runs")).json(&body).send().await.map(|r| r.status().is_success())
            }));
        }
        let mut ok = 0;
        for f in inflight {
            ok += matches!(f.await, Ok(Ok(true))) as u64;
        }
        let append_secs = started.elapsed().as_secs_f64();
        let expected = if by_task { ok * subscribers / 100 } else { ok * subscribers };
        // Wait for every delivery (a shortfall after this is a loss, not lag).
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain_secs = started.elapsed().as_secs_f64() - append_secs;
        stop.store(true, Ordering::Relaxed);
        for s in subs {
            let _ = s.await;
        }
        let _ = sampler.await;
        let mut all = latencies.lock().unwrap().clone();
        all.sort_unstable();
        println!(
            "SSE fan-out: {subscribers} subscribers ({}), {rate} events/s target for {seconds} s, server = release binary on SQLite, 2 cores shared with the clients",
            if by_task { "each one task of 100" } else { "each the whole log" }
        );
        println!("appended {ok} events in {append_secs:.1} s ({:.0}/s)", ok as f64 / append_secs);
        println!("deliveries {} of {expected} expected ({drain_secs:.1} s after the last append)", all.len());
        println!(
            "latency ms: p50 {:.1}  p99 {:.1}  max {:.1}",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 1.0)
        );
        println!("server RSS: idle {} MiB, peak {} MiB", rss_idle / 1024, peak.load(Ordering::Relaxed) / 1024);
    });
    let _ = server.kill();
    let _ = server.wait();
}

//! Append throughput on SQLite (WAL, synchronous=FULL), in one run:
//!
//! - `log`: the group-commit writer appending one ~300-byte event per call,
//!   from 1, 8 and 64 concurrent writers, each moving to a new run's stream
//!   every 8 events (`log-long`: each writer on one stream that only grows);
//! - `command`: the full create-run path (decide with the fold, append,
//!   upsert the runs projection), from the same numbers of writers;
//! - `raw`: the same rows, precomputed, inserted into a bare table by a
//!   cached prepared statement, 64 per transaction — the limit of the disk
//!   and SQLite on this machine.
//!
//! `cargo bench --bench append`; `RUNLEDGER_BENCH_EVENTS` sets the events per
//! many-writer case (default 100000).

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use runledger::ledger::{DatabaseUrl, Ledger};
use runledger_events::chain::{canonical_json, HashInput, GENESIS_HASH};
use runledger_events::sqlite::{self, Writer};
use runledger_events::{ExpectedVersion, Metadata, NewEvent, Timestamp};
use serde_json::json;
use uuid::Uuid;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "run.logged".into(),
        schema_version: 1,
        data: json!({
            "level": "info",
            "log_type": "stdout",
            "message": format!("step {i} finished; {}", "x".repeat(120)),
            "data": {"attempt": 1, "rows": i}
        }),
    }
}

fn fresh_db(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join(format!("{name}.db"));
    (dir, path)
}

async fn migrate(path: &Path) {
    Ledger::open(&DatabaseUrl::Sqlite(path.to_owned()))
        .await
        .expect("migrate");
}

/// `run_length` events per stream: a writer moves to a new run's stream
/// (a time-ordered id, as real runs have) after that many appends.
async fn log_append(writers: usize, total: usize, run_length: usize) -> f64 {
    let (_dir, path) = fresh_db("log");
    migrate(&path).await;
    let writer = Arc::new(Writer::start(&path).unwrap());
    let per = total / writers;
    let start = Instant::now();
    common::concurrently(writers, |_| {
        let writer = writer.clone();
        async move {
            let mut stream = format!("run-{}", Uuid::now_v7());
            let meta = Metadata::actor("bench");
            for i in 0..per {
                if i % run_length == 0 && i > 0 {
                    stream = format!("run-{}", Uuid::now_v7());
                }
                let e = [event(i)];
                let meta = meta.clone();
                let stream = stream.clone();
                writer
                    .submit(move |tx| tx.append(&stream, ExpectedVersion::Any, &e, &meta))
                    .await
                    .expect("append");
            }
        }
    })
    .await;
    let rate = (per * writers) as f64 / start.elapsed().as_secs_f64();
    let (batches, units, _, commit_us) = writer.stats().snapshot();
    eprintln!(
        "  log/{writers}: {batches} batches, {:.1} units/batch, {:.0} us/commit",
        units as f64 / batches as f64,
        commit_us as f64 / batches as f64
    );
    rate
}

async fn command_path(writers: usize, total: usize) -> f64 {
    let (_dir, path) = fresh_db("command");
    let ledger = Arc::new(Ledger::open(&DatabaseUrl::Sqlite(path)).await.unwrap());
    let per = total / writers;
    let start = Instant::now();
    common::concurrently(writers, |w| {
        let ledger = ledger.clone();
        async move { common::create_runs(&ledger, w, per).await }
    })
    .await;
    (per * writers) as f64 / start.elapsed().as_secs_f64()
}

fn raw_limit(total: usize, batch: usize) -> f64 {
    let (_dir, path) = fresh_db("raw");
    let conn = sqlite::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, event_id TEXT, stream_id TEXT, stream_version INTEGER, \
         event_type TEXT, schema_version INTEGER, data TEXT, metadata TEXT, recorded_at TEXT, prev_hash TEXT, hash TEXT)",
    )
    .unwrap();
    let metadata = canonical_json(&serde_json::to_value(Metadata::actor("bench")).unwrap());
    let recorded_at = Timestamp::now().to_rfc3339();
    let mut prev = GENESIS_HASH.to_owned();
    let rows: Vec<_> = (0..total)
        .map(|i| {
            let e = event(i);
            let id = e.event_id.to_string();
            let data = canonical_json(&e.data);
            let position = i as i64 + 1;
            let hash = HashInput {
                position,
                event_id: &id,
                stream_id: "run-bench",
                stream_version: position,
                event_type: &e.event_type,
                schema_version: 1,
                data: &data,
                metadata: &metadata,
                recorded_at: &recorded_at,
                prev_hash: &prev,
            }
            .hash();
            (position, id, data, std::mem::replace(&mut prev, hash.clone()), hash)
        })
        .collect();
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut stmt = conn
            .prepare_cached("INSERT INTO events VALUES (?1, ?2, 'run-bench', ?1, 'run.logged', 1, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        for (position, id, data, prev_hash, hash) in chunk {
            stmt.execute(rusqlite::params![
                position,
                id,
                data,
                metadata,
                recorded_at,
                prev_hash,
                hash
            ])
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn row(case: &str, writers: &str, events: usize, rate: f64, raw: f64) {
    println!("{case:<10} {writers:>8} {events:>9} {rate:>12.0} {:>10.2}", rate / raw);
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (e.g. from
    // `cargo test --benches`) means a quick smoke run.
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let many: usize = std::env::var("RUNLEDGER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let many = if quick { 2_000 } else { many };
    let one = (many / 10).max(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "append throughput: SQLite {}, WAL, synchronous=FULL, {cores} cores, ~300-byte events",
        rusqlite::version()
    );
    println!("databases under {}", env!("CARGO_TARGET_TMPDIR"));
    println!(
        "{:<10} {:>8} {:>9} {:>12} {:>10}",
        "case", "writers", "events", "events/s", "x raw"
    );
    let raw = raw_limit(many, 64);
    row("raw/64tx", "-", many, raw, raw);
    for (writers, total) in [(1, one), (8, many), (64, many)] {
        row(
            "log",
            &writers.to_string(),
            total,
            rt.block_on(log_append(writers, total, 8)),
            raw,
        );
    }
    // The worst case for the stream index: each writer on one ever-growing stream.
    row(
        "log-long",
        "64",
        many,
        rt.block_on(log_append(64, many, usize::MAX)),
        raw,
    );
    for (writers, total) in [(1, one), (8, many), (64, many)] {
        row(
            "command",
            &writers.to_string(),
            total,
            rt.block_on(command_path(writers, total)),
            raw,
        );
    }
}

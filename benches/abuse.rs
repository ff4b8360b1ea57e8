//! Issue 14's abuse experiments against the real server, on SQLite and (when
//! `RUNLEDGER_BENCH_POSTGRES_URL` is set) PostgreSQL, each on a fresh ledger:
//!
//! - `neighbours`: 16 ordinary writers beside 2 whose every request must
//!   fail: a NUL in a tag value (refused with 422 at the input boundary), then
//!   a task a database trigger rejects (failing inside a group-commit batch,
//!   500). No ordinary write may fail, and only ordinary writes are logged;
//! - `half-open`: 3,000 connections that send part of a request's headers
//!   and stall; each must be closed within the header-read timeout + 3 s,
//!   and `/healthz` must answer meanwhile;
//! - `storm`: 32 writers against the `runledger` binary, `kill -9` mid-storm,
//!   restart on the same database: every acknowledged (201) run is found.
//!   Three storms.
//!
//! `cargo bench --bench abuse`; `RUNLEDGER_BENCH_SECS` sets how long each
//! neighbours variant runs (default 8). Exits 1 when a check fails.

#[path = "common/mod.rs"]
mod common;
#[path = "abuse/fixtures.rs"]
mod fixtures;
#[path = "abuse/half_open.rs"]
mod half_open;
#[path = "abuse/neighbours.rs"]
mod neighbours;
#[path = "abuse/storm.rs"]
mod storm;

use std::time::Duration;

use fixtures::Backend;
use neighbours::Bad;

struct Plan {
    neighbours_for: Duration,
    half_open: usize,
    storms: usize,
}

use common::Checks;

async fn backend(name: &str, backend: Backend, plan: &Plan, checks: &mut Checks) {
    println!("== {name}");
    neighbours::neighbours(&backend, plan, Bad::NulTag, checks).await;
    neighbours::neighbours(&backend, plan, Bad::Boom, checks).await;
    half_open::half_open(&backend, plan, checks).await;
    storm::storms(&backend, plan, checks).await;
}

/// The soft limit on open files, as the kernel reports it.
fn open_files_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (e.g. from
    // `cargo test --benches`) means a quick smoke run.
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let secs: u64 = common::setting("RUNLEDGER_BENCH_SECS", 8);
    let plan = if quick {
        Plan {
            neighbours_for: Duration::from_secs(1),
            half_open: 300,
            storms: 1,
        }
    } else {
        Plan {
            neighbours_for: Duration::from_secs(secs),
            half_open: 3_000,
            storms: 3,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "abuse: the real HTTP server on 127.0.0.1, load from this process, {cores} cores (shared), open-files limit {}",
        open_files_limit()
    );
    let mut checks = Checks::default();
    rt.block_on(async {
        backend(
            &format!("SQLite {} (temporary file, WAL)", rusqlite::version()),
            Backend::Sqlite,
            &plan,
            &mut checks,
        )
        .await;
        if let Some((base, url, version)) = common::postgres_from_env().await {
            let name = format!("PostgreSQL {version} (a fresh schema per experiment, dropped after)");
            backend(&name, Backend::Postgres(base, url), &plan, &mut checks).await;
        }
    });
    checks.finish();
}

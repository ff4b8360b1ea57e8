//! Bulk operations on SQLite: 100,000 runs (20 tasks, ended with success,
//! each with a payload) made through the real command path, soft-deleted in
//! one bulk call, then timed: a bulk restore of all of them by filter, and a
//! bulk rerun of all of them (one new run per task, from the most recent run
//! of each). Each call is one transaction through the same code the HTTP
//! handlers call. `cargo bench --bench bulk`; `RUNLEDGER_BENCH_RUNS` sets the
//! number of runs (default 100000).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use runledger::commands::{Command, CreateRun};
use runledger::domain::TaskName;
use runledger::ledger::bulk::{BulkCall, BulkKind, Selector};
use runledger::ledger::{DatabaseUrl, Ledger};
use runledger_events::Metadata;
use runledger_projections::RunFilter;

fn main() {
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let runs: usize = std::env::var("RUNLEDGER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs = if quick { 500 } else { runs };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = Arc::new(
            Ledger::open(&DatabaseUrl::Sqlite(dir.path().join("bulk.db")))
                .await
                .unwrap(),
        );
        let writers = 64;
        let made = Instant::now();
        common::concurrently(writers, |w| {
            let ledger = ledger.clone();
            async move {
                let meta = Metadata::actor("bench");
                for i in 0..runs / writers {
                    let mut create = CreateRun::new(TaskName::parse(&format!("task-{}", w % 20)).unwrap());
                    create.payload = Some(serde_json::json!({"writer": w, "n": i}));
                    ledger.execute(Command::Create(create), meta.clone()).await.unwrap();
                }
            }
        })
        .await;
        let total = runs / writers * writers;
        println!("setup: {total} runs created in {:.1} s", made.elapsed().as_secs_f64());
        let call = |kind, filter: RunFilter| BulkCall {
            kind,
            selection: Selector::Match { filter, except: Vec::new() },
            as_of: None,
            dry_run: false,
            reason: Some("bench".into()),
            cap: total,
            selector: serde_json::json!({"match_all": true}),
        };
        let meta = Metadata::actor("bench");
        let timed = |what: &'static str, report: runledger::ledger::bulk::BulkReport, secs: f64| {
            println!(
                "bulk {what}: {} runs selected, {} affected in {secs:.2} s ({:.0} runs/s)",
                report.selected,
                report.affected,
                report.selected as f64 / secs
            );
        };
        let started = Instant::now();
        let deleted = ledger.bulk(call(BulkKind::Delete, RunFilter::default()), meta.clone()).await.unwrap();
        timed("delete (setup)", deleted, started.elapsed().as_secs_f64());

        let deleted_only = RunFilter {
            statuses: vec![runledger_projections::StatusValue::Deleted],
            ..RunFilter::default()
        };
        let started = Instant::now();
        let restored = ledger.bulk(call(BulkKind::Restore, deleted_only), meta.clone()).await.unwrap();
        timed("restore", restored, started.elapsed().as_secs_f64());

        let started = Instant::now();
        let rerun = ledger.bulk(call(BulkKind::Rerun, RunFilter::default()), meta.clone()).await.unwrap();
        timed("rerun", rerun, started.elapsed().as_secs_f64());
        println!(
            "conditions: SQLite (WAL, synchronous=FULL), one transaction per call, {} cores shared with nothing else of ours",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    });
}

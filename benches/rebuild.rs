//! Rebuild speed on SQLite: a ledger of runs (created, started, heartbeats,
//! ended; ~8 events each) made through the real command path, then every
//! projection dropped and replayed. `cargo bench --bench rebuild`;
//! `RUNLEDGER_BENCH_RUNS` (default 25000 runs, ~200k events);
//! `RUNLEDGER_BENCH_REPEAT` (default 3 rebuilds, each reported, then the best);
//! `RUNLEDGER_BENCH_DB` keeps the ledger in that file and reuses it when it
//! already holds events (to profile or compare rebuilds without re-making it).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use runledger::commands::{Action, Command, CreateRun, RunCommand};
use runledger::domain::TaskName;
use runledger::ledger::{DatabaseUrl, Ledger};
use runledger_events::{EndReason, Metadata, RunEnded};

fn main() {
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let runs: usize = std::env::var("RUNLEDGER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let runs = if quick { 200 } else { runs };
    let repeat: usize = std::env::var("RUNLEDGER_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let repeat = if quick { 1 } else { repeat };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = std::env::var_os("RUNLEDGER_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("rebuild.db"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = Arc::new(Ledger::open(&DatabaseUrl::Sqlite(path)).await.unwrap());
        if *ledger.head().borrow() == 0 {
            make(&ledger, runs).await;
        }
        let mut best = 0f64;
        for _ in 0..repeat {
            let started = Instant::now();
            let (events, runs) = ledger.rebuild().await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let rate = events as f64 / secs;
            best = best.max(rate);
            println!(
                "rebuild (SQLite, WAL, synchronous=FULL): {events} events into {runs} runs in {secs:.2} s = {rate:.0} events/s"
            );
        }
        println!("best of {repeat}: {best:.0} events/s");
    });
}

/// Makes `runs` runs of 8 events each through the command path, from 64 writers.
async fn make(ledger: &Arc<Ledger>, runs: usize) {
    let writers = 64;
    common::concurrently(writers, |w| {
        let ledger = ledger.clone();
        async move {
            let meta = Metadata::actor("bench");
            for _ in 0..runs / writers {
                let mut create = CreateRun::new(TaskName::parse(&format!("task-{}", w % 20)).unwrap());
                create.tags.insert("env".into(), "bench".into());
                let run = match ledger.execute(Command::Create(create), meta.clone()).await.unwrap() {
                    runledger::commands::Outcome::Created(run) => run,
                    other => panic!("{other:?}"),
                };
                let end = RunEnded {
                    end_reason: EndReason::Success,
                    exit_code: Some(0),
                    error: None,
                    result: None,
                    execution_trace: None,
                };
                let mut actions = vec![Action::Start(Default::default())];
                actions.extend(std::iter::repeat_n(Action::Heartbeat, 5));
                actions.push(Action::End(end));
                for action in actions {
                    let cmd = RunCommand {
                        run_id: run.id,
                        expected_version: None,
                        action,
                    };
                    ledger.execute(Command::Run(cmd), meta.clone()).await.unwrap();
                }
            }
        }
    })
    .await;
}

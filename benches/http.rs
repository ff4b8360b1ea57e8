//! Issue 15, item 3: what a command costs over HTTP, against the ceiling of
//! the same stack. In one run, each case from 64 keep-alive connections for
//! a fixed time, the load generated in this process:
//!
//! - `ceiling`: axum/hyper/tokio parsing `POST /api/runs`'s body and appending
//!   it to a bare SQLite table (WAL, synchronous=FULL) by group commit;
//! - runledger on a fresh SQLite ledger: `POST /api/runs`, then
//!   `/start`, `/heartbeat` and `/end` on runs made beforehand in the phase
//!   each needs; its ratio to the ceiling, and the writer's batches from
//!   `/metrics`;
//! - the same four on a large ledger, a copy of `RUNLEDGER_BENCH_LEDGER`.
//!
//! `cargo bench --bench http`; `RUNLEDGER_BENCH_SECS` sets each case's
//! length (default 10); `RUNLEDGER_BENCH_ONLY=create,start` runs only those
//! cases (of `ceiling`, `create`, `start`, `heartbeat`, `end`), to profile
//! one. Run with other arguments than `--bench` alone, or none (as
//! `cargo test --benches` runs it), each case lasts 1 s: a smoke test.
//! Exits 1 when a request failed.

#[path = "http/ceiling.rs"]
mod ceiling;
#[path = "common/mod.rs"]
mod common;
use common::Checks;
#[path = "http/ledger.rs"]
mod ledger;
#[path = "http/load.rs"]
mod load;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::Route;
use load::Report;
use runledger::ledger::{DatabaseUrl, Ledger};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const CONNECTIONS: usize = 64;
/// What sizes the runs made for a transition before anything was measured.
const FALLBACK_RATE: f64 = 5_000.0;

/// A server in this process, stopped by `stop`.
pub struct Serving {
    pub base: String,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Spawns `serve`, which must end once the receiver it is given resolves.
    pub fn spawn<F, Fut>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            base: format!("http://{addr}"),
            stop,
            handle: tokio::spawn(serve(stopped)),
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().expect("the server ran");
    }
}

/// A group-commit writer's work: transactions, units in them, seconds in COMMIT.
#[derive(Clone, Copy, Default)]
pub struct Commits {
    pub batches: f64,
    pub units: f64,
    pub seconds: f64,
}

impl Commits {
    fn since(self, before: Commits) -> Commits {
        Commits {
            batches: self.batches - before.batches,
            units: self.units - before.units,
            seconds: self.seconds - before.seconds,
        }
    }

    fn shown(self, elapsed: Duration) -> String {
        if self.batches == 0.0 {
            return "group commit: no commits".into();
        }
        format!(
            "group commit: {:.0} commits ({:.0}/s), {:.1} units per batch, COMMIT {:.2} ms mean ({:.0}% of the time)",
            self.batches,
            self.batches / elapsed.as_secs_f64(),
            self.units / self.batches,
            self.seconds / self.batches * 1e3,
            self.seconds / elapsed.as_secs_f64() * 1e2
        )
    }
}

struct Plan {
    secs: Duration,
    only: Option<Vec<String>>,
}

impl Plan {
    fn runs(&self, case: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|o| o == case))
    }
}

/// The server's runtime and the load's, each with its own named threads, so
/// that a profile tells them apart.
struct Runtimes {
    server: Runtime,
    load: Runtime,
}

/// What a load report must show: no failed request, and runs to act on
/// until the time was up.
fn check_report(checks: &mut Checks, what: &str, report: &Report) {
    checks.expect(
        report.errors() == 0,
        format!(
            "{what}: {} requests failed ({})",
            report.errors(),
            report.failures_shown()
        ),
    );
    checks.expect(
        report.exhausted == 0,
        format!(
            "{what}: {} connections ran out of runs to act on before the time was up",
            report.exhausted
        ),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn figures(route: &str, report: &Report) -> String {
    format!(
        "  {route:<30} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  ({} requests in {:.2} s)",
        report.rate(),
        ms(report.percentile(0.5)),
        ms(report.percentile(0.99)),
        report.errors(),
        report.requests,
        report.elapsed.as_secs_f64()
    )
}

/// The ceiling's figures, if it ran.
fn ceiling(rt: &Runtimes, plan: &Plan, checks: &mut Checks) -> Option<Report> {
    if !plan.runs("ceiling") {
        return None;
    }
    println!(
        "== ceiling: axum JSON handler, bare SQLite table, group commit (one writer thread, one transaction per batch)"
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (serving, stats) = rt.server.block_on(ceiling::start(&dir.path().join("ceiling.db")));
    let case = load::Case {
        targets: {
            let url = format!("{}/api/runs", serving.base);
            Arc::new(move |_, _| Some(url.clone()))
        },
        body: ledger::CREATE_BODY,
    };
    let before = *stats.lock().unwrap();
    let report = rt.load.block_on(load::run(case, CONNECTIONS, plan.secs));
    let done = stats.lock().unwrap().since(before);
    rt.server.block_on(serving.stop());
    println!("{}", figures("POST /api/runs", &report));
    println!("      {}", done.shown(report.elapsed));
    check_report(checks, "ceiling", &report);
    Some(report)
}

/// The four routes on the ledger at `path`.
fn ledger_cases(rt: &Runtimes, path: &Path, plan: &Plan, ceiling: Option<&Report>, checks: &mut Checks) {
    let ledger = Arc::new(
        rt.server
            .block_on(Ledger::open(&DatabaseUrl::Sqlite(path.to_owned())))
            .expect("open the ledger"),
    );
    let serving = rt.server.block_on(ledger::serve(ledger.clone()));
    let mut fastest: Option<f64> = None;
    for route in Route::ALL {
        if !plan.runs(route.name()) {
            continue;
        }
        // Twice what the fastest route so far could use, so that no
        // connection runs out.
        let enough = (fastest.unwrap_or(FALLBACK_RATE) * plan.secs.as_secs_f64() * 2.0) as usize + 4 * CONNECTIONS;
        let (case, setup) = rt
            .server
            .block_on(ledger::case(&ledger, path, &serving.base, route, CONNECTIONS, enough));
        let before = rt.load.block_on(ledger::commits(&serving.base));
        let report = rt.load.block_on(load::run(case, CONNECTIONS, plan.secs));
        let after = rt.load.block_on(ledger::commits(&serving.base));
        println!("{}", figures(route.shown(), &report));
        if let Some(ceiling) = ceiling {
            println!(
                "      vs the ceiling: {:.2}x its req/s, {:.2}x its p99",
                report.rate() / ceiling.rate(),
                report.percentile(0.99).as_secs_f64() / ceiling.percentile(0.99).as_secs_f64()
            );
        }
        match after {
            Some(after) => println!(
                "      {}",
                after.since(before.unwrap_or_default()).shown(report.elapsed)
            ),
            None => println!("      group commit: /metrics has no runledger_commit_* histograms"),
        }
        if let Some(setup) = setup.shown() {
            println!("      ({setup})");
        }
        check_report(checks, route.shown(), &report);
        fastest = Some(fastest.unwrap_or(0.0).max(report.rate()));
    }
    rt.server.block_on(serving.stop());
    drop(ledger);
}

fn fresh(rt: &Runtimes, plan: &Plan, ceiling: Option<&Report>, checks: &mut Checks) {
    if !Route::ALL.iter().any(|r| plan.runs(r.name())) {
        return;
    }
    println!("== runledger, fresh SQLite ledger (temporary file)");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    ledger_cases(rt, &dir.path().join("fresh.db"), plan, ceiling, checks);
}

/// The large ledger's case, on a copy of the file (and its WAL, if any) so
/// that the bench does not grow it.
fn large(rt: &Runtimes, plan: &Plan, ceiling: Option<&Report>, checks: &mut Checks) {
    if !Route::ALL.iter().any(|r| plan.runs(r.name())) {
        return;
    }
    let Some(source) = std::env::var_os("RUNLEDGER_BENCH_LEDGER").map(PathBuf::from) else {
        println!(
            "== runledger, large ledger SKIPPED (the 1M-run case): set RUNLEDGER_BENCH_LEDGER to an existing \
             SQLite ledger file, e.g. target/bench-fixtures/ledger-1000000-v1.db, which benches/common/fixture.rs \
             builds (RUNLEDGER_BENCH_SIZES=1000000 cargo bench --bench queries); the bench works on a copy"
        );
        return;
    };
    if !source.is_file() {
        let failure = format!("RUNLEDGER_BENCH_LEDGER={} is not a file", source.display());
        println!("== runledger, large ledger FAILED: {failure}");
        checks.0.push(failure);
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("large.db");
    let copying = Instant::now();
    let mut copies = vec![(source.clone(), path.clone())];
    let wal = PathBuf::from(format!("{}-wal", source.display()));
    if wal.is_file() {
        copies.push((wal, PathBuf::from(format!("{}-wal", path.display()))));
    }
    for (from, to) in copies {
        std::fs::copy(&from, &to).expect("copy the large ledger");
        // Written back now, not under the first case's fsyncs.
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .expect("sync the copy");
    }
    let (runs, events) = ledger::size(&path);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "== runledger, large ledger: a copy of {} ({runs} runs, {events} events, {:.0} MiB, copied and synced in {:.1} s)",
        source.display(),
        bytes as f64 / (1024.0 * 1024.0),
        copying.elapsed().as_secs_f64()
    );
    ledger_cases(rt, &path, plan, ceiling, checks);
}

fn main() {
    // `cargo bench` passes `--bench` alone; anything else is a smoke run,
    // including no argument at all, which is what `cargo test --benches` passes.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args != ["--bench"];
    let secs: u64 = std::env::var("RUNLEDGER_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("RUNLEDGER_BENCH_ONLY")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|c| c.trim().to_owned()).collect());
    let plan = Plan {
        secs: Duration::from_secs(if quick { 1 } else { secs.max(1) }),
        only,
    };
    // As `runledger serve` sets it up: its request and command spans are
    // part of what a request costs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let rt = Runtimes {
        server: runtime("server"),
        load: runtime("load"),
    };
    println!(
        "http: {CONNECTIONS} connections (one keep-alive reqwest client each, one request at a time), {:.0} s per case; \
         {cores} cores (shared), the servers (runtime of {cores} threads) and the load (another of {cores}) in this process; \
         SQLite {}, WAL, synchronous=FULL; runledger with its rate limit off and tracing as `runledger serve` sets it \
         (info, to stderr); latency measured by the client",
        plan.secs.as_secs_f64(),
        rusqlite::version()
    );
    let mut checks = Checks::default();
    let ceiling = ceiling(&rt, &plan, &mut checks);
    fresh(&rt, &plan, ceiling.as_ref(), &mut checks);
    large(&rt, &plan, ceiling.as_ref(), &mut checks);
    checks.finish();
}

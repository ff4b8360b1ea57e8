//! A production-sized ledger on demand: `runs` runs (about 3.5 events each)
//! made through the real command path, in this process, from many concurrent
//! writers, kept in a file (SQLite) or a schema (PostgreSQL) and reused by
//! later runs of any bench that asks for the same size.
//!
//! The mix, decided per run by a hash of its number (so every build of a
//! size is alike): 100 tasks with a skewed share (task-0 the busiest), in 4
//! projects; triggered by cron (50 %), api (30 %), manual (10 %) or event
//! (10 %); tags `env` (prod 60 %, staging 30 %, dev 10 %) and `team`; 5 % are
//! children of an earlier run; 4 % stay pending and 3 % running, the rest end:
//! 80 % success, 15 % failed (exit 1–3), 5 % timeout. A quarter of started
//! runs send two heartbeats. A third of failures are retried (the retry is one
//! of the `runs`); runs of one task in ten allow 2 attempts, so a failed retry
//! of theirs is dead-lettered. 2 % of ended runs are soft-deleted. One run
//! (`Fixture::big_run`) has 10,000 log events. Every run has a payload
//! (`customer` one of 1,000, `region` one of 3, `plan.tier` one of 4, and a
//! list of `features`); the last runs made are one bulk retry of task-40's
//! failures, for the `operation_id` filter.
//!
//! Where: `RUNLEDGER_BENCH_FIXTURES` (default `target/bench-fixtures`) holds
//! `ledger-{runs}-v{VERSION}.db`; PostgreSQL uses schema
//! `rl_fixture_{runs}_v{VERSION}`. A build is marked complete only at its end
//! (a `.done` file, a `fixture_done` table), so an interrupted one is redone.
//! A PostgreSQL fixture is vacuumed whenever it is opened (see `vacuum`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use runledger::commands::{Action, Command, CreateRun, Outcome, RetryAction, RunCommand};
use runledger::domain::TaskName;
use runledger::ledger::bulk::{BulkCall, BulkKind, Selector};
use runledger::ledger::{DatabaseUrl, Ledger};
use runledger_events::{EndReason, Metadata, Reason, RunEnded, RunLogged, TriggeredBy};
use runledger_projections::{RunFilter, StatusValue};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use uuid::Uuid;

/// Bump when the mix changes, so that old files are not reused.
const VERSION: u32 = 2;
const WRITERS: usize = 128;
const BIG_RUN_EVENTS: usize = 10_000;

pub struct Fixture {
    pub ledger: Arc<Ledger>,
    pub runs: usize,
    /// How the ledger was reached: `sqlite://…` or the PostgreSQL schema.
    pub location: String,
    /// The run with 10,000 log events.
    pub big_run: Uuid,
    /// Seconds it took to build, `None` when an earlier build was reused.
    pub built_in: Option<f64>,
}

fn dir() -> PathBuf {
    std::env::var_os("RUNLEDGER_BENCH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../bench-fixtures"))
}

impl Fixture {
    /// The SQLite ledger of `runs` runs, built if no complete one exists.
    pub async fn sqlite(runs: usize) -> Self {
        let dir = dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("ledger-{runs}-v{VERSION}.db"));
        let done = path.with_extension("done");
        let location = format!("sqlite://{}", path.display());
        if done.exists() {
            let opened = Instant::now();
            let ledger = Arc::new(Ledger::open(&DatabaseUrl::Sqlite(path)).await.unwrap());
            opened_in(opened);
            let big_run = std::fs::read_to_string(&done).unwrap().trim().parse().unwrap();
            return Self {
                ledger,
                runs,
                location,
                big_run,
                built_in: None,
            };
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let ledger = Arc::new(Ledger::open(&DatabaseUrl::Sqlite(path)).await.unwrap());
        let (big_run, secs) = build(&ledger, runs).await;
        std::fs::write(&done, big_run.to_string()).unwrap();
        Self {
            ledger,
            runs,
            location,
            big_run,
            built_in: Some(secs),
        }
    }

    /// The PostgreSQL ledger of `runs` runs in its own schema of the database
    /// at `base`, built if no complete one exists.
    pub async fn postgres(base: &PgConnectOptions, runs: usize) -> Self {
        let schema = format!("rl_fixture_{runs}_v{VERSION}");
        let mut admin = base.connect().await.expect("connect to PostgreSQL");
        let done: Option<String> = sqlx::query_scalar(&format!("SELECT big_run FROM {schema}.fixture_done"))
            .fetch_optional(&mut admin)
            .await
            .ok()
            .flatten();
        let options = base.clone().options([("search_path", schema.as_str())]);
        if let Some(big_run) = done {
            let opened = Instant::now();
            let ledger = Arc::new(Ledger::open_postgres(options).await.unwrap());
            vacuum(&mut admin, &schema).await;
            opened_in(opened);
            return Self {
                ledger,
                runs,
                location: format!("PostgreSQL schema {schema}"),
                big_run: big_run.parse().unwrap(),
                built_in: None,
            };
        }
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        let ledger = Arc::new(Ledger::open_postgres(options).await.unwrap());
        let (big_run, secs) = build(&ledger, runs).await;
        sqlx::raw_sql(&format!(
            "CREATE TABLE {schema}.fixture_done (big_run TEXT NOT NULL); \
             INSERT INTO {schema}.fixture_done VALUES ('{big_run}')"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        vacuum(&mut admin, &schema).await;
        Self {
            ledger,
            runs,
            location: format!("PostgreSQL schema {schema}"),
            big_run,
            built_in: Some(secs),
        }
    }
}

/// `VACUUM (ANALYZE)` of every table of `schema`: what autovacuum will have
/// done by the time an operator reads a ledger this size. Straight after a
/// build, the visibility map is empty (an index-only count visits the heap
/// for every entry) and the GIN indexes' pending lists hold every insert (a
/// payload search that finds nothing scanned 100,000 of them, 6 ms against
/// 0.09 ms vacuumed, at 100k runs).
async fn vacuum(admin: &mut sqlx::PgConnection, schema: &str) {
    let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
        .bind(schema)
        .fetch_all(&mut *admin)
        .await
        .unwrap();
    let list: Vec<String> = tables.iter().map(|t| format!("{schema}.{t}")).collect();
    sqlx::raw_sql(&format!("VACUUM (ANALYZE) {}", list.join(", ")))
        .execute(&mut *admin)
        .await
        .unwrap();
}

/// Says how long opening a kept ledger took when it was long: a build that
/// added migrations migrates it (and may rebuild its projections) first.
fn opened_in(started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    if secs > 1.0 {
        println!("fixture: opened in {secs:.1} s (migrations and any rebuild they asked for)");
    }
}

/// A uniform number in [0, 1) for run `n`, draw `k`.
fn draw(n: usize, k: u64) -> f64 {
    // splitmix64
    let mut z = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<T: Copy>(u: f64, choices: &[(f64, T)]) -> T {
    let mut acc = 0.0;
    for (share, value) in choices {
        acc += share;
        if u < acc {
            return *value;
        }
    }
    choices.last().unwrap().1
}

async fn run_command(ledger: &Ledger, run_id: Uuid, action: Action, meta: &Metadata) -> Outcome {
    let cmd = RunCommand {
        run_id,
        expected_version: None,
        action,
    };
    ledger
        .execute(Command::Run(cmd), meta.clone())
        .await
        .expect("fixture command")
}

fn ended(reason: EndReason, exit_code: Option<i64>) -> Action {
    Action::End(RunEnded {
        end_reason: reason,
        exit_code,
        error: None,
        result: None,
        execution_trace: None,
    })
}

/// Makes the ledger; the big run's id and the seconds it took.
async fn build(ledger: &Arc<Ledger>, runs: usize) -> (Uuid, f64) {
    let started = Instant::now();
    let made = Arc::new(AtomicUsize::new(0));
    // The big run's 10,000 appends go on beside the others.
    let big = tokio::spawn({
        let ledger = ledger.clone();
        async move { big_run(&ledger).await }
    });
    made.fetch_add(1, Ordering::Relaxed);
    let progress = tokio::spawn({
        let made = made.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                let n = made.load(Ordering::Relaxed);
                eprintln!(
                    "fixture: {n} of {runs} runs after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    super::concurrently(WRITERS, |w| {
        let ledger = ledger.clone();
        let made = made.clone();
        async move {
            let meta = Metadata::actor("fixture");
            let mut previous: Option<Uuid> = None;
            let mut n = w;
            while made.load(Ordering::Relaxed) < runs {
                let retries = one_run(&ledger, n, &meta, &mut previous).await;
                made.fetch_add(1 + retries, Ordering::Relaxed);
                n += WRITERS;
            }
        }
    })
    .await;
    let big_run = big.await.expect("the big run");
    progress.abort();
    let retry = BulkCall {
        kind: BulkKind::Retry,
        selection: Selector::Match {
            filter: RunFilter {
                task_name: Some("task-40".into()),
                statuses: vec![StatusValue::EndReason(EndReason::Failed)],
                ..RunFilter::default()
            },
            except: Vec::new(),
        },
        as_of: None,
        dry_run: false,
        reason: Some("fixture bulk retry".into()),
        cap: 100_000,
        selector: serde_json::json!({"match_all": true, "filter": {"task_name": "task-40", "status": "failed"}}),
    };
    ledger
        .bulk(retry, Metadata::actor("fixture"))
        .await
        .map_err(|e| format!("{e:?}"))
        .expect("the fixture's bulk retry");
    (big_run, started.elapsed().as_secs_f64())
}

async fn big_run(ledger: &Ledger) -> Uuid {
    let meta = Metadata::actor("fixture");
    let create = CreateRun::new(TaskName::parse("big-run").unwrap());
    let Outcome::Created(run) = ledger.execute(Command::Create(create), meta.clone()).await.unwrap() else {
        panic!("a new run")
    };
    run_command(ledger, run.id, Action::Start(Default::default()), &meta).await;
    for i in 0..BIG_RUN_EVENTS - 3 {
        let log = RunLogged {
            level: "info".into(),
            log_type: None,
            message: format!("step {i} of the big run"),
            data: None,
        };
        run_command(ledger, run.id, Action::Log(log), &meta).await;
    }
    run_command(ledger, run.id, ended(EndReason::Success, Some(0)), &meta).await;
    run.id
}

/// Run number `n` (a child of `previous` if it draws so), and its retry;
/// how many retries it made. `previous` becomes this run.
async fn one_run(ledger: &Ledger, n: usize, meta: &Metadata, previous: &mut Option<Uuid>) -> usize {
    let task = (draw(n, 1).powi(2) * 100.0) as usize;
    let mut create = CreateRun::new(TaskName::parse(&format!("task-{task}")).unwrap());
    create.project = ["billing", "search", "ml", "web"][task % 4].into();
    create.triggered_by = pick(
        draw(n, 2),
        &[
            (0.5, TriggeredBy::Cron),
            (0.3, TriggeredBy::Api),
            (0.1, TriggeredBy::Manual),
            (0.1, TriggeredBy::Event),
        ],
    );
    let env = pick(draw(n, 3), &[(0.6, "prod"), (0.3, "staging"), (0.1, "dev")]);
    create.tags.insert("env".into(), env.into());
    create.tags.insert("team".into(), format!("team-{}", task % 10));
    if task % 10 == 3 {
        create.max_attempts = Some(2);
    }
    let region = ["eu", "us", "apac"][n % 3];
    let features = &["sso", "audit", "export"][..1 + n % 3];
    let tier = pick(
        draw(n, 11),
        &[(0.5, "free"), (0.3, "pro"), (0.15, "gold"), (0.05, "enterprise")],
    );
    create.payload = Some(serde_json::json!({
        "customer": format!("customer-{}", n % 1000),
        "region": region,
        "plan": {"tier": tier, "seats": 1 + n % 50},
        "features": features,
    }));
    if draw(n, 4) < 0.05 {
        create.parent_run_id = *previous;
    }
    let Outcome::Created(run) = ledger.execute(Command::Create(create), meta.clone()).await.unwrap() else {
        panic!("a new run")
    };
    *previous = Some(run.id);
    let phase = draw(n, 5);
    if phase < 0.04 {
        return 0;
    }
    run_command(ledger, run.id, Action::Start(Default::default()), meta).await;
    if draw(n, 6) < 0.25 {
        run_command(ledger, run.id, Action::Heartbeat, meta).await;
        run_command(ledger, run.id, Action::Heartbeat, meta).await;
    }
    if phase < 0.07 {
        return 0;
    }
    let (reason, code) = pick(
        draw(n, 7),
        &[
            (0.8, (EndReason::Success, Some(0))),
            (0.15, (EndReason::Failed, Some(1 + (n % 3) as i64))),
            (0.05, (EndReason::Timeout, None)),
        ],
    );
    run_command(ledger, run.id, ended(reason, code), meta).await;
    let mut retries = 0;
    if reason.is_failure() && draw(n, 8) < 1.0 / 3.0 {
        let retry = Action::Retry {
            action: RetryAction::Retry,
            reason: Some("fixture retry".into()),
            payload: None,
        };
        if let Outcome::Retried { new_run, .. } = run_command(ledger, run.id, retry, meta).await {
            retries = 1;
            run_command(ledger, new_run.id, Action::Start(Default::default()), meta).await;
            let (reason, code) = if draw(n, 9) < 0.5 {
                (EndReason::Success, Some(0))
            } else {
                (EndReason::Failed, Some(1))
            };
            run_command(ledger, new_run.id, ended(reason, code), meta).await;
        }
    } else if draw(n, 10) < 0.02 {
        run_command(ledger, run.id, Action::Delete(Reason { reason: None }), meta).await;
    }
    retries
}

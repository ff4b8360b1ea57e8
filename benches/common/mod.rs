//! What the benches share. Each bench includes this module and uses part of it.
#![allow(dead_code)]

pub mod fixture;

use std::future::Future;

/// Runs `work(w)` for each of `writers` concurrent tasks and waits for all
/// of them; a task that panics fails the bench.
pub async fn concurrently<F, Fut>(writers: usize, work: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..writers).map(|w| tokio::spawn(work(w))).collect();
    for t in tasks {
        t.await.expect("a bench task");
    }
}

/// Creates `count` runs of task `bench-{w % 16}`, tagged `env=bench`,
/// through the command path: writer `w`'s share of a throughput bench.
pub async fn create_runs(ledger: &runledger::ledger::Ledger, w: usize, count: usize) {
    use runledger::commands::{Command, CreateRun};
    let task = runledger::domain::TaskName::parse(&format!("bench-{}", w % 16)).unwrap();
    for _ in 0..count {
        let mut create = CreateRun::new(task.clone());
        create.tags.insert("env".into(), "bench".into());
        ledger
            .execute(Command::Create(create), runledger_events::Metadata::actor("bench"))
            .await
            .expect("create");
    }
}

/// A bench setting from the environment, or `default` when unset or not
/// parseable.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The PostgreSQL a bench may also run on (`RUNLEDGER_BENCH_POSTGRES_URL`):
/// its connection options, URL and server version; `None` (after saying so)
/// when unset.
pub async fn postgres_from_env() -> Option<(sqlx::postgres::PgConnectOptions, String, String)> {
    use sqlx::ConnectOptions;
    let Some(url) = std::env::var("RUNLEDGER_BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("== PostgreSQL SKIPPED: set RUNLEDGER_BENCH_POSTGRES_URL to a PostgreSQL URL");
        return None;
    };
    let base: sqlx::postgres::PgConnectOptions = url.parse().expect("RUNLEDGER_BENCH_POSTGRES_URL");
    let mut conn = base.connect().await.expect("connect to PostgreSQL");
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .expect("the server's version");
    Some((base, url, version))
}

/// Failed checks, said at the end; any makes the bench exit 1.
#[derive(Default)]
pub struct Checks(pub Vec<String>);

impl Checks {
    /// Records `what` as failed (and says so at once) unless `ok`.
    pub fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            println!("  FAILED: {what}");
            self.0.push(what);
        }
    }

    /// Says whether every check passed; exits 1 when one did not.
    pub fn finish(self) {
        if self.0.is_empty() {
            println!("all checks passed");
            return;
        }
        println!("{} checks failed:", self.0.len());
        for failure in &self.0 {
            println!("  {failure}");
        }
        std::process::exit(1);
    }
}

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

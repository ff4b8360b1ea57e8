//! LLM chunk streams: a run's chunks are durable and replayable, but a
//! token stream is far too fine-grained for one hash-chained event per
//! chunk. The coalescer gathers the chunks that requests POST to one run
//! over a short window (`window`, or until `flush_bytes` are waiting,
//! whichever comes first) and appends them as one `run.chunks` event, in
//! arrival order; each request is answered once its chunks are committed,
//! with the indexes the fold gave them.
//!
//! One flusher task per run with chunks waiting, so a run's appends never
//! overtake each other: what arrives while an append commits goes in the
//! next one. Requests of different callers are not merged into one event
//! (an event has one actor): consecutive requests of the same caller are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_events::Metadata;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::{Action, Command, Outcome, RunCommand};
use crate::ledger::{Ledger, LedgerError};

/// The default coalescing window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// Chunk bytes waiting for a run that make its append go at once.
pub const DEFAULT_FLUSH_BYTES: usize = 64 * 1024;

/// Where one request's chunks landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The index of the request's first chunk (a run's chunks count from 1).
    pub first_index: i64,
    pub last_index: i64,
    /// The log position of the `run.chunks` event that holds them.
    pub position: i64,
}

struct Waiter {
    chunks: Vec<String>,
    metadata: Metadata,
    reply: oneshot::Sender<Result<Appended, LedgerError>>,
}

/// What waits for one run's next append.
struct Pending {
    waiters: Vec<Waiter>,
    bytes: usize,
    /// When the first waiter of the next append came.
    opened: Instant,
    full: Arc<Notify>,
}

pub struct Coalescer {
    ledger: Arc<Ledger>,
    window: Duration,
    flush_bytes: usize,
    /// Runs with a flusher task; an entry lives as long as its task.
    runs: Mutex<HashMap<Uuid, Pending>>,
    /// On shutdown every waiting append goes at once.
    stop: CancellationToken,
}

impl Coalescer {
    pub fn new(ledger: Arc<Ledger>, window: Duration, flush_bytes: usize, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            window,
            flush_bytes: flush_bytes.max(1),
            runs: Mutex::new(HashMap::new()),
            stop,
        })
    }

    /// Appends `chunks` (already validated) to the run, after those of
    /// every request to it that came first; returns once they are durable.
    pub async fn submit(
        self: &Arc<Self>,
        run_id: Uuid,
        chunks: Vec<String>,
        metadata: Metadata,
    ) -> Result<Appended, LedgerError> {
        let bytes: usize = chunks.iter().map(String::len).sum();
        let (reply, answer) = oneshot::channel();
        {
            let mut runs = self.runs.lock().expect("coalescer lock");
            let spawn = !runs.contains_key(&run_id);
            let pending = runs.entry(run_id).or_insert_with(|| Pending {
                waiters: Vec::new(),
                bytes: 0,
                opened: Instant::now(),
                full: Arc::new(Notify::new()),
            });
            if pending.waiters.is_empty() {
                pending.opened = Instant::now();
            }
            pending.bytes += bytes;
            pending.waiters.push(Waiter {
                chunks,
                metadata,
                reply,
            });
            if pending.bytes >= self.flush_bytes {
                pending.full.notify_one();
            }
            if spawn {
                tokio::spawn(self.clone().flush_run(run_id, pending.full.clone()));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(LedgerError::Storage("the chunk coalescer stopped".into())))
    }

    /// The run's flusher: appends what waits once the window closes (or
    /// enough waits), again while more comes, and ends when nothing does.
    async fn flush_run(self: Arc<Self>, run_id: Uuid, full: Arc<Notify>) {
        loop {
            let due = {
                let runs = self.runs.lock().expect("coalescer lock");
                runs.get(&run_id).map_or_else(Instant::now, |p| p.opened + self.window)
            };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = full.notified() => {}
                () = self.stop.cancelled() => {}
            }
            let waiters = {
                let mut runs = self.runs.lock().expect("coalescer lock");
                let Some(pending) = runs.get_mut(&run_id) else {
                    return;
                };
                if pending.waiters.is_empty() {
                    runs.remove(&run_id);
                    return;
                }
                pending.bytes = 0;
                std::mem::take(&mut pending.waiters)
            };
            self.append(run_id, waiters).await;
        }
    }

    /// One `run.chunks` event per run of consecutive waiters of the same
    /// actor, in order; answers each waiter.
    async fn append(&self, run_id: Uuid, waiters: Vec<Waiter>) {
        let mut waiters = waiters.into_iter().peekable();
        while let Some(first) = waiters.next() {
            let mut group = vec![first];
            while let Some(next) = waiters.next_if(|w| w.metadata.actor == group[0].metadata.actor) {
                group.push(next);
            }
            let chunks: Vec<String> = group.iter().flat_map(|w| w.chunks.iter().cloned()).collect();
            let total = chunks.len() as i64;
            let command = Command::Run(RunCommand {
                run_id,
                expected_version: None,
                action: Action::AppendChunks(chunks),
            });
            // The event is the first request's: its request id and trace.
            let result = match self.ledger.execute(command, group[0].metadata.clone()).await {
                Ok(Outcome::Updated(run)) => Ok((run.chunks - total + 1, run.position)),
                Ok(other) => Err(LedgerError::Storage(format!("chunks answered {other:?}"))),
                Err(e) => Err(e),
            };
            let mut next_index = result.as_ref().map_or(0, |(first, _)| *first);
            for waiter in group {
                let n = waiter.chunks.len() as i64;
                let answer = result.clone().map(|(_, position)| Appended {
                    first_index: next_index,
                    last_index: next_index + n - 1,
                    position,
                });
                next_index += n;
                let _ = waiter.reply.send(answer);
            }
        }
    }
}

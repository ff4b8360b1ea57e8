//! Group commit: one thread owns the write connection and runs every unit of
//! work submitted meanwhile in one IMMEDIATE transaction; a refused unit, or
//! one that fails inside the database, never fails its neighbours (see
//! `WriteTx`). Callers are answered only after COMMIT returns, so an
//! acknowledged write is durable.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{EventEnvelope, ExpectedVersion, Metadata, NewEvent, Sealer};

use super::read;

/// The most units one transaction takes.
pub const MAX_BATCH: usize = 1024;
const QUEUE: usize = 16 * 1024;
/// The longest a small batch waits for the rest of a busy writer population.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(100);
/// Below this many concurrent writers, a commit never waits.
const GATHER_MIN_POPULATION: usize = 16;

/// A storage failure; shared by every unit of the batch it failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub Arc<str>);

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string().into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The unit itself refused; nothing it did was kept.
    #[error("refused")]
    Refused(E),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the writer has stopped")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} is at version {actual}, expected {expected:?}")]
    WrongVersion {
        stream_id: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("event {0} was already appended with a different batch of events")]
    PartialDuplicate(String),
    #[error(transparent)]
    Storage(#[from] rusqlite::Error),
}

/// The open batch transaction as a unit of work sees it.
///
/// Units run without savepoints (a savepoint makes SQLite copy every page the
/// unit touches, which cost more than the append itself). The contract is
/// instead: a unit refuses only before its first write. A unit that returns
/// an error after writing has failed inside the database: the batch is rolled
/// back and run again without it, so nothing partial is ever committed and
/// its neighbours are not failed with it.
pub struct WriteTx<'c> {
    conn: &'c Connection,
    head: Sealer,
    versions: &'c mut StreamVersions,
    /// Whether the current unit has written.
    wrote: bool,
}

/// The writer's memory of each stream's version, so an append need not ask
/// the database. It is trusted only while the log's head is where this writer
/// left it: if anything else appended in between, it is cleared.
#[derive(Default)]
struct StreamVersions {
    map: std::collections::HashMap<String, i64>,
    head: i64,
}

const MAX_REMEMBERED_STREAMS: usize = 100_000;

impl WriteTx<'_> {
    /// The transaction's connection, for reading. Write through `writer`.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The transaction's connection, for projections written in the same
    /// transaction as the events they fold. From here on the unit must not
    /// refuse.
    pub fn writer(&mut self) -> &Connection {
        self.wrote = true;
        self.conn
    }

    /// The stream's current version (0 if it has no events), so a unit can
    /// check every expectation before it writes anything.
    pub fn stream_version(&mut self, stream_id: &str) -> rusqlite::Result<i64> {
        if let Some(version) = self.versions.map.get(stream_id) {
            return Ok(*version);
        }
        let version = read::stream_version(self.conn, stream_id)?;
        self.versions.map.insert(stream_id.to_owned(), version);
        Ok(version)
    }

    /// Appends `events` to `stream_id` if the stream is at `expected`.
    /// Appending events whose ids are already stored is a no-op that returns
    /// the stored envelopes.
    pub fn append(
        &mut self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let current = self.stream_version(stream_id)?;
        if !expected.admits(current) {
            // A repeated append fails its version check; it is answered with
            // what the first one stored.
            if let Some(existing) = read::by_event_id(self.conn, &events[0].event_id.to_string())? {
                return self.already_appended(existing, events);
            }
            return Err(AppendError::WrongVersion {
                stream_id: stream_id.to_owned(),
                expected,
                actual: current,
            });
        }
        // Refuse a half-repeated append before writing anything.
        for event in &events[1..] {
            let id = event.event_id.to_string();
            if read::by_event_id(self.conn, &id)?.is_some() {
                return Err(AppendError::PartialDuplicate(id));
            }
        }
        let before = self.head.clone();
        let sealed = self.head.seal(stream_id, current, events, metadata);
        let mut out = Vec::with_capacity(sealed.len());
        for (i, s) in sealed.into_iter().enumerate() {
            let event_id = s.envelope.event_id.to_string();
            let inserted = super::insert_sealed(self.conn, &s);
            if let Err(err) = inserted {
                if !super::is_unique_violation(&err) || !err.to_string().contains("events.event_id") {
                    return Err(err.into());
                }
                // The unique event id is the idempotency guard.
                self.head = before;
                let existing = read::by_event_id(self.conn, &event_id)?.ok_or(AppendError::Storage(err))?;
                self.wrote |= i > 0;
                return match i {
                    0 => self.already_appended(existing, events),
                    _ => Err(AppendError::PartialDuplicate(event_id)),
                };
            }
            self.wrote = true;
            out.push(s.envelope);
        }
        self.versions
            .map
            .insert(stream_id.to_owned(), current + events.len() as i64);
        Ok(out)
    }

    fn already_appended(&self, first: EventEnvelope, events: &[NewEvent]) -> Result<Vec<EventEnvelope>, AppendError> {
        let mut out = vec![first];
        for event in &events[1..] {
            let id = event.event_id.to_string();
            match read::by_event_id(self.conn, &id)? {
                Some(envelope) => out.push(envelope),
                None => return Err(AppendError::PartialDuplicate(id)),
            }
        }
        Ok(out)
    }
}

trait Unit: Send {
    /// Runs the unit's work in the open transaction and keeps its result.
    /// An error means the unit broke the write contract (it failed after
    /// writing): the transaction must be rolled back.
    fn run(&mut self, tx: &mut WriteTx<'_>) -> Result<(), StorageError>;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StorageError>);
    fn abandon(self: Box<Self>, err: StorageError);
}

struct Job<F, T, E> {
    work: F,
    /// The result of the last run (a rolled-back run is run again).
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, WriteError<E>>>,
}

impl<F, T, E> Unit for Job<F, T, E>
where
    F: FnMut(&mut WriteTx<'_>) -> Result<T, E> + Send,
    T: Send + 'static,
    E: std::fmt::Debug + Send + 'static,
{
    fn run(&mut self, tx: &mut WriteTx<'_>) -> Result<(), StorageError> {
        tx.wrote = false;
        let result = (self.work)(tx);
        if let (true, Err(e)) = (tx.wrote, &result) {
            let message = format!("the write failed inside the database, and nothing of it was kept: {e:?}");
            self.result = None;
            return Err(StorageError(message.into()));
        }
        self.result = Some(result);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StorageError>) {
        let answer = match self.result {
            Some(Ok(value)) => committed.map(|()| value).map_err(WriteError::Storage),
            // A refusal wrote nothing: it stands whatever became of the batch.
            Some(Err(refusal)) => Err(WriteError::Refused(refusal)),
            None => Err(WriteError::Storage(
                committed
                    .err()
                    .unwrap_or_else(|| StorageError("the unit did not run".into())),
            )),
        };
        let _ = self.reply.send(answer);
    }

    fn abandon(self: Box<Self>, err: StorageError) {
        let _ = self.reply.send(Err(WriteError::Storage(err)));
    }
}

/// Counters of the writer's work since it started.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Units of work run in committed transactions.
    pub units: AtomicU64,
    /// Events appended in committed transactions.
    pub events: AtomicU64,
    /// Time spent in COMMIT (the fsync), in microseconds.
    pub commit_micros: AtomicU64,
}

impl WriterStats {
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.units.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
            self.commit_micros.load(Ordering::Relaxed),
        )
    }
}

/// The single writer of one SQLite database.
pub struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Unit>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<i64>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer thread on `path`. The schema must already exist.
    pub fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = super::open(path)?;
        let (position, _, _) = read::head(&conn)?;
        let (head_tx, head_rx) = watch::channel(position);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("runledger-writer".into())
            .spawn(move || run(conn, receiver, head_tx, &thread_stats))
            .expect("spawning the writer thread");
        Ok(Self {
            sender: Some(sender),
            thread: Mutex::new(Some(thread)),
            head: head_rx,
            stats,
        })
    }

    /// Runs `work` inside the next batch transaction. `Ok` means committed
    /// and durable; `Refused` means the unit returned an error and nothing it
    /// wrote was kept.
    ///
    /// A unit may run more than once: when a neighbour in its batch fails
    /// inside the database, the batch is rolled back and run again without
    /// it, so one bad unit never fails the others.
    pub async fn submit<F, T, E>(&self, work: F) -> Result<T, WriteError<E>>
    where
        F: FnMut(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender.as_ref().ok_or(WriteError::Closed)?;
        sender
            .send(Box::new(Job {
                work,
                result: None,
                reply,
            }))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.unwrap_or(Err(WriteError::Closed))
    }

    /// The position of the last committed event; changes after every commit.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn run(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Box<dyn Unit>>,
    head: watch::Sender<i64>,
    stats: &WriterStats,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut versions = StreamVersions {
        head: -1,
        ..Default::default()
    };
    // With many concurrent writers, the callers answered by one commit come
    // back while the next commits, and the population settles into two
    // half-full cohorts. The last two batches together estimate the
    // population; a batch well short of it waits briefly for the rest.
    let mut last_two = [0usize; 2];
    while let Some(unit) = receiver.blocking_recv() {
        batch.push(unit);
        drain(&mut receiver, &mut batch);
        let population = last_two[0] + last_two[1];
        if population >= GATHER_MIN_POPULATION && batch.len() * 4 < population * 3 {
            let deadline = std::time::Instant::now() + GATHER_WAIT;
            while batch.len() * 4 < population * 3 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
                drain(&mut receiver, &mut batch);
            }
        }
        last_two = [last_two[1], batch.len()];
        let size = batch.len();
        if let Err(err) = commit(&mut conn, &mut batch, &mut versions, &head, stats) {
            tracing::error!(error = %err, batch = size, "group commit failed");
        }
    }
}

fn drain(receiver: &mut mpsc::Receiver<Box<dyn Unit>>, batch: &mut Vec<Box<dyn Unit>>) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(unit) => batch.push(unit),
            Err(_) => break,
        }
    }
}

/// Runs and commits one batch, moves the published head, then answers every
/// unit — in that order, so whoever holds an answer sees a head at least as
/// far as their write. A unit that fails inside the database is answered
/// with its error alone: the batch is rolled back and run again without it.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<Box<dyn Unit>>,
    versions: &mut StreamVersions,
    published: &watch::Sender<i64>,
    stats: &WriterStats,
) -> Result<(), StorageError> {
    loop {
        match attempt(conn, batch, versions, stats) {
            Attempt::Committed { position, head } => {
                versions.head = head;
                let appended = (head - position).max(0) as u64;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.units.fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.events.fetch_add(appended, Ordering::Relaxed);
                crate::record_appended(appended);
                published.send_if_modified(|h| {
                    let moved = *h != head;
                    *h = head;
                    moved
                });
                batch.drain(..).for_each(|u| u.finish(Ok(())));
                return Ok(());
            }
            Attempt::UnitFailed(i, err) => {
                versions.map.clear();
                versions.head = -1;
                tracing::warn!(error = %err, batch = batch.len(), "a unit failed inside the database; running its batch again without it");
                batch.remove(i).abandon(err);
                if batch.is_empty() {
                    return Ok(());
                }
            }
            Attempt::Failed(err) => {
                versions.map.clear();
                versions.head = -1;
                batch.drain(..).for_each(|u| u.finish(Err(err.clone())));
                return Err(err);
            }
        }
    }
}

enum Attempt {
    Committed {
        position: i64,
        head: i64,
    },
    /// Unit `i` failed after writing; the transaction was rolled back.
    UnitFailed(usize, StorageError),
    /// The transaction could not be begun or committed.
    Failed(StorageError),
}

fn attempt(
    conn: &mut Connection,
    batch: &mut [Box<dyn Unit>],
    versions: &mut StreamVersions,
    stats: &WriterStats,
) -> Attempt {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return Attempt::Failed(e.into()),
    };
    let (position, hash, recorded_at) = match read::head(&tx) {
        Ok(head) => head,
        Err(e) => return Attempt::Failed(e.into()),
    };
    if versions.head != position || versions.map.len() > MAX_REMEMBERED_STREAMS {
        versions.map.clear();
    }
    let mut wtx = WriteTx {
        conn: &tx,
        head: Sealer::new(position, hash, recorded_at),
        versions: &mut *versions,
        wrote: false,
    };
    for (i, unit) in batch.iter_mut().enumerate() {
        if let Err(err) = unit.run(&mut wtx) {
            drop(wtx);
            // Dropping the transaction rolls it back.
            drop(tx);
            return Attempt::UnitFailed(i, err);
        }
    }
    let head = wtx.head.position;
    drop(wtx);
    let started = std::time::Instant::now();
    let committed = tx.commit();
    crate::record_commit(batch.len(), started.elapsed());
    stats
        .commit_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match committed {
        Ok(()) => Attempt::Committed { position, head },
        Err(e) => Attempt::Failed(e.into()),
    }
}

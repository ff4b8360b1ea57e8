//! Group commit: one thread owns the write connection and runs every unit of
//! work submitted meanwhile in one IMMEDIATE transaction, each unit inside its
//! own savepoint so a refused unit never fails its neighbours. Callers are
//! answered only after COMMIT returns, so an acknowledged write is durable.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};

use crate::chain::{canonical_json, HashInput};
use crate::{EventEnvelope, ExpectedVersion, Metadata, NewEvent, Timestamp};

use super::read;

/// The most units one transaction takes.
pub const MAX_BATCH: usize = 1024;
const QUEUE: usize = 16 * 1024;

/// A storage failure; shared by every unit of the batch it failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub Arc<rusqlite::Error>);

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        Self(Arc::new(e))
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

#[derive(Clone)]
struct Head {
    position: i64,
    hash: String,
    recorded_at: Option<Timestamp>,
}

/// The open batch transaction as a unit of work sees it.
pub struct WriteTx<'c> {
    conn: &'c Connection,
    head: Head,
}

impl WriteTx<'_> {
    /// The transaction's connection, for projections written in the same
    /// transaction as the events they fold.
    pub fn conn(&self) -> &Connection {
        self.conn
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
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        if let Some(existing) = read::by_event_id(self.conn, &first.event_id.to_string())? {
            return self.already_appended(existing, events);
        }
        let current = read::stream_version(self.conn, stream_id)?;
        if !expected.admits(current) {
            return Err(AppendError::WrongVersion {
                stream_id: stream_id.to_owned(),
                expected,
                actual: current,
            });
        }
        let metadata_text = canonical_json(&serde_json::to_value(metadata).expect("metadata serializes"));
        // Time never runs backwards along the log, so a time maps to a position.
        let now = Timestamp::now();
        let recorded_at = match self.head.recorded_at {
            Some(last) if last > now => last,
            _ => now,
        };
        let recorded_text = recorded_at.to_rfc3339();
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, data, metadata, recorded_at, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut out = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let position = self.head.position + 1;
            let stream_version = current + 1 + i as i64;
            let event_id = event.event_id.to_string();
            let data_text = canonical_json(&event.data);
            let hash = HashInput {
                position,
                event_id: &event_id,
                stream_id,
                stream_version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                data: &data_text,
                metadata: &metadata_text,
                recorded_at: &recorded_text,
                prev_hash: &self.head.hash,
            }
            .hash();
            stmt.execute(params![
                position,
                event_id,
                stream_id,
                stream_version,
                event.event_type,
                event.schema_version,
                data_text,
                metadata_text,
                recorded_text,
                self.head.hash,
                hash,
            ])?;
            let prev_hash = std::mem::replace(&mut self.head.hash, hash.clone());
            self.head.position = position;
            self.head.recorded_at = Some(recorded_at);
            out.push(EventEnvelope {
                position,
                event_id: event.event_id,
                stream_id: stream_id.to_owned(),
                stream_version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.clone(),
                metadata: metadata.clone(),
                recorded_at,
                prev_hash,
                hash,
            });
        }
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

type Completion = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

trait Unit: Send {
    fn run(self: Box<Self>, tx: &mut WriteTx<'_>) -> Result<Completion, StorageError>;
    fn abandon(self: Box<Self>, err: StorageError);
}

struct Job<F, T, E> {
    work: F,
    reply: oneshot::Sender<Result<T, WriteError<E>>>,
}

impl<F, T, E> Unit for Job<F, T, E>
where
    F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send,
    T: Send + 'static,
    E: Send + 'static,
{
    fn run(self: Box<Self>, tx: &mut WriteTx<'_>) -> Result<Completion, StorageError> {
        let Job { work, reply } = *self;
        let saved = tx.head.clone();
        tx.conn.prepare_cached("SAVEPOINT unit")?.execute([])?;
        match work(tx) {
            Ok(value) => {
                tx.conn.prepare_cached("RELEASE unit")?.execute([])?;
                Ok(Box::new(move |committed: Result<(), StorageError>| {
                    let _ = reply.send(committed.map(|()| value).map_err(WriteError::Storage));
                }))
            }
            Err(refusal) => {
                tx.conn.prepare_cached("ROLLBACK TO unit")?.execute([])?;
                tx.conn.prepare_cached("RELEASE unit")?.execute([])?;
                tx.head = saved;
                let _ = reply.send(Err(WriteError::Refused(refusal)));
                Ok(Box::new(|_| {}))
            }
        }
    }

    fn abandon(self: Box<Self>, err: StorageError) {
        let _ = self.reply.send(Err(WriteError::Storage(err)));
    }
}

/// The single writer of one SQLite database.
pub struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Unit>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<i64>,
}

impl Writer {
    /// Starts the writer thread on `path`. The schema must already exist.
    pub fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = super::open(path)?;
        let (position, _, _) = read::head(&conn)?;
        let (head_tx, head_rx) = watch::channel(position);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("runledger-writer".into())
            .spawn(move || run(conn, receiver, head_tx))
            .expect("spawning the writer thread");
        Ok(Self {
            sender: Some(sender),
            thread: Mutex::new(Some(thread)),
            head: head_rx,
        })
    }

    /// Runs `work` inside the next batch transaction. `Ok` means committed
    /// and durable; `Refused` means the unit returned an error and nothing it
    /// wrote was kept.
    pub async fn submit<F, T, E>(&self, work: F) -> Result<T, WriteError<E>>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender.as_ref().ok_or(WriteError::Closed)?;
        sender
            .send(Box::new(Job { work, reply }))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.unwrap_or(Err(WriteError::Closed))
    }

    /// The position of the last committed event; changes after every commit.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
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

fn run(mut conn: Connection, mut receiver: mpsc::Receiver<Box<dyn Unit>>, head: watch::Sender<i64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(unit) = receiver.blocking_recv() {
        batch.push(unit);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(unit) => batch.push(unit),
                Err(_) => break,
            }
        }
        let size = batch.len();
        match commit(&mut conn, &mut batch) {
            Ok(position) => {
                head.send_if_modified(|h| {
                    let moved = *h != position;
                    *h = position;
                    moved
                });
            }
            Err(err) => tracing::error!(error = %err, batch = size, "group commit failed"),
        }
    }
}

/// Runs and commits one batch, answering every unit; returns the new head.
fn commit(conn: &mut Connection, batch: &mut Vec<Box<dyn Unit>>) -> Result<i64, StorageError> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = StorageError::from(e);
            batch.drain(..).for_each(|u| u.abandon(err.clone()));
            return Err(err);
        }
    };
    let (position, hash, recorded_at) = match read::head(&tx) {
        Ok(head) => head,
        Err(e) => {
            let err = StorageError::from(e);
            batch.drain(..).for_each(|u| u.abandon(err.clone()));
            return Err(err);
        }
    };
    let mut wtx = WriteTx {
        conn: &tx,
        head: Head {
            position,
            hash,
            recorded_at,
        },
    };
    let mut completions = Vec::with_capacity(batch.len());
    let mut failure = None;
    for unit in batch.drain(..) {
        if let Some(err) = &failure {
            unit.abandon(StorageError::clone(err));
            continue;
        }
        match unit.run(&mut wtx) {
            Ok(done) => completions.push(done),
            Err(err) => failure = Some(err),
        }
    }
    let head = wtx.head.position;
    let outcome = match failure {
        Some(err) => Err(err),
        None => tx.commit().map_err(StorageError::from),
    };
    for done in completions {
        done(outcome.clone());
    }
    outcome.map(|()| head)
}

//! The ledger on PostgreSQL, for several stateless nodes on one database.
//!
//! Each node has one writer task doing group commit: it takes every command
//! queued meanwhile, opens a transaction, takes the ledger's advisory lock
//! (so positions are gap-free and commit in order across nodes), loads the
//! runs the batch needs in one query, executes each command in memory with
//! the shared executor, then writes all events and all changed runs in one
//! statement each and commits. Followers on every node are woken by NOTIFY
//! and read the log by position.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use runledger_events::chain::ChainReport;
use runledger_events::postgres as log;
use runledger_events::{EventEnvelope, ExpectedVersion, Metadata, NewEvent, Sealed, Sealer};
use runledger_projections::postgres::details;
use runledger_projections::postgres::runs::{self, Close, RunRow, Tags};
use runledger_projections::{DetailRow, HistoryVersion, LogEntry, RunQuery, RunState, RunStatus, TaskSummary};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::bulk::{self, BulkCall, BulkError, BulkReport, OperationRecord, OperationRow};
use super::execute::{execute, stream_of, ExecError, RunStore};
use super::idempotency::{self, KeyRow, Reservation, StoredResponse};
use super::{DetailAnswers, DetailReads, EventsQuery, LedgerError};
use crate::auth::{TokenError, TokenRow, INSERT_TOKEN_SQL, REVOKE_TOKEN_SQL, TOKENS_SQL};
use crate::commands::{Command, Outcome};

const MAX_BATCH: usize = 1024;
const QUEUE: usize = 16 * 1024;
/// The longest a small batch waits for the rest of a busy writer population.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(500);
/// Below this many concurrent writers, a batch never waits.
const GATHER_MIN_POPULATION: usize = 16;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

struct Job {
    command: Command,
    metadata: Metadata,
    reply: oneshot::Sender<Result<Outcome, LedgerError>>,
}

pub struct PgLedger {
    pool: PgPool,
    sender: Option<mpsc::Sender<Job>>,
    head: watch::Receiver<i64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    listener: JoinHandle<()>,
}

/// Refuses a database whose schema holds no ledger (an `events` table),
/// without migrating it.
pub(super) async fn require_ledger(options: PgConnectOptions) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = options.connect().await?;
    let (database, schema, found): (String, Option<String>, bool) =
        sqlx::query_as("SELECT current_database(), current_schema(), to_regclass('events') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    if !found {
        let schema = schema.unwrap_or_else(|| "(none of the search_path exists)".to_owned());
        anyhow::bail!(
            "no ledger in PostgreSQL database {database}, schema {schema}: it has no events table \
             (`runledger migrate` or `runledger serve` creates one)"
        );
    }
    Ok(())
}

impl PgLedger {
    /// Connects, migrates (safe with several nodes starting at once: sqlx
    /// takes a lock), and starts the writer and the NOTIFY listener.
    pub async fn open(options: PgConnectOptions) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(16).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        let mut conn = pool.acquire().await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut *conn)
            .await?;
        let (head_tx, head) = watch::channel(log::head_position(&mut conn).await?);
        drop(conn);
        let head_tx = Arc::new(head_tx);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_loop(pool.clone(), receiver, head_tx.clone()));
        let listener = tokio::spawn(listen(pool.clone(), schema, head_tx));
        Ok(Self {
            pool,
            sender: Some(sender),
            head,
            writer: Mutex::new(Some(writer)),
            listener,
        })
    }

    pub async fn execute(&self, command: Command, metadata: Metadata) -> Result<Outcome, LedgerError> {
        let (reply, answer) = oneshot::channel();
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| LedgerError::Storage("the writer has stopped".into()))?;
        sender
            .send(Job {
                command,
                metadata,
                reply,
            })
            .await
            .map_err(|_| LedgerError::Storage("the writer has stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(LedgerError::Storage("the writer has stopped".into())))
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<RunState>, LedgerError> {
        Ok(runs::load(&mut *self.pool.acquire().await?, &id).await?)
    }

    /// A single count from `sql`.
    pub async fn count(&self, sql: &'static str) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    pub async fn run_as_of(&self, id: Uuid, position: i64) -> Result<Option<RunState>, LedgerError> {
        Ok(runs::load_as_of(&mut *self.pool.acquire().await?, &id, position).await?)
    }

    pub async fn list_runs(&self, query: RunQuery) -> Result<(Vec<RunState>, i64), LedgerError> {
        Ok(runs::list(&mut *self.pool.acquire().await?, &query).await?)
    }

    pub async fn tasks(&self, limit: i64, offset: i64) -> Result<(Vec<TaskSummary>, i64), LedgerError> {
        Ok(runs::tasks(&mut *self.pool.acquire().await?, limit, offset).await?)
    }

    pub async fn run_events(&self, q: EventsQuery) -> Result<Option<Vec<EventEnvelope>>, LedgerError> {
        // One REPEATABLE READ transaction, so the run and its events agree.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        if runs::load(&mut tx, &q.run_id).await?.is_none() {
            return Ok(None);
        }
        let events = log::stream(&mut tx, &stream_of(q.run_id), q.after_version, q.limit, &q.types).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    pub async fn read_details(&self, reads: DetailReads) -> Result<Option<DetailAnswers>, LedgerError> {
        // One REPEATABLE READ transaction, so the run and its details agree.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        if let Some(id) = reads.run_id {
            if runs::load(&mut tx, &id).await?.is_none() {
                return Ok(None);
            }
        }
        let texts = match &reads.texts {
            Some(q) => runs::scalars(&mut tx, q).await?,
            None => Vec::new(),
        };
        let mut totals = Vec::with_capacity(reads.totals.len());
        for q in &reads.totals {
            totals.push(details::totals(&mut tx, q).await?);
        }
        tx.commit().await?;
        Ok(Some(DetailAnswers { texts, totals }))
    }

    pub async fn read_log(&self, after: i64, limit: i64) -> Result<Vec<LogEntry>, LedgerError> {
        Ok(runs::log_page(&mut *self.pool.acquire().await?, after, limit).await?)
    }

    pub async fn token_rows(&self) -> Result<Vec<TokenRow>, LedgerError> {
        let rows: Vec<(String, String, String, String, Option<String>)> =
            sqlx::query_as(TOKENS_SQL).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(name, secret_sha256, scopes, created_at, revoked_at)| TokenRow {
                name,
                secret_sha256,
                scopes,
                created_at,
                revoked_at,
            })
            .collect())
    }

    pub async fn insert_token(&self, name: String, hash: String, scopes: String) -> Result<(), TokenError> {
        let now = runledger_events::Timestamp::now().to_rfc3339();
        let inserted = sqlx::query(INSERT_TOKEN_SQL)
            .bind(&name)
            .bind(hash)
            .bind(scopes)
            .bind(now)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(TokenError::NameTaken(name)),
            Err(e) => Err(TokenError::Storage(e.to_string())),
        }
    }

    pub async fn revoke_token(&self, name: String) -> Result<(), TokenError> {
        let now = runledger_events::Timestamp::now().to_rfc3339();
        let done = sqlx::query(REVOKE_TOKEN_SQL)
            .bind(now)
            .bind(&name)
            .execute(&self.pool)
            .await
            .map_err(|e| TokenError::Storage(e.to_string()))?;
        if done.rows_affected() == 0 {
            return Err(TokenError::NoSuchToken(name));
        }
        Ok(())
    }

    pub async fn ready(&self) -> bool {
        let Ok(mut conn) = self.pool.acquire().await else {
            return false;
        };
        let applied: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await;
        applied.is_ok_and(|n| n as usize == MIGRATOR.iter().count())
    }

    /// The last position committed by any node, as far as this node knows.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Drop for PgLedger {
    fn drop(&mut self) {
        self.sender.take();
        self.listener.abort();
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            // The writer finishes the batch in hand and stops once the queue is empty.
            drop(writer);
        }
    }
}

async fn write_loop(pool: PgPool, mut receiver: mpsc::Receiver<Job>, head: Arc<watch::Sender<i64>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // As on SQLite: with many writers the population splits into two
    // cohorts; a batch well short of the last two together waits briefly for
    // the rest, since every batch costs a fixed number of round trips.
    let mut last_two = [0usize; 2];
    while let Some(job) = receiver.recv().await {
        batch.push(job);
        drain(&mut receiver, &mut batch);
        let population = last_two[0] + last_two[1];
        if population >= GATHER_MIN_POPULATION && batch.len() * 4 < population * 3 {
            let deadline = tokio::time::Instant::now() + GATHER_WAIT;
            while batch.len() * 4 < population * 3 && batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(job)) => {
                        batch.push(job);
                        drain(&mut receiver, &mut batch);
                    }
                    _ => break,
                }
            }
        }
        last_two = [last_two[1], batch.len()];
        commit_isolating(&pool, &head, std::mem::take(&mut batch)).await;
    }
}

/// Commits `jobs` as one batch. A batch that fails inside the database
/// before COMMIT (one unit's rows refused, say) is rolled back and its
/// halves committed separately, down to the unit at fault, which alone gets
/// the error: its neighbours commit.
async fn commit_isolating(pool: &PgPool, head: &watch::Sender<i64>, jobs: Vec<Job>) {
    let mut queue = std::collections::VecDeque::from([jobs]);
    while let Some(mut jobs) = queue.pop_front() {
        match commit_batch(pool, &jobs).await {
            Ok((outcomes, position)) => {
                head.send_if_modified(|h| {
                    let moved = position > *h;
                    *h = (*h).max(position);
                    moved
                });
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(BatchFailure::Statement(err)) if jobs.len() > 1 => {
                tracing::warn!(error = %err, batch = jobs.len(), "a batch failed inside the database; committing its halves apart");
                let second = jobs.split_off(jobs.len() / 2);
                queue.push_front(second);
                queue.push_front(jobs);
            }
            Err(BatchFailure::Statement(err) | BatchFailure::Commit(err)) => {
                tracing::error!(error = %err, batch = jobs.len(), "group commit failed");
                for job in jobs {
                    let _ = job.reply.send(Err(LedgerError::Storage(err.clone())));
                }
            }
        }
    }
}

/// Why a batch did not commit.
enum BatchFailure {
    /// A statement of the batch failed: nothing was committed, and the same
    /// units may be tried again in smaller batches.
    Statement(String),
    /// The transaction could not be begun or committed: whether it took
    /// effect may be unknown, so it is never retried.
    Commit(String),
}

fn drain(receiver: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

type Outcomes = Vec<Result<Outcome, LedgerError>>;

async fn commit_batch(pool: &PgPool, jobs: &[Job]) -> Result<(Outcomes, i64), BatchFailure> {
    let fail = |e: sqlx::Error| BatchFailure::Statement(e.to_string());
    let mut tx = pool.begin().await.map_err(|e| BatchFailure::Commit(e.to_string()))?;
    log::lock(&mut tx).await.map_err(fail)?;
    let sealer = log::head(&mut tx).await.map_err(fail)?;
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for job in jobs {
        match &job.command {
            Command::Create(create) => {
                ids.extend(create.references().into_iter().map(|(_, id)| id));
                if let Some(key) = &create.idempotency_key {
                    keys.push((create.task_name.to_string(), key.clone()));
                }
            }
            Command::Run(cmd) => ids.push(cmd.run_id),
        }
    }
    let mut known: HashMap<Uuid, Option<RunState>> = ids.iter().map(|id| (*id, None)).collect();
    for state in runs::load_many(&mut tx, &ids).await.map_err(fail)? {
        known.insert(state.id, Some(state));
    }
    for state in runs::unfinished_by_idempotency_keys(&mut tx, &keys)
        .await
        .map_err(fail)?
    {
        known.insert(state.id, Some(state));
    }
    let mut store = BatchStore::new(known, sealer);
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(match execute(&mut store, &job.command, &job.metadata) {
            Ok(outcome) => Ok(outcome),
            Err(ExecError::Command(e)) => Err(LedgerError::Command(e)),
            // Nothing refuses after writing, so this batch is unusable.
            Err(ExecError::Storage(e)) => return Err(BatchFailure::Statement(e)),
        });
    }
    log::insert(&mut tx, &store.sealed).await.map_err(fail)?;
    let rows: Vec<RunRow> = store
        .changed
        .iter()
        .map(|(id, tags)| RunRow {
            state: store.runs[id].as_ref().expect("stored runs exist"),
            tags: *tags,
            seq: None,
        })
        .collect();
    runs::store_many(&mut tx, &rows).await.map_err(fail)?;
    runs::store_history(&mut tx, &store.closes, &store.history)
        .await
        .map_err(fail)?;
    details::store_many(&mut tx, &store.details).await.map_err(fail)?;
    runs::store_task_deltas(&mut tx, &store.task_deltas)
        .await
        .map_err(fail)?;
    runs::store_run_counts(&mut tx, &store.run_counts).await.map_err(fail)?;
    let position = store.sealer.position;
    if !store.sealed.is_empty() {
        log::notify(&mut tx, position).await.map_err(fail)?;
    }
    let started = std::time::Instant::now();
    tx.commit().await.map_err(|e| BatchFailure::Commit(e.to_string()))?;
    runledger_events::record_commit(jobs.len(), started.elapsed());
    runledger_events::record_appended(store.sealed.len() as u64);
    Ok((outcomes, position))
}

/// A batch in memory: the runs it read and changed, and the events it sealed.
struct BatchStore {
    runs: HashMap<Uuid, Option<RunState>>,
    sealer: Sealer,
    sealed: Vec<Sealed>,
    /// Changed runs in order, with what happened to their tags.
    changed: Vec<(Uuid, Tags)>,
    /// Versions stored before this batch that it ends.
    closes: Vec<Close>,
    /// The batch's versions of its runs, in append order.
    history: Vec<HistoryVersion>,
    /// The batch's detail rows, in append order.
    details: Vec<DetailRow>,
    /// The batch's changes to its tasks' counts.
    task_deltas: runledger_projections::task_counts::TaskDeltas,
    /// The batch's changes to `run_counts`.
    run_counts: runledger_projections::run_counts::RunCountDeltas,
}

impl BatchStore {
    fn new(runs: HashMap<Uuid, Option<RunState>>, sealer: Sealer) -> Self {
        Self {
            runs,
            sealer,
            sealed: Vec::new(),
            changed: Vec::new(),
            closes: Vec::new(),
            history: Vec::new(),
            details: Vec::new(),
            task_deltas: Default::default(),
            run_counts: Default::default(),
        }
    }
}

impl RunStore for BatchStore {
    fn load_run(&mut self, id: Uuid) -> Result<Option<RunState>, String> {
        self.runs
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("run {id} was not loaded for this batch"))
    }

    fn find_unfinished_by_idempotency_key(&mut self, task_name: &str, key: &str) -> Result<Option<RunState>, String> {
        Ok(self
            .runs
            .values()
            .flatten()
            .filter(|s| {
                s.task_name == task_name && s.idempotency_key.as_deref() == Some(key) && s.status != RunStatus::Ended
            })
            .max_by_key(|s| (s.created_at, s.id))
            .cloned())
    }

    fn stream_version(&mut self, run_id: Uuid) -> Result<i64, String> {
        // The runs row is written with every append, so its version is the stream's.
        Ok(self.runs.get(&run_id).and_then(Option::as_ref).map_or(0, |s| s.version))
    }

    fn append(
        &mut self,
        run_id: Uuid,
        _expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope>, String> {
        let current = self.stream_version(run_id)?;
        let sealed = self.sealer.seal(&stream_of(run_id), current, events, metadata);
        let envelopes = sealed.iter().map(|s| s.envelope.clone()).collect();
        self.sealed.extend(sealed);
        Ok(envelopes)
    }

    fn store_run(
        &mut self,
        previous: Option<&RunState>,
        state: &RunState,
        versions: &[HistoryVersion],
    ) -> Result<(), String> {
        if let (Some(_), Some(first)) = (previous, versions.first()) {
            // The run's version open before this append: still in this
            // batch (its last there), or stored before it.
            match self.history.iter_mut().rev().find(|v| v.state.id == state.id) {
                Some(pending) => pending.close(first.state.position, first.valid_from_at),
                None => self.closes.push(Close {
                    run_id: state.id.to_string(),
                    valid_to: first.state.position,
                    valid_to_at: first.valid_from_at,
                }),
            }
        }
        self.history.extend_from_slice(versions);
        self.task_deltas.add(previous, state);
        self.run_counts.add(previous, state);
        let tags = match previous {
            None => Tags::New,
            Some(p) if p.tags != state.tags => Tags::Replaced,
            Some(_) => Tags::Unchanged,
        };
        match self.changed.iter_mut().find(|(id, _)| *id == state.id) {
            // A run created earlier in this batch keeps "New": it has no rows yet.
            Some(entry) if entry.1 == Tags::New => {}
            Some(entry) if tags != Tags::Unchanged => entry.1 = tags,
            Some(_) => {}
            None => self.changed.push((state.id, tags)),
        }
        self.runs.insert(state.id, Some(state.clone()));
        Ok(())
    }

    fn store_details(&mut self, rows: &[DetailRow]) -> Result<(), String> {
        self.details.extend_from_slice(rows);
        Ok(())
    }
}

/// Follows every node's commits through NOTIFY. After each (re)connection it
/// re-reads the head, so a notification lost while disconnected costs
/// nothing: the notification only says "read the log".
async fn listen(pool: PgPool, schema: String, head: Arc<watch::Sender<i64>>) {
    let prefix = format!("{schema}:");
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(log::NOTIFY_CHANNEL).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if let Ok(mut conn) = pool.acquire().await {
            if let Ok(position) = log::head_position(&mut conn).await {
                advance(&head, position);
            }
        }
        loop {
            match listener.recv().await {
                Ok(note) => {
                    if let Some(position) = note.payload().strip_prefix(&prefix).and_then(|p| p.parse().ok()) {
                        advance(&head, position);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

fn advance(head: &watch::Sender<i64>, position: i64) {
    head.send_if_modified(|h| {
        let moved = position > *h;
        *h = (*h).max(position);
        moved
    });
}

impl PgLedger {
    pub async fn verify(&self) -> Result<ChainReport, LedgerError> {
        Ok(log::verify_chain(&mut *self.pool.acquire().await?).await?)
    }

    pub async fn export_page(&self, after: i64, limit: i64) -> Result<Vec<EventEnvelope>, LedgerError> {
        Ok(log::after(&mut *self.pool.acquire().await?, after, limit).await?)
    }

    pub async fn events_at(&self, positions: Vec<i64>) -> Result<Vec<EventEnvelope>, LedgerError> {
        Ok(log::at_positions(&mut *self.pool.acquire().await?, &positions).await?)
    }

    /// Replays the log into fresh projections, holding the append lock so no
    /// node appends meanwhile. Returns (events, runs).
    pub async fn rebuild(&self) -> Result<(u64, usize), LedgerError> {
        let mut tx = self.pool.begin().await?;
        log::lock(&mut tx).await?;
        let counts = runs::rebuild(&mut tx).await.map_err(LedgerError::Storage)?;
        tx.commit().await?;
        Ok(counts)
    }

    /// Stores already-sealed events into an empty log, then rebuilds the
    /// projections, in one transaction holding the append lock.
    pub async fn import(&self, events: Vec<Sealed>) -> Result<(u64, usize), LedgerError> {
        let mut tx = self.pool.begin().await?;
        log::lock(&mut tx).await?;
        if log::head_position(&mut tx).await? != 0 {
            return Err(LedgerError::Storage(
                "the ledger is not empty; import needs an empty ledger".into(),
            ));
        }
        for chunk in events.chunks(1000) {
            log::insert(&mut tx, chunk).await?;
        }
        let counts = runs::rebuild(&mut tx).await.map_err(LedgerError::Storage)?;
        if let Some(last) = events.last() {
            log::notify(&mut tx, last.envelope.position).await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

impl PgLedger {
    pub async fn position_at(&self, time: runledger_events::Timestamp) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar(super::time_travel::POSITION_AT_SQL)
            .bind(time.to_rfc3339())
            .fetch_one(&mut *self.pool.acquire().await?)
            .await?)
    }

    pub async fn runs_changed(&self, from: i64, to: i64, limit: i64) -> Result<(Vec<Uuid>, i64), LedgerError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(super::time_travel::RUNS_CHANGED_SQL)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar(super::time_travel::RUNS_CHANGED_COUNT_SQL)
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((ids.iter().filter_map(|id| id.parse().ok()).collect(), total))
    }
}

/// Rows per statement when a bulk call writes its events and projections.
const BULK_CHUNK: usize = 5_000;

impl PgLedger {
    /// A bulk call in one transaction holding the append lock (so it is
    /// ordered with every node's batches): select, load, act on each run
    /// through the executor, then write events, projections and the
    /// operation in chunks. A dry run reads one snapshot and writes nothing.
    pub async fn bulk(
        &self,
        call: BulkCall,
        metadata: Metadata,
        operation_id: Option<Uuid>,
    ) -> Result<BulkReport, BulkError> {
        let storage = |e: sqlx::Error| BulkError::Ledger(LedgerError::Storage(e.to_string()));
        let mut tx = self.pool.begin().await.map_err(storage)?;
        if call.dry_run {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        } else {
            log::lock(&mut tx).await.map_err(storage)?;
        }
        let sealer = log::head(&mut tx).await.map_err(storage)?;
        let head = sealer.position;
        let matched = match call.query() {
            Some(q) => Some(runs::select(&mut tx, &q, call.max_matches()).await.map_err(storage)?),
            None => None,
        };
        let ids = call.resolve(matched)?;
        let mut known: HashMap<Uuid, Option<RunState>> = ids.iter().map(|id| (*id, None)).collect();
        for chunk in ids.chunks(BULK_CHUNK) {
            for state in runs::load_many(&mut tx, chunk).await.map_err(storage)? {
                known.insert(state.id, Some(state));
            }
        }
        let mut store = BatchStore::new(known, sealer);
        let report = bulk::report(&mut store, &call, &ids, &metadata, operation_id, head)?;
        let Some(id) = operation_id else {
            tx.rollback().await.map_err(storage)?;
            return Ok(report);
        };
        for chunk in store.sealed.chunks(BULK_CHUNK) {
            log::insert(&mut tx, chunk).await.map_err(storage)?;
        }
        for chunk in store.changed.chunks(BULK_CHUNK) {
            let rows: Vec<RunRow> = chunk
                .iter()
                .map(|(id, tags)| RunRow {
                    state: store.runs[id].as_ref().expect("stored runs exist"),
                    tags: *tags,
                    seq: None,
                })
                .collect();
            runs::store_many(&mut tx, &rows).await.map_err(storage)?;
        }
        for chunk in store.closes.chunks(BULK_CHUNK) {
            runs::store_history::<HistoryVersion>(&mut tx, chunk, &[])
                .await
                .map_err(storage)?;
        }
        for chunk in store.history.chunks(BULK_CHUNK) {
            runs::store_history(&mut tx, &[], chunk).await.map_err(storage)?;
        }
        for chunk in store.details.chunks(BULK_CHUNK) {
            details::store_many(&mut tx, chunk).await.map_err(storage)?;
        }
        // The counts behind list totals and `GET /api/tasks`, as a batch of
        // single commands keeps them.
        runs::store_task_deltas(&mut tx, &store.task_deltas)
            .await
            .map_err(storage)?;
        runs::store_run_counts(&mut tx, &store.run_counts)
            .await
            .map_err(storage)?;
        let id = id.to_string();
        sqlx::query(bulk::INSERT_OPERATION_SQL)
            .bind(&id)
            .bind(call.kind.as_str())
            .bind(&metadata.actor)
            .bind(&metadata.request_id)
            .bind(call.selector.to_string())
            .bind(report.as_of)
            .bind(report.selected as i64)
            .bind(report.affected as i64)
            .bind(runledger_events::Timestamp::now().to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let changed = bulk::changed_runs(&report.results);
        for (n, chunk) in changed.chunks(BULK_CHUNK).enumerate() {
            let seq: Vec<i64> = (0..chunk.len()).map(|i| (n * BULK_CHUNK + i) as i64).collect();
            sqlx::query(
                "INSERT INTO operation_runs (operation_id, seq, run_id, new_run_id) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[])",
            )
            .bind(&id)
            .bind(seq)
            .bind(chunk.iter().map(|c| c.0.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| c.1.as_deref()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        if !store.sealed.is_empty() {
            log::notify(&mut tx, store.sealer.position).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        runledger_events::record_appended(store.sealed.len() as u64);
        Ok(report)
    }

    pub async fn operation(&self, id: Uuid, limit: i64, offset: i64) -> Result<Option<OperationRecord>, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<OperationRow> = sqlx::query_as(bulk::OPERATION_SQL)
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let runs: Vec<(String, Option<String>)> = sqlx::query_as(bulk::OPERATION_RUNS_SQL)
            .bind(&row.id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
        row.into_record(runs).map(Some)
    }
}

/// An `idempotency_keys` row as `FIND_SQL` reads it.
type KeyColumns = (String, Option<i32>, Option<String>, Option<Vec<u8>>, i64);

/// Idempotency keys, straight through the pool: the unique primary key
/// decides which of two concurrent requests holds a key.
impl PgLedger {
    pub async fn reserve_idempotency_key(
        &self,
        actor: String,
        key: String,
        hash: String,
        lease: std::time::Duration,
    ) -> Result<Reservation, LedgerError> {
        // A holder may release between our insert and our read; a few
        // rounds settle it, and a key that keeps changing hands is busy.
        for _ in 0..3 {
            let now = idempotency::now_millis();
            sqlx::query(idempotency::DROP_EXPIRED_SQL)
                .bind(&actor)
                .bind(&key)
                .bind(now)
                .execute(&self.pool)
                .await?;
            let inserted = sqlx::query(idempotency::RESERVE_SQL)
                .bind(&actor)
                .bind(&key)
                .bind(&hash)
                .bind(idempotency::millis_after(now, lease))
                .execute(&self.pool)
                .await?;
            if inserted.rows_affected() == 1 {
                sqlx::query(idempotency::PURGE_SQL)
                    .bind(now)
                    .bind(idempotency::PURGE_BATCH)
                    .execute(&self.pool)
                    .await?;
                return Ok(Reservation::Reserved);
            }
            let row: Option<KeyColumns> = sqlx::query_as(idempotency::FIND_SQL)
                .bind(&actor)
                .bind(&key)
                .fetch_optional(&self.pool)
                .await?;
            if let Some((request_sha256, status, headers, body, expires_at)) = row {
                if expires_at > now {
                    let row = KeyRow {
                        request_sha256,
                        status: status.map(i64::from),
                        headers,
                        body,
                        expires_at,
                    };
                    return row.answer(&hash);
                }
            }
        }
        Ok(Reservation::InProgress)
    }

    pub async fn complete_idempotency_key(
        &self,
        actor: String,
        key: String,
        response: StoredResponse,
        ttl: std::time::Duration,
    ) -> Result<(), LedgerError> {
        sqlx::query(idempotency::COMPLETE_SQL)
            .bind(i32::from(response.status))
            .bind(idempotency::headers_json(&response.headers))
            .bind(response.body)
            .bind(idempotency::millis_after(idempotency::now_millis(), ttl))
            .bind(actor)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn release_idempotency_key(&self, actor: String, key: String) -> Result<(), LedgerError> {
        sqlx::query(idempotency::RELEASE_SQL)
            .bind(actor)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

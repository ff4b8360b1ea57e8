use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;
use std::sync::Arc;

use runledger_events::sqlite::{insert_sealed, read, verify_chain, ChainReport, ReadPool, WriteError, WriteTx, Writer};
use runledger_events::{run_stream_id, EventEnvelope, ExpectedVersion, Metadata, NewEvent, Sealed};
use runledger_projections::sqlite::{details, runs};
use runledger_projections::{DetailRow, HistoryVersion, LogEntry, RunQuery, RunState, TaskSummary};
use tracing::instrument;
use uuid::Uuid;

use super::bulk::{self, BulkCall, BulkError, BulkReport, OperationRecord, OperationRow};
use super::execute::{execute, stream_of, ExecError, RunStore};
use super::idempotency::{self, KeyRow, Reservation, StoredResponse};
use super::{migrate, DetailAnswers, DetailReads, EventsQuery, LedgerError};
use crate::auth::{TokenError, TokenRow, INSERT_TOKEN_SQL, REVOKE_TOKEN_SQL, TOKENS_SQL, TOKEN_EXISTS_SQL};
use crate::commands::{Command, Outcome};

const READERS: usize = 4;

pub struct SqliteLedger {
    writer: Writer,
    pub(super) pool: Arc<ReadPool>,
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0)?,
        secret_sha256: r.get(1)?,
        scopes: r.get(2)?,
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

impl SqliteLedger {
    pub async fn token_rows(&self) -> Result<Vec<TokenRow>, LedgerError> {
        Ok(self
            .pool
            .read(|c| c.prepare_cached(TOKENS_SQL)?.query_map([], token_row)?.collect())
            .await?)
    }

    /// Stores a new token, in the writer's transaction; the name is checked
    /// before anything is written (a writer unit may refuse only then).
    pub async fn insert_token(&self, name: String, hash: String, scopes: String) -> Result<(), TokenError> {
        let result = self
            .writer
            .submit(move |tx| {
                let taken: i64 = tx
                    .conn()
                    .query_row(TOKEN_EXISTS_SQL, [&name], |r| r.get(0))
                    .map_err(|e| TokenError::Storage(e.to_string()))?;
                if taken > 0 {
                    return Err(TokenError::NameTaken(name.clone()));
                }
                let now = runledger_events::Timestamp::now().to_rfc3339();
                tx.writer()
                    .execute(INSERT_TOKEN_SQL, rusqlite::params![name, hash, scopes, now])
                    .map_err(|e| TokenError::Storage(e.to_string()))?;
                Ok(())
            })
            .await;
        result.map_err(token_write_error)
    }

    pub async fn revoke_token(&self, name: String) -> Result<(), TokenError> {
        let result = self
            .writer
            .submit(move |tx| {
                let active: i64 = tx
                    .conn()
                    .query_row(
                        "SELECT COUNT(*) FROM api_tokens WHERE name = $1 AND revoked_at IS NULL",
                        [&name],
                        |r| r.get(0),
                    )
                    .map_err(|e| TokenError::Storage(e.to_string()))?;
                if active == 0 {
                    return Err(TokenError::NoSuchToken(name.clone()));
                }
                let now = runledger_events::Timestamp::now().to_rfc3339();
                tx.writer()
                    .execute(REVOKE_TOKEN_SQL, rusqlite::params![now, name])
                    .map_err(|e| TokenError::Storage(e.to_string()))?;
                Ok(())
            })
            .await;
        result.map_err(token_write_error)
    }
}

fn token_write_error(e: WriteError<TokenError>) -> TokenError {
    match e {
        WriteError::Refused(e) => e,
        WriteError::Storage(e) => TokenError::Storage(e.to_string()),
        WriteError::Closed => TokenError::Storage("the writer has stopped".into()),
    }
}

/// Refuses `path` unless it holds a ledger (an `events` table), creating
/// neither the file nor anything in it.
pub(super) fn require_ledger(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let create = "`runledger migrate` or `runledger serve` creates one";
    match path.try_exists() {
        Ok(true) => {}
        Ok(false) => anyhow::bail!("no ledger at {shown}: the file does not exist ({create})"),
        Err(e) => anyhow::bail!("no ledger at {shown}: {e}"),
    }
    // Without SQLITE_OPEN_CREATE: a file removed meanwhile is not made again.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let tables: i64 = rusqlite::Connection::open_with_flags(path, flags)
        .and_then(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'events'",
                [],
                |r| r.get(0),
            )
        })
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    if tables == 0 {
        anyhow::bail!("no ledger at {shown}: the database has no events table ({create})");
    }
    Ok(())
}

impl SqliteLedger {
    pub async fn open(path: PathBuf) -> anyhow::Result<Self> {
        let migrate_path = path.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut conn = runledger_events::sqlite::open(&migrate_path)?;
            let applied = migrate::sqlite(&mut conn)?;
            if applied > 0 {
                tracing::info!(applied, path = %migrate_path.display(), "applied SQLite migrations");
            }
            Ok(())
        })
        .await??;
        let writer = Writer::start(&path)?;
        Ok(Self {
            writer,
            pool: Arc::new(ReadPool::new(path, READERS)),
        })
    }

    #[instrument(skip_all)]
    pub async fn execute(&self, command: Command, metadata: Metadata) -> Result<Outcome, LedgerError> {
        let result = self
            .writer
            .submit(move |tx| execute(&mut SqliteStore(tx), &command, &metadata))
            .await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(WriteError::Refused(ExecError::Command(e))) => Err(LedgerError::Command(e)),
            Err(WriteError::Refused(ExecError::Storage(e))) => Err(LedgerError::Storage(e)),
            Err(WriteError::Storage(e)) => Err(LedgerError::Storage(e.to_string())),
            Err(WriteError::Closed) => Err(LedgerError::Storage("the writer has stopped".into())),
        }
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<RunState>, LedgerError> {
        Ok(self.pool.read(move |c| runs::load(c, &id)).await?)
    }

    /// A single count from `sql`.
    pub async fn count(&self, sql: &'static str) -> Result<i64, LedgerError> {
        Ok(self.pool.read(move |c| c.query_row(sql, [], |r| r.get(0))).await?)
    }

    pub async fn run_as_of(&self, id: Uuid, position: i64) -> Result<Option<RunState>, LedgerError> {
        Ok(self.pool.read(move |c| runs::load_as_of(c, &id, position)).await?)
    }

    pub async fn list_runs(&self, query: RunQuery) -> Result<(Vec<RunState>, i64), LedgerError> {
        Ok(self.pool.read(move |c| runs::list(c, &query)).await?)
    }

    pub async fn tasks(&self, limit: i64, offset: i64) -> Result<(Vec<TaskSummary>, i64), LedgerError> {
        Ok(self.pool.read(move |c| runs::tasks(c, limit, offset)).await?)
    }

    pub async fn run_events(&self, q: EventsQuery) -> Result<Option<Vec<EventEnvelope>>, LedgerError> {
        Ok(self
            .pool
            .read(move |c| {
                // One read transaction, so the run and its events agree.
                c.execute_batch("BEGIN")?;
                let result = (|| {
                    if runs::load(c, &q.run_id)?.is_none() {
                        return Ok(None);
                    }
                    let stream = run_stream_id(&q.run_id);
                    read::stream(c, &stream, q.after_version, q.limit, &q.types).map(Some)
                })();
                c.execute_batch("COMMIT")?;
                result
            })
            .await?)
    }

    pub async fn read_details(&self, reads: DetailReads) -> Result<Option<DetailAnswers>, LedgerError> {
        Ok(self
            .pool
            .read(move |c| {
                // One read transaction, so the run and its details agree.
                c.execute_batch("BEGIN")?;
                let result = (|| {
                    if let Some(id) = reads.run_id {
                        if runs::load(c, &id)?.is_none() {
                            return Ok(None);
                        }
                    }
                    let texts = match &reads.texts {
                        Some(q) => details::texts(c, q)?,
                        None => Vec::new(),
                    };
                    let totals = reads
                        .totals
                        .iter()
                        .map(|q| details::totals(c, q))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Some(DetailAnswers { texts, totals }))
                })();
                c.execute_batch("COMMIT")?;
                result
            })
            .await?)
    }

    pub async fn read_log(&self, after: i64, limit: i64) -> Result<Vec<LogEntry>, LedgerError> {
        Ok(self.pool.read(move |c| runs::log_page(c, after, limit)).await?)
    }

    pub fn head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.writer.head()
    }

    pub async fn ready(&self) -> bool {
        self.pool.read(migrate::sqlite_is_current).await.unwrap_or(false)
    }
}

/// The runs store inside the writer's transaction.
struct SqliteStore<'a, 'c>(&'a mut WriteTx<'c>);

impl RunStore for SqliteStore<'_, '_> {
    fn load_run(&mut self, id: Uuid) -> Result<Option<RunState>, String> {
        runs::load(self.0.conn(), &id).map_err(|e| e.to_string())
    }

    fn find_unfinished_by_idempotency_key(&mut self, task_name: &str, key: &str) -> Result<Option<RunState>, String> {
        runs::find_unfinished_by_idempotency_key(self.0.conn(), task_name, key).map_err(|e| e.to_string())
    }

    fn stream_version(&mut self, run_id: Uuid) -> Result<i64, String> {
        self.0.stream_version(&stream_of(run_id)).map_err(|e| e.to_string())
    }

    fn append(
        &mut self,
        run_id: Uuid,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope>, String> {
        self.0
            .append(&stream_of(run_id), expected, events, metadata)
            .map_err(|e| e.to_string())
    }

    fn store_run(
        &mut self,
        previous: Option<&RunState>,
        state: &RunState,
        versions: &[HistoryVersion],
    ) -> Result<(), String> {
        runs::store(self.0.writer(), previous, state, versions).map_err(|e| e.to_string())
    }

    fn store_details(&mut self, rows: &[DetailRow]) -> Result<(), String> {
        details::store(self.0.writer(), rows).map_err(|e| e.to_string())
    }
}

impl SqliteLedger {
    pub async fn verify(&self) -> Result<ChainReport, LedgerError> {
        Ok(self.pool.read(verify_chain).await?)
    }

    pub async fn export_page(&self, after: i64, limit: i64) -> Result<Vec<EventEnvelope>, LedgerError> {
        Ok(self.pool.read(move |c| read::after(c, after, limit)).await?)
    }

    pub async fn events_at(&self, positions: Vec<i64>) -> Result<Vec<EventEnvelope>, LedgerError> {
        Ok(self.pool.read(move |c| read::at_positions(c, &positions)).await?)
    }

    /// Replays the log into fresh projections, in the writer's transaction
    /// (so no append interleaves). Returns (events, runs).
    pub async fn rebuild(&self) -> Result<(u64, usize), LedgerError> {
        self.writer
            .submit(|tx| runs::rebuild(tx.writer()).map_err(|e| e.to_string()))
            .await
            .map_err(write_error)
    }

    /// Stores already-sealed events into an empty log, then rebuilds the
    /// projections, in one transaction.
    pub async fn import(&self, events: Vec<Sealed>) -> Result<(u64, usize), LedgerError> {
        self.writer
            .submit(move |tx| {
                if read::head(tx.conn()).map_err(|e| e.to_string())?.0 != 0 {
                    return Err("the ledger is not empty; import needs an empty ledger".to_owned());
                }
                let conn = tx.writer();
                for sealed in &events {
                    insert_sealed(conn, sealed).map_err(|e| e.to_string())?;
                }
                runs::rebuild(conn).map_err(|e| e.to_string())
            })
            .await
            .map_err(write_error)
    }
}

fn write_error(e: WriteError<String>) -> LedgerError {
    match e {
        WriteError::Refused(e) => LedgerError::Storage(e),
        WriteError::Storage(e) => LedgerError::Storage(e.to_string()),
        WriteError::Closed => LedgerError::Storage("the writer has stopped".into()),
    }
}

impl SqliteLedger {
    pub async fn position_at(&self, time: runledger_events::Timestamp) -> Result<i64, LedgerError> {
        let text = time.to_rfc3339();
        Ok(self
            .pool
            .read(move |c| c.query_row(super::time_travel::POSITION_AT_SQL, [text], |r| r.get(0)))
            .await?)
    }

    pub async fn runs_changed(&self, from: i64, to: i64, limit: i64) -> Result<(Vec<Uuid>, i64), LedgerError> {
        let rows = self
            .pool
            .read(move |c| {
                c.execute_batch("BEGIN")?;
                let result = (|| {
                    let mut stmt = c.prepare_cached(super::time_travel::RUNS_CHANGED_SQL)?;
                    let ids = stmt
                        .query_map(rusqlite::params![from, to, limit], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    let total: i64 = c.query_row(
                        super::time_travel::RUNS_CHANGED_COUNT_SQL,
                        rusqlite::params![from, to],
                        |r| r.get(0),
                    )?;
                    Ok((ids, total))
                })();
                c.execute_batch("COMMIT")?;
                result
            })
            .await?;
        let ids = rows.0.iter().filter_map(|id| id.parse().ok()).collect();
        Ok((ids, rows.1))
    }
}

impl SqliteLedger {
    /// A bulk call as one writer unit: select, act on each run, record the
    /// operation. Only the selection may refuse, before anything is written.
    pub async fn bulk(
        &self,
        call: BulkCall,
        metadata: Metadata,
        operation_id: Option<Uuid>,
    ) -> Result<BulkReport, BulkError> {
        let storage = |e: rusqlite::Error| BulkError::Ledger(LedgerError::Storage(e.to_string()));
        let result = self
            .writer
            .submit(move |tx| {
                let head = read::head(tx.conn()).map_err(storage)?.0;
                let matched = match call.query() {
                    Some(q) => Some(runs::select(tx.conn(), &q, call.max_matches()).map_err(storage)?),
                    None => None,
                };
                let ids = call.resolve(matched)?;
                let report = bulk::report(&mut SqliteStore(tx), &call, &ids, &metadata, operation_id, head)?;
                if let Some(id) = operation_id {
                    let conn = tx.writer();
                    let id = id.to_string();
                    conn.prepare_cached(bulk::INSERT_OPERATION_SQL)
                        .and_then(|mut s| {
                            s.execute(rusqlite::params![
                                id,
                                call.kind.as_str(),
                                metadata.actor,
                                metadata.request_id,
                                call.selector.to_string(),
                                report.as_of,
                                report.selected as i64,
                                report.affected as i64,
                                runledger_events::Timestamp::now().to_rfc3339(),
                            ])
                        })
                        .map_err(storage)?;
                    let mut insert = conn.prepare_cached(bulk::INSERT_OPERATION_RUN_SQL).map_err(storage)?;
                    for (seq, (run, new_run)) in bulk::changed_runs(&report.results).into_iter().enumerate() {
                        insert
                            .execute(rusqlite::params![id, seq as i64, run, new_run])
                            .map_err(storage)?;
                    }
                }
                Ok(report)
            })
            .await;
        result.map_err(|e| match e {
            WriteError::Refused(e) => e,
            WriteError::Storage(e) => BulkError::Ledger(LedgerError::Storage(e.to_string())),
            WriteError::Closed => BulkError::Ledger(LedgerError::Storage("the writer has stopped".into())),
        })
    }

    pub async fn operation(&self, id: Uuid, limit: i64, offset: i64) -> Result<Option<OperationRecord>, LedgerError> {
        let rows = self
            .pool
            .read(move |c| {
                let id = id.to_string();
                let row = c
                    .prepare_cached(bulk::OPERATION_SQL)?
                    .query_row([&id], |r| {
                        Ok(OperationRow {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            actor: r.get(2)?,
                            request_id: r.get(3)?,
                            selector: r.get(4)?,
                            as_of: r.get(5)?,
                            selected: r.get(6)?,
                            affected: r.get(7)?,
                            created_at: r.get(8)?,
                        })
                    })
                    .optional()?;
                let Some(row) = row else { return Ok(None) };
                let runs = c
                    .prepare_cached(bulk::OPERATION_RUNS_SQL)?
                    .query_map(rusqlite::params![id, limit, offset], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, Option<String>)>>>()?;
                Ok(Some((row, runs)))
            })
            .await?;
        rows.map(|(row, runs)| row.into_record(runs)).transpose()
    }
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        request_sha256: r.get(0)?,
        status: r.get(1)?,
        headers: r.get(2)?,
        body: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

fn ledger_write_error(e: WriteError<LedgerError>) -> LedgerError {
    match e {
        WriteError::Refused(e) => e,
        WriteError::Storage(e) => LedgerError::Storage(e.to_string()),
        WriteError::Closed => LedgerError::Storage("the writer has stopped".into()),
    }
}

/// Idempotency keys go through the writer, like every other write, so they
/// never wait on the database lock against it.
impl SqliteLedger {
    pub async fn reserve_idempotency_key(
        &self,
        actor: String,
        key: String,
        hash: String,
        lease: std::time::Duration,
    ) -> Result<Reservation, LedgerError> {
        self.writer
            .submit(move |tx| {
                let now = idempotency::now_millis();
                let row = tx
                    .conn()
                    .prepare_cached(idempotency::FIND_SQL)?
                    .query_row(rusqlite::params![actor, key], key_row)
                    .optional()?;
                // A live row answers without writing; the unit may still refuse.
                if let Some(row) = row.filter(|r| r.expires_at > now) {
                    return row.answer(&hash);
                }
                let conn = tx.writer();
                conn.prepare_cached(idempotency::DROP_EXPIRED_SQL)?
                    .execute(rusqlite::params![actor, key, now])?;
                conn.prepare_cached(idempotency::PURGE_SQL)?
                    .execute(rusqlite::params![now, idempotency::PURGE_BATCH])?;
                let inserted = conn
                    .prepare_cached(idempotency::RESERVE_SQL)?
                    .execute(rusqlite::params![
                        actor,
                        key,
                        hash,
                        idempotency::millis_after(now, lease)
                    ])?;
                Ok(if inserted == 1 {
                    Reservation::Reserved
                } else {
                    Reservation::InProgress
                })
            })
            .await
            .map_err(ledger_write_error)
    }

    pub async fn complete_idempotency_key(
        &self,
        actor: String,
        key: String,
        response: StoredResponse,
        ttl: std::time::Duration,
    ) -> Result<(), LedgerError> {
        self.writer
            .submit(move |tx| {
                let expires_at = idempotency::millis_after(idempotency::now_millis(), ttl);
                tx.writer()
                    .prepare_cached(idempotency::COMPLETE_SQL)?
                    .execute(rusqlite::params![
                        i64::from(response.status),
                        idempotency::headers_json(&response.headers),
                        response.body,
                        expires_at,
                        actor,
                        key
                    ])?;
                Ok(())
            })
            .await
            .map_err(ledger_write_error)
    }

    pub async fn release_idempotency_key(&self, actor: String, key: String) -> Result<(), LedgerError> {
        self.writer
            .submit(move |tx| {
                tx.writer()
                    .prepare_cached(idempotency::RELEASE_SQL)?
                    .execute(rusqlite::params![actor, key])?;
                Ok(())
            })
            .await
            .map_err(ledger_write_error)
    }
}

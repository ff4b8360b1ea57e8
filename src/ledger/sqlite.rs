use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use runledger_events::sqlite::{read, ReadPool, WriteError, WriteTx, Writer};
use runledger_events::{run_stream_id, EventEnvelope, ExpectedVersion, Metadata};
use runledger_projections::sqlite::runs;
use runledger_projections::{EventContext, RunQuery, RunState, TaskSummary};
use tracing::instrument;
use uuid::Uuid;

use super::{migrate, EventsQuery, LedgerError};
use crate::commands::{self, Command, CommandError, Decision, Loaded, Outcome};

const READERS: usize = 4;

pub struct SqliteLedger {
    writer: Writer,
    pool: Arc<ReadPool>,
}

/// Why a unit of work inside the writer gave up; it rolls back to its
/// savepoint either way.
enum UnitError {
    Command(CommandError),
    Storage(String),
}

impl From<rusqlite::Error> for UnitError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<CommandError> for UnitError {
    fn from(e: CommandError) -> Self {
        Self::Command(e)
    }
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
        let result = self.writer.submit(move |tx| execute_in(tx, &command, &metadata)).await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(WriteError::Refused(UnitError::Command(e))) => Err(LedgerError::Command(e)),
            Err(WriteError::Refused(UnitError::Storage(e))) => Err(LedgerError::Storage(e)),
            Err(WriteError::Storage(e)) => Err(LedgerError::Storage(e.to_string())),
            Err(WriteError::Closed) => Err(LedgerError::Storage("the writer has stopped".into())),
        }
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<RunState>, LedgerError> {
        Ok(self.pool.read(move |c| runs::load(c, &id)).await?)
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

    pub async fn ready(&self) -> bool {
        self.pool.read(migrate::sqlite_is_current).await.unwrap_or(false)
    }
}

/// Runs inside the writer's transaction: read, decide, append, project.
fn execute_in(tx: &mut WriteTx<'_>, command: &Command, metadata: &Metadata) -> Result<Outcome, UnitError> {
    let loaded = load(tx, command)?;
    let (writes, reply) = match commands::decide(command, &loaded)? {
        Decision::Existing(run) => return Ok(Outcome::Existing(run)),
        Decision::Append { writes, reply } => (writes, reply),
    };
    // Every refusal happens before the first write (the writer's contract):
    // check all expected versions first.
    for write in &writes {
        let actual = tx.stream_version(&run_stream_id(&write.run_id))?;
        if !write.expected.admits(actual) {
            let expected = match write.expected {
                ExpectedVersion::Exact(v) => v,
                _ => 0,
            };
            return Err(UnitError::Command(CommandError::VersionConflict {
                run_id: write.run_id,
                expected,
                actual,
            }));
        }
    }
    let mut states: HashMap<Uuid, RunState> = HashMap::new();
    if let Some(target) = loaded.target {
        states.insert(target.id, target);
    }
    for write in writes {
        let new_events: Vec<_> = write.events.iter().map(|e| e.to_new(Uuid::now_v7())).collect();
        let stream = run_stream_id(&write.run_id);
        let envelopes = tx
            .append(&stream, write.expected, &new_events, metadata)
            .map_err(|e| UnitError::Storage(e.to_string()))?;
        let previous = states.get(&write.run_id).cloned();
        let state = states
            .entry(write.run_id)
            .or_insert_with(|| RunState::empty(write.run_id));
        for (event, envelope) in write.events.iter().zip(&envelopes) {
            state
                .apply(event, &EventContext::of(envelope))
                .map_err(|r| UnitError::Storage(format!("decided event no longer applies: {r}")))?;
        }
        runs::store(tx.writer(), previous.as_ref(), state)?;
    }
    commands::outcome(reply, &states).ok_or_else(|| UnitError::Storage("decided run missing after append".into()))
}

fn load(tx: &WriteTx<'_>, command: &Command) -> Result<Loaded, UnitError> {
    let conn = tx.conn();
    let mut loaded = Loaded::default();
    match command {
        Command::Create(create) => {
            if let Some(key) = &create.idempotency_key {
                loaded.idempotent_match =
                    runs::find_unfinished_by_idempotency_key(conn, create.task_name.as_str(), key)?;
            }
            for (field, id) in create.references() {
                if runs::load(conn, &id)?.is_none() {
                    loaded.missing_references.push((field, id));
                }
            }
        }
        Command::Run(cmd) => loaded.target = runs::load(conn, &cmd.run_id)?,
    }
    Ok(loaded)
}

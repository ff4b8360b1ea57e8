//! The ledger: executes commands against the log and answers queries from the
//! projections. Each backend is a module: SQLite (embedded, the default) and
//! PostgreSQL (several nodes on one database).

pub mod bulk;
pub mod bundle;
mod deadlines;
mod details;
mod execute;
mod gauges;
mod idempotency;
pub mod migrate;
mod postgres;
mod sqlite;
mod time_travel;
mod tokens;

use std::path::PathBuf;

use runledger_events::chain::ChainReport;
use runledger_events::{EventEnvelope, Metadata};
use runledger_projections::{LogEntry, RunQuery, RunState, TaskSummary};
use uuid::Uuid;

use crate::commands::{Command, CommandError, Outcome};

pub use deadlines::DueRun;
pub use details::{DetailAnswers, DetailReads};
pub use idempotency::{Reservation, StoredResponse};
pub use postgres::PgLedger;
pub use sqlite::SqliteLedger;
pub use time_travel::{Change, HistoryEntry};
pub use tokens::tokens_generation;

/// Where the ledger lives, parsed from `--database-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    /// A `postgres://` URL; `?options=-c%20search_path%3Dname` picks a schema.
    Postgres(String),
}

impl DatabaseUrl {
    /// Accepts `sqlite://relative/path.db`, `sqlite:///absolute/path.db` and
    /// `sqlite:path.db`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err("a SQLite URL needs a file path, e.g. sqlite://runledger.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(text.to_owned()));
        }
        Err(format!(
            "unsupported database URL {text:?}; expected sqlite://PATH or postgres://…"
        ))
    }
}

/// What readers of the API see: a stored event in the current shape of its
/// type. `export` alone gives the stored form, which the hash chain covers.
fn upcast(envelope: EventEnvelope) -> Result<EventEnvelope, LedgerError> {
    let position = envelope.position;
    envelope
        .upcast()
        .map_err(|e| LedgerError::Storage(format!("event at position {position}: {e}")))
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// A run's events, oldest first.
pub struct EventsQuery {
    pub run_id: Uuid,
    pub after_version: i64,
    pub limit: i64,
    pub types: Vec<String>,
}

pub enum Ledger {
    Sqlite(SqliteLedger),
    Postgres(PgLedger),
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger at `url`.
    pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        let ledger = match url {
            DatabaseUrl::Sqlite(path) => Self::Sqlite(SqliteLedger::open(path.clone()).await?),
            DatabaseUrl::Postgres(url) => return Self::open_postgres(url.parse()?).await,
        };
        ledger.fill_new_projections().await?;
        Ok(ledger)
    }

    /// Opens the ledger at `url` only if one is there (upgrading an older
    /// schema), creating nothing: a mistyped path is an error, not an empty
    /// ledger that verifies. Every admin command but `migrate` opens this way.
    pub async fn open_existing(url: &DatabaseUrl) -> anyhow::Result<Self> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::require_ledger(&path)).await??
            }
            DatabaseUrl::Postgres(url) => postgres::require_ledger(url.parse()?).await?,
        }
        Self::open(url).await
    }

    pub async fn open_postgres(options: sqlx::postgres::PgConnectOptions) -> anyhow::Result<Self> {
        let ledger = Self::Postgres(PgLedger::open(options).await?);
        ledger.fill_new_projections().await?;
        Ok(ledger)
    }

    /// A ledger written before the history or the lineage projection
    /// existed has runs but no rows there: fill them (and the rest) from the
    /// log once, at start-up.
    async fn fill_new_projections(&self) -> anyhow::Result<()> {
        const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM runs LIMIT 1) r \
             WHERE NOT EXISTS (SELECT 1 FROM run_history) OR NOT EXISTS (SELECT 1 FROM run_lineage) \
             OR NOT EXISTS (SELECT 1 FROM run_counts)";
        let missing: i64 = match self {
            Self::Sqlite(l) => l.count(SQL).await?,
            Self::Postgres(l) => l.count(SQL).await?,
        };
        if missing > 0 {
            tracing::info!("a projection is empty: rebuilding the projections from the log");
            let (events, runs) = self.rebuild().await?;
            tracing::info!(events, runs, "projections rebuilt");
        }
        Ok(())
    }

    pub async fn execute(&self, command: Command, metadata: Metadata) -> Result<Outcome, LedgerError> {
        match self {
            Self::Sqlite(l) => l.execute(command, metadata).await,
            Self::Postgres(l) => l.execute(command, metadata).await,
        }
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<RunState>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.get_run(id).await,
            Self::Postgres(l) => l.get_run(id).await,
        }
    }

    pub async fn list_runs(&self, query: RunQuery) -> Result<(Vec<RunState>, i64), LedgerError> {
        match self {
            Self::Sqlite(l) => l.list_runs(query).await,
            Self::Postgres(l) => l.list_runs(query).await,
        }
    }

    pub async fn tasks(&self, limit: i64, offset: i64) -> Result<(Vec<TaskSummary>, i64), LedgerError> {
        match self {
            Self::Sqlite(l) => l.tasks(limit, offset).await,
            Self::Postgres(l) => l.tasks(limit, offset).await,
        }
    }

    /// `None` when the run does not exist.
    /// Events are in the current shape of their type (see `upcast`).
    pub async fn run_events(&self, query: EventsQuery) -> Result<Option<Vec<EventEnvelope>>, LedgerError> {
        let events = match self {
            Self::Sqlite(l) => l.run_events(query).await?,
            Self::Postgres(l) => l.run_events(query).await?,
        };
        events.map(|page| page.into_iter().map(upcast).collect()).transpose()
    }

    /// Up to `limit` events after `after`, with their runs' task and project,
    /// in the current shape of their type.
    pub async fn read_log(&self, after: i64, limit: i64) -> Result<Vec<LogEntry>, LedgerError> {
        let entries = match self {
            Self::Sqlite(l) => l.read_log(after, limit).await?,
            Self::Postgres(l) => l.read_log(after, limit).await?,
        };
        entries
            .into_iter()
            .map(|mut entry| {
                entry.envelope = upcast(entry.envelope)?;
                Ok(entry)
            })
            .collect()
    }

    /// The last committed position this node knows of; it changes after
    /// every commit (on PostgreSQL, any node's). A wake-up for followers.
    pub fn head(&self) -> tokio::sync::watch::Receiver<i64> {
        match self {
            Self::Sqlite(l) => l.head(),
            Self::Postgres(l) => l.head(),
        }
    }

    /// Re-computes the hash chain over the whole log.
    pub async fn verify(&self) -> Result<ChainReport, LedgerError> {
        match self {
            Self::Sqlite(l) => l.verify().await,
            Self::Postgres(l) => l.verify().await,
        }
    }

    /// Stored events after `after`, in position order, as they were sealed.
    pub async fn export_page(&self, after: i64, limit: i64) -> Result<Vec<EventEnvelope>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.export_page(after, limit).await,
            Self::Postgres(l) => l.export_page(after, limit).await,
        }
    }

    /// Drops every projection and replays the log. Returns (events, runs).
    pub async fn rebuild(&self) -> Result<(u64, usize), LedgerError> {
        match self {
            Self::Sqlite(l) => l.rebuild().await,
            Self::Postgres(l) => l.rebuild().await,
        }
    }

    /// Loads exported events into an empty ledger after checking that they
    /// form an intact chain from position 1, then rebuilds the projections.
    pub async fn import(&self, envelopes: Vec<EventEnvelope>) -> Result<(u64, usize), LedgerError> {
        let mut walk = runledger_events::chain::ChainWalk::default();
        let mut sealed = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let s = runledger_events::Sealed::from_envelope(envelope);
            if !s.check(&mut walk) {
                let report = walk.report();
                let (position, why) = report.first_break.unwrap_or_default();
                return Err(LedgerError::Storage(format!(
                    "the import breaks the hash chain at position {position}: {why}"
                )));
            }
            sealed.push(s);
        }
        match self {
            Self::Sqlite(l) => l.import(sealed).await,
            Self::Postgres(l) => l.import(sealed).await,
        }
    }

    /// True when the database answers and its schema is current.
    pub async fn ready(&self) -> bool {
        match self {
            Self::Sqlite(l) => l.ready().await,
            Self::Postgres(l) => l.ready().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://runledger.db"),
            Ok(DatabaseUrl::Sqlite("runledger.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/r.db"),
            Ok(DatabaseUrl::Sqlite("/var/lib/r.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:x.db?mode=rwc"),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert_eq!(
            DatabaseUrl::parse("postgres://u@localhost:5432/db"),
            Ok(DatabaseUrl::Postgres("postgres://u@localhost:5432/db".into()))
        );
    }
}

//! Reads for the deadline enforcer (`crate::deadlines`), from the runs
//! projection's `runs_deadline` index.

use runledger_events::Timestamp;
use runledger_projections::deadlines::{DUE_SQL, NEXT_SQL};
use uuid::Uuid;

use super::{Ledger, LedgerError};

/// A run whose deadline is due, at the version it was read at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueRun {
    pub run_id: Uuid,
    pub version: i64,
}

fn due_run(id: &str, version: i64) -> Result<DueRun, LedgerError> {
    let run_id = id
        .parse()
        .map_err(|e| LedgerError::Storage(format!("run id {id:?} in runs: {e}")))?;
    Ok(DueRun { run_id, version })
}

impl Ledger {
    /// Up to `limit` runs whose deadline is at or before `now`, earliest first.
    pub async fn due_deadlines(&self, now: Timestamp, limit: i64) -> Result<Vec<DueRun>, LedgerError> {
        let now = now.as_micros();
        let rows: Vec<(String, i64)> = match self {
            Self::Sqlite(l) => {
                l.pool
                    .read(move |c| {
                        c.prepare_cached(DUE_SQL)?
                            .query_map([now, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .await?
            }
            Self::Postgres(l) => {
                sqlx::query_as(DUE_SQL)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(l.pool())
                    .await?
            }
        };
        rows.iter().map(|(id, version)| due_run(id, *version)).collect()
    }

    /// The earliest deadline of any run, if one has a deadline.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>, LedgerError> {
        let micros: Option<i64> = match self {
            Self::Sqlite(l) => l.pool.read(|c| c.query_row(NEXT_SQL, [], |r| r.get(0))).await?,
            Self::Postgres(l) => sqlx::query_scalar(NEXT_SQL).fetch_one(l.pool()).await?,
        };
        Ok(micros.and_then(Timestamp::from_micros))
    }
}

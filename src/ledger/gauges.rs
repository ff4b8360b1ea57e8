//! The runs as `/metrics` shows them, read at scrape time from the
//! maintained counts (see `runledger_projections::gauges`), in one read
//! transaction so that the figures agree with each other.

use runledger_projections::gauges::{RunGauges, OLDEST_PENDING_SQL, OTHER_TASKS, TOP_TASKS_SQL, TOTALS_SQL};
use runledger_projections::task_counts::count_columns;
use rusqlite::OptionalExtension;
use sqlx::Row;

use super::{Ledger, LedgerError, PgLedger, SqliteLedger};

impl Ledger {
    /// The run gauges, with the `top` tasks that have the most live runs.
    pub async fn run_gauges(&self, top: usize) -> Result<RunGauges, LedgerError> {
        let top = i64::try_from(top).unwrap_or(i64::MAX);
        match self {
            Self::Sqlite(l) => l.run_gauges(top).await,
            Self::Postgres(l) => l.run_gauges(top).await,
        }
    }
}

impl SqliteLedger {
    async fn run_gauges(&self, top: i64) -> Result<RunGauges, LedgerError> {
        Ok(self
            .pool
            .read(move |c| {
                c.execute_batch("BEGIN")?;
                let result = (|| {
                    let totals = c.query_row(&TOTALS_SQL, [], |r| {
                        (0..count_columns().len())
                            .map(|i| r.get(i))
                            .collect::<rusqlite::Result<Vec<i64>>>()
                    })?;
                    let tasks = c
                        .prepare_cached(TOP_TASKS_SQL)?
                        .query_map(rusqlite::params![OTHER_TASKS, top], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<(String, i64)>>>()?;
                    let oldest = c.query_row(OLDEST_PENDING_SQL, [], |r| r.get(0)).optional()?;
                    Ok(RunGauges::from_rows(&totals, tasks, oldest))
                })();
                c.execute_batch("COMMIT")?;
                result
            })
            .await?)
    }
}

impl PgLedger {
    async fn run_gauges(&self, top: i64) -> Result<RunGauges, LedgerError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&TOTALS_SQL).fetch_one(&mut *tx).await?;
        let totals = (0..row.len())
            .map(|i| row.try_get::<i64, _>(i))
            .collect::<Result<Vec<_>, _>>()?;
        let tasks: Vec<(String, i64)> = sqlx::query_as(TOP_TASKS_SQL)
            .bind(OTHER_TASKS)
            .bind(top)
            .fetch_all(&mut *tx)
            .await?;
        let oldest: Option<i64> = sqlx::query_scalar(OLDEST_PENDING_SQL).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(RunGauges::from_rows(&totals, tasks, oldest))
    }
}

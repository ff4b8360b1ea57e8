//! A run's detail tables on PostgreSQL: one `UNNEST` insert per table per
//! batch, in the appender's transaction.

use std::sync::LazyLock;

use sqlx::PgConnection;

use crate::details::{DetailRow, DetailTable, UsageTotals, CHECKPOINTS, LINEAGE, LOGS, OUTPUTS, TOOL_CALLS, USAGE};
use crate::SqlQuery;

/// In the order of `kinds` in `store_many`.
const TABLES: [&DetailTable; 6] = [&CHECKPOINTS, &LOGS, &USAGE, &TOOL_CALLS, &OUTPUTS, &LINEAGE];

static INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| TABLES.iter().map(|t| t.unnest_sql()).collect());

/// Columns gathered from the rows of one kind.
#[derive(Default)]
struct Columns {
    text: Vec<Vec<Option<String>>>,
    int: Vec<Vec<i64>>,
}

impl Columns {
    fn push(&mut self, texts: Vec<Option<String>>, ints: Vec<i64>) {
        self.text.resize_with(texts.len(), Vec::new);
        self.int.resize_with(ints.len(), Vec::new);
        for (column, value) in self.text.iter_mut().zip(texts) {
            column.push(value);
        }
        for (column, value) in self.int.iter_mut().zip(ints) {
            column.push(value);
        }
    }

    fn is_empty(&self) -> bool {
        self.text.first().is_none_or(Vec::is_empty)
    }
}

/// Inserts a batch's detail rows, one statement per table that has any.
pub async fn store_many(conn: &mut PgConnection, rows: &[DetailRow]) -> sqlx::Result<()> {
    let mut kinds: [Columns; 6] = Default::default();
    for row in rows.iter().cloned() {
        match row {
            DetailRow::Checkpoint {
                run_id,
                sequence,
                position,
                record,
            } => kinds[0].push(vec![Some(run_id), Some(record)], vec![sequence, position]),
            DetailRow::Log {
                run_id,
                position,
                level,
                log_type,
                record,
            } => kinds[1].push(vec![Some(run_id), Some(level), log_type, Some(record)], vec![position]),
            DetailRow::Usage {
                run_id,
                position,
                task_name,
                provider,
                model,
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost_microusd,
                record,
            } => kinds[2].push(
                vec![Some(run_id), Some(task_name), Some(provider), Some(model), Some(record)],
                vec![position, prompt_tokens, completion_tokens, total_tokens, cost_microusd],
            ),
            DetailRow::ToolCall {
                run_id,
                position,
                tool_name,
                status,
                record,
            } => kinds[3].push(
                vec![Some(run_id), Some(tool_name), Some(status), Some(record)],
                vec![position],
            ),
            DetailRow::Output {
                run_id,
                position,
                output_key,
                record,
            } => kinds[4].push(vec![Some(run_id), Some(output_key), Some(record)], vec![position]),
            DetailRow::Lineage { run_id, source_run_id } => kinds[5].push(vec![Some(run_id), source_run_id], vec![]),
        }
    }
    for (i, columns) in kinds.iter_mut().enumerate() {
        if columns.is_empty() {
            continue;
        }
        let mut query = sqlx::query(&INSERTS[i]);
        let (mut texts, mut ints) = (columns.text.drain(..), columns.int.drain(..));
        // Bound in the table's column order: each the next column of its type.
        for (_, array) in TABLES[i].columns {
            query = match *array {
                "bigint[]" => query.bind(ints.next().expect("an integer column")),
                _ => query.bind(texts.next().expect("a text column")),
            };
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

type TotalsRow = (Option<String>, Option<String>, i64, i64, i64, i64, i64);

/// Rows of `usage_totals_sql`.
pub async fn totals(conn: &mut PgConnection, q: &SqlQuery) -> sqlx::Result<Vec<UsageTotals>> {
    let rows: Vec<TotalsRow> = sqlx::query_as_with(&q.sql, super::runs::arguments(&q.args)?)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(provider, model, records, prompt_tokens, completion_tokens, total_tokens, cost_microusd)| UsageTotals {
                provider,
                model,
                records,
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost_microusd,
            },
        )
        .collect())
}

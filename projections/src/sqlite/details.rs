//! A run's detail tables on SQLite: one cached INSERT per row, in the
//! writer's transaction.

use std::sync::LazyLock;

use rusqlite::{params, Connection};

use crate::details::{DetailRow, UsageTotals, CHECKPOINTS, LINEAGE, LOGS, OUTPUTS, TOOL_CALLS, USAGE};
use crate::SqlQuery;

static INSERTS: LazyLock<[String; 6]> = LazyLock::new(|| {
    [
        CHECKPOINTS.insert_sql(),
        LOGS.insert_sql(),
        USAGE.insert_sql(),
        TOOL_CALLS.insert_sql(),
        OUTPUTS.insert_sql(),
        LINEAGE.insert_sql(),
    ]
});

pub fn store(conn: &Connection, rows: &[DetailRow]) -> rusqlite::Result<()> {
    for row in rows {
        match row {
            DetailRow::Checkpoint {
                run_id,
                sequence,
                position,
                record,
            } => conn
                .prepare_cached(&INSERTS[0])?
                .execute(params![run_id, sequence, position, record])?,
            DetailRow::Log {
                run_id,
                position,
                level,
                log_type,
                record,
            } => conn
                .prepare_cached(&INSERTS[1])?
                .execute(params![run_id, position, level, log_type, record])?,
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
            } => conn.prepare_cached(&INSERTS[2])?.execute(params![
                run_id,
                position,
                task_name,
                provider,
                model,
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost_microusd,
                record
            ])?,
            DetailRow::ToolCall {
                run_id,
                position,
                tool_name,
                status,
                record,
            } => conn
                .prepare_cached(&INSERTS[3])?
                .execute(params![run_id, position, tool_name, status, record])?,
            DetailRow::Output {
                run_id,
                position,
                output_key,
                record,
            } => conn
                .prepare_cached(&INSERTS[4])?
                .execute(params![run_id, position, output_key, record])?,
            DetailRow::Lineage { run_id, source_run_id } => conn
                .prepare_cached(&INSERTS[5])?
                .execute(params![run_id, source_run_id])?,
        };
    }
    Ok(())
}

use super::bind;
pub use super::texts;

/// Rows of `usage_totals_sql`.
pub fn totals(conn: &Connection, q: &SqlQuery) -> rusqlite::Result<Vec<UsageTotals>> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(bind(&q.args)), |r| {
        Ok(UsageTotals {
            provider: r.get(0)?,
            model: r.get(1)?,
            records: r.get(2)?,
            prompt_tokens: r.get(3)?,
            completion_tokens: r.get(4)?,
            total_tokens: r.get(5)?,
            cost_microusd: r.get(6)?,
        })
    })?;
    rows.collect()
}

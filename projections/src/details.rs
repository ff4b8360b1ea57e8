//! A run's details — checkpoints, log lines, model usage, tool calls and
//! structured outputs — and its lineage link. Each is a table with one row
//! per event, written in the transaction that appends the event and rebuilt
//! from the log with everything else. The rows, their columns and the SQL
//! that reads them are written once for both backends.

use runledger_events::{RunEvent, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::query::Builder;
use crate::{EventContext, RunState, SqlQuery};

/// A saved state of a run, to resume from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    /// 1, 2, 3… per run, assigned by the server.
    pub sequence: i64,
    pub source: Option<String>,
    pub state: Value,
    /// The log position of its event.
    pub position: i64,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

/// One log line of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunLog {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    pub position: i64,
    /// As recorded (`info` when the executor gave none).
    pub level: String,
    #[serde(rename = "type")]
    pub log_type: Option<String>,
    pub message: String,
    pub data: Option<Value>,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

/// One model call's token counts and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRecord {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    pub position: i64,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_microusd: i64,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

/// Sums of usage records; per model when `provider` and `model` are set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub records: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_microusd: i64,
}

/// One tool call made by a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    pub position: i64,
    pub tool_name: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub duration_ms: Option<i64>,
    /// As the executor reported it.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

/// A structured output of a run, checked against its schema when it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputRecord {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    pub position: i64,
    pub output_key: String,
    pub schema: Option<Value>,
    pub value: Value,
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

/// The row an event adds to a detail table. `record` is the API's JSON of
/// the detail; the other columns are there to filter, order and sum.
#[derive(Clone, Debug, PartialEq)]
pub enum DetailRow {
    Checkpoint {
        run_id: String,
        sequence: i64,
        position: i64,
        record: String,
    },
    Log {
        run_id: String,
        position: i64,
        level: String,
        log_type: Option<String>,
        record: String,
    },
    Usage {
        run_id: String,
        position: i64,
        task_name: String,
        provider: String,
        model: String,
        prompt_tokens: i64,
        completion_tokens: i64,
        total_tokens: i64,
        cost_microusd: i64,
        record: String,
    },
    ToolCall {
        run_id: String,
        position: i64,
        tool_name: String,
        status: String,
        record: String,
    },
    Output {
        run_id: String,
        position: i64,
        output_key: String,
        record: String,
    },
    /// Every run has one: the run it retries or continues, if any.
    Lineage {
        run_id: String,
        source_run_id: Option<String>,
    },
}

impl DetailRow {
    /// The row `event` adds, given the run after it (at `at`); `None` for
    /// events that only change the run.
    pub fn of(run: &RunState, event: &RunEvent, at: &EventContext) -> Result<Option<Self>, serde_json::Error> {
        let run_id = run.id;
        let (position, recorded_at) = (at.position, at.recorded_at);
        let id = || run_id.to_string();
        Ok(Some(match event {
            RunEvent::Created(c) => Self::Lineage {
                run_id: id(),
                source_run_id: c.retry_of_run_id.or(c.continuation_of).map(|s| s.to_string()),
            },
            RunEvent::Checkpointed(c) => Self::Checkpoint {
                run_id: id(),
                sequence: c.sequence,
                position,
                record: serde_json::to_string(&Checkpoint {
                    run_id,
                    sequence: c.sequence,
                    source: c.source.clone(),
                    state: c.state.clone(),
                    position,
                    recorded_at,
                })?,
            },
            RunEvent::Logged(l) => Self::Log {
                run_id: id(),
                position,
                level: l.level.clone(),
                log_type: l.log_type.clone(),
                record: serde_json::to_string(&RunLog {
                    run_id,
                    position,
                    level: l.level.clone(),
                    log_type: l.log_type.clone(),
                    message: l.message.clone(),
                    data: l.data.clone(),
                    recorded_at,
                })?,
            },
            RunEvent::UsageRecorded(u) => Self::Usage {
                run_id: id(),
                position,
                task_name: run.task_name.clone(),
                provider: u.provider.clone(),
                model: u.model.clone(),
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
                cost_microusd: u.cost_microusd,
                record: serde_json::to_string(&UsageRecord {
                    run_id,
                    position,
                    provider: u.provider.clone(),
                    model: u.model.clone(),
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                    total_tokens: u.total_tokens,
                    cost_microusd: u.cost_microusd,
                    recorded_at,
                })?,
            },
            RunEvent::ToolCalled(t) => Self::ToolCall {
                run_id: id(),
                position,
                tool_name: t.tool_name.clone(),
                status: t.status.clone(),
                record: serde_json::to_string(&ToolCall {
                    run_id,
                    position,
                    tool_name: t.tool_name.clone(),
                    input: t.input.clone(),
                    output: t.output.clone(),
                    duration_ms: t.duration_ms,
                    status: t.status.clone(),
                    recorded_at,
                })?,
            },
            RunEvent::OutputRecorded(o) => Self::Output {
                run_id: id(),
                position,
                output_key: o.output_key.clone(),
                record: serde_json::to_string(&OutputRecord {
                    run_id,
                    position,
                    output_key: o.output_key.clone(),
                    schema: o.schema.clone(),
                    value: o.value.clone(),
                    recorded_at,
                })?,
            },
            _ => return Ok(None),
        }))
    }

    /// The API's JSON of the detail (none for a lineage link).
    pub fn record(&self) -> Option<&str> {
        match self {
            Self::Checkpoint { record, .. }
            | Self::Log { record, .. }
            | Self::Usage { record, .. }
            | Self::ToolCall { record, .. }
            | Self::Output { record, .. } => Some(record),
            Self::Lineage { .. } => None,
        }
    }
}

/// A detail table: its name, its columns in insert order and their
/// PostgreSQL array types (for `UNNEST`).
pub struct DetailTable {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
}

pub const CHECKPOINTS: DetailTable = DetailTable {
    name: "run_checkpoints",
    columns: &[
        ("run_id", "text[]"),
        ("sequence", "bigint[]"),
        ("position", "bigint[]"),
        ("record", "text[]"),
    ],
};
pub const LOGS: DetailTable = DetailTable {
    name: "run_logs",
    columns: &[
        ("run_id", "text[]"),
        ("position", "bigint[]"),
        ("level", "text[]"),
        ("log_type", "text[]"),
        ("record", "text[]"),
    ],
};
pub const USAGE: DetailTable = DetailTable {
    name: "run_usage",
    columns: &[
        ("run_id", "text[]"),
        ("position", "bigint[]"),
        ("task_name", "text[]"),
        ("provider", "text[]"),
        ("model", "text[]"),
        ("prompt_tokens", "bigint[]"),
        ("completion_tokens", "bigint[]"),
        ("total_tokens", "bigint[]"),
        ("cost_microusd", "bigint[]"),
        ("record", "text[]"),
    ],
};
pub const TOOL_CALLS: DetailTable = DetailTable {
    name: "run_tool_calls",
    columns: &[
        ("run_id", "text[]"),
        ("position", "bigint[]"),
        ("tool_name", "text[]"),
        ("status", "text[]"),
        ("record", "text[]"),
    ],
};
pub const OUTPUTS: DetailTable = DetailTable {
    name: "run_outputs",
    columns: &[
        ("run_id", "text[]"),
        ("position", "bigint[]"),
        ("output_key", "text[]"),
        ("record", "text[]"),
    ],
};
pub const LINEAGE: DetailTable = DetailTable {
    name: "run_lineage",
    columns: &[("run_id", "text[]"), ("source_run_id", "text[]")],
};

/// Every detail table, for `rebuild`.
pub const DETAIL_TABLES: &[&DetailTable] = &[&CHECKPOINTS, &LOGS, &USAGE, &TOOL_CALLS, &OUTPUTS, &LINEAGE];

impl DetailTable {
    fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// One row: `INSERT … VALUES ($1, …)`.
    pub fn insert_sql(&self) -> String {
        let marks: Vec<String> = (1..=self.columns.len()).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.name,
            self.column_list(),
            marks.join(", ")
        )
    }

    /// Many rows from one array per column (PostgreSQL).
    pub fn unnest_sql(&self) -> String {
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| format!("${}::{t}", i + 1))
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({})",
            self.name,
            self.column_list(),
            arrays.join(", ")
        )
    }
}

/// A page of details in log order, after a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Checkpoints: the sequence; everything else: the log position.
    pub after: i64,
    pub limit: i64,
}

fn page_sql(table: &str, cursor: &str, run_id: Uuid, page: Page, filters: &[(&str, Vec<String>)]) -> SqlQuery {
    let mut b = Builder::default();
    let mut conditions = vec![format!("run_id = {}", b.text(&run_id.to_string()))];
    conditions.push(format!("{cursor} > {}", b.int(page.after)));
    for (column, values) in filters.iter().filter(|(_, v)| !v.is_empty()) {
        let marks: Vec<String> = values.iter().map(|v| b.text(v)).collect();
        conditions.push(format!("{column} IN ({})", marks.join(", ")));
    }
    let limit = b.int(page.limit);
    SqlQuery {
        sql: format!(
            "SELECT record FROM {table} WHERE {} ORDER BY {cursor} LIMIT {limit}",
            conditions.join(" AND ")
        ),
        args: b.args,
    }
}

pub fn checkpoints_sql(run_id: Uuid, page: Page) -> SqlQuery {
    page_sql(CHECKPOINTS.name, "sequence", run_id, page, &[])
}

/// The run's latest checkpoint, or with `at`, its latest at or before that
/// log position: one step back along the run's key (a run's sequences and
/// positions rise together).
pub fn latest_checkpoint_sql(run_id: Uuid, at: Option<i64>) -> SqlQuery {
    let mut b = Builder::default();
    let mut sql = format!(
        "SELECT record FROM {} WHERE run_id = {}",
        CHECKPOINTS.name,
        b.text(&run_id.to_string())
    );
    if let Some(position) = at {
        sql.push_str(&format!(" AND position <= {}", b.int(position)));
    }
    sql.push_str(" ORDER BY sequence DESC LIMIT 1");
    SqlQuery { sql, args: b.args }
}

/// Log lines at any of `levels` (all if empty) of any of `types` (all if empty).
pub fn logs_sql(run_id: Uuid, levels: Vec<String>, types: Vec<String>, page: Page) -> SqlQuery {
    page_sql(
        LOGS.name,
        "position",
        run_id,
        page,
        &[("level", levels), ("log_type", types)],
    )
}

pub fn usage_sql(run_id: Uuid, page: Page) -> SqlQuery {
    page_sql(USAGE.name, "position", run_id, page, &[])
}

pub fn tool_calls_sql(run_id: Uuid, tool_names: Vec<String>, statuses: Vec<String>, page: Page) -> SqlQuery {
    page_sql(
        TOOL_CALLS.name,
        "position",
        run_id,
        page,
        &[("tool_name", tool_names), ("status", statuses)],
    )
}

pub fn outputs_sql(run_id: Uuid, output_keys: Vec<String>, page: Page) -> SqlQuery {
    page_sql(OUTPUTS.name, "position", run_id, page, &[("output_key", output_keys)])
}

/// Whose usage to sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageScope {
    Run(Uuid),
    /// Every run of the task, deleted ones included: their cost was incurred.
    Task(String),
}

/// Sums of the usage in `scope`: one row overall, or one per provider and
/// model. Columns: provider, model, records, prompt, completion, total, cost.
pub fn usage_totals_sql(scope: &UsageScope, by_model: bool) -> SqlQuery {
    let mut b = Builder::default();
    let condition = match scope {
        UsageScope::Run(id) => format!("run_id = {}", b.text(&id.to_string())),
        UsageScope::Task(task) => format!("task_name = {}", b.text(task)),
    };
    let (keys, group) = if by_model {
        ("provider, model", " GROUP BY provider, model ORDER BY provider, model")
    } else {
        ("CAST(NULL AS TEXT), CAST(NULL AS TEXT)", "")
    };
    let sum = |c: &str| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)");
    SqlQuery {
        sql: format!(
            "SELECT {keys}, COUNT(*), {}, {}, {}, {} FROM {} WHERE {condition}{group}",
            sum("prompt_tokens"),
            sum("completion_tokens"),
            sum("total_tokens"),
            sum("cost_microusd"),
            USAGE.name,
        ),
        args: b.args,
    }
}

/// The retry/continuation chain of a run: walk back to the run that retries
/// or continues nothing, then forward from it to every run that retries or
/// continues a run of the chain; the state of each, root first (by distance
/// from the root, then creation), at most 1000. Binds the run id. Each run
/// of the chain is looked up by id: as a join, SQLite 3.46 read the whole
/// runs index and probed the chain.
pub const LINEAGE_SQL: &str = "WITH RECURSIVE \
     up(id, source_id) AS ( \
       SELECT run_id, source_run_id FROM run_lineage WHERE run_id = $1 \
       UNION \
       SELECT l.run_id, l.source_run_id FROM run_lineage l JOIN up ON l.run_id = up.source_id \
     ), \
     down(id, depth) AS ( \
       SELECT id, CAST(0 AS BIGINT) FROM up WHERE source_id IS NULL \
       UNION ALL \
       SELECT l.run_id, down.depth + 1 FROM run_lineage l JOIN down ON l.source_run_id = down.id \
       WHERE down.depth < 1000 \
     ) \
     SELECT state FROM ( \
       SELECT down.depth, down.id, \
         (SELECT r.created_at FROM runs r WHERE r.id = down.id) AS created_at, \
         (SELECT r.state FROM runs r WHERE r.id = down.id) AS state \
       FROM down \
     ) chain WHERE state IS NOT NULL ORDER BY depth, created_at, id LIMIT 1000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_bind_their_filters_in_order() {
        let id = Uuid::nil();
        let q = logs_sql(
            id,
            vec!["warn".into(), "error".into()],
            vec![],
            Page { after: 7, limit: 10 },
        );
        assert_eq!(
            q.sql,
            "SELECT record FROM run_logs WHERE run_id = $1 AND position > $2 AND level IN ($3, $4) \
             ORDER BY position LIMIT $5"
        );
        assert_eq!(q.args.len(), 5);
    }

    #[test]
    fn inserts_name_every_column() {
        assert_eq!(
            LINEAGE.insert_sql(),
            "INSERT INTO run_lineage (run_id, source_run_id) VALUES ($1, $2)"
        );
        assert_eq!(
            LINEAGE.unnest_sql(),
            "INSERT INTO run_lineage (run_id, source_run_id) SELECT * FROM UNNEST($1::text[], $2::text[])"
        );
    }
}

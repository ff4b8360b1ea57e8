//! The runs table on PostgreSQL: written in batches in the appender's
//! transaction, read with the same SQL as SQLite.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::{
    Arg, HistoryVersion, Known, RunChanges, RunQuery, RunRowValues, RunState, SqlQuery, TaskSummary, HISTORY_COLUMNS,
    LAST_SEQ_SQL, RUN_COLUMNS, RUN_UPSERT_SET,
};

fn decode(text: &str) -> sqlx::Result<RunState> {
    crate::read_state(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The bind values of `args`, in order.
pub(crate) fn arguments(args: &[Arg]) -> sqlx::Result<PgArguments> {
    let mut out = PgArguments::default();
    for arg in args {
        match arg {
            Arg::Int(i) => out.add(*i),
            Arg::Text(t) => out.add(t.as_str()),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

/// The one value `q` selects.
async fn count(conn: &mut PgConnection, q: &SqlQuery) -> sqlx::Result<i64> {
    sqlx::query_scalar_with(&q.sql, arguments(&q.args)?)
        .fetch_one(conn)
        .await
}

/// The first column of every row of `q`.
pub async fn scalars<T>(conn: &mut PgConnection, q: &SqlQuery) -> sqlx::Result<Vec<T>>
where
    (T,): for<'r> sqlx::FromRow<'r, PgRow>,
    T: Send + Unpin,
{
    sqlx::query_scalar_with(&q.sql, arguments(&q.args)?)
        .fetch_all(conn)
        .await
}

/// A row of a query of states: `state`, and `changes` if it selects them.
fn state_row(row: &PgRow) -> sqlx::Result<RunState> {
    let state: &str = row.try_get(0)?;
    let changes: Option<&str> = if row.len() > 1 { row.try_get(1)? } else { None };
    RunChanges::decode(state, changes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

async fn states(conn: &mut PgConnection, q: &SqlQuery) -> sqlx::Result<Vec<RunState>> {
    let rows = sqlx::query_with(&q.sql, arguments(&q.args)?).fetch_all(conn).await?;
    rows.iter().map(state_row).collect()
}

pub async fn load(conn: &mut PgConnection, id: &Uuid) -> sqlx::Result<Option<RunState>> {
    let row: Option<String> = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_deref().map(decode).transpose()
}

/// The run as it was at `position` (its version valid there), if it existed.
pub async fn load_as_of(conn: &mut PgConnection, id: &Uuid, position: i64) -> sqlx::Result<Option<RunState>> {
    let row = sqlx::query(&crate::VERSION_AT_SQL)
        .bind(id.to_string())
        .bind(position)
        .fetch_optional(&mut *conn)
        .await?;
    let mut versions: Vec<RunState> = row.as_ref().map(state_row).transpose()?.into_iter().collect();
    fold_on(conn, &mut versions, position).await?;
    Ok(versions.pop())
}

/// Brings stored versions up to `position` (see `crate::fold_on`).
async fn fold_on(conn: &mut PgConnection, versions: &mut [RunState], position: i64) -> sqlx::Result<()> {
    let events = runledger_events::postgres::streams_until(conn, &crate::streams_after(versions), position).await?;
    crate::fold_on(versions, &events).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub async fn load_many(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<RunState>> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<String> = sqlx::query_scalar("SELECT state FROM runs WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await?;
    rows.iter().map(|s| decode(s)).collect()
}

/// Unfinished runs holding any of these `(task_name, idempotency_key)` pairs.
pub async fn unfinished_by_idempotency_keys(
    conn: &mut PgConnection,
    keys: &[(String, String)],
) -> sqlx::Result<Vec<RunState>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (tasks, keys): (Vec<&str>, Vec<&str>) = keys.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM runs WHERE status <> 'ended' AND idempotency_key IS NOT NULL \
         AND (task_name, idempotency_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(tasks)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|s| decode(s)).collect()
}

/// What happened to a changed run's tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tags {
    Unchanged,
    /// A new run: insert its tags.
    New,
    /// An existing run whose tags changed: replace them.
    Replaced,
}

/// One changed run of a batch.
pub struct RunRow<'a> {
    pub state: &'a RunState,
    pub tags: Tags,
    /// A new run's ordinal (`runs.seq`); `None` numbers the batch's new
    /// runs after the last run created, in batch order.
    pub seq: Option<i64>,
}

/// A run's open version, stored before this batch, that a version of the
/// batch ends.
pub struct Close {
    pub run_id: String,
    pub valid_to: i64,
    pub valid_to_at: i64,
}

/// Writes a batch's history: closes versions stored before it, then inserts
/// its versions, one statement each.
pub async fn store_history<V: std::borrow::Borrow<HistoryVersion>>(
    conn: &mut PgConnection,
    closes: &[Close],
    versions: &[V],
) -> sqlx::Result<()> {
    if !closes.is_empty() {
        sqlx::query(
            "UPDATE run_history h SET valid_to = c.valid_to, valid_to_at = c.valid_to_at \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS c(id, valid_to, valid_to_at) \
             WHERE h.position = (SELECT MAX(l.position) FROM run_history l WHERE l.id = c.id)",
        )
        .bind(closes.iter().map(|c| c.run_id.as_str()).collect::<Vec<_>>())
        .bind(closes.iter().map(|c| c.valid_to).collect::<Vec<_>>())
        .bind(closes.iter().map(|c| c.valid_to_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if versions.is_empty() {
        return Ok(());
    }
    let values = versions
        .iter()
        .map(|v| RunRowValues::version_of(&v.borrow().state))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO run_history ({HISTORY_COLUMNS}) SELECT * FROM UNNEST({})",
            unnest_types(&[UNNEST_TYPES, &["bigint[]", "bigint[]", "bigint[]"]].concat())
        )
    });
    bind_row_values(sqlx::query(&INSERT), &values)
        .bind(versions.iter().map(|v| v.borrow().valid_to).collect::<Vec<_>>())
        .bind(versions.iter().map(|v| v.borrow().valid_from_at).collect::<Vec<_>>())
        .bind(versions.iter().map(|v| v.borrow().valid_to_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The array types of the `runs` columns, in `RUN_COLUMNS` order.
const UNNEST_TYPES: &[&str] = &[
    "text[]", "text[]", "text[]", "text[]", "text[]", "bigint[]", "text[]", "bigint[]", "text[]", "text[]", "bool[]",
    "bool[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]", "text[]",
];

/// `$1::text[], $2::text[], …` for `UNNEST`.
fn unnest_types(types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds the `runs` columns of `values` as arrays, in `RUN_COLUMNS` order.
fn bind_row_values<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    values: &[RunRowValues<'_>],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let column = |f: fn(&RunRowValues) -> Option<String>| values.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&RunRowValues) -> Option<i64>| values.iter().map(f).collect::<Vec<_>>();
    let flag = |f: fn(&RunRowValues) -> bool| values.iter().map(f).collect::<Vec<_>>();
    query
        .bind(column(|v| Some(v.id.clone())))
        .bind(column(|v| Some(v.project.to_owned())))
        .bind(column(|v| Some(v.task_name.to_owned())))
        .bind(column(|v| Some(v.status.to_owned())))
        .bind(column(|v| v.end_reason.map(str::to_owned)))
        .bind(int(|v| v.exit_code))
        .bind(column(|v| Some(v.triggered_by.to_owned())))
        .bind(int(|v| Some(v.retry_attempt)))
        .bind(column(|v| v.parent_run_id.clone()))
        .bind(column(|v| v.idempotency_key.map(str::to_owned)))
        .bind(flag(|v| v.dead_lettered))
        .bind(flag(|v| v.deleted))
        .bind(int(|v| Some(v.created_at)))
        .bind(int(|v| v.start_at))
        .bind(int(|v| v.end_at))
        .bind(int(|v| v.duration_ms))
        .bind(int(|v| v.deadline_at))
        .bind(int(|v| Some(v.version)))
        .bind(int(|v| Some(v.position)))
        .bind(column(|v| Some(v.state.clone())))
}

/// Upserts every changed run of a batch in one statement.
pub async fn store_many(conn: &mut PgConnection, rows: &[RunRow<'_>]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = rows
        .iter()
        .map(|r| RunRowValues::of(r.state))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut types = UNNEST_TYPES.to_vec();
        types.push("bigint[]");
        format!(
            "INSERT INTO runs ({RUN_COLUMNS}, seq) SELECT * FROM UNNEST({}) ON CONFLICT (id) DO UPDATE SET {RUN_UPSERT_SET}",
            unnest_types(&types)
        )
    });
    let mut last: Option<i64> = None;
    let mut seqs = Vec::with_capacity(rows.len());
    for row in rows {
        seqs.push(match (row.tags == Tags::New, row.seq) {
            (false, _) => None,
            (true, Some(seq)) => Some(seq),
            (true, None) => {
                let next = match last {
                    Some(last) => last + 1,
                    None => sqlx::query_scalar::<_, i64>(LAST_SEQ_SQL).fetch_one(&mut *conn).await? + 1,
                };
                last = Some(next);
                Some(next)
            }
        });
    }
    bind_row_values(sqlx::query(&UPSERT), &values)
        .bind(seqs)
        .execute(&mut *conn)
        .await?;
    let replaced: Vec<String> = rows
        .iter()
        .filter(|r| r.tags == Tags::Replaced)
        .map(|r| r.state.id.to_string())
        .collect();
    if !replaced.is_empty() {
        sqlx::query("DELETE FROM run_tags WHERE run_id = ANY($1)")
            .bind(&replaced)
            .execute(&mut *conn)
            .await?;
    }
    let (mut run_id, mut tag_key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows.iter().filter(|r| r.tags != Tags::Unchanged) {
        for (k, v) in &row.state.tags {
            run_id.push(row.state.id.to_string());
            tag_key.push(k.as_str());
            value.push(v.as_str());
        }
    }
    if !run_id.is_empty() {
        sqlx::query(
            "INSERT INTO run_tags (run_id, key, value) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
        )
        .bind(run_id)
        .bind(tag_key)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    }
    store_origins(conn, rows.iter().filter(|r| r.tags == Tags::New).map(|r| r.state)).await
}

/// What new runs are created with and keep: the bulk operation that created
/// each and its payload (for the payload filter's GIN index).
async fn store_origins(conn: &mut PgConnection, created: impl Iterator<Item = &RunState>) -> sqlx::Result<()> {
    let (mut op_runs, mut operations, mut payload_runs, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for state in created {
        if let Some(operation) = &state.operation_id {
            op_runs.push(state.id.to_string());
            operations.push(operation.as_str());
        }
        if let Some(payload) = &state.payload {
            payload_runs.push(state.id.to_string());
            payloads.push(payload.to_string());
        }
    }
    if !op_runs.is_empty() {
        sqlx::query("INSERT INTO run_operations (operation_id, run_id) SELECT * FROM UNNEST($1::text[], $2::text[])")
            .bind(operations)
            .bind(op_runs)
            .execute(&mut *conn)
            .await?;
    }
    if !payload_runs.is_empty() {
        sqlx::query(
            "INSERT INTO run_payloads (run_id, payload) SELECT r, p::jsonb FROM UNNEST($1::text[], $2::text[]) AS u(r, p)",
        )
        .bind(payload_runs)
        .bind(payloads)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// How many runs match the query, and — when there are at most `max` — their
/// ids, in id order.
pub async fn select(conn: &mut PgConnection, query: &RunQuery, max: usize) -> sqlx::Result<(i64, Option<Vec<Uuid>>)> {
    let total = count(&mut *conn, &query.count_sql(crate::Dialect::Postgres)).await?;
    if total as usize > max {
        return Ok((total, None));
    }
    let rows: Vec<String> = scalars(&mut *conn, &query.ids_sql(crate::Dialect::Postgres)).await?;
    let ids = rows
        .iter()
        .map(|id| id.parse::<Uuid>().map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .collect::<sqlx::Result<Vec<Uuid>>>()?;
    Ok((total, Some(ids)))
}

/// A page of runs and the number of runs matching the filter.
pub async fn list(conn: &mut PgConnection, query: &RunQuery) -> sqlx::Result<(Vec<RunState>, i64)> {
    // The total first: it can choose the page's plan, or skip it.
    let total = count(&mut *conn, &query.count_sql(crate::Dialect::Postgres)).await?;
    let known = Known {
        search_tasks: match query.search_tasks_sql(crate::Dialect::Postgres) {
            Some(q) => Some(scalars(&mut *conn, &q).await?),
            None => None,
        },
        total: Some(total),
        // PostgreSQL's planner weighs a walk against a sort itself.
        live_runs: None,
    };
    let mut runs = Vec::new();
    if query.offset < total {
        for part in query.page_sql(crate::Dialect::Postgres, &known) {
            runs.extend(states(&mut *conn, &part).await?);
            if runs.len() as i64 >= query.limit {
                break;
            }
        }
    }
    runs.truncate(query.limit as usize);
    if let Some(position) = query.as_of {
        fold_on(conn, &mut runs, position).await?;
    }
    Ok((runs, total))
}

/// Adds a batch's changes to its tasks' rows (one upsert of every task it
/// touched), drops the rows left with no live run, then sets back the
/// latest runs that were deleted.
pub async fn store_task_deltas(conn: &mut PgConnection, deltas: &crate::task_counts::TaskDeltas) -> sqlx::Result<()> {
    use crate::task_counts::{count_columns, upsert_sql, Latest};
    static SQL: std::sync::LazyLock<(String, Vec<String>)> = std::sync::LazyLock::new(|| {
        let mut arrays: Vec<String> = (2..=count_columns().len() + 1)
            .map(|i| format!("${i}::bigint[]"))
            .collect();
        for _ in Latest::ALL {
            let next = arrays.len() + 2;
            arrays.push(format!("${next}::bigint[]"));
            arrays.push(format!("${}::text[]", next + 1));
        }
        let upsert = upsert_sql(&format!("SELECT * FROM UNNEST($1::text[], {})", arrays.join(", ")));
        let recompute = Latest::ALL
            .iter()
            .map(|k| k.recompute_sql("task_counts.task_name", "SELECT * FROM UNNEST($1::text[], $2::text[])"))
            .collect();
        (upsert, recompute)
    });
    if !deltas.tasks.is_empty() {
        let names: Vec<&str> = deltas.tasks.keys().map(String::as_str).collect();
        let mut query = sqlx::query(&SQL.0).bind(&names);
        for column in 0..count_columns().len() {
            let values: Vec<i64> = deltas.tasks.values().map(|d| d.counts[column]).collect();
            query = query.bind(values);
        }
        for kind in 0..Latest::ALL.len() {
            let latest = || deltas.tasks.values().map(move |d| d.latest[kind].as_ref());
            query = query
                .bind(latest().map(|l| l.map(|l| l.0)).collect::<Vec<Option<i64>>>())
                .bind(latest().map(|l| l.map(|l| l.1.as_str())).collect::<Vec<Option<&str>>>());
        }
        query.execute(&mut *conn).await?;
        sqlx::query("DELETE FROM task_counts WHERE task_name = ANY($1) AND total = 0")
            .bind(&names)
            .execute(&mut *conn)
            .await?;
    }
    // One statement per kind, however many runs a bulk delete took out.
    for kind in Latest::ALL {
        let (tasks, ids): (Vec<&str>, Vec<&str>) = deltas
            .left
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(task, _, id)| (task.as_str(), id.as_str()))
            .unzip();
        if !tasks.is_empty() {
            sqlx::query(&SQL.1[kind as usize])
                .bind(tasks)
                .bind(ids)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Adds a batch's changes to `run_counts`: one upsert of every combination
/// it touched, then the combinations left with no run are dropped.
pub async fn store_run_counts(conn: &mut PgConnection, deltas: &crate::run_counts::RunCountDeltas) -> sqlx::Result<()> {
    store_tag_counts(&mut *conn, deltas).await?;
    let changes: Vec<_> = deltas.changes().collect();
    if changes.is_empty() {
        return Ok(());
    }
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        crate::run_counts::upsert_sql(
            "SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::bigint[], $8::bigint[], $9::boolean[], $10::boolean[], $11::bigint[])",
        )
    });
    let keys: Vec<String> = changes.iter().map(|(k, _)| k.text()).collect();
    sqlx::query(&UPSERT)
        .bind(&keys)
        .bind(changes.iter().map(|(k, _)| k.project.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.task_name.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.status).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.end_reason).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.triggered_by).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.exit_code).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| i64::from(k.retry)).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.dead_lettered).collect::<Vec<_>>())
        .bind(changes.iter().map(|(k, _)| k.deleted).collect::<Vec<_>>())
        .bind(changes.iter().map(|(_, d)| *d).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    sqlx::query(&crate::run_counts::drop_empty_sql("= ANY($1)"))
        .bind(&keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds a batch's changes to `tag_counts`, then drops the tags left with no
/// live run.
async fn store_tag_counts(conn: &mut PgConnection, deltas: &crate::run_counts::RunCountDeltas) -> sqlx::Result<()> {
    let changes: Vec<_> = deltas.tag_changes().collect();
    if changes.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let values: Vec<&str> = changes.iter().map(|c| c.1).collect();
    let counts: Vec<i64> = changes.iter().map(|c| c.2).collect();
    sqlx::query(&crate::run_counts::tag_upsert_sql(
        "SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
    ))
    .bind(&keys)
    .bind(&values)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&crate::run_counts::tag_drop_empty_sql(
        "IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    ))
    .bind(&keys)
    .bind(&values)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of task summaries, by task name, and the number of tasks: the
/// rows of `task_counts`, then the states of the latest runs they name.
pub async fn tasks(conn: &mut PgConnection, limit: i64, offset: i64) -> sqlx::Result<(Vec<TaskSummary>, i64)> {
    let width = crate::task_counts::count_columns().len();
    let q = TaskSummary::counts_sql(limit, offset);
    let rows = sqlx::query_with(&q.sql, arguments(&q.args)?)
        .fetch_all(&mut *conn)
        .await?;
    let mut parsed = Vec::with_capacity(rows.len());
    for row in rows {
        let columns = (1..=width)
            .map(|i| row.try_get::<i64, _>(i))
            .collect::<sqlx::Result<Vec<i64>>>()?;
        let latest: [Option<String>; 3] = [
            row.try_get(width + 1)?,
            row.try_get(width + 2)?,
            row.try_get(width + 3)?,
        ];
        parsed.push((row.try_get::<String, _>(0)?, columns, latest));
    }
    let ids: Vec<Uuid> = parsed
        .iter()
        .flat_map(|(_, _, l)| l.iter().flatten())
        .map(|id| id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .collect::<sqlx::Result<_>>()?;
    let states: std::collections::HashMap<String, RunState> = load_many(&mut *conn, &ids)
        .await?
        .into_iter()
        .map(|s| (s.id.to_string(), s))
        .collect();
    let out = parsed
        .into_iter()
        .map(|(name, columns, latest)| TaskSummary::from_row(name, &columns, latest, &states))
        .collect();
    let total: i64 = sqlx::query_scalar(TaskSummary::TASK_COUNT_SQL).fetch_one(conn).await?;
    Ok((out, total))
}

/// A page of the log after `after`, each event with its run's task and project.
pub async fn log_page(conn: &mut PgConnection, after: i64, limit: i64) -> sqlx::Result<Vec<crate::LogEntry>> {
    use sqlx::Row;
    let rows = sqlx::query(crate::log::LOG_PAGE_SQL)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(crate::LogEntry {
                envelope: runledger_events::postgres::envelope(row)?,
                task_name: row.try_get("task_name")?,
                project: row.try_get("project")?,
            })
        })
        .collect()
}

/// Drops the projection tables' rows and replays the whole log into them.
/// Run inside a transaction that holds the append lock. Returns (events, runs).
pub async fn rebuild(conn: &mut PgConnection) -> Result<(u64, usize), String> {
    for table in crate::projection_tables().chain(["run_payloads"]) {
        sqlx::raw_sql(&format!("DELETE FROM {table}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut replay = crate::Replay::default();
    let mut after = 0;
    loop {
        let page = runledger_events::postgres::after(&mut *conn, after, 10_000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = last.position;
        let mut closed = Vec::new();
        for envelope in &page {
            closed.extend(replay.apply(envelope).map_err(|e| e.to_string())?);
        }
        for chunk in closed.chunks(1000) {
            store_history(&mut *conn, &[], chunk).await.map_err(|e| e.to_string())?;
        }
        for chunk in std::mem::take(&mut replay.details).chunks(1000) {
            super::details::store_many(&mut *conn, chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let events = replay.events;
    let current = replay.into_current();
    for chunk in current.chunks(1000) {
        let rows: Vec<RunRow> = chunk
            .iter()
            .map(|run| RunRow {
                state: run.state(),
                tags: Tags::New,
                seq: Some(run.seq),
            })
            .collect();
        store_many(&mut *conn, &rows).await.map_err(|e| e.to_string())?;
        let open: Vec<&HistoryVersion> = chunk.iter().map(|run| &run.open).collect();
        store_history(&mut *conn, &[], &open).await.map_err(|e| e.to_string())?;
    }
    let mut tasks = crate::task_counts::TaskDeltas::default();
    let mut counts = crate::run_counts::RunCountDeltas::default();
    for run in &current {
        tasks.add(None, run.state());
        counts.add(None, run.state());
    }
    store_task_deltas(&mut *conn, &tasks).await.map_err(|e| e.to_string())?;
    store_run_counts(&mut *conn, &counts).await.map_err(|e| e.to_string())?;
    Ok((events, current.len()))
}

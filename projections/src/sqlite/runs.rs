//! The runs table on SQLite: written in the writer's transaction, read from
//! the read pool.

use rusqlite::{params, Connection, OptionalExtension, ToSql};
use uuid::Uuid;

use runledger_events::{RunEvent, Timestamp};

use crate::{
    HistoryVersion, Known, RunChanges, RunQuery, RunRowValues, RunState, SqlQuery, TaskSummary, CLOSE_VERSION_SQL,
    HISTORY_COLUMNS, LAST_SEQ_SQL, RUN_COLUMNS, RUN_UPSERT_SET,
};

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

use super::{bind, texts};

/// A row of a query of states: `state`, and `changes` if it selects them.
fn state_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunState> {
    let state = row.get_ref(0)?.as_str()?;
    let changes = match row.as_ref().column_count() {
        1 => None,
        _ => row.get_ref(1)?.as_str_or_null()?,
    };
    RunChanges::decode(state, changes).map_err(json_err)
}

fn query_states(conn: &Connection, q: &SqlQuery) -> rusqlite::Result<Vec<RunState>> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(bind(&q.args)), state_row)?;
    rows.collect()
}

pub fn load(conn: &Connection, id: &Uuid) -> rusqlite::Result<Option<RunState>> {
    conn.prepare_cached("SELECT state FROM runs WHERE id = ?1")?
        .query_row([id.to_string()], state_row)
        .optional()
}

/// The run as it was at `position` (its version valid there), if it existed.
pub fn load_as_of(conn: &Connection, id: &Uuid, position: i64) -> rusqlite::Result<Option<RunState>> {
    let version = conn
        .prepare_cached(&crate::VERSION_AT_SQL)?
        .query_row(params![id.to_string(), position], state_row)
        .optional()?;
    let mut versions: Vec<RunState> = version.into_iter().collect();
    fold_on(conn, &mut versions, position)?;
    Ok(versions.pop())
}

/// Brings stored versions up to `position` (see `crate::fold_on`).
fn fold_on(conn: &Connection, versions: &mut [RunState], position: i64) -> rusqlite::Result<()> {
    let events = runledger_events::sqlite::read::streams_until(conn, &crate::streams_after(versions), position)?;
    crate::fold_on(versions, &events).map_err(|e| json_err_any(format!("a stored event does not fold: {e}")))
}

/// An unfinished run of `task_name` created with `key`.
pub fn find_unfinished_by_idempotency_key(
    conn: &Connection,
    task_name: &str,
    key: &str,
) -> rusqlite::Result<Option<RunState>> {
    conn.prepare_cached(
        "SELECT state FROM runs WHERE task_name = ?1 AND idempotency_key = ?2 AND status <> 'ended' \
         ORDER BY created_at DESC LIMIT 1",
    )?
    .query_row([task_name, key], state_row)
    .optional()
}

/// Writes one append's change of a run: `state` becomes the run's row, and
/// the append's stored versions (oldest first, each but the last closed by
/// the next) go to its history, closing the version that was open before.
/// `previous` is the run as it was before (None for a new run).
pub fn store(
    conn: &Connection,
    previous: Option<&RunState>,
    state: &RunState,
    versions: &[HistoryVersion],
) -> rusqlite::Result<()> {
    store_row(conn, previous, state, None)?;
    let mut tasks = crate::task_counts::TaskDeltas::default();
    tasks.add(previous, state);
    store_task_deltas(conn, &tasks)?;
    let mut counts = crate::run_counts::RunCountDeltas::default();
    counts.add(previous, state);
    store_run_counts(conn, &counts)?;
    if let (Some(_), Some(first)) = (previous, versions.first()) {
        conn.prepare_cached(CLOSE_VERSION_SQL)?.execute(params![
            first.state.position,
            first.valid_from_at,
            state.id.to_string()
        ])?;
    }
    versions.iter().try_for_each(|version| store_version(conn, version))
}

/// Adds appends' changes to their tasks' rows, drops the rows left with no
/// live run, and sets back the latest runs that were deleted.
fn store_task_deltas(conn: &Connection, deltas: &crate::task_counts::TaskDeltas) -> rusqlite::Result<()> {
    use crate::task_counts::{Latest, DROP_EMPTY_SQL, UPSERT_SQL};
    static RECOMPUTE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        Latest::ALL
            .iter()
            .map(|k| k.recompute_sql("$1", "VALUES ($1, $2)"))
            .collect()
    });
    for (task_name, delta) in &deltas.tasks {
        use rusqlite::types::Value;
        let mut values = vec![Value::Text(task_name.clone())];
        values.extend(delta.counts.iter().map(|d| Value::Integer(*d)));
        for latest in &delta.latest {
            let (at, id) = match latest {
                Some((at, id)) => (Value::Integer(*at), Value::Text(id.clone())),
                None => (Value::Null, Value::Null),
            };
            values.extend([at, id]);
        }
        conn.prepare_cached(&UPSERT_SQL)?
            .execute(rusqlite::params_from_iter(values))?;
        if delta.counts[0] < 0 {
            conn.prepare_cached(DROP_EMPTY_SQL)?.execute([task_name])?;
        }
    }
    for (task_name, kind, id) in &deltas.left {
        conn.prepare_cached(&RECOMPUTE[*kind as usize])?
            .execute([task_name, id])?;
    }
    Ok(())
}

/// Adds changes to `run_counts` and `tag_counts`, dropping the rows left
/// with no run.
fn store_run_counts(conn: &Connection, deltas: &crate::run_counts::RunCountDeltas) -> rusqlite::Result<()> {
    use crate::run_counts::{drop_empty_sql, tag_drop_empty_sql, tag_upsert_sql, upsert_sql};
    static SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
        let marks: Vec<String> = (1..=11).map(|i| format!("${i}")).collect();
        [
            upsert_sql(&format!("VALUES ({})", marks.join(", "))),
            drop_empty_sql("= $1"),
            tag_upsert_sql("VALUES ($1, $2, $3)"),
            tag_drop_empty_sql("= ($1, $2)"),
        ]
    });
    for (key, delta) in deltas.changes() {
        let text = key.text();
        conn.prepare_cached(&SQL[0])?.execute(params![
            text,
            key.project,
            key.task_name,
            key.status,
            key.end_reason,
            key.triggered_by,
            key.exit_code,
            i64::from(key.retry),
            key.dead_lettered,
            key.deleted,
            delta
        ])?;
        if delta < 0 {
            conn.prepare_cached(&SQL[1])?.execute([&text])?;
        }
    }
    for (key, value, delta) in deltas.tag_changes() {
        conn.prepare_cached(&SQL[2])?.execute(params![key, value, delta])?;
        if delta < 0 {
            conn.prepare_cached(&SQL[3])?.execute(params![key, value])?;
        }
    }
    Ok(())
}

/// Inserts one version into `run_history`.
pub fn store_version(conn: &Connection, version: &HistoryVersion) -> rusqlite::Result<()> {
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let marks: Vec<String> = (1..=23).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO run_history ({HISTORY_COLUMNS}) VALUES ({})",
            marks.join(", ")
        )
    });
    let v = RunRowValues::version_of(&version.state).map_err(json_err)?;
    let mut values = row_params(&v);
    values.extend([
        &version.valid_to as &dyn ToSql,
        &version.valid_from_at,
        &version.valid_to_at,
    ]);
    conn.prepare_cached(&INSERT)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// The `runs` columns of a row, in `RUN_COLUMNS` order, for binding.
fn row_params<'a>(v: &'a RunRowValues<'_>) -> Vec<&'a dyn ToSql> {
    vec![
        &v.id,
        &v.project,
        &v.task_name,
        &v.status,
        &v.end_reason,
        &v.exit_code,
        &v.triggered_by,
        &v.retry_attempt,
        &v.parent_run_id,
        &v.idempotency_key,
        &v.dead_lettered,
        &v.deleted,
        &v.created_at,
        &v.start_at,
        &v.end_at,
        &v.duration_ms,
        &v.deadline_at,
        &v.version,
        &v.position,
        &v.state,
    ]
}

/// Writes `state` as the run's row. `previous` is the row as it was before
/// (None for a new run); tags are rewritten only when they changed. A new
/// run takes `seq` as its ordinal, or the next one after the last run's.
fn store_row(
    conn: &Connection,
    previous: Option<&RunState>,
    state: &RunState,
    seq: Option<i64>,
) -> rusqlite::Result<()> {
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let marks: Vec<String> = (1..=21).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO runs ({RUN_COLUMNS}, seq) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {RUN_UPSERT_SET}",
            marks.join(", ")
        )
    });
    let seq = match (previous, seq) {
        (Some(_), _) => None,
        (None, Some(seq)) => Some(seq),
        (None, None) => Some(
            conn.prepare_cached(LAST_SEQ_SQL)?
                .query_row([], |r| r.get::<_, i64>(0))?
                + 1,
        ),
    };
    let v = RunRowValues::of(state).map_err(json_err)?;
    let mut values = row_params(&v);
    values.push(&seq);
    conn.prepare_cached(&UPSERT)?
        .execute(rusqlite::params_from_iter(values))?;
    if previous.is_none() {
        conn.prepare_cached("INSERT INTO run_search (id) VALUES (?1)")?
            .execute([&v.id])?;
        store_origin(conn, state, &v.id)?;
    }
    if previous.map(|p| &p.tags) != Some(&state.tags) {
        let id = state.id.to_string();
        if previous.is_some() {
            conn.prepare_cached("DELETE FROM run_tags WHERE run_id = ?1")?
                .execute([&id])?;
        }
        let mut insert = conn.prepare_cached("INSERT INTO run_tags (run_id, key, value) VALUES (?1, ?2, ?3)")?;
        for (key, value) in &state.tags {
            insert.execute(params![id, key, value])?;
        }
    }
    Ok(())
}

/// What a run is created with and keeps: the bulk operation that created it
/// and its payload's terms (see `payload`).
fn store_origin(conn: &Connection, state: &RunState, id: &str) -> rusqlite::Result<()> {
    if let Some(operation) = &state.operation_id {
        conn.prepare_cached("INSERT INTO run_operations (operation_id, run_id) VALUES (?1, ?2)")?
            .execute(params![operation, id])?;
    }
    if let Some(payload) = &state.payload {
        let mut insert = conn.prepare_cached("INSERT INTO run_payload_terms (term, run_id) VALUES (?1, ?2)")?;
        for term in crate::payload::terms(payload) {
            insert.execute(params![term, id])?;
        }
    }
    Ok(())
}

/// How many runs match the query, and — when there are at most `max` — their
/// ids, in id order.
pub fn select(conn: &Connection, query: &RunQuery, max: usize) -> rusqlite::Result<(i64, Option<Vec<Uuid>>)> {
    functions_for(conn, query)?;
    let count = query.count_sql(crate::Dialect::Sqlite);
    let total: i64 = conn
        .prepare_cached(&count.sql)?
        .query_row(rusqlite::params_from_iter(bind(&count.args)), |r| r.get(0))?;
    if total as usize > max {
        return Ok((total, None));
    }
    let ids = texts(conn, &query.ids_sql(crate::Dialect::Sqlite))?
        .iter()
        .map(|id| id.parse::<Uuid>().map_err(|e| json_err_any(e.to_string())))
        .collect::<rusqlite::Result<Vec<Uuid>>>()?;
    Ok((total, Some(ids)))
}

/// Registers the SQL functions `query` calls on this connection.
fn functions_for(conn: &Connection, query: &RunQuery) -> rusqlite::Result<()> {
    if query.filter.payload.is_some() {
        crate::payload::register_sqlite(conn)?;
    }
    Ok(())
}

fn json_err_any(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

/// A page of runs and the number of runs matching the filter.
pub fn list(conn: &Connection, query: &RunQuery) -> rusqlite::Result<(Vec<RunState>, i64)> {
    functions_for(conn, query)?;
    // The total first: it can choose the page's plan, or skip it.
    let count = query.count_sql(crate::Dialect::Sqlite);
    let total: i64 = conn
        .prepare_cached(&count.sql)?
        .query_row(rusqlite::params_from_iter(bind(&count.args)), |r| r.get(0))?;
    let known = Known {
        search_tasks: match query.search_tasks_sql(crate::Dialect::Sqlite) {
            Some(q) => Some(texts(conn, &q)?),
            None => None,
        },
        total: Some(total),
        live_runs: match query.live_runs_sql(crate::Dialect::Sqlite) {
            Some(q) => Some(
                conn.prepare_cached(&q.sql)?
                    .query_row(rusqlite::params_from_iter(bind(&q.args)), |r| r.get(0))?,
            ),
            None => None,
        },
    };
    let mut runs = Vec::new();
    if query.offset < total {
        for part in query.page_sql(crate::Dialect::Sqlite, &known) {
            runs.extend(query_states(conn, &part)?);
            if runs.len() as i64 >= query.limit {
                break;
            }
        }
    }
    runs.truncate(query.limit as usize);
    if let Some(position) = query.as_of {
        fold_on(conn, &mut runs, position)?;
    }
    Ok((runs, total))
}

/// A page of task summaries, by task name, and the number of tasks: the
/// rows of `task_counts`, then the states of the latest runs they name.
pub fn tasks(conn: &Connection, limit: i64, offset: i64) -> rusqlite::Result<(Vec<TaskSummary>, i64)> {
    let width = crate::task_counts::count_columns().len();
    let q = TaskSummary::counts_sql(limit, offset);
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(bind(&q.args)), |r| {
        let columns = (1..=width).map(|i| r.get(i)).collect::<rusqlite::Result<Vec<i64>>>()?;
        let latest: [Option<String>; 3] = [r.get(width + 1)?, r.get(width + 2)?, r.get(width + 3)?];
        Ok((r.get::<_, String>(0)?, columns, latest))
    })?;
    let rows: Vec<_> = rows.collect::<rusqlite::Result<_>>()?;
    let ids: Vec<&str> = rows
        .iter()
        .flat_map(|(_, _, l)| l.iter().flatten())
        .map(String::as_str)
        .collect();
    let states: std::collections::HashMap<String, RunState> = load_many(conn, &ids)?
        .into_iter()
        .map(|s| (s.id.to_string(), s))
        .collect();
    let out = rows
        .into_iter()
        .map(|(name, columns, latest)| TaskSummary::from_row(name, &columns, latest, &states))
        .collect();
    let total = conn.query_row(TaskSummary::TASK_COUNT_SQL, [], |r| r.get(0))?;
    Ok((out, total))
}

/// The states of the runs with these ids (text), in no order; an id twice
/// gives its run once.
pub fn load_many(conn: &Connection, ids: &[&str]) -> rusqlite::Result<Vec<RunState>> {
    let list = serde_json::to_string(ids).map_err(json_err)?;
    let mut stmt = conn.prepare_cached("SELECT state FROM runs WHERE id IN (SELECT value FROM json_each(?1))")?;
    let rows = stmt.query_map([list], state_row)?;
    rows.collect()
}

/// A page of the log after `after`, each event with its run's task and project.
pub fn log_page(conn: &Connection, after: i64, limit: i64) -> rusqlite::Result<Vec<crate::LogEntry>> {
    let mut stmt = conn.prepare_cached(crate::log::LOG_PAGE_SQL)?;
    let rows = stmt.query_map(params![after, limit], |row| {
        Ok(crate::LogEntry {
            envelope: runledger_events::sqlite::read::envelope_from_row(row)?,
            task_name: row.get(11)?,
            project: row.get(12)?,
        })
    })?;
    rows.collect()
}

/// Drops the projection tables' rows and replays the whole log into them.
/// Run inside the write transaction. Returns (events, runs).
pub fn rebuild(conn: &Connection) -> Result<(u64, usize), crate::ReplayError> {
    let storage = |e: rusqlite::Error| crate::ReplayError::Storage(e.to_string());
    let _cache = RebuildCache::raise(conn).map_err(storage)?;
    // The search index (SQLite's alone) is refilled as each run is stored.
    for table in crate::projection_tables().chain(["run_search", "run_payload_terms"]) {
        conn.execute_batch(&format!("DELETE FROM {table}")).map_err(storage)?;
    }
    let indexes = drop_indexes(conn).map_err(storage)?;
    let mut replay = crate::Replay::default();
    // Only what the fold needs, decoded straight from the stored text.
    let mut stmt = conn
        .prepare_cached(
            "SELECT position, stream_id, stream_version, event_type, schema_version, data, recorded_at, metadata \
             FROM events WHERE position > ?1 ORDER BY position LIMIT 10000",
        )
        .map_err(storage)?;
    let mut after = 0;
    loop {
        let mut rows = stmt.query([after]).map_err(storage)?;
        let mut seen = false;
        while let Some(row) = rows.next().map_err(storage)? {
            seen = true;
            let position: i64 = row.get(0).map_err(storage)?;
            let stream_id = row
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(storage)?;
            let event_type = row
                .get_ref(3)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(storage)?;
            let data = row
                .get_ref(5)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(storage)?;
            let recorded_at = row
                .get_ref(6)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(storage)?;
            let event = RunEvent::decode_text(event_type, row.get(4).map_err(storage)?, data).map_err(|e| {
                crate::ReplayError::Apply {
                    position,
                    source: crate::ApplyError::Decode(e),
                }
            })?;
            // The fold keeps the metadata of `run.created` alone (its actor
            // and operation), so only that is decoded.
            let metadata: Option<runledger_events::Metadata> = match event {
                RunEvent::Created(_) => {
                    let text = row
                        .get_ref(7)
                        .and_then(|v| v.as_str().map_err(Into::into))
                        .map_err(storage)?;
                    Some(serde_json::from_str(text).map_err(|e| crate::ReplayError::Storage(e.to_string()))?)
                }
                _ => None,
            };
            let at = crate::EventContext {
                position,
                stream_version: row.get(2).map_err(storage)?,
                recorded_at: Timestamp::parse(recorded_at).map_err(|e| crate::ReplayError::Storage(e.to_string()))?,
                metadata: metadata.as_ref(),
            };
            if let Some(closed) = replay.apply_event(stream_id, &event, &at)? {
                store_version(conn, &closed).map_err(storage)?;
            }
            super::details::store(conn, &std::mem::take(&mut replay.details)).map_err(storage)?;
            after = position;
        }
        if !seen {
            break;
        }
    }
    let events = replay.events;
    let mut current = replay.into_current();
    for run in &current {
        store_row(conn, None, run.state(), Some(run.seq)).map_err(storage)?;
    }
    let mut tasks = crate::task_counts::TaskDeltas::default();
    let mut counts = crate::run_counts::RunCountDeltas::default();
    for run in &current {
        tasks.add(None, run.state());
        counts.add(None, run.state());
    }
    store_task_deltas(conn, &tasks).map_err(storage)?;
    store_run_counts(conn, &counts).map_err(storage)?;
    // History in key order: appended, like the closed versions before.
    current.sort_unstable_by_key(|run| run.open.state.position);
    for run in &current {
        store_version(conn, &run.open).map_err(storage)?;
    }
    for sql in &indexes {
        conn.execute_batch(sql).map_err(storage)?;
    }
    Ok((events, current.len()))
}

/// Drops the secondary indexes of the projection tables and returns the
/// statements that make them again: a rebuild fills the tables first and
/// then sorts each index once, instead of inserting into every index row by
/// row. Keys (the tables' own and `UNIQUE` ones) stay: upserts need them.
fn drop_indexes(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL AND tbl_name = ?1 ORDER BY name",
    )?;
    let mut made = Vec::new();
    for table in crate::projection_tables() {
        let indexes = stmt
            .query_map([table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (name, sql) in indexes {
            conn.execute_batch(&format!("DROP INDEX \"{name}\""))?;
            made.push(sql);
        }
    }
    Ok(made)
}

/// The write connection's page cache for the length of a rebuild: large
/// enough that the pages a rebuild dirties stay in memory until it commits,
/// instead of spilling to the WAL and being read back. The size before comes
/// back when the rebuild ends, however it ends.
struct RebuildCache<'c> {
    conn: &'c Connection,
    before: i64,
}

impl<'c> RebuildCache<'c> {
    /// In KiB (`PRAGMA cache_size` takes a size in KiB as a negative number).
    const KIB: i64 = 512 * 1024;

    fn raise(conn: &'c Connection) -> rusqlite::Result<Self> {
        let before = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
        conn.pragma_update(None, "cache_size", -Self::KIB)?;
        Ok(Self { conn, before })
    }
}

impl Drop for RebuildCache<'_> {
    fn drop(&mut self) {
        // Only fails on a closed connection, which has no cache to restore.
        let _ = self.conn.pragma_update(None, "cache_size", self.before);
    }
}

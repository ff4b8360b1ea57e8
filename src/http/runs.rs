//! Reading runs: the list with its filters and sorts, one run, its events.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use runledger_events::{EventEnvelope, TriggeredBy, RUN_EVENT_TYPES};
use runledger_projections::{Cursor, RunFilter, RunQuery, RunState, SortDirection, SortField, StatusValue};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, Problem};
use super::extract::{parse_uuid, run_id, QueryParams};
use crate::domain::TaskName;
use crate::ledger::{EventsQuery, Ledger};

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(list_dlq))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(list_task_runs))
        .routes(routes!(run_history))
        .routes(routes!(runs_diff))
}

/// A point in the log: a position, or an RFC 3339 time (the last event at
/// or before it).
#[derive(Clone, Copy, Debug)]
pub enum AsOf {
    Position(i64),
    Time(runledger_events::Timestamp),
}

pub fn parse_as_of(raw: &str) -> Result<AsOf, String> {
    if let Ok(position) = raw.parse::<i64>() {
        return if position >= 0 {
            Ok(AsOf::Position(position))
        } else {
            Err("a position must be >= 0".into())
        };
    }
    runledger_events::Timestamp::parse(raw)
        .map(AsOf::Time)
        .map_err(|_| "must be a position (an integer) or an RFC 3339 date-time".into())
}

/// The log position `at` names. A position past the head is the present:
/// the last committed position (read from the log when it is past the head
/// this node has seen, since another node may have written since).
pub async fn resolve(ledger: &Ledger, at: AsOf) -> Result<i64, ApiError> {
    match at {
        AsOf::Position(p) if p <= *ledger.head().borrow() => Ok(p),
        AsOf::Position(p) => {
            let end_of_time = runledger_events::Timestamp::parse("9999-12-31T23:59:59.999999Z")
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(p.min(ledger.position_at(end_of_time).await?))
        }
        AsOf::Time(t) => Ok(ledger.position_at(t).await?),
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunState>,
    /// Runs matching the filters, ignoring limit and offset.
    pub total: i64,
    /// Send as `cursor`, with the same filters and sort, for the page after
    /// this one; null when this page is not full (no page follows).
    pub next_cursor: Option<String>,
}

impl RunList {
    /// A page of `query`'s answer, with the cursor after it when it is full.
    pub fn page(query: &RunQuery, runs: Vec<RunState>, total: i64) -> Self {
        let next_cursor = match runs.last() {
            Some(last) if runs.len() as i64 == query.limit => Some(Cursor::after(last, query).encode()),
            _ => None,
        };
        Self {
            runs,
            total,
            next_cursor,
        }
    }
}

/// The query parameters of the runs list (documentation of what
/// `run_query` parses).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListRunsParams {
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// Runs to skip.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
    /// The `next_cursor` of the page before: the page after its last row,
    /// however many runs were added or changed before it since. Send the
    /// same filters, `sort_field` and `sort_direction`, and no `offset`.
    #[param(min_length = 1, max_length = 2000, pattern = "^[0-9a-f]+$")]
    cursor: Option<String>,
    /// Comma-separated; a run matches any value: a phase (`pending`, `running`, `paused`,
    /// `ended`), an end reason (`success`, `failed`, …), `deleted` or `dead_letter`.
    #[param(
        pattern = "^\\s*(pending|running|paused|ended|success|failed|stopped|timeout|crashed|skipped|log_overflow|expired|deleted|dead_letter)\\s*(,\\s*(pending|running|paused|ended|success|failed|stopped|timeout|crashed|skipped|log_overflow|expired|deleted|dead_letter)\\s*)*$"
    )]
    status: Option<String>,
    /// Exact task name.
    #[param(pattern = "^[a-zA-Z0-9._-]{1,100}$")]
    task_name: Option<String>,
    /// Exact project.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    project: Option<String>,
    /// Comma-separated trigger sources (`cron`, `api`, `retry`, …).
    #[param(
        pattern = "^\\s*(cron|api|cloud|service|startup|manual|spawn|workflow|event|retry|rerun)\\s*(,\\s*(cron|api|cloud|service|startup|manual|spawn|workflow|event|retry|rerun)\\s*)*$"
    )]
    triggered_by: Option<String>,
    /// Runs created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// Runs created at or before this time (RFC 3339).
    #[param(format = DateTime)]
    created_before: Option<String>,
    /// Runs whose next deadline (`deadline_at`: when the ledger will end
    /// them unless they report first) is at or before this time (RFC 3339).
    #[param(format = DateTime)]
    deadline_before: Option<String>,
    /// Runs whose exit code is at least this (inclusive).
    exit_code_min: Option<i64>,
    /// Runs whose exit code is at most this (inclusive).
    exit_code_max: Option<i64>,
    /// Only retries (`retry_attempt > 0`).
    retries_only: Option<bool>,
    /// Case-insensitive substring of the task name or the run id.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    search: Option<String>,
    /// `key:value`; repeat for several tags (at most 20), all must match.
    #[param(max_items = 20, value_type = Option<Vec<TagFilter>>)]
    tag: Option<Vec<String>>,
    /// Children of this run.
    #[param(format = Uuid)]
    parent_run_id: Option<String>,
    /// Runs created by this bulk operation (the `operation_id` a bulk
    /// retry, rerun or dead-letter replay answered, and each run shows).
    #[param(format = Uuid)]
    operation_id: Option<String>,
    /// A JSON object (URL-encoded): runs whose payload contains it, as
    /// PostgreSQL's `@>` decides, on both backends — `{"customer":"acme"}`
    /// matches a payload with that member among others; objects nest, an
    /// array matches an array holding every element given; `1` and `1.0`
    /// are equal, `1` and `"1"` are not.
    #[param(min_length = 2, max_length = 4096)]
    payload: Option<String>,
    /// Show soft-deleted runs too (hidden by default).
    include_deleted: Option<bool>,
    /// Default `created_at`.
    #[param(value_type = Option<runledger_projections::schema::SortFieldSchema>)]
    sort_field: Option<String>,
    /// Default `desc`. Runs with no value for the sort field (no exit code,
    /// never started, no deadline) come last.
    #[param(value_type = Option<runledger_projections::schema::SortDirectionSchema>)]
    sort_direction: Option<String>,
}

/// `as_of` of the lists that can travel in time.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListAsOfParams {
    /// The list as it was at this log position, or at this RFC 3339 time
    /// (every filter and sort applies to the runs as they were then).
    #[param(value_type = Option<super::openapi::AsOfSchema>)]
    as_of: Option<String>,
}

/// A tag filter: `key:value` with a non-empty key.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[^:]+:")]
#[allow(dead_code)]
pub struct TagFilter(String);

const MAX_TEXT_FILTER: usize = 200;

fn bounded(raw: &str) -> Result<String, String> {
    crate::domain::short_text(raw, MAX_TEXT_FILTER)
}

/// The longest `payload` filter, in characters of JSON.
const MAX_PAYLOAD_FILTER: usize = 4096;

/// A `payload` filter: a JSON object.
fn parse_payload_filter(raw: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if raw.chars().count() > MAX_PAYLOAD_FILTER {
        return Err(format!("must be at most {MAX_PAYLOAD_FILTER} characters of JSON"));
    }
    match serde_json::from_str(raw) {
        Ok(serde_json::Value::Object(needle)) => Ok(needle),
        Ok(_) => Err("must be a JSON object, e.g. {\"customer\":\"acme\"}".to_owned()),
        Err(e) => Err(format!("must be a JSON object: {e}")),
    }
}

/// Parses the list parameters; faults are recorded in `params`.
pub fn run_query(params: &mut QueryParams) -> RunQuery {
    let limit = params.int_in("limit", 1, 1000).unwrap_or(50);
    let offset = params.int_in("offset", 0, i64::MAX).unwrap_or(0);
    let statuses = params.list("status", StatusValue::parse, StatusValue::allowed);
    let triggered_by = params.list("triggered_by", |s| s.parse::<TriggeredBy>().ok(), TriggeredBy::allowed);
    let task_name = params.parsed("task_name", |raw| TaskName::parse(raw).map(|t| t.to_string()));
    let project = params.parsed("project", bounded);
    let created_after = params.time("created_after");
    let created_before = params.time("created_before");
    let deadline_before = params.time("deadline_before");
    let exit_code_min = params.int_in("exit_code_min", i64::MIN, i64::MAX);
    let exit_code_max = params.int_in("exit_code_max", i64::MIN, i64::MAX);
    let retries_only = params.flag("retries_only").unwrap_or(false);
    let search = params.parsed("search", bounded);
    let mut tags = Vec::new();
    let tag_location = params.location("tag");
    for raw in params.many("tag") {
        let parsed = params
            .faults
            .check(&tag_location, &raw, |raw| match raw.split_once(':') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err("must be key:value"),
            });
        tags.extend(parsed);
    }
    if tags.len() > 20 {
        params.faults.add(tag_location, "at most 20 tag filters", None);
    }
    let parent_run_id = params.parsed("parent_run_id", parse_uuid);
    let operation_id = params.parsed("operation_id", parse_uuid);
    let payload = params.parsed("payload", parse_payload_filter);
    let include_deleted = params.flag("include_deleted").unwrap_or(false);
    let sort_field = params
        .parsed("sort_field", |raw| {
            SortField::parse(raw).ok_or_else(|| format!("must be one of: {}", SortField::NAMES.join(", ")))
        })
        .unwrap_or_default();
    let sort_direction = params
        .parsed("sort_direction", |raw| {
            SortDirection::parse(raw).ok_or("must be asc or desc")
        })
        .unwrap_or_default();
    if let (Some(min), Some(max)) = (exit_code_min, exit_code_max) {
        if min > max {
            let location = params.location("exit_code_min");
            params.faults.add(
                location,
                format!("must not exceed exit_code_max ({max})"),
                Some(min.into()),
            );
        }
    }
    let cursor_location = params.location("cursor");
    let cursor = params.parsed("cursor", Cursor::parse);
    if let Some(c) = &cursor {
        if (c.sort_field, c.sort_direction) != (sort_field, sort_direction) {
            params.faults.add(
                cursor_location.clone(),
                format!(
                    "was issued for sort_field={} and sort_direction={}; send the same",
                    c.sort_field.as_str(),
                    c.sort_direction.as_str()
                ),
                None,
            );
        }
        if offset > 0 {
            params
                .faults
                .add(cursor_location, "cannot be combined with offset", None);
        }
    }
    if let (Some(after), Some(before)) = (created_after, created_before) {
        if after > before {
            let location = params.location("created_after");
            params.faults.add(
                location,
                "must not be later than created_before",
                Some(after.to_rfc3339().into()),
            );
        }
    }
    RunQuery {
        filter: RunFilter {
            statuses,
            project,
            task_name,
            triggered_by,
            created_after,
            created_before,
            deadline_before,
            exit_code_min,
            exit_code_max,
            retries_only,
            search,
            tags,
            parent_run_id,
            operation_id,
            payload,
            include_deleted,
            dead_lettered_only: false,
            candidates: None,
        },
        sort_field,
        sort_direction,
        limit,
        offset,
        as_of: None,
        cursor,
    }
}

/// Lists runs; with `as_of`, from the runs table as it was then.
async fn list(ledger: &Ledger, mut query: RunQuery, as_of: Option<AsOf>) -> Result<Json<RunList>, ApiError> {
    if let Some(at) = as_of {
        query.as_of = Some(resolve(ledger, at).await?);
    }
    let (runs, total) = ledger.list_runs(query.clone()).await?;
    Ok(Json(RunList::page(&query, runs, total)))
}

/// List runs with filters, sorting and pagination.
#[utoipa::path(get, path = "/api/runs", tag = "runs", params(ListRunsParams, ListAsOfParams),
    responses(
        (status = 200, body = RunList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_runs(State(ledger): State<Arc<Ledger>>, mut params: QueryParams) -> Result<Json<RunList>, ApiError> {
    let query = run_query(&mut params);
    let as_of = params.parsed("as_of", parse_as_of);
    params.finish()?;
    list(&ledger, query, as_of).await
}

/// The dead-letter queue: runs that failed on their last attempt and have
/// not been replayed, with every filter, sort and `as_of` of `GET /api/runs`.
/// `POST /api/runs/{id}/dlq-replay` (or `/bulk/dlq-replay`) replays them.
#[utoipa::path(get, path = "/api/runs/dlq", tag = "runs", params(ListRunsParams, ListAsOfParams),
    responses(
        (status = 200, body = RunList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_dlq(State(ledger): State<Arc<Ledger>>, mut params: QueryParams) -> Result<Json<RunList>, ApiError> {
    let mut query = run_query(&mut params);
    let as_of = params.parsed("as_of", parse_as_of);
    params.finish()?;
    query.filter.dead_lettered_only = true;
    list(&ledger, query, as_of).await
}

/// List the runs of one task; the same filters as `GET /api/runs`.
#[utoipa::path(get, path = "/api/tasks/{taskName}/runs", tag = "tasks",
    params(("taskName" = String, Path, description = "Task name"), ListRunsParams, ListAsOfParams),
    responses(
        (status = 200, body = RunList),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_task_runs(
    State(ledger): State<Arc<Ledger>>,
    Path(task): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunList>, ApiError> {
    let task = params.faults.check("path.taskName", &task, TaskName::parse);
    let mut query = run_query(&mut params);
    let as_of = params.parsed("as_of", parse_as_of);
    if let (Some(task), Some(filter)) = (&task, &query.filter.task_name) {
        if filter != task.as_str() {
            params.faults.add(
                "query.task_name",
                "conflicts with the task name in the path",
                Some(filter.clone().into()),
            );
        }
    }
    params.finish()?;
    query.filter.task_name = task.map(|t| t.to_string());
    list(&ledger, query, as_of).await
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AsOfParams {
    /// The run as it was at this position, or at this RFC 3339 time.
    #[param(value_type = Option<super::openapi::AsOfSchema>)]
    as_of: Option<String>,
}

/// One run, including soft-deleted ones; with `as_of`, as it was then (its
/// version in the history projection).
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id"), AsOfParams),
    responses(
        (status = 200, body = RunState),
        (status = 404, description = "No such run (at that point)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_run(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunState>, ApiError> {
    let id_ok = params.faults.path_id(&id);
    let as_of = params.parsed("as_of", parse_as_of);
    params.finish()?;
    let id = id_ok.expect("checked");
    let run = match as_of {
        None => ledger.get_run(id).await?,
        Some(at) => {
            let position = resolve(&ledger, at).await?;
            ledger.run_as_of(id, position).await?
        }
    };
    run.map(Json).ok_or_else(|| ApiError::run_not_found(id))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Only entries after this stream version (for paging).
    #[param(minimum = 0, default = 0)]
    after_version: Option<i64>,
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    #[schema(value_type = super::openapi::EnvelopeSchema)]
    pub event: EventEnvelope,
    /// The run right after this event.
    pub state: RunState,
}

#[derive(Serialize, ToSchema)]
pub struct RunHistory {
    pub history: Vec<HistoryItem>,
}

/// The run's story: each event with the run's state right after it.
#[utoipa::path(get, path = "/api/runs/{id}/history", tag = "time travel",
    params(("id" = String, Path, description = "Run id"), HistoryParams),
    responses(
        (status = 200, body = RunHistory),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn run_history(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunHistory>, ApiError> {
    let id_ok = params.faults.path_id(&id);
    let after_version = params.int_in("after_version", 0, i64::MAX).unwrap_or(0);
    let limit = params.int_in("limit", 1, 10_000).unwrap_or(1000) as usize;
    params.finish()?;
    let id = id_ok.expect("checked");
    let entries = ledger
        .run_history(id, after_version, limit)
        .await?
        .ok_or_else(|| ApiError::run_not_found(id))?;
    let history = entries
        .into_iter()
        .map(|e| HistoryItem {
            event: e.event,
            state: e.state,
        })
        .collect();
    Ok(Json(RunHistory { history }))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DiffParams {
    /// A position or an RFC 3339 time.
    #[param(value_type = super::openapi::AsOfSchema)]
    from: String,
    /// A position or an RFC 3339 time, not before `from`.
    #[param(value_type = super::openapi::AsOfSchema)]
    to: String,
    /// Runs per page, by run id.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RunChange {
    #[schema(value_type = String)]
    pub id: uuid::Uuid,
    /// The run at `from`; null if it did not exist yet.
    pub before: Option<RunState>,
    /// The run at `to`.
    pub after: RunState,
}

#[derive(Serialize, ToSchema)]
pub struct RunsDiff {
    /// The positions `from` and `to` resolved to.
    pub from: i64,
    pub to: i64,
    pub runs: Vec<RunChange>,
    /// Runs that changed in all (the page holds at most `limit`).
    pub total: i64,
}

/// Runs whose state changed after `from` up to `to`, with before and after.
#[utoipa::path(get, path = "/api/runs/diff", tag = "time travel", params(DiffParams),
    responses(
        (status = 200, body = RunsDiff),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn runs_diff(State(ledger): State<Arc<Ledger>>, mut params: QueryParams) -> Result<Json<RunsDiff>, ApiError> {
    let from = params.parsed("from", parse_as_of);
    let to = params.parsed("to", parse_as_of);
    let limit = params.int_in("limit", 1, 1000).unwrap_or(100);
    for (name, value) in [("from", &from), ("to", &to)] {
        if value.is_none() && !params.faults_at(name) {
            params.faults.add(format!("query.{name}"), "is required", None);
        }
    }
    params.finish()?;
    let (from, to) = (
        resolve(&ledger, from.expect("checked")).await?,
        resolve(&ledger, to.expect("checked")).await?,
    );
    if from > to {
        return Err(ApiError::invalid_one(
            "query.from",
            format!("resolves to position {from}, after `to` ({to})"),
            None,
        ));
    }
    let (changes, total) = ledger.diff(from, to, limit).await?;
    let runs = changes
        .into_iter()
        .map(|c| RunChange {
            id: c.run_id,
            before: c.before,
            after: c.after,
        })
        .collect();
    Ok(Json(RunsDiff { from, to, runs, total }))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunEventsParams {
    /// Comma-separated event types, e.g. `run.started,run.ended`.
    #[param(
        rename = "type",
        pattern = "^\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*(,\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*)*$"
    )]
    event_type: Option<String>,
    /// Only events after this stream version (for paging).
    #[param(minimum = 0, default = 0)]
    after_version: Option<i64>,
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RunEvents {
    #[schema(value_type = Vec<super::openapi::EnvelopeSchema>)]
    pub events: Vec<EventEnvelope>,
    /// Pass as `after_version` for the next page; absent on the last page.
    pub next_after_version: Option<i64>,
}

/// The run's ledger events, oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "Run id"), RunEventsParams),
    responses(
        (status = 200, body = RunEvents),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn run_events(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunEvents>, ApiError> {
    let run_id = run_id(&id)?;
    let types = params.list(
        "type",
        |t| RUN_EVENT_TYPES.contains(&t).then(|| t.to_owned()),
        || RUN_EVENT_TYPES.join(", "),
    );
    let after_version = params.int_in("after_version", 0, i64::MAX).unwrap_or(0);
    let limit = params.int_in("limit", 1, 10_000).unwrap_or(1000);
    params.finish()?;
    let events = ledger
        .run_events(EventsQuery {
            run_id,
            after_version,
            limit,
            types,
        })
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    let next_after_version = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.stream_version))
        .flatten();
    Ok(Json(RunEvents {
        events,
        next_after_version,
    }))
}

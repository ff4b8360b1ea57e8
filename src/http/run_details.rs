//! A run's details: executors record checkpoints, log lines, model usage,
//! tool calls and structured outputs; readers page through them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use runledger_events::{RunLogged, RunOutputRecorded, RunToolCalled, RunUsageRecorded};
use runledger_projections::details::{
    self, Checkpoint, OutputRecord, Page, RunLog, ToolCall, UsageRecord, UsageScope, UsageTotals,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::extract::{Faults, JsonBody, QueryParams, RequestMeta};
use super::run_commands::{in_range, optional_text};
use crate::commands::{Action, Command, Outcome, RunCommand};
use crate::domain::{short_text, TaskName};
use crate::ledger::{DetailReads, Ledger};

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(record_checkpoint, list_checkpoints))
        .routes(routes!(run_state))
        .routes(routes!(record_log, list_logs))
        .routes(routes!(record_usage, list_usage))
        .routes(routes!(task_usage))
        .routes(routes!(record_tool_call, list_tool_calls))
        .routes(routes!(record_output, list_outputs))
}

const MAX_NAME: usize = 200;
const MAX_MESSAGE: usize = 10_000;
/// Token counts and costs per record; far above any real call, low enough
/// that sums over millions of records stay exact in 64 bits.
const MAX_COUNT: i64 = 1_000_000_000_000;
/// Schema faults reported for one output, at most.
const MAX_VALUE_FAULTS: usize = 50;

/// Appends `action` to the run; answers 201 with the detail it recorded.
async fn record(
    ledger: &Ledger,
    meta: runledger_events::Metadata,
    run_id: Uuid,
    action: Action,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let command = Command::Run(RunCommand {
        run_id,
        expected_version: None,
        action,
    });
    match ledger.execute(command, meta).await? {
        Outcome::Recorded { record, .. } => Ok((StatusCode::CREATED, Json(record))),
        other => Err(ApiError::Internal(format!("a detail answered {other:?}"))),
    }
}

fn any_name(raw: &str) -> Option<String> {
    short_text(raw, MAX_NAME).ok()
}

/// The page parameters of every detail list: `after_<cursor>` and `limit`.
fn page(params: &mut QueryParams, cursor: &str) -> Page {
    let after = params.int_in(cursor, 0, i64::MAX).unwrap_or(0);
    let limit = params.int_in("limit", 1, 1000).unwrap_or(100);
    Page { after, limit }
}

/// The cursor of the next page: the last item's, when the page is full.
fn next<T>(items: &[T], page: Page, cursor: impl Fn(&T) -> i64) -> Option<i64> {
    (items.len() as i64 == page.limit)
        .then(|| items.last().map(cursor))
        .flatten()
}

async fn records<T: serde::de::DeserializeOwned>(
    ledger: &Ledger,
    run_id: Uuid,
    query: runledger_projections::SqlQuery,
) -> Result<Vec<T>, ApiError> {
    ledger
        .run_records(run_id, query)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PositionPage {
    /// Only items whose event is after this log position (for paging).
    #[param(minimum = 0, default = 0)]
    after_position: Option<i64>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

// ---- checkpoints ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// Who saved it (a worker, a step).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    source: Option<String>,
    /// The state to resume from; any JSON but null.
    #[schema(value_type = super::openapi::NotNull)]
    state: Value,
}

/// Save a checkpoint of a pending, running or paused run. The server numbers
/// a run's checkpoints 1, 2, 3…
#[utoipa::path(post, path = "/api/runs/{id}/checkpoints", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = CheckpointRequest,
    responses(
        (status = 201, body = Checkpoint),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_checkpoint(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<CheckpointRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let source = optional_text(&mut f, "source", body.source, MAX_NAME);
    if body.state.is_null() {
        f.add("body.state", "must not be null", None);
    }
    f.finish()?;
    let action = Action::Checkpoint {
        source,
        state: body.state,
    };
    record(&ledger, meta, run_id.expect("checked"), action).await
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CheckpointPage {
    /// Only checkpoints after this sequence (for paging).
    #[param(minimum = 0, default = 0)]
    after_sequence: Option<i64>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointList {
    pub checkpoints: Vec<Checkpoint>,
    /// Pass as `after_sequence` for the next page; absent on the last page.
    pub next_after_sequence: Option<i64>,
}

/// A run's checkpoints, oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/checkpoints", tag = "runs",
    params(("id" = String, Path, description = "Run id"), CheckpointPage),
    responses(
        (status = 200, body = CheckpointList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_checkpoints(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<CheckpointList>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let page = page(&mut params, "after_sequence");
    params.finish()?;
    let run_id = run_id.expect("checked");
    let checkpoints: Vec<Checkpoint> = records(&ledger, run_id, details::checkpoints_sql(run_id, page)).await?;
    let next_after_sequence = next(&checkpoints, page, |c| c.sequence);
    Ok(Json(CheckpointList {
        checkpoints,
        next_after_sequence,
    }))
}

/// A run's state to resume from: its latest checkpoint's.
#[derive(Serialize, ToSchema)]
pub struct RunStateAnswer {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    /// The latest checkpoint's state; null when the run has no checkpoint
    /// (at that point), and then so is every field below.
    #[schema(value_type = Option<super::openapi::NotNull>)]
    pub state: Option<Value>,
    /// The checkpoint's sequence (1, 2, 3…).
    pub sequence: Option<i64>,
    /// Who saved it.
    pub source: Option<String>,
    /// The log position of its `run.checkpointed` event.
    pub position: Option<i64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub recorded_at: Option<runledger_events::Timestamp>,
}

impl RunStateAnswer {
    fn of(run_id: Uuid, latest: Option<Checkpoint>) -> Self {
        match latest {
            Some(c) => Self {
                run_id,
                state: Some(c.state),
                sequence: Some(c.sequence),
                source: c.source,
                position: Some(c.position),
                recorded_at: Some(c.recorded_at),
            },
            None => Self {
                run_id,
                state: None,
                sequence: None,
                source: None,
                position: None,
                recorded_at: None,
            },
        }
    }
}

/// The run's state: its latest checkpoint, with its sequence and log
/// position. A run with no checkpoint yet answers 200 with `state: null` —
/// the run exists, it has saved nothing, and a worker resuming it starts
/// from scratch; 404 means only that there is no such run. With `as_of`,
/// the latest checkpoint at that point (404 if the run did not exist yet).
#[utoipa::path(get, path = "/api/runs/{id}/state", tag = "runs",
    params(("id" = String, Path, description = "Run id"), super::runs::AsOfParams),
    responses(
        (status = 200, body = RunStateAnswer),
        (status = 404, description = "No such run (at that point)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn run_state(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunStateAnswer>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let as_of = params.parsed("as_of", super::runs::parse_as_of);
    params.finish()?;
    let run_id = run_id.expect("checked");
    let at = match as_of {
        Some(at) => {
            let position = super::runs::resolve(&ledger, at).await?;
            if ledger.run_as_of(run_id, position).await?.is_none() {
                return Err(ApiError::run_not_found(run_id));
            }
            Some(position)
        }
        None => None,
    };
    let mut latest: Vec<Checkpoint> = records(&ledger, run_id, details::latest_checkpoint_sql(run_id, at)).await?;
    Ok(Json(RunStateAnswer::of(run_id, latest.pop())))
}

// ---- logs ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    /// As the executor names it (`info`, `WARNING`, `trace`…), stored as
    /// given; 1 to 200 characters, default `info`.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    level: Option<String>,
    /// A kind of line of your choosing (`stdout`, `progress`…).
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    log_type: Option<String>,
    #[schema(min_length = 1, max_length = 10000)]
    message: String,
    data: Option<Value>,
}

/// Append a log line to a run, in any status: shippers flush after the end.
#[utoipa::path(post, path = "/api/runs/{id}/logs", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = LogRequest,
    responses(
        (status = 201, body = RunLog),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_log(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<LogRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let level = f.check("body.level", body.level.as_deref().unwrap_or("info"), |r| {
        short_text(r, MAX_NAME)
    });
    let log_type = optional_text(&mut f, "type", body.log_type, MAX_NAME);
    let length = body.message.chars().count();
    if !(1..=MAX_MESSAGE).contains(&length) {
        f.add(
            "body.message",
            format!("must be 1 to {MAX_MESSAGE} characters, got {length}"),
            None,
        );
    }
    f.finish()?;
    let line = RunLogged {
        level: level.expect("checked"),
        log_type,
        message: body.message,
        data: body.data,
    };
    record(&ledger, meta, run_id.expect("checked"), Action::Log(line)).await
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogFilterParams {
    /// Comma-separated levels, as recorded; any matches.
    #[param(
        pattern = "^\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*(,\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*)*$"
    )]
    level: Option<String>,
    /// Comma-separated types; any matches.
    #[param(
        rename = "type",
        pattern = "^\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*(,\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*)*$"
    )]
    log_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LogList {
    pub logs: Vec<RunLog>,
    /// Pass as `after_position` for the next page; absent on the last page.
    pub next_after_position: Option<i64>,
}

/// A run's log lines, oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/logs", tag = "runs",
    params(("id" = String, Path, description = "Run id"), LogFilterParams, PositionPage),
    responses(
        (status = 200, body = LogList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_logs(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<LogList>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let levels = params.list("level", any_name, || format!("1 to {MAX_NAME} characters"));
    let types = params.list("type", any_name, || format!("1 to {MAX_NAME} characters"));
    let page = page(&mut params, "after_position");
    params.finish()?;
    let run_id = run_id.expect("checked");
    let logs: Vec<RunLog> = records(&ledger, run_id, details::logs_sql(run_id, levels, types, page)).await?;
    let next_after_position = next(&logs, page, |l| l.position);
    Ok(Json(LogList {
        logs,
        next_after_position,
    }))
}

// ---- usage ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// As the executor names it, stored as given; 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    provider: String,
    /// As the executor names it, stored as given; 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    model: String,
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    #[serde(deserialize_with = "super::whole::whole")]
    prompt_tokens: i64,
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    #[serde(deserialize_with = "super::whole::whole")]
    completion_tokens: i64,
    /// Defaults to prompt + completion; may be more (reasoning or cached
    /// tokens some providers count), never less.
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    #[schema(minimum = 0, maximum = 2000000000000_i64)]
    total_tokens: Option<i64>,
    /// Cost in millionths of a US dollar; default 0.
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    cost_microusd: Option<i64>,
}

/// Record a model call's usage, in any status: it may be billed after the end.
#[utoipa::path(post, path = "/api/runs/{id}/usage", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = UsageRequest,
    responses(
        (status = 201, body = UsageRecord),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_usage(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<UsageRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let provider = f.check("body.provider", &body.provider, |r| short_text(r, MAX_NAME));
    let model = f.check("body.model", &body.model, |r| short_text(r, MAX_NAME));
    let prompt = in_range(&mut f, "prompt_tokens", Some(body.prompt_tokens), 0, MAX_COUNT);
    let completion = in_range(&mut f, "completion_tokens", Some(body.completion_tokens), 0, MAX_COUNT);
    let cost = in_range(
        &mut f,
        "cost_microusd",
        Some(body.cost_microusd.unwrap_or(0)),
        0,
        MAX_COUNT,
    );
    let total = match (prompt, completion, body.total_tokens) {
        (Some(p), Some(c), None) => Some(p + c),
        (Some(p), Some(c), Some(t)) if t < p + c => {
            f.add(
                "body.total_tokens",
                format!("must be at least prompt_tokens + completion_tokens ({})", p + c),
                Some(t.into()),
            );
            None
        }
        (_, _, given) => in_range(&mut f, "total_tokens", given, 0, 2 * MAX_COUNT),
    };
    f.finish()?;
    let usage = RunUsageRecorded {
        provider: provider.expect("checked"),
        model: model.expect("checked"),
        prompt_tokens: prompt.expect("checked"),
        completion_tokens: completion.expect("checked"),
        total_tokens: total.expect("checked"),
        cost_microusd: cost.expect("checked"),
    };
    record(&ledger, meta, run_id.expect("checked"), Action::RecordUsage(usage)).await
}

#[derive(Serialize, ToSchema)]
pub struct RunUsage {
    pub usage: Vec<UsageRecord>,
    /// Pass as `after_position` for the next page; absent on the last page.
    pub next_after_position: Option<i64>,
    /// Over every record of the run, not only this page.
    pub totals: UsageTotals,
    /// The same, per provider and model.
    pub by_model: Vec<UsageTotals>,
}

/// Split the two totals reads (overall, then per model).
fn totals_of(mut answers: Vec<Vec<UsageTotals>>) -> (UsageTotals, Vec<UsageTotals>) {
    let by_model = answers.pop().unwrap_or_default();
    let totals = answers.pop().and_then(|mut t| t.pop()).unwrap_or_default();
    (totals, by_model)
}

/// A run's usage records, oldest first, with its totals.
#[utoipa::path(get, path = "/api/runs/{id}/usage", tag = "runs",
    params(("id" = String, Path, description = "Run id"), PositionPage),
    responses(
        (status = 200, body = RunUsage),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_usage(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunUsage>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let page = page(&mut params, "after_position");
    params.finish()?;
    let run_id = run_id.expect("checked");
    let scope = UsageScope::Run(run_id);
    let reads = DetailReads {
        run_id: Some(run_id),
        texts: Some(details::usage_sql(run_id, page)),
        totals: vec![
            details::usage_totals_sql(&scope, false),
            details::usage_totals_sql(&scope, true),
        ],
    };
    let answers = ledger
        .read_details(reads)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    let usage: Vec<UsageRecord> = Ledger::decode_texts(&answers.texts)?;
    let (totals, by_model) = totals_of(answers.totals);
    Ok(Json(RunUsage {
        next_after_position: next(&usage, page, |u| u.position),
        usage,
        totals,
        by_model,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct TaskUsage {
    pub task_name: String,
    /// Over every run of the task, soft-deleted ones included (their cost was incurred).
    pub totals: UsageTotals,
    /// The same, per provider and model.
    pub by_model: Vec<UsageTotals>,
}

/// Usage totals of a task's runs, overall and per model (zeros for a task with none).
#[utoipa::path(get, path = "/api/tasks/{taskName}/usage", tag = "tasks",
    params(("taskName" = String, Path, description = "Task name, ^[a-zA-Z0-9._-]{1,100}$")),
    responses(
        (status = 200, body = TaskUsage),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn task_usage(
    State(ledger): State<Arc<Ledger>>,
    Path(task): Path<String>,
    mut params: QueryParams,
) -> Result<Json<TaskUsage>, ApiError> {
    let task = params.faults.check("path.taskName", &task, TaskName::parse);
    params.finish()?;
    let task_name = task.expect("checked").to_string();
    let scope = UsageScope::Task(task_name.clone());
    let reads = DetailReads {
        run_id: None,
        texts: None,
        totals: vec![
            details::usage_totals_sql(&scope, false),
            details::usage_totals_sql(&scope, true),
        ],
    };
    let answers = ledger.read_details(reads).await?.unwrap_or_default();
    let (totals, by_model) = totals_of(answers.totals);
    Ok(Json(TaskUsage {
        task_name,
        totals,
        by_model,
    }))
}

// ---- tool calls ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    tool_name: String,
    input: Option<Value>,
    output: Option<Value>,
    /// At most 366 days.
    #[schema(minimum = 0, maximum = 31622400000_i64)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    duration_ms: Option<i64>,
    /// As the executor reports it (`success`, `ok`, `error`, `timeout`…),
    /// stored as given; 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    status: String,
}

/// Record a tool call made by a run, in any status: traces are flushed after the end.
#[utoipa::path(post, path = "/api/runs/{id}/tool-calls", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = ToolCallRequest,
    responses(
        (status = 201, body = ToolCall),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_tool_call(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<ToolCallRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let tool_name = f.check("body.tool_name", &body.tool_name, |r| short_text(r, MAX_NAME));
    let duration_ms = in_range(&mut f, "duration_ms", body.duration_ms, 0, 366 * 24 * 3600 * 1000);
    let status = f.check("body.status", &body.status, |r| short_text(r, MAX_NAME));
    f.finish()?;
    let call = RunToolCalled {
        tool_name: tool_name.expect("checked"),
        input: body.input,
        output: body.output,
        duration_ms,
        status: status.expect("checked"),
    };
    record(&ledger, meta, run_id.expect("checked"), Action::RecordToolCall(call)).await
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ToolCallFilterParams {
    /// Comma-separated tool names; any matches.
    #[param(
        pattern = "^\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*(,\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*)*$"
    )]
    tool_name: Option<String>,
    /// Comma-separated statuses, as recorded; any matches.
    #[param(
        pattern = "^\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*(,\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*)*$"
    )]
    status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ToolCallList {
    pub tool_calls: Vec<ToolCall>,
    /// Pass as `after_position` for the next page; absent on the last page.
    pub next_after_position: Option<i64>,
}

/// A run's tool calls, oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/tool-calls", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ToolCallFilterParams, PositionPage),
    responses(
        (status = 200, body = ToolCallList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_tool_calls(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<ToolCallList>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let names = params.list("tool_name", any_name, || format!("1 to {MAX_NAME} characters"));
    let statuses = params.list("status", any_name, || format!("1 to {MAX_NAME} characters"));
    let page = page(&mut params, "after_position");
    params.finish()?;
    let run_id = run_id.expect("checked");
    let query = details::tool_calls_sql(run_id, names, statuses, page);
    let tool_calls: Vec<ToolCall> = records(&ledger, run_id, query).await?;
    let next_after_position = next(&tool_calls, page, |t| t.position);
    Ok(Json(ToolCallList {
        tool_calls,
        next_after_position,
    }))
}

// ---- outputs ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    output_key: String,
    /// A JSON Schema (draft from its `$schema`, 2020-12 by default) the value
    /// must satisfy. Remote and file `$ref`s are not fetched.
    #[schema(value_type = Option<super::openapi::JsonSchemaDoc>)]
    schema: Option<Value>,
    value: Value,
}

/// `body.value` followed by the JSON Pointer `pointer` into `value`, written
/// as fields and `[index]`es: `/items/2/name` → `body.value.items[2].name`.
fn value_location(value: &Value, pointer: &str) -> String {
    let mut location = "body.value".to_owned();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) if segment.parse::<usize>().is_ok() => {
                location.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                location.push('.');
                location.push_str(&segment);
                at = at.and_then(|v| v.get(&segment));
            }
        }
    }
    location
}

/// Faults of `value` against `schema`, or of the schema itself.
fn schema_faults(schema: &Value, value: &Value) -> Vec<(String, String)> {
    match jsonschema::validator_for(schema) {
        Err(e) => vec![("body.schema".to_owned(), format!("is not a valid JSON Schema: {e}"))],
        Ok(validator) => validator
            .iter_errors(value)
            .take(MAX_VALUE_FAULTS)
            .map(|e| (value_location(value, e.instance_path().as_str()), e.to_string()))
            .collect(),
    }
}

/// Record a structured output of a pending, running or paused run. With a
/// schema, a value that does not satisfy it is refused (422 at the failing
/// path under `body.value`), and a schema that is not valid at `body.schema`.
#[utoipa::path(post, path = "/api/runs/{id}/outputs", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = OutputRequest,
    responses(
        (status = 201, body = OutputRecord),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_output(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<OutputRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let output_key = f.check("body.output_key", &body.output_key, |r| short_text(r, MAX_NAME));
    let OutputRequest { schema, value, .. } = body;
    let (schema, value, faults) = match schema {
        None => (None, value, Vec::new()),
        // Compiling and checking a large schema is CPU work; keep it off the runtime.
        Some(schema) => tokio::task::spawn_blocking(move || {
            let faults = schema_faults(&schema, &value);
            (Some(schema), value, faults)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("schema check: {e}")))?,
    };
    for (location, message) in faults {
        f.add(location, message, None);
    }
    f.finish()?;
    let output = RunOutputRecorded {
        output_key: output_key.expect("checked"),
        schema,
        value,
    };
    record(&ledger, meta, run_id.expect("checked"), Action::RecordOutput(output)).await
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct OutputFilterParams {
    /// Comma-separated output keys; any matches.
    #[param(
        pattern = "^\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*(,\\s*[^,\\s\\x00-\\x1f\\x7f-\\x9f][^,\\x00-\\x1f\\x7f-\\x9f]*)*$"
    )]
    output_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OutputList {
    pub outputs: Vec<OutputRecord>,
    /// Pass as `after_position` for the next page; absent on the last page.
    pub next_after_position: Option<i64>,
}

/// A run's structured outputs, oldest first (a key recorded twice appears twice).
#[utoipa::path(get, path = "/api/runs/{id}/outputs", tag = "runs",
    params(("id" = String, Path, description = "Run id"), OutputFilterParams, PositionPage),
    responses(
        (status = 200, body = OutputList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_outputs(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<OutputList>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let keys = params.list("output_key", any_name, || format!("1 to {MAX_NAME} characters"));
    let page = page(&mut params, "after_position");
    params.finish()?;
    let run_id = run_id.expect("checked");
    let outputs: Vec<OutputRecord> = records(&ledger, run_id, details::outputs_sql(run_id, keys, page)).await?;
    let next_after_position = next(&outputs, page, |o| o.position);
    Ok(Json(OutputList {
        outputs,
        next_after_position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_faults_name_the_failing_path() {
        let value = serde_json::json!({"items": [{"name": "a"}, {"name": "b"}, {"name": 3}], "a/b": [1]});
        assert_eq!(value_location(&value, "/items/2/name"), "body.value.items[2].name");
        assert_eq!(value_location(&value, "/a~1b/0"), "body.value.a/b[0]");
        assert_eq!(value_location(&value, ""), "body.value");
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"items": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}}}}}
        });
        let faults = schema_faults(&schema, &value);
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].0, "body.value.items[2].name");
        let bad = schema_faults(&serde_json::json!({"type": 12}), &value);
        assert_eq!(bad[0].0, "body.schema");
    }
}

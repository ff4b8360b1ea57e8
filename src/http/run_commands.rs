//! Writing runs: executors report transitions, operators act on runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runledger_events::{
    EndReason, ExecutionTrace, Reason, RunDebugModeSet, RunEnded, RunRescheduled, RunStarted, TriggeredBy,
};
use runledger_projections::RunState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::bulk::BulkCap;
use super::error::{ApiError, Problem};
use super::extract::{parse_time, parse_uuid, Faults, JsonBody, RequestMeta};
use crate::commands::{Action, Command, CreateRun, Outcome, RetryAction, RunCommand};
use crate::domain::{short_text, TaskName};
use crate::ledger::Ledger;

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(start_run))
        .routes(routes!(heartbeat_run))
        .routes(routes!(end_run))
        .routes(routes!(cancel_run))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(reschedule_run))
        .routes(routes!(delete_run))
        .routes(routes!(restore_run))
        .routes(routes!(retry_run))
        .routes(routes!(replay_run))
        .routes(routes!(dlq_replay_run))
        .routes(routes!(restart_run))
        .routes(routes!(debug_run))
        .routes(routes!(reset_idempotency_key))
}

const MAX_REASON: usize = 1000;
const MAX_KEY: usize = 255;
const MAX_MAP_ENTRIES: usize = 50;
const MAX_DEPENDENCIES: usize = 100;

/// Body of `POST /api/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    #[schema(pattern = "^[a-zA-Z0-9._-]{1,100}$", min_length = 1, max_length = 100)]
    task_name: String,
    /// Default `api`.
    #[schema(value_type = Option<runledger_projections::schema::TriggeredBySchema>)]
    triggered_by: Option<String>,
    /// Default `default`; same pattern as task names.
    #[schema(pattern = "^[a-zA-Z0-9._-]{1,100}$", min_length = 1, max_length = 100)]
    project: Option<String>,
    payload: Option<Value>,
    /// At most 50; keys (1–100 characters, no control characters) may not
    /// contain `:`; values at most 500 characters.
    tags: Option<BTreeMap<String, String>>,
    /// At most 50 entries; keys 1–100 characters, values at most 500.
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    priority: Option<i32>,
    /// Creating again with the key of an unfinished run of the same task returns that run (200).
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    idempotency_key: Option<String>,
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    concurrency_key: Option<String>,
    /// Attempts before a failing run is dead-lettered. Unset: never dead-lettered.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    max_attempts: Option<i64>,
    /// A running run past this many seconds ends `timeout` (at most 366 days).
    #[schema(minimum = 1, maximum = 31622400)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    timeout_secs: Option<i64>,
    /// A run still pending at this time (RFC 3339) ends `expired`; once
    /// started it no longer applies.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// A running run with no heartbeat (or start, or resume) for this many
    /// seconds ends `crashed` (at most 366 days).
    #[schema(minimum = 1, maximum = 31622400)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    heartbeat_timeout_secs: Option<i64>,
    /// When the run should start (RFC 3339).
    #[schema(format = DateTime)]
    scheduled_at: Option<String>,
    #[schema(format = Uuid)]
    parent_run_id: Option<String>,
    #[schema(format = Uuid)]
    continuation_of: Option<String>,
    /// Runs that must end first (at most 100).
    #[schema(max_items = 100, value_type = Option<Vec<Uuid>>)]
    depends_on: Option<Vec<String>>,
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    external_execution_id: Option<String>,
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    replica_index: Option<i64>,
    debug_mode: Option<bool>,
}

fn check_map(
    faults: &mut Faults,
    field: &str,
    map: Option<BTreeMap<String, String>>,
    tag_keys: bool,
) -> BTreeMap<String, String> {
    let map = map.unwrap_or_default();
    if map.len() > MAX_MAP_ENTRIES {
        faults.add(
            format!("body.{field}"),
            format!("at most {MAX_MAP_ENTRIES} entries"),
            None,
        );
    }
    for (key, value) in &map {
        let location = format!("body.{field}.{key}");
        if let Err(m) = short_text(key, 100) {
            faults.add(&location, format!("key {m}"), None);
        } else if tag_keys && key.contains(':') {
            faults.add(&location, "key must not contain ':'", None);
        }
        if value.chars().count() > 500 {
            faults.add(&location, "value must be at most 500 characters", None);
        }
    }
    map
}

pub(super) fn optional_text(faults: &mut Faults, field: &str, raw: Option<String>, max: usize) -> Option<String> {
    raw.and_then(|raw| faults.check(&format!("body.{field}"), &raw, |r| short_text(r, max)))
}

pub(super) fn in_range(faults: &mut Faults, field: &str, value: Option<i64>, min: i64, max: i64) -> Option<i64> {
    let v = value?;
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        faults.add(
            format!("body.{field}"),
            format!("must be between {min} and {max}"),
            Some(v.into()),
        );
        None
    }
}

impl CreateRunRequest {
    fn parse(self) -> Result<CreateRun, ApiError> {
        let mut f = Faults::default();
        let task_name = f.check("body.task_name", &self.task_name, TaskName::parse);
        let triggered_by = self.triggered_by.as_deref().map_or(Some(TriggeredBy::Api), |raw| {
            f.check("body.triggered_by", raw, |r| {
                r.parse::<TriggeredBy>()
                    .map_err(|()| format!("must be one of: {}", TriggeredBy::allowed()))
            })
        });
        let project = match &self.project {
            None => Some("default".to_owned()),
            Some(raw) => f.check("body.project", raw, |r| TaskName::parse(r).map(|p| p.to_string())),
        };
        let tags = check_map(&mut f, "tags", self.tags, true);
        let metadata = check_map(&mut f, "metadata", self.metadata, false);
        let idempotency_key = optional_text(&mut f, "idempotency_key", self.idempotency_key, MAX_KEY);
        let concurrency_key = optional_text(&mut f, "concurrency_key", self.concurrency_key, MAX_KEY);
        let external_execution_id = optional_text(&mut f, "external_execution_id", self.external_execution_id, MAX_KEY);
        let max_attempts = in_range(&mut f, "max_attempts", self.max_attempts, 1, 1000);
        let timeout_secs = in_range(&mut f, "timeout_secs", self.timeout_secs, 1, 366 * 24 * 3600);
        let heartbeat_timeout_secs = in_range(
            &mut f,
            "heartbeat_timeout_secs",
            self.heartbeat_timeout_secs,
            1,
            366 * 24 * 3600,
        );
        let expires_at = self
            .expires_at
            .and_then(|raw| f.check("body.expires_at", &raw, parse_time));
        let replica_index = in_range(&mut f, "replica_index", self.replica_index, 0, 1_000_000).unwrap_or(0);
        let scheduled_at = self
            .scheduled_at
            .and_then(|raw| f.check("body.scheduled_at", &raw, parse_time));
        let parent_run_id = self
            .parent_run_id
            .and_then(|raw| f.check("body.parent_run_id", &raw, parse_uuid));
        let continuation_of = self
            .continuation_of
            .and_then(|raw| f.check("body.continuation_of", &raw, parse_uuid));
        let depends_on_raw = self.depends_on.unwrap_or_default();
        if depends_on_raw.len() > MAX_DEPENDENCIES {
            f.add("body.depends_on", format!("at most {MAX_DEPENDENCIES} runs"), None);
        }
        let mut depends_on: Vec<Uuid> = depends_on_raw
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| f.check(&format!("body.depends_on.{i}"), raw, parse_uuid))
            .collect();
        depends_on.dedup();
        f.finish()?;
        let mut create = CreateRun::new(task_name.expect("checked"));
        create.project = project.expect("checked");
        create.triggered_by = triggered_by.expect("checked");
        create.payload = self.payload;
        create.tags = tags;
        create.metadata = metadata;
        create.priority = i64::from(self.priority.unwrap_or(0));
        create.idempotency_key = idempotency_key;
        create.concurrency_key = concurrency_key;
        create.max_attempts = max_attempts;
        create.timeout_secs = timeout_secs;
        create.expires_at = expires_at;
        create.heartbeat_timeout_secs = heartbeat_timeout_secs;
        create.scheduled_at = scheduled_at;
        create.parent_run_id = parent_run_id;
        create.continuation_of = continuation_of;
        create.depends_on = depends_on;
        create.external_execution_id = external_execution_id;
        create.replica_index = replica_index;
        create.debug_mode = self.debug_mode.unwrap_or(false);
        Ok(create)
    }
}

/// Create a run.
#[utoipa::path(post, path = "/api/runs", tag = "runs", request_body = CreateRunRequest,
    responses(
        (status = 201, description = "Created", body = RunState),
        (status = 200, description = "An unfinished run of the task already holds the idempotency key", body = RunState),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_run(
    State(ledger): State<Arc<Ledger>>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<CreateRunRequest>,
) -> Result<Response, ApiError> {
    let create = body.parse()?;
    match ledger.execute(Command::Create(create), meta).await? {
        Outcome::Created(run) => {
            let location = format!("/api/runs/{}", run.id);
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(run)).into_response())
        }
        Outcome::Existing(run) => Ok((StatusCode::OK, Json(run)).into_response()),
        other => Err(ApiError::Internal(format!("create answered {other:?}"))),
    }
}

/// The longest step an execution trace reports: a year, in milliseconds.
const MAX_TRACE_MS: i64 = 366 * 24 * 3600 * 1000;

/// An executor's `execution_trace`: an object of the members of
/// `ExecutionTrace`, each a whole number of milliseconds (or null).
fn execution_trace(faults: &mut Faults, raw: Option<Value>) -> Option<ExecutionTrace> {
    let map = match raw? {
        Value::Null => return None,
        Value::Object(map) => map,
        other => {
            faults.add("body.execution_trace", "must be an object", Some(other));
            return None;
        }
    };
    let mut trace = ExecutionTrace::default();
    for (name, value) in map {
        let location = format!("body.execution_trace.{name}");
        let Some(member) = trace.member_mut(&name) else {
            faults.add(
                location,
                format!("is not a trace member; known: {}", ExecutionTrace::MEMBERS.join(", ")),
                None,
            );
            continue;
        };
        match value.as_i64() {
            _ if value.is_null() => {}
            Some(ms) if (0..=MAX_TRACE_MS).contains(&ms) => *member = Some(ms),
            _ => faults.add(
                location,
                format!("must be a whole number of milliseconds, 0 to {MAX_TRACE_MS}"),
                Some(value),
            ),
        }
    }
    Some(trace)
}

fn expected(faults: &mut Faults, value: Option<i64>) -> Option<i64> {
    in_range(faults, "expected_version", value, 1, i64::MAX)
}

fn reason(faults: &mut Faults, raw: Option<String>) -> Reason {
    Reason {
        reason: optional_text(faults, "reason", raw, MAX_REASON),
    }
}

async fn run_command(
    ledger: &Ledger,
    meta: runledger_events::Metadata,
    run_id: Uuid,
    expected_version: Option<i64>,
    action: Action,
) -> Result<Json<RunState>, ApiError> {
    let command = Command::Run(RunCommand {
        run_id,
        expected_version,
        action,
    });
    match ledger.execute(command, meta).await? {
        Outcome::Updated(run) => Ok(Json(run)),
        other => Err(ApiError::Internal(format!("command answered {other:?}"))),
    }
}

/// Every transition may carry `expected_version`: the command is refused
/// with 409 unless the run is still at that version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    external_execution_id: Option<String>,
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    replica_index: Option<i64>,
    /// Timings measured so far (queueing, dequeueing, connecting…); the
    /// end's report is merged over it.
    #[schema(value_type = Option<runledger_projections::schema::ExecutionTraceSchema>)]
    execution_trace: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
    #[schema(value_type = runledger_projections::schema::EndReasonSchema)]
    end_reason: String,
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    exit_code: Option<i64>,
    #[schema(max_length = 10000)]
    error: Option<String>,
    result: Option<Value>,
    /// Timings of the execution; merged over the start's, member by member.
    #[schema(value_type = Option<runledger_projections::schema::ExecutionTraceSchema>)]
    execution_trace: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
    #[schema(format = DateTime)]
    scheduled_at: String,
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    reason: Option<String>,
    /// Replaces the source run's payload on the new run.
    payload: Option<Value>,
    /// Retry the run's ended children that failed (end reason failed,
    /// timeout or crashed) instead of the run itself, in one transaction:
    /// the answer lists the new runs (`new_run_ids`). Not with `payload`.
    failed_only: Option<bool>,
}

/// Body of `POST /api/runs/{id}/restart` and `/dlq-replay`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    reason: Option<String>,
    /// Replaces the run's payload on the new run.
    payload: Option<Value>,
}

/// The answer of a `failed_only` retry.
#[derive(Serialize, ToSchema)]
pub struct RetryChildrenAccepted {
    /// The parent run.
    #[schema(value_type = String, format = Uuid)]
    run_id: Uuid,
    /// One new run per failed child, in the children's id order.
    #[schema(value_type = Vec<String>, format = Uuid)]
    new_run_ids: Vec<Uuid>,
    /// The bulk operation that made them (`GET /api/operations/{id}`).
    #[schema(value_type = Option<String>, format = Uuid)]
    operation_id: Option<Uuid>,
    #[schema(inline)]
    action: ChildrenAction,
    status: Accepted,
    message: String,
}

/// A `failed_only` retry is always a retry.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChildrenAction {
    Retry,
}

/// What made the new run.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryKind {
    /// `/retry` and `/replay`.
    Retry,
    /// `/dlq-replay`.
    DlqReplay,
    /// `/restart`.
    Restart,
}

/// The command was accepted: the new run exists.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accepted {
    Accepted,
}

/// The answer of `/retry` and `/replay`: one new run, or with `failed_only`
/// one per failed child.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum RetryAnswer {
    Run(RetryAccepted),
    Children(RetryChildrenAccepted),
}

#[derive(Serialize, ToSchema)]
pub struct RetryAccepted {
    /// The source run; it is preserved.
    #[schema(value_type = String, format = Uuid)]
    run_id: Uuid,
    /// The new run.
    #[schema(value_type = String, format = Uuid)]
    new_run_id: Uuid,
    action: RetryKind,
    status: Accepted,
    message: String,
}

macro_rules! transition {
    ($name:ident, $path:literal, $body:ty, $doc:literal, |$f:ident, $b:ident| $action:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "runs",
            params(("id" = String, Path, description = "Run id")),
            request_body = $body,
            responses(
                (status = 200, body = RunState),
                (status = 400, body = Problem, content_type = "application/problem+json"),
                (status = 404, body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "Illegal transition or stale expected_version", body = Problem, content_type = "application/problem+json"),
                (status = 422, body = Problem, content_type = "application/problem+json"),
            ))]
        async fn $name(
            State(ledger): State<Arc<Ledger>>,
            Path(id): Path<String>,
            RequestMeta(meta): RequestMeta,
            JsonBody($b): JsonBody<$body>,
        ) -> Result<Json<RunState>, ApiError> {
            let mut $f = Faults::default();
            let run_id = $f.path_id(&id);
            let expected_version = expected(&mut $f, $b.expected_version);
            let action = $action;
            $f.finish()?;
            run_command(&ledger, meta, run_id.expect("checked"), expected_version, action).await
        }
    };
}

transition!(
    start_run,
    "/api/runs/{id}/start",
    StartRequest,
    "Start a pending run.",
    |f, b| Action::Start(RunStarted {
        external_execution_id: optional_text(&mut f, "external_execution_id", b.external_execution_id, MAX_KEY),
        replica_index: in_range(&mut f, "replica_index", b.replica_index, 0, 1_000_000),
        execution_trace: execution_trace(&mut f, b.execution_trace),
    })
);

transition!(
    heartbeat_run,
    "/api/runs/{id}/heartbeat",
    HeartbeatRequest,
    "Report that a running or paused run is alive.",
    |f, b| {
        let _ = (&mut f, &b);
        Action::Heartbeat
    }
);

transition!(
    end_run,
    "/api/runs/{id}/end",
    EndRequest,
    "End a run. A failed, timed-out or crashed run with no attempts left is dead-lettered in the same append.",
    |f, b| {
        let reason = f.check("body.end_reason", &b.end_reason, |r| {
            r.parse::<EndReason>()
                .map_err(|()| format!("must be one of: {}", EndReason::allowed()))
        });
        let error = b.error.and_then(|e| {
            if e.chars().count() > 10_000 {
                f.add("body.error", "must be at most 10000 characters", None);
                None
            } else {
                Some(e)
            }
        });
        Action::End(RunEnded {
            end_reason: reason.unwrap_or(EndReason::Success),
            exit_code: b.exit_code,
            error,
            result: b.result,
            execution_trace: execution_trace(&mut f, b.execution_trace),
        })
    }
);

transition!(
    cancel_run,
    "/api/runs/{id}/cancel",
    ReasonRequest,
    "Cancel an unfinished run: it ends as `stopped`.",
    |f, b| { Action::Cancel(reason(&mut f, b.reason)) }
);

transition!(
    pause_run,
    "/api/runs/{id}/pause",
    ReasonRequest,
    "Pause a running run.",
    |f, b| { Action::Pause(reason(&mut f, b.reason)) }
);

transition!(
    resume_run,
    "/api/runs/{id}/resume",
    ReasonRequest,
    "Resume a paused run.",
    |f, b| { Action::Resume(reason(&mut f, b.reason)) }
);

transition!(
    reschedule_run,
    "/api/runs/{id}/reschedule",
    RescheduleRequest,
    "Move a pending run's scheduled time.",
    |f, b| {
        let at = f.check("body.scheduled_at", &b.scheduled_at, parse_time);
        let reason = reason(&mut f, b.reason).reason;
        Action::Reschedule(RunRescheduled {
            scheduled_at: at.unwrap_or_else(runledger_events::Timestamp::now),
            reason,
        })
    }
);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebugRequest {
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::whole::maybe_whole")]
    expected_version: Option<i64>,
    enabled: bool,
}

transition!(
    debug_run,
    "/api/runs/{id}/debug",
    DebugRequest,
    "Turn a run's debug mode on or off (`debug_mode` on the run; retries inherit it). Allowed in any status.",
    |f, b| {
        let _ = &mut f;
        Action::SetDebugMode(RunDebugModeSet { enabled: b.enabled })
    }
);

transition!(
    restore_run,
    "/api/runs/{id}/restore",
    ReasonRequest,
    "Restore a soft-deleted run.",
    |f, b| { Action::Restore(reason(&mut f, b.reason)) }
);

/// Soft-delete a run: it is hidden from lists (unless `include_deleted`) and
/// can be restored. Its events are kept.
#[utoipa::path(delete, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = RunState),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_run(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<ReasonRequest>,
) -> Result<Json<RunState>, ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    let expected_version = expected(&mut f, body.expected_version);
    let action = Action::Delete(reason(&mut f, body.reason));
    f.finish()?;
    run_command(&ledger, meta, run_id.expect("checked"), expected_version, action).await
}

/// Free a run's `idempotency_key` (it becomes null), so that a create with
/// that key makes a new run. Refused with 409 when the run has no key.
#[utoipa::path(delete, path = "/api/runs/{id}/idempotency-key", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, body = RunState),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has no idempotency key", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn reset_idempotency_key(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
) -> Result<Json<RunState>, ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(&id);
    f.finish()?;
    run_command(
        &ledger,
        meta,
        run_id.expect("checked"),
        None,
        Action::ResetIdempotencyKey,
    )
    .await
}

async fn retry(
    ledger: &Ledger,
    cap: usize,
    meta: runledger_events::Metadata,
    id: &str,
    body: RetryRequest,
    action: RetryAction,
) -> Result<Response, ApiError> {
    let mut f = Faults::default();
    let run_id = f.path_id(id);
    let reason = optional_text(&mut f, "reason", body.reason, MAX_REASON);
    let failed_only = body.failed_only.unwrap_or(false);
    if failed_only && body.payload.is_some() {
        f.add(
            "body.payload",
            "cannot be combined with failed_only (each child keeps its own payload)",
            None,
        );
    }
    f.finish()?;
    if failed_only {
        return retry_failed_children(ledger, cap, meta, run_id.expect("checked"), reason).await;
    }
    let command = Command::Run(RunCommand {
        run_id: run_id.expect("checked"),
        expected_version: None,
        action: Action::Retry {
            action,
            reason,
            payload: body.payload,
        },
    });
    match ledger.execute(command, meta).await? {
        Outcome::Retried { source, new_run, .. } => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/runs/{}", new_run.id))],
            Json(RetryAnswer::Run(RetryAccepted {
                run_id: source.id,
                new_run_id: new_run.id,
                action: match action {
                    RetryAction::DlqReplay => RetryKind::DlqReplay,
                    RetryAction::Restart => RetryKind::Restart,
                    RetryAction::Retry | RetryAction::Replay => RetryKind::Retry,
                    // No route retries by rerunning: rerun is a bulk call.
                    RetryAction::Rerun => return Err(ApiError::Internal("a rerun through a retry route".into())),
                },
                status: Accepted::Accepted,
                message: format!(
                    "run {} created as attempt {} of task {}; run {} is preserved",
                    new_run.id, new_run.retry_attempt, new_run.task_name, source.id
                ),
            })),
        )
            .into_response()),
        other => Err(ApiError::Internal(format!("retry answered {other:?}"))),
    }
}

/// Retry an ended run: a new run with the same configuration (and the given
/// payload, if any), `retry_attempt + 1`, in the same lineage. The source run
/// is preserved and gains a `run.retried` event in the same transaction.
#[utoipa::path(post, path = "/api/runs/{id}/retry", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = RetryRequest,
    responses(
        (status = 202, description = "The new run, or with `failed_only` the new runs", body = RetryAnswer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has not ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn retry_run(
    State(ledger): State<Arc<Ledger>>,
    Extension(BulkCap(cap)): Extension<BulkCap>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<RetryRequest>,
) -> Result<Response, ApiError> {
    retry(&ledger, cap, meta, &id, body, RetryAction::Retry).await
}

/// `failed_only`: retries the ended children of `parent` that failed, as one
/// bulk operation (so in one transaction, under one operation id).
async fn retry_failed_children(
    ledger: &Ledger,
    cap: usize,
    meta: runledger_events::Metadata,
    parent: Uuid,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    use crate::ledger::bulk::{BulkCall, BulkError, BulkKind, Selector};
    use runledger_events::EndReason;
    use runledger_projections::{RunFilter, StatusValue};
    if ledger.get_run(parent).await?.is_none() {
        return Err(ApiError::run_not_found(parent));
    }
    let filter = RunFilter {
        parent_run_id: Some(parent),
        statuses: [EndReason::Failed, EndReason::Timeout, EndReason::Crashed]
            .into_iter()
            .map(StatusValue::EndReason)
            .collect(),
        include_deleted: false,
        ..RunFilter::default()
    };
    let call = BulkCall {
        kind: BulkKind::Retry,
        selection: Selector::Match {
            filter,
            except: Vec::new(),
        },
        as_of: None,
        dry_run: false,
        reason,
        cap,
        selector: serde_json::json!({"parent_run_id": parent, "failed_only": true}),
    };
    let report = ledger.bulk(call, meta).await.map_err(|e| match e {
        BulkError::TooMany { selected, cap } => ApiError::invalid_one(
            "body.failed_only",
            format!("the run has {selected} failed children, more than the {cap} one call may retry"),
            None,
        ),
        BulkError::Ledger(e) => e.into(),
    })?;
    let new_run_ids: Vec<Uuid> = report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Ok(Some(Outcome::Retried { new_run, .. })) => Some(new_run.id),
            _ => None,
        })
        .collect();
    let message = format!(
        "{} failed children of run {parent} retried; the failed runs are preserved",
        new_run_ids.len()
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryAnswer::Children(RetryChildrenAccepted {
            run_id: parent,
            new_run_ids,
            operation_id: report.operation_id,
            action: ChildrenAction::Retry,
            status: Accepted::Accepted,
            message,
        })),
    )
        .into_response())
}

/// Cancel a run that has not ended (it ends as `stopped`) and retry it at
/// once, optionally with a new payload; an ended run is simply retried.
#[utoipa::path(post, path = "/api/runs/{id}/restart", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = RestartRequest,
    responses(
        (status = 202, body = RetryAccepted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn restart_run(
    State(ledger): State<Arc<Ledger>>,
    Extension(BulkCap(cap)): Extension<BulkCap>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<RestartRequest>,
) -> Result<Response, ApiError> {
    let body = RetryRequest {
        reason: body.reason,
        payload: body.payload,
        failed_only: None,
    };
    retry(&ledger, cap, meta, &id, body, RetryAction::Restart).await
}

/// Replay a dead-lettered run: a retry that also clears the run's
/// dead-letter flag (409 if the run is not dead-lettered).
#[utoipa::path(post, path = "/api/runs/{id}/dlq-replay", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = RestartRequest,
    responses(
        (status = 202, body = RetryAccepted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not dead-lettered", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn dlq_replay_run(
    State(ledger): State<Arc<Ledger>>,
    Extension(BulkCap(cap)): Extension<BulkCap>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<RestartRequest>,
) -> Result<Response, ApiError> {
    // A dead-lettered run is replayed itself: there is no `failed_only`.
    let body = RetryRequest {
        reason: body.reason,
        payload: body.payload,
        failed_only: None,
    };
    retry(&ledger, cap, meta, &id, body, RetryAction::DlqReplay).await
}

/// Alias of `/retry`.
#[utoipa::path(post, path = "/api/runs/{id}/replay", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = RetryRequest,
    responses(
        (status = 202, description = "The new run, or with `failed_only` the new runs", body = RetryAnswer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn replay_run(
    State(ledger): State<Arc<Ledger>>,
    Extension(BulkCap(cap)): Extension<BulkCap>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<RetryRequest>,
) -> Result<Response, ApiError> {
    retry(&ledger, cap, meta, &id, body, RetryAction::Replay).await
}

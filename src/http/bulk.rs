//! Bulk operations by selector: `POST /api/runs/bulk/{delete,restore,
//! rerun,cancel,retry,dlq-replay}` and `GET /api/operations/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use runledger_projections::RunState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::extract::{parse_uuid, Faults, JsonBody, QueryParams, RequestMeta};
use super::runs::{parse_as_of, resolve, run_query};
use crate::commands::Outcome;
use crate::ledger::bulk::{BulkCall, BulkError, BulkKind, BulkReport, OperationRecord, Selector};
use crate::ledger::Ledger;

/// The most runs one bulk call may select, unless configured otherwise.
pub const DEFAULT_BULK_CAP: usize = 100_000;

/// The cap, shared with the handlers.
#[derive(Clone, Copy, Debug)]
pub struct BulkCap(pub usize);

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(bulk_delete))
        .routes(routes!(bulk_restore))
        .routes(routes!(bulk_cancel))
        .routes(routes!(bulk_retry))
        .routes(routes!(bulk_dlq_replay))
        .routes(routes!(bulk_rerun))
        .routes(routes!(get_operation))
}

/// A selector: `ids`, or `match_all: true` with an optional `filter` and
/// `except_ids` — never both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// These runs (duplicates are ignored; unknown ids are reported).
    #[schema(value_type = Option<Vec<uuid::Uuid>>, min_items = 1)]
    ids: Option<Vec<String>>,
    /// Every run the filter matches.
    match_all: Option<bool>,
    /// The list filters of `GET /api/runs`: `status`, `task_name`, `project`,
    /// `triggered_by`, `created_after`, `created_before`, `deadline_before`, `exit_code_min`,
    /// `exit_code_max`, `retries_only`, `search`, `tag` (`key:value`, or a
    /// list of them), `parent_run_id`, `operation_id`, `payload` (a JSON
    /// object, or its text), `include_deleted`. Lists may be given as arrays
    /// or comma-separated strings.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Map<String, Value>>,
    /// Runs to leave out of a `match_all` selection (an empty list, which
    /// leaves out nothing, may stand beside `ids`).
    #[schema(value_type = Option<Vec<uuid::Uuid>>)]
    except_ids: Option<Vec<String>>,
    /// Count what the call would change and write nothing; the answer's
    /// `as_of` pins a later call to the same selection.
    dry_run: Option<bool>,
    /// Act on the runs that matched at this log position (or RFC 3339 time),
    /// even if runs changed since (`match_all` only).
    #[schema(value_type = Option<super::openapi::BodyAsOfSchema>)]
    as_of: Option<Value>,
    /// Recorded on every event of the call.
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    reason: Option<String>,
}

const MAX_REASON: usize = 1000;

/// The selector's filter as list parameters, so it is parsed by the same
/// rules as `GET /api/runs` (faults at `body.filter.<name>`).
fn filter_pairs(filter: &serde_json::Map<String, Value>, f: &mut Faults) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, value) in filter {
        let location = format!("body.filter.{name}");
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match value {
            Value::Null => {}
            // A containment filter is JSON itself: given as an object here,
            // or as its text as in a query string.
            Value::Object(_) if name == "payload" => pairs.push((name.clone(), value.to_string())),
            Value::Array(items) => {
                let Some(items) = items.iter().map(scalar).collect::<Option<Vec<_>>>() else {
                    f.add(
                        location,
                        "a list may hold only strings, numbers and booleans",
                        Some(value.clone()),
                    );
                    continue;
                };
                match name.as_str() {
                    "tag" => pairs.extend(items.into_iter().map(|i| (name.clone(), i))),
                    "status" | "triggered_by" => pairs.push((name.clone(), items.join(","))),
                    _ => f.add(location, "takes one value, not a list", Some(value.clone())),
                }
            }
            other => match scalar(other) {
                Some(text) => pairs.push((name.clone(), text)),
                None => f.add(
                    location,
                    "must be a string, a number, a boolean or a list",
                    Some(value.clone()),
                ),
            },
        }
    }
    pairs
}

fn ids_at(f: &mut Faults, field: &str, ids: &[String]) -> Vec<Uuid> {
    let mut out = Vec::with_capacity(ids.len());
    for (i, raw) in ids.iter().enumerate() {
        if let Some(id) = f.check(&format!("body.{field}[{i}]"), raw, parse_uuid) {
            out.push(id);
        }
    }
    out
}

impl Selector {
    /// The selector of a bulk request: `ids`, or `match_all: true` with an
    /// optional `filter` (the list parameters of `GET /api/runs`, parsed by
    /// the same rules) and `except_ids`. Faults are recorded in `f`.
    pub fn parse(body: &BulkRequest, cap: usize, f: &mut Faults) -> Option<Self> {
        match (&body.ids, body.match_all) {
            (Some(_), Some(true)) => {
                f.add("body.ids", "give either ids or match_all, never both", None);
                None
            }
            (Some(ids), _) => {
                if ids.is_empty() {
                    f.add("body.ids", "must name at least one run", None);
                }
                if ids.len() > cap {
                    f.add(
                        "body.ids",
                        format!("{} ids; at most {cap} in one call", ids.len()),
                        None,
                    );
                }
                for (field, given) in [
                    ("filter", body.filter.is_some()),
                    // An empty list excepts nothing: it is as if absent.
                    ("except_ids", body.except_ids.as_ref().is_some_and(|e| !e.is_empty())),
                ] {
                    if given {
                        f.add(format!("body.{field}"), "applies to match_all selectors only", None);
                    }
                }
                if body.as_of.is_some() {
                    f.add(
                        "body.as_of",
                        "applies to match_all selectors only; ids name their runs",
                        None,
                    );
                }
                Some(Self::Ids(ids_at(f, "ids", ids)))
            }
            (None, Some(true)) => {
                let mut pairs = body.filter.as_ref().map(|m| filter_pairs(m, f)).unwrap_or_default();
                pairs.retain(|(name, value)| {
                    let paging = ["limit", "offset", "sort_field", "sort_direction"].contains(&name.as_str());
                    if paging {
                        f.add(
                            format!("body.filter.{name}"),
                            "is not a filter: a bulk call acts on every selected run",
                            Some(Value::String(value.clone())),
                        );
                    }
                    !paging
                });
                let mut params = QueryParams::from_pairs("body.filter", pairs);
                let query = run_query(&mut params);
                if let Err(ApiError::Invalid { errors, .. }) = params.finish() {
                    for e in errors {
                        f.add(e.location, e.message, e.value);
                    }
                }
                let except = ids_at(f, "except_ids", body.except_ids.as_deref().unwrap_or_default());
                Some(Self::Match {
                    filter: query.filter,
                    except,
                })
            }
            (None, Some(false)) => {
                f.add("body.match_all", "must be true to select by filter (or give ids)", None);
                None
            }
            (None, None) => {
                f.add("body", "give a selector: ids, or match_all: true with a filter", None);
                None
            }
        }
    }
}

async fn call(
    ledger: &Ledger,
    cap: usize,
    kind: BulkKind,
    meta: runledger_events::Metadata,
    body: BulkRequest,
) -> Result<BulkReport, ApiError> {
    let mut f = Faults::default();
    let selector = serde_json::json!({
        "ids": body.ids, "match_all": body.match_all, "filter": body.filter, "except_ids": body.except_ids,
    });
    let selection = Selector::parse(&body, cap, &mut f);
    let as_of = body.as_of.as_ref().and_then(|v| {
        let raw = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        f.check("body.as_of", &raw, parse_as_of)
    });
    let reason = match body.reason {
        Some(r) => f.check("body.reason", &r, |t| crate::domain::short_text(t, MAX_REASON)),
        None => None,
    };
    f.finish()?;
    let as_of = match as_of {
        Some(at) => Some(resolve(ledger, at).await?),
        None => None,
    };
    let call = BulkCall {
        kind,
        selection: selection.expect("checked"),
        as_of,
        dry_run: body.dry_run.unwrap_or(false),
        reason,
        cap,
        selector,
    };
    ledger.bulk(call, meta).await.map_err(|e| match e {
        BulkError::TooMany { selected, cap } => ApiError::Invalid {
            detail: format!("the selection has {selected} runs, more than the {cap} one call may change; narrow it"),
            errors: vec![super::FieldError {
                location: "body".into(),
                message: format!("selects {selected} runs; at most {cap}"),
                value: Some(selected.into()),
            }],
        },
        BulkError::Ledger(e) => e.into(),
    })
}

/// The answer of a dry run, and of delete and restore.
#[derive(Serialize, ToSchema)]
pub struct BulkCount {
    /// Runs the call changed (a dry run: would change). Restoring a run
    /// that is not deleted changes nothing.
    pub affected: usize,
    /// Known runs the selector selected.
    pub selected: usize,
    /// The log position the selection was taken at: pass it as `as_of` to
    /// act on exactly these runs later.
    pub as_of: i64,
    /// Given ids that name no run.
    #[schema(value_type = Vec<String>)]
    pub unknown_ids: Vec<Uuid>,
    /// The operation (absent for a dry run); see `GET /api/operations/{id}`.
    #[schema(value_type = Option<String>)]
    pub operation_id: Option<Uuid>,
    pub dry_run: bool,
}

impl BulkCount {
    fn of(report: &BulkReport) -> Self {
        Self {
            affected: report.affected,
            selected: report.selected,
            as_of: report.as_of,
            unknown_ids: report.unknown_ids.clone(),
            operation_id: report.operation_id,
            dry_run: report.operation_id.is_none(),
        }
    }
}

/// A run the call could not act on, and why.
#[derive(Serialize, ToSchema)]
pub struct BulkFailure {
    #[schema(value_type = String)]
    pub id: Uuid,
    pub error: String,
}

fn failures(report: &BulkReport) -> Vec<BulkFailure> {
    report
        .results
        .iter()
        .filter_map(|r| {
            r.outcome.as_ref().err().map(|e| BulkFailure {
                id: r.run_id,
                error: e.to_string(),
            })
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct BulkCancel {
    /// One per selected run.
    pub results: Vec<CancelResult>,
    pub total: usize,
    pub canceled: usize,
    pub failed: usize,
    #[serde(flatten)]
    pub count: BulkCount,
}

#[derive(Serialize, ToSchema)]
pub struct CancelResult {
    #[schema(value_type = String)]
    pub id: Uuid,
    /// `canceled`, or `failed` (see `error`).
    pub status: &'static str,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkRetry {
    /// The new runs, one per retried run.
    pub runs: Vec<RunState>,
    /// Selected runs that could not be retried (not ended; for dlq-replay,
    /// not dead-lettered), and why.
    pub failed: Vec<BulkFailure>,
    #[serde(flatten)]
    pub count: BulkCount,
}

#[derive(Serialize, ToSchema)]
pub struct BulkRerun {
    /// One new run per task behind the selection, by task name.
    pub runs: BTreeMap<String, RunState>,
    #[serde(flatten)]
    pub count: BulkCount,
}

type Cap = axum::extract::Extension<BulkCap>;

/// States in the served document that every bulk call answers a dry run
/// with its count (`BulkCount`) instead of its full answer.
pub fn document(openapi: &mut Value) {
    let Some(paths) = openapi.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/api/runs/bulk/") {
            continue;
        }
        let Some(schema) = item.pointer_mut("/post/responses/200/content/application~1json/schema") else {
            continue;
        };
        let count = serde_json::json!({ "$ref": "#/components/schemas/BulkCount" });
        if *schema != count {
            let full = schema.take();
            *schema = serde_json::json!({ "anyOf": [full, count] });
        }
    }
}

macro_rules! bulk_route {
    ($name:ident, $path:literal, $kind:expr, $answer:ty, $doc:literal, |$report:ident| $shape:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "bulk", request_body = BulkRequest,
            responses(
                (status = 200, body = $answer, description = "What the call did; a dry run answers its count (`BulkCount`) instead"),
                (status = 400, body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "An invalid selector, or one selecting more runs than the cap", body = Problem, content_type = "application/problem+json"),
            ))]
        async fn $name(
            State(ledger): State<Arc<Ledger>>,
            axum::extract::Extension(BulkCap(cap)): Cap,
            RequestMeta(meta): RequestMeta,
            JsonBody(body): JsonBody<BulkRequest>,
        ) -> Result<Json<Value>, ApiError> {
            let $report = call(&ledger, cap, $kind, meta, body).await?;
            let answer = if $report.operation_id.is_none() {
                serde_json::to_value(BulkCount::of(&$report))
            } else {
                serde_json::to_value($shape)
            };
            answer.map(Json).map_err(|e| ApiError::Internal(e.to_string()))
        }
    };
}

bulk_route!(
    bulk_delete,
    "/api/runs/bulk/delete",
    BulkKind::Delete,
    BulkCount,
    "Soft-delete the selected runs; `affected` counts the runs that were not deleted yet.",
    |report| BulkCount::of(&report)
);

bulk_route!(
    bulk_restore,
    "/api/runs/bulk/restore",
    BulkKind::Restore,
    BulkCount,
    "Restore the selected soft-deleted runs; `affected` counts the runs that were deleted.",
    |report| BulkCount::of(&report)
);

bulk_route!(
    bulk_cancel,
    "/api/runs/bulk/cancel",
    BulkKind::Cancel,
    BulkCancel,
    "Cancel the selected unfinished runs (each ends as `stopped`); ended runs are reported as failed.",
    |report| {
        let results: Vec<CancelResult> = report
            .results
            .iter()
            .map(|r| CancelResult {
                id: r.run_id,
                status: if r.outcome.is_ok() { "canceled" } else { "failed" },
                error: r.outcome.as_ref().err().map(|e| e.to_string()),
            })
            .collect();
        BulkCancel {
            total: results.len(),
            canceled: report.affected,
            failed: results.len() - report.affected,
            results,
            count: BulkCount::of(&report),
        }
    }
);

fn new_runs(report: &BulkReport) -> Vec<RunState> {
    report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Ok(Some(Outcome::Retried { new_run, .. })) => Some(new_run.clone()),
            _ => None,
        })
        .collect()
}

bulk_route!(
    bulk_retry,
    "/api/runs/bulk/retry",
    BulkKind::Retry,
    BulkRetry,
    "Retry each selected ended run: a new run per source, in its lineage.",
    |report| BulkRetry {
        runs: new_runs(&report),
        failed: failures(&report),
        count: BulkCount::of(&report),
    }
);

bulk_route!(
    bulk_dlq_replay,
    "/api/runs/bulk/dlq-replay",
    BulkKind::DlqReplay,
    BulkRetry,
    "Replay each selected dead-lettered run: a retry that clears the dead-letter flag.",
    |report| BulkRetry {
        runs: new_runs(&report),
        failed: failures(&report),
        count: BulkCount::of(&report),
    }
);

bulk_route!(
    bulk_rerun,
    "/api/runs/bulk/rerun",
    BulkKind::Rerun,
    BulkRerun,
    "Run each task behind the selection once more: one new run per task (`triggered_by: rerun`), configured like the task's most recent selected run.",
    |report| BulkRerun {
        runs: new_runs(&report)
            .into_iter()
            .map(|run| (run.task_name.clone(), run))
            .collect(),
        count: BulkCount::of(&report),
    }
);

/// Who ran a bulk operation, when, on what selector, and (a page of) the
/// runs it changed, with the run each one made.
#[utoipa::path(get, path = "/api/operations/{id}", tag = "bulk",
    params(("id" = String, Path, description = "Operation id"),
        ("limit" = Option<i64>, Query, description = "Runs per page (default 1000)", minimum = 1, maximum = 10000),
        ("offset" = Option<i64>, Query, description = "Runs to skip", minimum = 0)),
    responses(
        (status = 200, body = OperationRecord),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_operation(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<OperationRecord>, ApiError> {
    let id_ok = params.faults.check("path.id", &id, |raw| {
        Uuid::parse_str(raw).map_err(|_| "must be an operation id (a UUID)")
    });
    let limit = params.int_in("limit", 1, 10_000).unwrap_or(1000);
    let offset = params.int_in("offset", 0, i64::MAX).unwrap_or(0);
    params.finish()?;
    let id = id_ok.expect("checked");
    ledger
        .operation(id, limit, offset)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound {
            code: "operation_not_found",
            detail: format!("operation {id} does not exist"),
            resource: "operation",
            id: Some(id.to_string()),
        })
}

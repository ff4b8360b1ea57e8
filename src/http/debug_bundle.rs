//! A run's debug bundle: everything about one run in one document, to take
//! away and inspect offline (`runledger import` loads it into an empty ledger).

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::Json;
use runledger_events::{EventEnvelope, Timestamp};
use runledger_projections::details::{
    self, Checkpoint, OutputRecord, Page, RunLog, ToolCall, UsageRecord, UsageScope, UsageTotals,
};
use runledger_projections::{RunFilter, RunQuery, RunState, SortDirection, SortField, SqlQuery};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::error::{ApiError, FieldError, Problem};
use super::extract::QueryParams;
use crate::ledger::bundle::{Verification, BUNDLE_FORMAT, BUNDLE_VERSION};
use crate::ledger::{DetailReads, Ledger};

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new().routes(routes!(debug_bundle))
}

/// The default for `BundleCap`.
pub const DEFAULT_BUNDLE_MAX_EVENTS: usize = 100_000;

/// The most events (and children) one bundle may hold; a larger run is
/// refused with 422 rather than truncated, since a partial bundle could
/// neither be verified nor imported as the run.
#[derive(Clone, Copy, Debug)]
pub struct BundleCap(pub usize);

/// Records per detail read while collecting a bundle.
const DETAIL_PAGE: i64 = 1_000;

#[derive(Serialize, ToSchema)]
pub struct BundleUsage {
    pub records: Vec<UsageRecord>,
    pub totals: UsageTotals,
    /// The same, per provider and model.
    pub by_model: Vec<UsageTotals>,
}

#[derive(Serialize, ToSchema)]
pub struct DebugBundle {
    /// Always `runledger.debug-bundle`.
    pub format: &'static str,
    /// The document's version: 1.
    pub version: u32,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: Timestamp,
    /// The run's current state.
    pub run: RunState,
    /// Every event of the run, oldest first, in the **stored** form (not
    /// upcast), with `position`, `prev_hash` and `hash`, exactly as the hash
    /// chain covers them: they can be verified offline and imported.
    #[schema(value_type = Vec<super::openapi::EnvelopeSchema>)]
    pub events: Vec<EventEnvelope>,
    pub checkpoints: Vec<Checkpoint>,
    pub logs: Vec<RunLog>,
    pub usage: BundleUsage,
    pub tool_calls: Vec<ToolCall>,
    pub outputs: Vec<OutputRecord>,
    /// The retry/continuation chain the run is in, root first.
    pub lineage: Vec<RunState>,
    /// The runs whose `parent_run_id` is this run, soft-deleted ones too,
    /// oldest first.
    pub children: Vec<RunState>,
    /// Whether the events verify against the hash chain: each one's stored
    /// fields and `prev_hash` hash to its `hash`, its stream versions run
    /// 1, 2, 3…, and it is linked to the events next to it in the log. (A
    /// full check of the whole log is `runledger verify`.)
    pub verification: Verification,
}

/// Every record of a detail query, page by page; `None` when the run is gone.
async fn all<T: DeserializeOwned>(
    ledger: &Ledger,
    run_id: Uuid,
    query: impl Fn(Page) -> SqlQuery,
    cursor: impl Fn(&T) -> i64,
) -> Result<Vec<T>, ApiError> {
    let mut out: Vec<T> = Vec::new();
    loop {
        let page = Page {
            after: out.last().map_or(0, &cursor),
            limit: DETAIL_PAGE,
        };
        let records: Vec<T> = ledger
            .run_records(run_id, query(page))
            .await?
            .ok_or_else(|| ApiError::run_not_found(run_id))?;
        let full = records.len() as i64 == DETAIL_PAGE;
        out.extend(records);
        if !full {
            return Ok(out);
        }
    }
}

fn too_large(what: &str, count: usize, cap: usize) -> ApiError {
    ApiError::Invalid {
        detail: format!("the run has {count} {what}, more than the {cap} a debug bundle may hold"),
        errors: vec![FieldError {
            location: "path.id".into(),
            message: format!("the run has {count} {what}; a bundle holds at most {cap}"),
            value: Some(count.into()),
        }],
    }
}

async fn usage(ledger: &Ledger, run_id: Uuid) -> Result<BundleUsage, ApiError> {
    let records: Vec<UsageRecord> = all(
        ledger,
        run_id,
        |p| details::usage_sql(run_id, p),
        |u: &UsageRecord| u.position,
    )
    .await?;
    let scope = UsageScope::Run(run_id);
    let reads = DetailReads {
        run_id: Some(run_id),
        texts: None,
        totals: vec![
            details::usage_totals_sql(&scope, false),
            details::usage_totals_sql(&scope, true),
        ],
    };
    let mut answers = ledger
        .read_details(reads)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?
        .totals;
    let by_model = answers.pop().unwrap_or_default();
    let totals = answers.pop().and_then(|mut t| t.pop()).unwrap_or_default();
    Ok(BundleUsage {
        records,
        totals,
        by_model,
    })
}

async fn children(ledger: &Ledger, run_id: Uuid, cap: usize) -> Result<Vec<RunState>, ApiError> {
    let mut out = Vec::new();
    loop {
        let query = RunQuery {
            filter: RunFilter {
                parent_run_id: Some(run_id),
                include_deleted: true,
                ..RunFilter::default()
            },
            sort_field: SortField::CreatedAt,
            sort_direction: SortDirection::Asc,
            limit: DETAIL_PAGE,
            offset: out.len() as i64,
            as_of: None,
            cursor: None,
        };
        let (page, total) = ledger.list_runs(query).await?;
        if total as usize > cap {
            return Err(too_large("children", total as usize, cap));
        }
        let done = (page.len() as i64) < DETAIL_PAGE;
        out.extend(page);
        if done || out.len() as i64 >= total {
            return Ok(out);
        }
    }
}

/// Everything about one run in one JSON document: its state, every event in
/// the stored form, its details and relations, and whether its events verify
/// against the hash chain. `runledger import BUNDLE` loads it into an empty
/// ledger. A run with more events (or children) than the server's
/// `--bundle-max-events` (default 100,000) is refused with 422, never
/// truncated.
#[utoipa::path(get, path = "/api/runs/{id}/debug-bundle", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, body = DebugBundle),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad id, or a run too large for one bundle", body = Problem, content_type = "application/problem+json"),
    ))]
async fn debug_bundle(
    State(ledger): State<Arc<Ledger>>,
    Extension(BundleCap(cap)): Extension<BundleCap>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<DebugBundle>, ApiError> {
    let run_id = params.faults.path_id(&id);
    params.finish()?;
    collect(&ledger, run_id.expect("checked"), cap).await.map(Json)
}

/// Everything about one run (the console's run page shows it too).
pub(crate) async fn collect(ledger: &Ledger, run_id: uuid::Uuid, cap: usize) -> Result<DebugBundle, ApiError> {
    let generated_at = Timestamp::now();
    let run = ledger
        .get_run(run_id)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    if run.version as usize > cap {
        return Err(too_large("events", run.version as usize, cap));
    }
    let events = ledger
        .run_events_stored(run_id)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    let verification = ledger.verify_run(run_id, &events).await?;
    let checkpoints = all(
        ledger,
        run_id,
        |p| details::checkpoints_sql(run_id, p),
        |c: &Checkpoint| c.sequence,
    )
    .await?;
    let logs = all(
        ledger,
        run_id,
        |p| details::logs_sql(run_id, vec![], vec![], p),
        |l: &RunLog| l.position,
    )
    .await?;
    let usage = usage(ledger, run_id).await?;
    let tool_calls = all(
        ledger,
        run_id,
        |p| details::tool_calls_sql(run_id, vec![], vec![], p),
        |t: &ToolCall| t.position,
    )
    .await?;
    let outputs = all(
        ledger,
        run_id,
        |p| details::outputs_sql(run_id, vec![], p),
        |o: &OutputRecord| o.position,
    )
    .await?;
    let lineage = ledger.lineage(run_id).await?;
    let children = children(ledger, run_id, cap).await?;
    Ok(DebugBundle {
        format: BUNDLE_FORMAT,
        version: BUNDLE_VERSION,
        generated_at,
        run,
        events,
        checkpoints,
        logs,
        usage,
        tool_calls,
        outputs,
        lineage,
        children,
        verification,
    })
}

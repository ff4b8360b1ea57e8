//! A run's relations: its children, its retry/continuation lineage and the
//! state of the runs it depends on.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use runledger_projections::{RunState, RunStatus};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::extract::{run_id, QueryParams};
use super::runs::{run_query, ListRunsParams, RunList};
use crate::ledger::Ledger;

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(list_children))
        .routes(routes!(run_lineage))
        .routes(routes!(dependency_status))
}

async fn existing(ledger: &Ledger, id: Uuid) -> Result<RunState, ApiError> {
    ledger.get_run(id).await?.ok_or_else(|| ApiError::run_not_found(id))
}

/// The runs whose `parent_run_id` is this run; the filters, sorts and paging
/// of `GET /api/runs` (but not `as_of`).
#[utoipa::path(get, path = "/api/runs/{id}/children", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ListRunsParams),
    responses(
        (status = 200, body = RunList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_children(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<RunList>, ApiError> {
    let parent = params.faults.path_id(&id);
    let mut query = run_query(&mut params);
    if let (Some(parent), Some(filter)) = (parent, query.filter.parent_run_id) {
        if filter != parent {
            params.faults.add(
                "query.parent_run_id",
                "conflicts with the run id in the path",
                Some(filter.to_string().into()),
            );
        }
    }
    params.finish()?;
    let parent = parent.expect("checked");
    existing(&ledger, parent).await?;
    query.filter.parent_run_id = Some(parent);
    let (runs, total) = ledger.list_runs(query.clone()).await?;
    Ok(Json(RunList::page(&query, runs, total)))
}

#[derive(Serialize, ToSchema)]
pub struct Lineage {
    /// The run that retries and continues nothing: where the chain starts.
    #[schema(value_type = String)]
    pub root_run_id: Uuid,
    /// Every run of the chain, root first, by `lineage_depth` (the number of
    /// retries and continuations from the root), then creation. At most 1000.
    pub runs: Vec<RunState>,
}

/// The retry/continuation chain the run is in: the run it retries or
/// continues, that one's, and so on back to the root, and every run that
/// retries or continues any of them.
#[utoipa::path(get, path = "/api/runs/{id}/lineage", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, body = Lineage),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn run_lineage(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<Lineage>, ApiError> {
    let id = run_id(&id)?;
    params.finish()?;
    let runs = ledger.lineage(id).await?;
    let root = runs.first().ok_or_else(|| ApiError::run_not_found(id))?;
    Ok(Json(Lineage {
        root_run_id: root.id,
        runs,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Dependency {
    #[schema(value_type = String)]
    pub run_id: Uuid,
    pub task_name: String,
    pub status: RunStatus,
    #[schema(value_type = Option<String>)]
    pub end_reason: Option<runledger_events::EndReason>,
    /// Ended with `success`.
    pub succeeded: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DependencyStatus {
    #[schema(value_type = String)]
    pub run_id: Uuid,
    /// The runs in `depends_on`, in its order.
    pub dependencies: Vec<Dependency>,
    /// Every dependency ended with success (true when there are none).
    pub dependencies_satisfied: bool,
}

/// The runs this run depends on, their status, and whether all succeeded.
#[utoipa::path(get, path = "/api/runs/{id}/dependency-status", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, body = DependencyStatus),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn dependency_status(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<DependencyStatus>, ApiError> {
    let id = run_id(&id)?;
    params.finish()?;
    let run = existing(&ledger, id).await?;
    let mut dependencies = Vec::with_capacity(run.depends_on.len());
    for dep in &run.depends_on {
        // Runs are never removed (only soft-deleted), so a dependency that
        // existed at creation still does.
        let dep = existing(&ledger, *dep)
            .await
            .map_err(|_| ApiError::Internal(format!("run {id} depends on run {dep}, which is missing")))?;
        dependencies.push(Dependency {
            run_id: dep.id,
            task_name: dep.task_name,
            status: dep.status,
            end_reason: dep.end_reason,
            succeeded: dep.end_reason == Some(runledger_events::EndReason::Success),
        });
    }
    Ok(Json(DependencyStatus {
        run_id: id,
        dependencies_satisfied: dependencies.iter().all(|d| d.succeeded),
        dependencies,
    }))
}

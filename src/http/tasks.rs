//! `GET /api/tasks`: one row per task.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use runledger_projections::TaskSummary;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, Problem};
use super::extract::QueryParams;
use crate::ledger::Ledger;

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new().routes(routes!(list_tasks))
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Number of tasks with at least one run that is not deleted.
    pub total: i64,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListTasksParams {
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// Every task, by name: run counts by status, the last run, the last success
/// and the last failure. Soft-deleted runs are not counted.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListTasksParams),
    responses(
        (status = 200, body = TaskList),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_tasks(State(ledger): State<Arc<Ledger>>, mut params: QueryParams) -> Result<Json<TaskList>, ApiError> {
    let limit = params.int_in("limit", 1, 1000).unwrap_or(100);
    let offset = params.int_in("offset", 0, i64::MAX).unwrap_or(0);
    params.finish()?;
    let (tasks, total) = ledger.tasks(limit, offset).await?;
    Ok(Json(TaskList { tasks, total }))
}

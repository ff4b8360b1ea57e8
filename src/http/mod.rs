//! The HTTP API: one router per resource, merged here.

mod error;
mod extract;
mod run_commands;
mod runs;
mod system;
mod tasks;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, FieldError, Problem};

use crate::ledger::Ledger;

#[derive(OpenApi)]
#[openapi(
    info(title = "runledger", description = "An event-sourced ledger for job runs."),
    tags(
        (name = "runs", description = "Create, report on, operate and read runs"),
        (name = "tasks", description = "Runs grouped by task"),
        (name = "operations", description = "Health and readiness"),
    ),
    components(schemas(Problem, FieldError))
)]
struct ApiDoc;

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The OpenAPI document and the router it describes.
pub fn api(ledger: Arc<Ledger>, config: &HttpConfig) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(runs::router())
        .merge(run_commands::router())
        .merge(tasks::router())
        .merge(system::router())
        .split_for_parts();
    let router = router
        .with_state(ledger)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi.clone()))
        .layer(middleware::from_fn(error::problems))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
            tracing::info_span!("request", method = %req.method(), route = route.as_deref().unwrap_or("unmatched"))
        }));
    (router, openapi)
}

/// Serves the API on an already bound listener until `shutdown` completes,
/// then finishes in-flight requests.
pub async fn serve(
    ledger: Arc<Ledger>,
    config: HttpConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = api(ledger, &config);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

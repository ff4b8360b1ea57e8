//! Prometheus metrics: requests by route template and status, request
//! latency, appends, group-commit batch sizes and commit latency (recorded
//! by the writers), SSE clients, and how far the node's stream tail is
//! behind the log.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Extension, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::events::Streams;
use crate::ledger::Ledger;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (one per process: every
/// server in the process shares it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("runledger_commit_batch_size".into()), &sizes))
            .expect("static buckets are valid")
            .install_recorder()
            .expect("runledger installs the only metrics recorder")
    })
}

/// A method label from a closed set: any client can invent methods, and
/// each would otherwise become a series of its own.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request under its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new().routes(routes!(prometheus))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn prometheus(State(ledger): State<Arc<Ledger>>, Extension(streams): Extension<Streams>) -> impl IntoResponse {
    let head = *ledger.head().borrow();
    let tail = *streams.tail.position().borrow();
    metrics::gauge!("runledger_log_head_position").set(head as f64);
    metrics::gauge!("runledger_stream_tail_lag_events").set((head - tail).max(0) as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle().render())
}

//! The HTTP API: one router per resource, merged here.

pub(crate) mod auth;
mod bulk;
mod chunks;
pub(crate) mod debug_bundle;
pub(crate) mod error;
mod events;
pub(crate) mod extract;
mod idempotency;
mod metrics;
mod openapi;
mod query_contract;
mod run_commands;
mod run_details;
mod run_relations;
pub(crate) mod runs;
mod server;
mod session;
mod system;
mod tasks;
mod whole;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request};
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::{required_scope, RateLimit};
pub use error::{ApiError, FieldError, Problem};
pub use events::Streams;

use crate::follow::LogTail;
use crate::ledger::Ledger;

#[derive(OpenApi)]
#[openapi(
    info(title = "runledger", description = "An event-sourced ledger for job runs."),
    tags(
        (name = "runs", description = "Create, report on, operate and read runs"),
        (name = "tasks", description = "Runs grouped by task"),
        (name = "events", description = "The global log and live Server-Sent Event streams"),
        (name = "time travel", description = "Runs as they were at any past position or time"),
        (name = "bulk", description = "Operations on many runs at once, by selector, in one transaction"),
        (name = "operations", description = "Health and readiness"),
    ),
    // The schemas that only query parameters refer to (utoipa collects the others).
    components(schemas(
        Problem,
        FieldError,
        openapi::EnvelopeSchema,
        runledger_projections::schema::SortFieldSchema,
        runledger_projections::schema::SortDirectionSchema,
        runs::TagFilter,
        openapi::AsOfSchema,
    ))
)]
struct ApiDoc;

const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");
/// A reservation outlives the longest request by this much.
const IDEMPOTENCY_LEASE_MARGIN: Duration = Duration::from_secs(30);

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// Recent events each node keeps in memory for its streams.
    pub tail_capacity: usize,
    /// Longest a request may take to produce its response.
    pub request_timeout: Duration,
    /// Browser origins allowed by CORS (`*` for any); empty: no CORS.
    pub cors_origins: Vec<String>,
    /// After shutdown is asked for, how long connections may take to finish
    /// before they are dropped (a client that stopped reading a stream would
    /// otherwise hold the server up forever).
    pub shutdown_grace: Duration,
    /// Requests per token (per client address when open); `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// The most runs one bulk call may select.
    pub bulk_cap: usize,
    /// How long the response to a POST with an `Idempotency-Key` is kept.
    pub idempotency_ttl: Duration,
    /// The most events (and children) a run's debug bundle may hold.
    pub bundle_max_events: usize,
    /// The most connections open at once; past it, new ones wait.
    pub max_connections: usize,
    /// Longest a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a client may leave the server's writes unread (a stalled
    /// stream client) before its connection is closed.
    pub stalled_client_timeout: Duration,
    /// How many tasks `/metrics` names in `runledger_task_runs`.
    pub metrics_top_tasks: usize,
    /// The longest the deadline enforcer, which `serve` runs beside the
    /// API, sleeps between looks for due runs; zero: no enforcer.
    pub deadline_poll: Duration,
    /// How long a run's LLM chunks are gathered into one `run.chunks` event.
    pub chunk_window: Duration,
    /// Chunk bytes waiting for a run that are appended at once.
    pub chunk_flush_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            keep_alive: Duration::from_secs(15),
            tail_capacity: 16_384,
            request_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            rate_limit: Some(RateLimit {
                per_second: std::num::NonZeroU32::new(1_000).expect("non-zero"),
                burst: std::num::NonZeroU32::new(5_000).expect("non-zero"),
            }),
            bulk_cap: bulk::DEFAULT_BULK_CAP,
            idempotency_ttl: Duration::from_secs(86_400),
            bundle_max_events: debug_bundle::DEFAULT_BUNDLE_MAX_EVENTS,
            max_connections: 4_096,
            header_read_timeout: Duration::from_secs(10),
            stalled_client_timeout: Duration::from_secs(30),
            metrics_top_tasks: metrics::DEFAULT_TOP_TASKS,
            deadline_poll: crate::deadlines::DEFAULT_POLL,
            chunk_window: crate::chunks::DEFAULT_WINDOW,
            chunk_flush_bytes: crate::chunks::DEFAULT_FLUSH_BYTES,
        }
    }
}

/// The router and the OpenAPI document (JSON) that describes it. `open_allowed`: whether
/// the API may run without tokens (only when it listens on a loopback address).
pub fn api(
    ledger: Arc<Ledger>,
    config: &HttpConfig,
    streams: Streams,
    open_allowed: bool,
) -> (Router, serde_json::Value) {
    let gate = Arc::new(auth::Gate::new(ledger.clone(), open_allowed, config.rate_limit));
    let console = crate::console::router(crate::console::Console {
        ledger: ledger.clone(),
        gate: gate.clone(),
        bundle_cap: config.bundle_max_events,
    });
    let idempotency = Arc::new(idempotency::Idempotency {
        ledger: ledger.clone(),
        ttl: config.idempotency_ttl,
        lease: config.request_timeout + IDEMPOTENCY_LEASE_MARGIN,
        max_body_bytes: config.max_body_bytes,
    });
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(runs::router())
        .merge(events::router())
        .merge(run_commands::router())
        .merge(run_details::router())
        .merge(run_relations::router())
        .merge(debug_bundle::router())
        .merge(tasks::router())
        .merge(system::router())
        .merge(metrics::router())
        .merge(bulk::router())
        .merge(chunks::router())
        .merge(session::router())
        .split_for_parts();
    auth::document(&mut openapi);
    let mut openapi = openapi::document(&openapi);
    bulk::document(&mut openapi);
    let contract = Arc::new(query_contract::QueryContract::from_openapi(&openapi));
    let coalescer = crate::chunks::Coalescer::new(
        ledger.clone(),
        config.chunk_window,
        config.chunk_flush_bytes,
        streams.shutdown.clone(),
    );
    let router = router
        .with_state(ledger)
        // Inside the auth guard: keys belong to the caller it names.
        .route_layer(middleware::from_fn_with_state(idempotency, idempotency::guard))
        // A request that names a query parameter its route does not read is
        // refused before anything acts on it (after auth: a stranger learns
        // nothing about the routes' parameters).
        .route_layer(middleware::from_fn_with_state(contract, query_contract::guard))
        // After routing, so that it knows the route template.
        .route_layer(middleware::from_fn_with_state(gate, auth::guard))
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi.clone()))
        // HTML pages, outside the API's guards: they sign in, parse and
        // refuse their query themselves, and answer HTML, never JSON.
        .merge(console)
        .layer(middleware::from_fn(metrics::track))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(Extension(streams))
        .layer(Extension(coalescer))
        .layer(Extension(bulk::BulkCap(config.bulk_cap)))
        .layer(Extension(debug_bundle::BundleCap(config.bundle_max_events)))
        .layer(Extension(metrics::TopTasks(
            config.metrics_top_tasks.min(metrics::MAX_TOP_TASKS),
        )))
        .layer(middleware::from_fn(error::problems))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn(record_trace))
        // The request span, named by its route template, is a child of the
        // caller's W3C trace context (when it sent a valid one).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
                    let route = route.as_deref().unwrap_or("unmatched");
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let span = tracing::info_span!(
                        "request",
                        otel.name = %format_args!("{} {route}", req.method()),
                        otel.kind = "server",
                        otel.status_code = tracing::field::Empty,
                        method = %req.method(),
                        route,
                        request_id = %id,
                        http.response.status_code = tracing::field::Empty,
                    );
                    // Without an OpenTelemetry layer (no export) there is no span to parent.
                    let _ = span.set_parent(crate::telemetry::remote_context(req.headers()));
                    span
                })
                .on_response(
                    |res: &axum::response::Response, latency: Duration, span: &tracing::Span| {
                        use tower_http::trace::OnResponse;
                        let status = res.status();
                        span.record("http.response.status_code", i64::from(status.as_u16()));
                        // OpenTelemetry's HTTP server convention: only 5xx is the server's error.
                        if status.is_server_error() {
                            span.record("otel.status_code", "error");
                        }
                        tower_http::trace::DefaultOnResponse::default().on_response(res, latency, span);
                    },
                ),
        )
        // Outermost: every request has an X-Request-Id (the client's, or a
        // new UUID) before anything else sees it, and every response echoes
        // it; it is also the request_id of every event the request appends.
        .layer(cors(&config.cors_origins))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    (router, openapi)
}

/// The trace a request belongs to; the `trace_id` of the events it appends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestTrace(pub opentelemetry::trace::TraceId);

/// Runs inside the request span: notes the request's trace for its events.
async fn record_trace(mut req: Request, next: middleware::Next) -> axum::response::Response {
    if let Some(id) = crate::telemetry::request_trace_id(&tracing::Span::current(), req.headers()) {
        req.extensions_mut().insert(RequestTrace(id));
    }
    next.run(req).await
}

/// CORS for a browser console on another origin; none when unconfigured.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            REQUEST_ID,
            axum::http::header::RETRY_AFTER,
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderName::from_static("x-ratelimit-limit"),
            axum::http::HeaderName::from_static("x-ratelimit-remaining"),
            axum::http::HeaderName::from_static("x-ratelimit-reset"),
            axum::http::header::LOCATION,
            idempotency::IDEMPOTENT_REPLAYED,
        ])
}

/// Serves the API on an already bound listener, and enforces deadlines,
/// until `shutdown` completes; then ends every stream and finishes
/// in-flight requests.
pub async fn serve(
    ledger: Arc<Ledger>,
    config: HttpConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics::handle();
    let stop = CancellationToken::new();
    let tail = LogTail::start(ledger.clone(), config.tail_capacity, stop.clone());
    let deadlines = (!config.deadline_poll.is_zero())
        .then(|| crate::deadlines::start(ledger.clone(), config.deadline_poll, stop.clone()));
    let streams = Streams {
        tail,
        shutdown: stop.clone(),
        keep_alive: config.keep_alive,
    };
    let open_allowed = listener.local_addr()?.ip().is_loopback();
    let (router, _) = api(ledger, &config, streams, open_allowed);
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let limits = server::ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        write_timeout: config.stalled_client_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    server::run(router, listener, limits, stop).await;
    // Stopped with the server: no end is appended after `serve` returns.
    if let Some(deadlines) = deadlines {
        let _ = deadlines.await;
    }
    Ok(())
}

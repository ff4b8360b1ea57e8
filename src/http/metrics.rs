//! Prometheus metrics: requests by route template and status, request
//! latency, appends, group-commit batch sizes and commit latency (recorded
//! by the writers), SSE clients, anchors, the process (CPU, memory, file
//! descriptors, start time) and the build; and, computed for each scrape
//! from this node and its ledger, how far the stream tail is behind the log
//! and the runs (by phase and end reason, the busiest tasks, the dead-letter
//! queue, the oldest pending run). Every family has HELP and TYPE, and every
//! label comes from a closed or bounded set.

use std::fmt::Write;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Extension, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::formatting::{sanitize_label_value, write_help_line, write_type_line};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use runledger_projections::gauges::{RunGauges, OTHER_TASKS};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::events::Streams;
use crate::ledger::Ledger;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// How many tasks `/metrics` names in `runledger_task_runs` (the rest are
/// summed as `other`).
#[derive(Clone, Copy, Debug)]
pub struct TopTasks(pub usize);

/// The default of `TopTasks`, and the most it may be: each is a series.
pub const DEFAULT_TOP_TASKS: usize = 20;
pub const MAX_TOP_TASKS: usize = 1_000;

/// The process's recorder, installed on first use (one per process: every
/// server in the process shares it), with every metric it records described.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("runledger_commit_batch_size".into()), &sizes))
            .expect("static buckets are valid")
            .install_recorder()
            .expect("runledger installs the only metrics recorder");
        describe();
        PROCESS.get_or_init(metrics_process::Collector::default).describe();
        handle
    })
}

/// The HELP of every metric the recorder holds. Unlabelled ones are
/// touched so that their family is there from the first scrape.
fn describe() {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method (a known one, or other), route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by method and route template."
    );
    describe_counter!(
        "runledger_appended_events_total",
        "Events this node appended to the log."
    );
    describe_histogram!(
        "runledger_commit_batch_size",
        "Commands committed together in one group-commit transaction."
    );
    describe_histogram!(
        "runledger_commit_seconds",
        "Time to commit one group-commit transaction."
    );
    describe_gauge!("runledger_sse_clients", "Server-Sent Event streams open on this node.");
    describe_counter!(
        "runledger_anchors_written_total",
        "Anchors of the log's head written to the anchors file."
    );
    describe_counter!(
        "runledger_anchor_failures_total",
        "Anchors that could not be written (the next one tries again)."
    );
    describe_counter!(
        "runledger_metrics_read_failures_total",
        "Scrapes that could not read the run gauges from the database (they were left out)."
    );
    describe_counter!(
        "runledger_deadlines_enforced_total",
        "Runs this node ended because a deadline passed, by the end it gave them (timeout, expired, crashed)."
    );
    for reason in crate::deadlines::REASONS {
        counter!("runledger_deadlines_enforced_total", "reason" => reason.as_str()).increment(0);
    }
    describe_gauge!("runledger_build_info", "Always 1: the labels name the running build.");
    gauge!("runledger_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!("runledger_sse_clients").increment(0.0);
    for name in [
        "runledger_appended_events_total",
        "runledger_anchors_written_total",
        "runledger_anchor_failures_total",
        "runledger_metrics_read_failures_total",
    ] {
        counter!(name).increment(0);
    }
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

/// Prometheus text exposition (format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn prometheus(
    State(ledger): State<Arc<Ledger>>,
    Extension(streams): Extension<Streams>,
    Extension(TopTasks(top)): Extension<TopTasks>,
) -> impl IntoResponse {
    let head = *ledger.head().borrow();
    let tail = *streams.tail.position().borrow();
    let runs = match ledger.run_gauges(top).await {
        Ok(runs) => Some(runs),
        Err(error) => {
            metrics::counter!("runledger_metrics_read_failures_total").increment(1);
            tracing::warn!(%error, "reading the run gauges failed; this scrape leaves them out");
            None
        }
    };
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    let mut text = handle().render();
    let mut families = vec![
        Family::single(
            "runledger_log_head_position",
            "The last committed position of the log this node knows of.",
            head as f64,
        ),
        Family::single(
            "runledger_stream_tail_lag_events",
            "Events committed to the log that this node's live streams have not read yet.",
            (head - tail).max(0) as f64,
        ),
    ];
    if let Some(runs) = runs {
        families.extend(run_families(&runs, runledger_events::Timestamp::now().as_micros()));
    }
    for family in &families {
        family.render(&mut text);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

/// A gauge family computed for one scrape: its samples, each with at most
/// one label.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Option<(&'static str, String)>, f64)>,
}

impl Family {
    fn single(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            samples: vec![(None, value)],
        }
    }

    fn labelled(name: &'static str, help: &'static str, label: &'static str, samples: Vec<(String, f64)>) -> Self {
        Self {
            name,
            help,
            samples: samples.into_iter().map(|(v, n)| (Some((label, v)), n)).collect(),
        }
    }

    fn render(&self, out: &mut String) {
        write_help_line(out, self.name, None, None, self.help);
        write_type_line(out, self.name, None, None, "gauge");
        for (label, value) in &self.samples {
            out.push_str(self.name);
            if let Some((key, text)) = label {
                let _ = write!(out, "{{{key}=\"{}\"}}", sanitize_label_value(text));
            }
            let _ = writeln!(out, " {value}");
        }
        out.push('\n');
    }
}

/// The run gauges at `now` (microseconds): labels are phases, end reasons
/// (closed sets) and at most `TopTasks` task names plus `other`.
fn run_families(runs: &RunGauges, now: i64) -> Vec<Family> {
    let mut tasks: Vec<(String, f64)> = runs.top_tasks.iter().map(|(t, n)| (t.clone(), *n as f64)).collect();
    tasks.push((OTHER_TASKS.to_owned(), runs.other_tasks as f64));
    vec![
        Family::labelled(
            "runledger_runs",
            "Live (not deleted) runs in each phase.",
            "status",
            runs.by_status.iter().map(|(s, n)| (s.as_str().to_owned(), *n as f64)).collect(),
        ),
        Family::labelled(
            "runledger_ended_runs",
            "Live ended runs by end reason.",
            "end_reason",
            runs.by_end_reason.iter().map(|(r, n)| (r.as_str().to_owned(), *n as f64)).collect(),
        ),
        Family::labelled(
            "runledger_task_runs",
            "Live runs of the tasks with the most of them (--metrics-top-tasks); every other task's are summed as task=\"other\".",
            "task",
            tasks,
        ),
        Family::single(
            "runledger_dead_letter_runs",
            "Live runs in the dead-letter queue.",
            runs.dead_lettered as f64,
        ),
        Family::single(
            "runledger_oldest_pending_run_age_seconds",
            "Seconds since the oldest live pending run was created; 0 when none is pending.",
            runs.oldest_pending_age_seconds(now),
        ),
    ]
}

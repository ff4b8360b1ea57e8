//! The global log and live streams: `GET /api/events`, `GET
//! /api/events/stream`, `GET /api/runs/{id}/stream`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use runledger_events::{EventEnvelope, RUN_EVENT_TYPES};
use runledger_projections::LogFilter;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Credential;
use super::error::{ApiError, Problem};
use super::extract::{parse_uuid, Faults, QueryParams};
use crate::domain::{short_text, TaskName};
use crate::follow::{LogTail, Subscription, Until};
use crate::ledger::{EventsQuery, Ledger};

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
        .routes(routes!(stream_run))
}

/// What streams need from the server: the node's tail, the shutdown signal
/// that ends every stream, and the keep-alive interval.
#[derive(Clone)]
pub struct Streams {
    pub tail: Arc<LogTail>,
    pub shutdown: CancellationToken,
    pub keep_alive: Duration,
}

/// Events scanned at most per `GET /api/events` request; `next_after` says
/// where the scan stopped, so sparse filters page through the log in bounded
/// steps.
const SCAN_LIMIT: usize = 10_000;

fn log_filter(params: &mut QueryParams) -> LogFilter {
    LogFilter {
        types: params.list(
            "type",
            |t| RUN_EVENT_TYPES.contains(&t).then(|| t.to_owned()),
            || RUN_EVENT_TYPES.join(", "),
        ),
        run_id: params.parsed("run_id", parse_uuid),
        task_name: params.parsed("task_name", |raw| TaskName::parse(raw).map(|t| t.to_string())),
        project: params.parsed("project", |raw| TaskName::parse(raw).map(|t| t.to_string())),
        actor: params.parsed("actor", |raw| short_text(raw, 200)),
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListEventsParams {
    /// Only events after this position (default 0: from the start).
    #[param(minimum = 0, default = 0)]
    after: Option<i64>,
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<i64>,
    /// Comma-separated event types.
    #[param(
        rename = "type",
        pattern = "^\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*(,\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*)*$"
    )]
    event_type: Option<String>,
    #[param(pattern = "^[a-zA-Z0-9._-]{1,100}$")]
    task_name: Option<String>,
    #[param(format = Uuid)]
    run_id: Option<String>,
    /// The token name (or `anonymous`) that caused the events.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    actor: Option<String>,
    #[param(pattern = "^[a-zA-Z0-9._-]{1,100}$")]
    project: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<super::openapi::EnvelopeSchema>)]
    pub events: Vec<EventEnvelope>,
    /// Pass as `after` to continue: the last position examined, which may be
    /// past the last event returned when filters skip events.
    pub next_after: i64,
}

/// The global log from a position, in position order: the audit trail.
#[utoipa::path(get, path = "/api/events", tag = "events", params(ListEventsParams),
    responses(
        (status = 200, body = EventPage),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_events(
    Extension(streams): Extension<Streams>,
    mut params: QueryParams,
) -> Result<Json<EventPage>, ApiError> {
    let after = params.int_in("after", 0, i64::MAX).unwrap_or(0);
    let limit = params.int_in("limit", 1, 10_000).unwrap_or(1000) as usize;
    let filter = log_filter(&mut params);
    params.finish()?;
    let (mut cursor, mut scanned, mut events) = (after, 0, Vec::new());
    'scan: while events.len() < limit && scanned < SCAN_LIMIT {
        let page = streams.tail.read(cursor, 1000.min(SCAN_LIMIT - scanned), true).await?;
        if page.is_empty() {
            break;
        }
        for frame in page {
            cursor = frame.position();
            scanned += 1;
            if filter.matches(&frame.entry) {
                events.push(frame.entry.envelope.clone());
                if events.len() == limit {
                    break 'scan;
                }
            }
        }
    }
    Ok(Json(EventPage {
        events,
        next_after: cursor,
    }))
}

/// How a stream's frames look, for the OpenAPI document (`x-itemSchema`
/// there gives the same in schema form).
const SSE_DESCRIPTION: &str = "Server-Sent Events. Each frame is `id: <position>`, `event: <type>` (a run event type: \
`run.created`, `run.started`, `run.heartbeat`, `run.paused`, `run.resumed`, `run.rescheduled`, `run.checkpointed`, \
`run.logged`, `run.usage_recorded`, `run.tool_called`, `run.output_recorded`, `run.ended`, `run.dead_lettered`, \
`run.deleted`, `run.restored`, `run.retried`, `run.debug_mode_set`, `run.idempotency_key_reset`, `run.chunks`) and \
`data: <EventEnvelope JSON>`, in position order. A comment line (`:`) is sent as a keep-alive when idle. \
Resume with `Last-Event-ID` or `?after=<position>`.";

fn last_event_id(headers: &HeaderMap, faults: &mut Faults) -> Option<i64> {
    let raw = headers.get("last-event-id")?;
    let text = raw.to_str().unwrap_or_default().trim().to_owned();
    faults.check("header.Last-Event-ID", &text, |t| match t.parse::<i64>() {
        Ok(p) if p >= 0 => Ok(p),
        _ => Err("must be the position of an event (an integer >= 0)"),
    })
}

/// A stream's own stop: the server's shutdown, or the revocation of the
/// token that opened it. Cancelled too when the stream is dropped (the
/// guard lives in the stream), which ends its watcher.
pub fn stream_stop(streams: &Streams, credential: Option<Credential>) -> CancellationToken {
    let stop = streams.shutdown.child_token();
    if let Some(credential) = credential {
        let watch = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = credential.revoked() => {
                    tracing::info!("ending a stream: its token was revoked");
                    watch.cancel();
                }
                () = watch.cancelled() => {}
            }
        });
    }
    stop
}

fn sse(
    streams: &Streams,
    subscription: Subscription,
    stop: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = (subscription, stop.drop_guard());
    let stream = futures_util::stream::unfold(state, |(mut sub, guard)| async move {
        match sub.next().await? {
            Ok(frame) => {
                let e = &frame.entry.envelope;
                let event = Event::default()
                    .id(e.position.to_string())
                    .event(e.event_type.as_str())
                    .data(frame.json.as_str());
                Some((Ok(event), (sub, guard)))
            }
            Err(err) => {
                // The client resumes from its last id; nothing is lost.
                tracing::warn!(error = %err, "stream ended by a read failure");
                None
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(streams.keep_alive).text("keep-alive"))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StreamParams {
    /// Start after this position; `0` replays everything. Without it (and
    /// without `Last-Event-ID`, which wins) the stream starts at the head.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Comma-separated event types.
    #[param(
        rename = "type",
        pattern = "^\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*(,\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*)*$"
    )]
    event_type: Option<String>,
    #[param(pattern = "^[a-zA-Z0-9._-]{1,100}$")]
    task_name: Option<String>,
    #[param(format = Uuid)]
    run_id: Option<String>,
    #[param(pattern = "^[a-zA-Z0-9._-]{1,100}$")]
    project: Option<String>,
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    actor: Option<String>,
}

/// The whole log as Server-Sent Events: `id` is the position, `event` the
/// type, `data` the envelope. Catch-up from the log, then live, with no gap
/// and no duplicate; resume with `Last-Event-ID` or `?after=`. A keep-alive
/// comment is sent when idle.
#[utoipa::path(get, path = "/api/events/stream", tag = "events", params(StreamParams),
    responses(
        (status = 200, description = SSE_DESCRIPTION, content_type = "text/event-stream", body = String),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn stream_events(
    Extension(streams): Extension<Streams>,
    credential: Option<Extension<Credential>>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = params.int_in("after", 0, i64::MAX);
    let filter = log_filter(&mut params);
    let resume = last_event_id(&headers, &mut params.faults);
    params.finish()?;
    // The head, not the tail's position: every acknowledged write is before it.
    let start = resume.or(after).unwrap_or_else(|| streams.tail.head());
    let stop = stream_stop(&streams, credential.map(|Extension(c)| c));
    let sub = Subscription::new(streams.tail.clone(), start, filter, Until::Forever, stop.clone());
    Ok(sse(&streams, sub, stop))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunStreamParams {
    /// Start after this position (default 0: the run's whole story).
    #[param(minimum = 0, default = 0)]
    after: Option<i64>,
    /// Keep streaming after `run.ended` (default false: close after it).
    follow: Option<bool>,
    /// Comma-separated event types.
    #[param(
        rename = "type",
        pattern = "^\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*(,\\s*(run\\.created|run\\.started|run\\.heartbeat|run\\.paused|run\\.resumed|run\\.rescheduled|run\\.checkpointed|run\\.logged|run\\.usage_recorded|run\\.tool_called|run\\.output_recorded|run\\.ended|run\\.dead_lettered|run\\.deleted|run\\.restored|run\\.retried|run\\.debug_mode_set|run\\.idempotency_key_reset|run\\.chunks)\\s*)*$"
    )]
    event_type: Option<String>,
}

/// One run's events as Server-Sent Events: its story so far, then live. The
/// stream closes after `run.ended` unless `follow=true`.
#[utoipa::path(get, path = "/api/runs/{id}/stream", tag = "events",
    params(("id" = String, Path, description = "Run id"), RunStreamParams),
    responses(
        (status = 200, description = SSE_DESCRIPTION, content_type = "text/event-stream", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn stream_run(
    State(ledger): State<Arc<Ledger>>,
    Extension(streams): Extension<Streams>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let after = params.int_in("after", 0, i64::MAX);
    let follow = params.flag("follow").unwrap_or(false);
    let types = params.list(
        "type",
        |t| RUN_EVENT_TYPES.contains(&t).then(|| t.to_owned()),
        || RUN_EVENT_TYPES.join(", "),
    );
    let resume = last_event_id(&headers, &mut params.faults);
    params.finish()?;
    let run_id = run_id.expect("checked");
    let start = resume.or(after).unwrap_or(0);
    let ended = ledger
        .run_events(EventsQuery {
            run_id,
            after_version: 0,
            limit: 1,
            types: vec!["run.ended".into()],
        })
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    let until = if follow {
        Until::Forever
    } else {
        Until::RunEnded(run_id)
    };
    let filter = LogFilter {
        types,
        run_id: Some(run_id),
        ..LogFilter::default()
    };
    let stop = stream_stop(&streams, credential.map(|Extension(c)| c));
    let mut sub = Subscription::new(streams.tail.clone(), start, filter, until, stop.clone());
    // Resuming past the end of a finished run: only the rest of the append
    // that ended it (a dead-letter, say) is left to say.
    if let Some(end) = ended.first().filter(|e| !follow && e.position <= start) {
        sub.ended_at(end.recorded_at);
    }
    Ok(sse(&streams, sub, stop))
}

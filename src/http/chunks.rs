//! LLM chunk streams: `POST /api/runs/{id}/chunks` appends a run's output
//! chunks (coalesced into `run.chunks` events, see `crate::chunks`), and
//! `GET /api/runs/{id}/stream/chunks` streams them in order as Server-Sent
//! Events, resumable by chunk index, closing after the run ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use runledger_events::{EventEnvelope, RunChunks, RunEvent};
use runledger_projections::{LogFilter, RunState, RunStatus};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::auth::Credential;
use super::error::{ApiError, Problem};
use super::events::{stream_stop, Streams};
use super::extract::{Faults, JsonBody, QueryParams, RequestMeta};
use crate::chunks::Coalescer;
use crate::commands::{self, Action, Command, Loaded, RunCommand};
use crate::follow::{Subscription, Until};
use crate::ledger::{EventsQuery, Ledger, LedgerError};

/// The most chunks one request may carry.
pub const MAX_CHUNKS: usize = 256;
/// The most bytes (UTF-8) of one chunk.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;
/// The most chunk bytes one request may carry.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// `run.chunks` events read from the log at once when catching up.
const CATCH_UP_PAGE: i64 = 100;

pub fn router() -> OpenApiRouter<Arc<Ledger>> {
    OpenApiRouter::new()
        .routes(routes!(append_chunks))
        .routes(routes!(stream_chunks))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunksRequest {
    /// The run's next output chunks (an LLM's tokens or deltas), in order:
    /// 1 to 256 per request, each at most 16 KiB and all at most 64 KiB of
    /// UTF-8; empty strings are chunks too.
    #[schema(min_items = 1, max_items = 256)]
    chunks: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChunksAppended {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    /// The index of the request's first chunk; a run's chunks count from 1.
    #[schema(minimum = 1)]
    pub first_index: i64,
    /// The index of its last chunk (the SSE `id` to resume after it).
    #[schema(minimum = 1)]
    pub last_index: i64,
    /// The log position of the `run.chunks` event that holds them (shared
    /// with the requests coalesced into it).
    #[schema(minimum = 1)]
    pub position: i64,
}

fn check_chunks(chunks: &[String], faults: &mut Faults) {
    if !(1..=MAX_CHUNKS).contains(&chunks.len()) {
        faults.add(
            "body.chunks",
            format!("must hold 1 to {MAX_CHUNKS} chunks, got {}", chunks.len()),
            None,
        );
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.len() > MAX_CHUNK_BYTES {
            faults.add(
                format!("body.chunks.{i}"),
                format!("is {} bytes; a chunk may be at most {MAX_CHUNK_BYTES}", chunk.len()),
                None,
            );
        }
    }
    let total: usize = chunks.iter().map(String::len).sum();
    if total > MAX_REQUEST_BYTES {
        faults.add(
            "body.chunks",
            format!("hold {total} bytes; one request may carry at most {MAX_REQUEST_BYTES}"),
            None,
        );
    }
}

/// Append output chunks to a run that has not ended. Chunks POSTed to one
/// run within a short window (100 ms, or until 64 KiB wait) are coalesced
/// into one `run.chunks` ledger event, in arrival order; the answer comes
/// once they are durable, with the indexes they were given.
#[utoipa::path(post, path = "/api/runs/{id}/chunks", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = ChunksRequest,
    responses(
        (status = 200, body = ChunksAppended),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn append_chunks(
    State(ledger): State<Arc<Ledger>>,
    Extension(coalescer): Extension<Arc<Coalescer>>,
    Path(id): Path<String>,
    RequestMeta(meta): RequestMeta,
    JsonBody(body): JsonBody<ChunksRequest>,
) -> Result<Json<ChunksAppended>, ApiError> {
    let mut faults = Faults::default();
    let run_id = faults.path_id(&id);
    check_chunks(&body.chunks, &mut faults);
    faults.finish()?;
    let run_id = run_id.expect("checked");
    // Refused alone, before it joins others: an unknown or ended run.
    let run = ledger.get_run(run_id).await?;
    let command = Command::Run(RunCommand {
        run_id,
        expected_version: None,
        action: Action::AppendChunks(body.chunks.clone()),
    });
    commands::decide(
        &command,
        &Loaded {
            target: run,
            ..Loaded::default()
        },
    )
    .map_err(LedgerError::from)?;
    let appended = coalescer.submit(run_id, body.chunks, meta).await?;
    Ok(Json(ChunksAppended {
        run_id,
        first_index: appended.first_index,
        last_index: appended.last_index,
        position: appended.position,
    }))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ChunkStreamParams {
    /// Start after this chunk index; `0` replays every chunk. Without it
    /// (and without `Last-Event-ID`, which wins) the stream starts after the
    /// run's last chunk so far (live only).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// A chunk as a stream frame's data.
#[derive(Serialize, ToSchema)]
pub struct ChunkFrame {
    /// The chunk's index in the run (from 1); also the frame's `id`.
    #[schema(minimum = 1)]
    pub index: i64,
    pub chunk: String,
    /// The log position of the `run.chunks` event that holds it.
    #[schema(minimum = 1)]
    pub position: i64,
}

/// The last frame, once the run has ended and every chunk was sent.
#[derive(Serialize, ToSchema)]
pub struct ChunkStreamEnd {
    #[schema(value_type = String, format = Uuid)]
    pub run_id: Uuid,
    /// How many chunks the run has.
    #[schema(minimum = 0)]
    pub chunks: i64,
    #[schema(value_type = Option<runledger_projections::schema::EndReasonSchema>)]
    pub end_reason: Option<runledger_events::EndReason>,
}

const CHUNK_SSE_DESCRIPTION: &str = "Server-Sent Events: one frame per chunk, in index order — `id: <chunk index>`, \
`event: chunk`, `data: <ChunkFrame JSON>` (`{index, chunk, position}`); after the run has ended and its last chunk \
was sent, one `event: end` frame (`data: <ChunkStreamEnd JSON>`, no id), then the stream closes. A comment line \
(`:`) is sent as a keep-alive when idle. Resume with `Last-Event-ID` or `?after=<chunk index>`; `after=0` replays \
from the first chunk.";

fn last_chunk_id(headers: &HeaderMap, faults: &mut Faults) -> Option<i64> {
    let raw = headers.get("last-event-id")?;
    let text = raw.to_str().unwrap_or_default().trim().to_owned();
    faults.check("header.Last-Event-ID", &text, |t| match t.parse::<i64>() {
        Ok(i) if i >= 0 => Ok(i),
        _ => Err("must be the index of a chunk (an integer >= 0)"),
    })
}

/// A run's chunks as Server-Sent Events, in order: those after `after`
/// (read from the log), then live ones as they are appended; closes after
/// the run has ended and all its chunks were sent.
#[utoipa::path(get, path = "/api/runs/{id}/stream/chunks", tag = "events",
    params(("id" = String, Path, description = "Run id"), ChunkStreamParams),
    responses(
        (status = 200, description = CHUNK_SSE_DESCRIPTION, content_type = "text/event-stream", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn stream_chunks(
    State(ledger): State<Arc<Ledger>>,
    Extension(streams): Extension<Streams>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run_id = params.faults.path_id(&id);
    let after = params.int_in("after", 0, i64::MAX);
    let resume = last_chunk_id(&headers, &mut params.faults);
    params.finish()?;
    let run_id = run_id.expect("checked");
    let run = ledger
        .get_run(run_id)
        .await?
        .ok_or_else(|| ApiError::run_not_found(run_id))?;
    let sent = resume.or(after).unwrap_or(run.chunks);
    let stop = stream_stop(&streams, credential.map(|Extension(c)| c));
    let feed = ChunkFeed {
        ledger,
        streams: streams.clone(),
        run,
        sent,
        read_version: 0,
        phase: Phase::CatchUp,
        buffer: VecDeque::new(),
        stop: stop.clone(),
    };
    let state = (feed, stop.drop_guard());
    let stream = futures_util::stream::unfold(state, |(mut feed, guard)| async move {
        match feed.next().await? {
            Ok(event) => Some((Ok(event), (feed, guard))),
            Err(err) => {
                // The client resumes from its last id; nothing is lost.
                tracing::warn!(error = %err, "chunk stream ended by a read failure");
                None
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(streams.keep_alive).text("keep-alive")))
}

enum Phase {
    /// Reading the run's chunk events up to the run's position when the
    /// stream opened, by stream version.
    CatchUp,
    /// Following the log from that position.
    Live(Box<Subscription>),
    Done,
}

/// One chunk stream: catch-up from the run's own events, then the node's
/// tail from where catch-up stopped — no gap, no repeat (`sent` only grows).
struct ChunkFeed {
    ledger: Arc<Ledger>,
    streams: Streams,
    /// The run when the stream opened, then as it ended.
    run: RunState,
    /// The index of the last chunk sent (or skipped as asked).
    sent: i64,
    read_version: i64,
    phase: Phase,
    buffer: VecDeque<Event>,
    stop: CancellationToken,
}

impl ChunkFeed {
    async fn next(&mut self) -> Option<Result<Event, LedgerError>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::CatchUp => {
                    if self.sent >= self.run.chunks {
                        self.follow();
                        continue;
                    }
                    let page = self
                        .ledger
                        .run_events(EventsQuery {
                            run_id: self.run.id,
                            after_version: self.read_version,
                            limit: CATCH_UP_PAGE,
                            types: vec!["run.chunks".into()],
                        })
                        .await;
                    let page = match page {
                        Ok(page) => page.unwrap_or_default(),
                        Err(e) => return Some(Err(e)),
                    };
                    let full = page.len() as i64 == CATCH_UP_PAGE;
                    let opened_at = self.run.position;
                    for envelope in page.iter().filter(|e| e.position <= opened_at) {
                        self.read_version = envelope.stream_version;
                        if let Err(e) = self.push_chunks(envelope) {
                            return Some(Err(e));
                        }
                    }
                    let past_open = page.last().is_some_and(|e| e.position > opened_at);
                    if !full || past_open {
                        self.follow();
                    }
                }
                Phase::Live(sub) => {
                    let frame = tokio::select! {
                        () = self.stop.cancelled() => return None,
                        frame = sub.next() => frame,
                    };
                    match frame {
                        None => self.phase = Phase::Done,
                        Some(Err(e)) => return Some(Err(e)),
                        Some(Ok(frame)) => {
                            let envelope = &frame.entry.envelope;
                            if envelope.event_type == "run.ended" {
                                // The run's own fold says how it ended and how
                                // many chunks it has; its row is committed with
                                // the event the tail just showed.
                                match self.ledger.get_run(self.run.id).await {
                                    Ok(Some(run)) => self.run = run,
                                    Ok(None) => {}
                                    Err(e) => return Some(Err(e)),
                                }
                                self.end();
                            } else if let Err(e) = self.push_chunks(envelope) {
                                return Some(Err(e));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Catch-up is over: a run that had ended when the stream opened has
    /// no chunk left; otherwise follow the log from its position then.
    fn follow(&mut self) {
        if self.run.status == RunStatus::Ended {
            self.end();
            return;
        }
        let filter = LogFilter {
            types: vec!["run.chunks".into(), "run.ended".into()],
            run_id: Some(self.run.id),
            ..LogFilter::default()
        };
        let sub = Subscription::new(
            self.streams.tail.clone(),
            self.run.position,
            filter,
            Until::Forever,
            self.stop.clone(),
        );
        self.phase = Phase::Live(Box::new(sub));
    }

    fn end(&mut self) {
        let end = ChunkStreamEnd {
            run_id: self.run.id,
            chunks: self.run.chunks,
            end_reason: self.run.end_reason,
        };
        self.buffer.push_back(
            Event::default()
                .event("end")
                .data(serde_json::to_string(&end).expect("serializes")),
        );
        self.phase = Phase::Done;
    }

    /// Queues the frames of the event's chunks that were not sent yet.
    fn push_chunks(&mut self, envelope: &EventEnvelope) -> Result<(), LedgerError> {
        let RunEvent::Chunks(RunChunks { first_index, chunks }) = RunEvent::from_envelope(envelope)
            .map_err(|e| LedgerError::Storage(format!("event at position {}: {e}", envelope.position)))?
        else {
            return Ok(());
        };
        for (index, chunk) in (first_index..).zip(chunks) {
            if index <= self.sent {
                continue;
            }
            let frame = ChunkFrame {
                index,
                chunk,
                position: envelope.position,
            };
            self.buffer.push_back(
                Event::default()
                    .id(index.to_string())
                    .event("chunk")
                    .data(serde_json::to_string(&frame).expect("serializes")),
            );
            self.sent = index;
        }
        Ok(())
    }
}

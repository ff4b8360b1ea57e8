//! `runledger runs tail`: follows `/api/events/stream` and keeps following
//! it across dropped connections and server restarts. Each reconnect asks
//! for the events after the last position printed, and a position at or
//! below it is never printed again, so every event is printed exactly once.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

use super::args::TailArgs;
use super::commands::out;
use super::render;
use super::{Client, ClientError};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a connection ended.
enum Ended {
    /// The server closed the stream (it is shutting down, say).
    Closed,
    /// The connection failed mid-stream.
    Lost(String),
}

pub async fn tail(client: &Client, args: &TailArgs, json: bool) -> Result<(), ClientError> {
    let filters = args.query();
    let mut last = args.after;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut query = filters.clone();
        if let Some(after) = last {
            query.push(("after".to_owned(), after.to_string()));
        }
        match client.stream("/api/events/stream", &query).await {
            Ok(response) => {
                backoff = FIRST_BACKOFF;
                let ended = follow(response, &mut last, json).await?;
                let why = match ended {
                    Ended::Closed => "the server closed the stream".to_owned(),
                    Ended::Lost(why) => format!("the connection was lost ({why})"),
                };
                eprintln!("runledger: {why}; reconnecting {}", resume_text(last));
            }
            // Refusals (a bad filter, a missing token) do not heal by
            // retrying; an unreachable or failing server may.
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Server { .. })) => {
                eprintln!(
                    "runledger: {e}; retrying in {} ms {}",
                    backoff.as_millis(),
                    resume_text(last)
                );
            }
            Err(ClientError::Refused { status: 429, .. }) => {
                eprintln!("runledger: rate limited; retrying in {} ms", backoff.as_millis());
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn resume_text(last: Option<u64>) -> String {
    match last {
        Some(p) => format!("after position {p}"),
        None => "at the head (no event printed yet)".to_owned(),
    }
}

/// Prints the stream's events until it ends; `last` is the position of the
/// last event printed.
async fn follow(response: reqwest::Response, last: &mut Option<u64>, json: bool) -> Result<Ended, ClientError> {
    let mut events = response.bytes_stream().eventsource();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        };
        let Ok(position) = event.id.trim().parse::<u64>() else {
            // Not a ledger frame (no position): nothing to resume from.
            continue;
        };
        if last.is_some_and(|l| position <= l) {
            continue;
        }
        let envelope: Value = serde_json::from_str(&event.data)
            .map_err(|e| ClientError::Other(format!("event {position} is not JSON: {e}")))?;
        if json {
            out(&envelope.to_string())?;
        } else {
            out(&render::event_line(&envelope))?;
        }
        *last = Some(position);
    }
    Ok(Ended::Closed)
}

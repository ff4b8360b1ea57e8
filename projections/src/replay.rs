//! Replaying the log into run states: what `rebuild` and `import` do, with
//! the same fold as everything else.

use std::collections::HashMap;

use runledger_events::{EventEnvelope, RunEvent};
use uuid::Uuid;

use crate::{ApplyError, DetailRow, EventContext, HistoryVersion, RunState};

/// Run states folded from events given in position order, and every past
/// version of them as the next event closes it.
#[derive(Default)]
pub struct Replay {
    /// Each run's state and the time (µs) its last event was recorded.
    runs: HashMap<Uuid, (RunState, i64)>,
    pub events: u64,
    /// Detail rows of the events folded since the caller last took them.
    pub details: Vec<DetailRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("event at position {position} is not on a run stream ({stream_id})")]
    NotARun { position: i64, stream_id: String },
    #[error("event at position {position} does not apply: {source}")]
    Apply { position: i64, source: ApplyError },
    #[error("storage: {0}")]
    Storage(String),
}

impl Replay {
    /// Folds one event; returns the run's version it closed, if any.
    pub fn apply(&mut self, envelope: &EventEnvelope) -> Result<Option<HistoryVersion>, ReplayError> {
        let event = RunEvent::from_envelope(envelope).map_err(|e| ReplayError::Apply {
            position: envelope.position,
            source: ApplyError::Decode(e),
        })?;
        self.apply_event(&envelope.stream_id, &event, &EventContext::of(envelope))
    }

    /// Folds one decoded event of `stream_id` at `at`; returns the run's
    /// version it closed, if any, and keeps the detail row it adds.
    pub fn apply_event(
        &mut self,
        stream_id: &str,
        event: &RunEvent,
        at: &EventContext,
    ) -> Result<Option<HistoryVersion>, ReplayError> {
        let run_id = stream_id
            .strip_prefix("run-")
            .and_then(|id| id.parse::<Uuid>().ok())
            .ok_or_else(|| ReplayError::NotARun {
                position: at.position,
                stream_id: stream_id.to_owned(),
            })?;
        let recorded_at = at.recorded_at.as_micros();
        let (state, last_at) = self
            .runs
            .entry(run_id)
            .or_insert_with(|| (RunState::empty(run_id), recorded_at));
        let closed = state.exists().then(|| {
            let mut version = HistoryVersion::current(state.clone(), *last_at);
            version.close(at.position, recorded_at);
            version
        });
        state.apply(event, at).map_err(|r| ReplayError::Apply {
            position: at.position,
            source: ApplyError::Refused(r),
        })?;
        *last_at = recorded_at;
        self.events += 1;
        let detail = DetailRow::of(state, event, at).map_err(|e| ReplayError::Storage(e.to_string()))?;
        self.details.extend(detail);
        Ok(closed)
    }

    /// The runs' current versions, in run id order (so writes are deterministic).
    pub fn into_current(self) -> Vec<HistoryVersion> {
        let mut current: Vec<HistoryVersion> = self
            .runs
            .into_values()
            .map(|(state, at)| HistoryVersion::current(state, at))
            .collect();
        current.sort_by_key(|v| v.state.id);
        current
    }
}

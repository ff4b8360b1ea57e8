//! Replaying the log into run states: what `rebuild` and `import` do, with
//! the same fold as everything else.

use std::collections::HashMap;

use runledger_events::{EventEnvelope, RunEvent};
use uuid::Uuid;

use crate::{ApplyError, EventContext, RunState};

/// Run states folded from events given in position order.
#[derive(Default)]
pub struct Replay {
    pub runs: HashMap<Uuid, RunState>,
    pub events: u64,
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
    pub fn apply(&mut self, envelope: &EventEnvelope) -> Result<(), ReplayError> {
        let event = RunEvent::from_envelope(envelope).map_err(|e| ReplayError::Apply {
            position: envelope.position,
            source: ApplyError::Decode(e),
        })?;
        self.apply_event(&envelope.stream_id, &event, &EventContext::of(envelope))
    }

    /// Folds one decoded event of `stream_id` at `at`.
    pub fn apply_event(&mut self, stream_id: &str, event: &RunEvent, at: &EventContext) -> Result<(), ReplayError> {
        let run_id = stream_id
            .strip_prefix("run-")
            .and_then(|id| id.parse::<Uuid>().ok())
            .ok_or_else(|| ReplayError::NotARun {
                position: at.position,
                stream_id: stream_id.to_owned(),
            })?;
        let state = self.runs.entry(run_id).or_insert_with(|| RunState::empty(run_id));
        state.apply(event, at).map_err(|r| ReplayError::Apply {
            position: at.position,
            source: ApplyError::Refused(r),
        })?;
        self.events += 1;
        Ok(())
    }

    /// The states, in run id order (so writes are deterministic).
    pub fn into_states(self) -> Vec<RunState> {
        let mut states: Vec<RunState> = self.runs.into_values().collect();
        states.sort_by_key(|s| s.id);
        states
    }
}

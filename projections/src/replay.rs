//! Replaying the log into run states: what `rebuild` and `import` do, with
//! the same fold as everything else.

use std::collections::HashMap;

use runledger_events::{EventEnvelope, RunEvent};
use uuid::Uuid;

use crate::{stores_version, ApplyError, DetailRow, EventContext, HistoryVersion, RunState};

/// Run states folded from events given in position order, and every
/// version of them that `run_history` stores, as the next one closes it.
#[derive(Default)]
pub struct Replay {
    /// Boxed: the map moves its entries as it grows, a million at the end
    /// of a large rebuild.
    runs: HashMap<Uuid, Box<Replayed>>,
    /// Runs created so far: the last one's ordinal (`runs.seq`).
    created: i64,
    pub events: u64,
    /// Detail rows of the events folded since the caller last took them.
    pub details: Vec<DetailRow>,
}

/// One run of a replay: its state and its open stored version.
struct Replayed {
    state: RunState,
    /// Its ordinal among the runs in the order they were created.
    seq: i64,
    /// When the open version began (µs).
    opened_at: i64,
    /// The open version, once an event that stores none has moved the state
    /// past it; until then the open version is `state` itself.
    behind: Option<HistoryVersion>,
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
    /// Folds one event; returns the stored version it closed, if any.
    pub fn apply(&mut self, envelope: &EventEnvelope) -> Result<Option<HistoryVersion>, ReplayError> {
        let event = RunEvent::from_envelope(envelope).map_err(|e| ReplayError::Apply {
            position: envelope.position,
            source: ApplyError::Decode(e),
        })?;
        self.apply_event(&envelope.stream_id, &event, &EventContext::of(envelope))
    }

    /// Folds one decoded event of `stream_id` at `at`; returns the stored
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
        let created = &mut self.created;
        let run = self.runs.entry(run_id).or_insert_with(|| {
            *created += 1;
            Box::new(Replayed {
                state: RunState::empty(run_id),
                seq: *created,
                opened_at: recorded_at,
                behind: None,
            })
        });
        // The open version, while it is the state itself: kept aside in
        // case this event stores none.
        let before = (run.state.exists() && run.behind.is_none()).then(|| run.state.clone());
        run.state.apply(event, at).map_err(|r| ReplayError::Apply {
            position: at.position,
            source: ApplyError::Refused(r),
        })?;
        self.events += 1;
        let detail = DetailRow::of(&run.state, event, at).map_err(|e| ReplayError::Storage(e.to_string()))?;
        self.details.extend(detail);
        let last_stored = run.behind.as_ref().map(|v| &v.state).or(before.as_ref());
        if !stores_version(last_stored, &run.state) {
            if let Some(before) = before {
                run.behind = Some(HistoryVersion::current(before, run.opened_at));
            }
            return Ok(None);
        }
        let closed = run
            .behind
            .take()
            .or_else(|| before.map(|state| HistoryVersion::current(state, run.opened_at)))
            .map(|mut version| {
                version.close(at.position, recorded_at);
                version
            });
        run.opened_at = recorded_at;
        Ok(closed)
    }

    /// Each run's open stored version and current state, in run id order
    /// (so writes are deterministic). A run whose last event stored a version
    /// is that version alone: its state is not copied.
    pub fn into_current(self) -> Vec<CurrentRun> {
        let mut current: Vec<CurrentRun> = self
            .runs
            .into_values()
            .map(|run| {
                let Replayed {
                    state,
                    seq,
                    opened_at,
                    behind,
                } = *run;
                match behind {
                    Some(open) => CurrentRun {
                        open,
                        ahead: Some(Box::new(state)),
                        seq,
                    },
                    None => CurrentRun {
                        open: HistoryVersion::current(state, opened_at),
                        ahead: None,
                        seq,
                    },
                }
            })
            .collect();
        current.sort_unstable_by_key(|run| run.state().id);
        current
    }
}

/// A run at the end of a replay.
pub struct CurrentRun {
    /// Its open stored version.
    pub open: HistoryVersion,
    /// Its state, when events that stored no version moved it past `open`.
    ahead: Option<Box<RunState>>,
    /// Its ordinal among the runs in the order they were created (`runs.seq`).
    pub seq: i64,
}

impl CurrentRun {
    /// The run's state after its last event.
    pub fn state(&self) -> &RunState {
        self.ahead.as_deref().unwrap_or(&self.open.state)
    }
}

//! Time travel: a run, or the runs table, at any past position (from the
//! run-history projection); a run's history event by event (folding its own
//! events with `RunState::apply`); what changed between two positions.

use runledger_events::{EventEnvelope, Timestamp};
use runledger_projections::RunState;
use uuid::Uuid;

use super::{EventsQuery, Ledger, LedgerError};

const PAGE: i64 = 10_000;

/// One event of a run and the run's state right after it.
pub struct HistoryEntry {
    pub event: EventEnvelope,
    pub state: RunState,
}

/// A run that changed between two positions.
pub struct Change {
    pub run_id: Uuid,
    /// `None` when the run did not exist yet at `from`.
    pub before: Option<RunState>,
    pub after: RunState,
}

impl Ledger {
    /// The position of the last event recorded at or before `time` (0 if none).
    pub async fn position_at(&self, time: Timestamp) -> Result<i64, LedgerError> {
        match self {
            Self::Sqlite(l) => l.position_at(time).await,
            Self::Postgres(l) => l.position_at(time).await,
        }
    }

    /// Folds the run's events up to `until` (inclusive), calling `each` with
    /// every event and the state after it. `None` if the run has no events.
    async fn fold_run(
        &self,
        run_id: Uuid,
        until: i64,
        mut each: impl FnMut(&EventEnvelope, &RunState),
    ) -> Result<Option<RunState>, LedgerError> {
        let mut state = RunState::empty(run_id);
        let mut after_version = 0;
        loop {
            let query = EventsQuery {
                run_id,
                after_version,
                limit: PAGE,
                types: Vec::new(),
            };
            let Some(page) = self.run_events(query).await? else {
                return Ok(None);
            };
            for envelope in &page {
                if envelope.position > until {
                    return Ok(state.exists().then_some(state));
                }
                state
                    .apply_envelope(envelope)
                    .map_err(|e| LedgerError::Storage(format!("stored event does not fold: {e}")))?;
                each(envelope, &state);
                after_version = envelope.stream_version;
            }
            if (page.len() as i64) < PAGE {
                return Ok(state.exists().then_some(state));
            }
        }
    }

    /// The run as it was at `position`, from the history projection; `None`
    /// if it did not exist yet.
    pub async fn run_as_of(&self, run_id: Uuid, position: i64) -> Result<Option<RunState>, LedgerError> {
        match self {
            Self::Sqlite(l) => l.run_as_of(run_id, position).await,
            Self::Postgres(l) => l.run_as_of(run_id, position).await,
        }
    }

    /// Each event of the run after `after_version` (at most `limit`) with the
    /// state after it. `None` if the run does not exist.
    pub async fn run_history(
        &self,
        run_id: Uuid,
        after_version: i64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, LedgerError> {
        let mut entries = Vec::new();
        let found = self
            .fold_run(run_id, i64::MAX, |event, state| {
                if event.stream_version > after_version && entries.len() < limit {
                    entries.push(HistoryEntry {
                        event: event.clone(),
                        state: state.clone(),
                    });
                }
            })
            .await?;
        Ok(found.map(|_| entries))
    }

    /// Runs whose state changed after `from` up to `to` (inclusive), by run
    /// id, at most `limit`; and how many changed in all.
    pub async fn diff(&self, from: i64, to: i64, limit: i64) -> Result<(Vec<Change>, i64), LedgerError> {
        let (ids, total) = match self {
            Self::Sqlite(l) => l.runs_changed(from, to, limit).await?,
            Self::Postgres(l) => l.runs_changed(from, to, limit).await?,
        };
        let mut changes = Vec::with_capacity(ids.len());
        for run_id in ids {
            let before = self.run_as_of(run_id, from).await?;
            let after = self
                .run_as_of(run_id, to)
                .await?
                .ok_or_else(|| LedgerError::Storage(format!("run {run_id} changed but cannot be folded")))?;
            changes.push(Change { run_id, before, after });
        }
        Ok((changes, total))
    }
}

/// SQL both backends share: the runs with events in `($1, $2]`.
pub const RUNS_CHANGED_SQL: &str = "SELECT DISTINCT substr(stream_id, 5) AS id FROM events \
     WHERE position > $1 AND position <= $2 ORDER BY id LIMIT $3";
pub const RUNS_CHANGED_COUNT_SQL: &str =
    "SELECT COUNT(DISTINCT stream_id) FROM events WHERE position > $1 AND position <= $2";
pub const POSITION_AT_SQL: &str = "SELECT COALESCE(MAX(position), 0) FROM events WHERE recorded_at <= $1";

//! Executing one command against a store, written once for both backends:
//! load what the command needs, decide, check every expected version, append,
//! fold the appended events into the runs they belong to, store those runs.
//!
//! Every refusal happens before the first write, which is what lets a batch of
//! commands share one transaction without savepoints.

use std::collections::HashMap;

use runledger_events::{run_stream_id, EventEnvelope, ExpectedVersion, Metadata, NewEvent};
use runledger_projections::{stores_version, DetailRow, EventContext, HistoryVersion, RunState};
use uuid::Uuid;

use crate::commands::{self, Command, CommandError, Decision, Loaded, Outcome};

/// What the executor needs from a backend, inside its write transaction.
pub trait RunStore {
    fn load_run(&mut self, id: Uuid) -> Result<Option<RunState>, String>;
    fn find_unfinished_by_idempotency_key(&mut self, task_name: &str, key: &str) -> Result<Option<RunState>, String>;
    /// The version of the run's stream (0 if it has none).
    fn stream_version(&mut self, run_id: Uuid) -> Result<i64, String>;
    /// Appends to the run's stream; the caller has checked the version.
    fn append(
        &mut self,
        run_id: Uuid,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope>, String>;
    /// Writes the run's projections after one append: `state` is the run
    /// after it, `previous` before it, and `versions` the append's versions
    /// that `run_history` stores (oldest first, each but the last closed by
    /// the next; see `stores_version`), which close the run's open one.
    fn store_run(
        &mut self,
        previous: Option<&RunState>,
        state: &RunState,
        versions: &[HistoryVersion],
    ) -> Result<(), String>;
    /// Writes the detail rows (checkpoints, log lines, lineage…) of one
    /// append's events, in append order.
    fn store_details(&mut self, rows: &[DetailRow]) -> Result<(), String>;
}

#[derive(Debug)]
pub enum ExecError {
    Command(CommandError),
    Storage(String),
}

impl From<CommandError> for ExecError {
    fn from(e: CommandError) -> Self {
        Self::Command(e)
    }
}

fn load(store: &mut impl RunStore, command: &Command) -> Result<Loaded, ExecError> {
    let mut loaded = Loaded::default();
    match command {
        Command::Create(create) => {
            if let Some(key) = &create.idempotency_key {
                loaded.idempotent_match = store
                    .find_unfinished_by_idempotency_key(create.task_name.as_str(), key)
                    .map_err(ExecError::Storage)?;
            }
            for (field, id) in create.references() {
                match store.load_run(id).map_err(ExecError::Storage)? {
                    None => loaded.missing_references.push((field, id)),
                    Some(run) if field == "continuation_of" => loaded.continued = Some(run),
                    Some(_) => {}
                }
            }
        }
        Command::Run(cmd) => loaded.target = store.load_run(cmd.run_id).map_err(ExecError::Storage)?,
    }
    Ok(loaded)
}

pub fn execute(store: &mut impl RunStore, command: &Command, metadata: &Metadata) -> Result<Outcome, ExecError> {
    let loaded = load(store, command)?;
    let (writes, reply) = match commands::decide(command, &loaded)? {
        Decision::Existing(run) => return Ok(Outcome::Existing(run)),
        Decision::Append { writes, reply } => (writes, reply),
    };
    for write in &writes {
        let actual = store.stream_version(write.run_id).map_err(ExecError::Storage)?;
        if !write.expected.admits(actual) {
            let expected = match write.expected {
                ExpectedVersion::Exact(v) => v,
                _ => 0,
            };
            return Err(CommandError::VersionConflict {
                run_id: write.run_id,
                expected,
                actual,
            }
            .into());
        }
    }
    // From here on nothing may refuse: failures are storage failures.
    let mut states: HashMap<Uuid, RunState> = HashMap::new();
    if let Some(target) = loaded.target {
        states.insert(target.id, target);
    }
    let mut details: Vec<DetailRow> = Vec::new();
    for write in writes {
        let new_events: Vec<NewEvent> = write.events.iter().map(|e| e.to_new(Uuid::now_v7())).collect();
        let envelopes = store
            .append(write.run_id, write.expected, &new_events, metadata)
            .map_err(ExecError::Storage)?;
        let previous = states.get(&write.run_id).cloned();
        let state = states
            .entry(write.run_id)
            .or_insert_with(|| RunState::empty(write.run_id));
        let mut versions: Vec<HistoryVersion> = Vec::with_capacity(envelopes.len());
        let first_detail = details.len();
        for (event, envelope) in write.events.iter().zip(&envelopes) {
            let at = EventContext::of(envelope);
            state
                .apply(event, &at)
                .map_err(|r| ExecError::Storage(format!("decided event no longer applies: {r}")))?;
            details.extend(DetailRow::of(state, event, &at).map_err(|e| ExecError::Storage(e.to_string()))?);
            // A version stored no column change ago has the columns of the
            // state just before this event.
            let last_stored = versions.last().map(|v| &v.state).or(previous.as_ref());
            if !stores_version(last_stored, state) {
                continue;
            }
            let at = envelope.recorded_at.as_micros();
            if let Some(before) = versions.last_mut() {
                before.close(envelope.position, at);
            }
            versions.push(HistoryVersion::current(state.clone(), at));
        }
        store
            .store_run(previous.as_ref(), state, &versions)
            .map_err(ExecError::Storage)?;
        store
            .store_details(&details[first_detail..])
            .map_err(ExecError::Storage)?;
    }
    let record = details
        .iter()
        .rev()
        .find_map(DetailRow::record)
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| ExecError::Storage(e.to_string()))?;
    commands::outcome(reply, &states, record)
        .ok_or_else(|| ExecError::Storage("decided run missing after append".into()))
}

/// The stream of a run, as both backends name it.
pub fn stream_of(run_id: Uuid) -> String {
    run_stream_id(&run_id)
}

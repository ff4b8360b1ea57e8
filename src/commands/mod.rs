//! Commands: what executors and operators ask for. `decide` turns a command
//! and the state it was read against into the events to append; it checks
//! legality by applying those events to a copy of the state with
//! `RunState::apply`, so the fold stays the only place that knows the rules.

use std::collections::{BTreeMap, HashMap};

use runledger_events::{
    Empty, EndReason, ExpectedVersion, Reason, RunCheckpointed, RunChunks, RunCreated, RunDebugModeSet, RunEnded,
    RunEvent, RunLogged, RunOutputRecorded, RunRescheduled, RunRetried, RunStarted, RunToolCalled, RunUsageRecorded,
    Timestamp, TriggeredBy,
};
use runledger_projections::{EventContext, Refusal, RefusalKind, RunState};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::TaskName;

#[cfg(test)]
mod tests;

/// `POST /api/runs`, already validated.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateRun {
    pub project: String,
    pub task_name: TaskName,
    pub triggered_by: TriggeredBy,
    pub payload: Option<Value>,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub priority: i64,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub max_attempts: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub expires_at: Option<Timestamp>,
    pub heartbeat_timeout_secs: Option<i64>,
    pub scheduled_at: Option<Timestamp>,
    pub parent_run_id: Option<Uuid>,
    pub continuation_of: Option<Uuid>,
    pub depends_on: Vec<Uuid>,
    pub external_execution_id: Option<String>,
    pub replica_index: i64,
    pub debug_mode: bool,
}

impl CreateRun {
    pub fn new(task_name: TaskName) -> Self {
        Self {
            project: "default".into(),
            task_name,
            triggered_by: TriggeredBy::Api,
            payload: None,
            tags: BTreeMap::new(),
            metadata: BTreeMap::new(),
            priority: 0,
            idempotency_key: None,
            concurrency_key: None,
            max_attempts: None,
            timeout_secs: None,
            expires_at: None,
            heartbeat_timeout_secs: None,
            scheduled_at: None,
            parent_run_id: None,
            continuation_of: None,
            depends_on: Vec::new(),
            external_execution_id: None,
            replica_index: 0,
            debug_mode: false,
        }
    }

    /// Runs this one refers to, which must exist.
    pub fn references(&self) -> Vec<(&'static str, Uuid)> {
        let mut refs = Vec::new();
        if let Some(id) = self.parent_run_id {
            refs.push(("parent_run_id", id));
        }
        if let Some(id) = self.continuation_of {
            refs.push(("continuation_of", id));
        }
        refs.extend(self.depends_on.iter().map(|id| ("depends_on", *id)));
        refs
    }
}

/// How a retry was asked for; recorded on `run.retried`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAction {
    Retry,
    Replay,
    /// A retry of a dead-lettered run that also clears its flag.
    DlqReplay,
    /// Ends the run first (as `stopped`) if it has not ended, then retries it.
    Restart,
    /// A new run of the source's task (`triggered_by: rerun`), from a run in
    /// any phase; the source only gains `run.retried`, naming it.
    Rerun,
}

impl RetryAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Replay => "replay",
            Self::DlqReplay => "dlq_replay",
            Self::Restart => "restart",
            Self::Rerun => "rerun",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Start(RunStarted),
    Heartbeat,
    End(RunEnded),
    Cancel(Reason),
    Pause(Reason),
    Resume(Reason),
    Reschedule(RunRescheduled),
    Delete(Reason),
    Restore(Reason),
    Retry {
        action: RetryAction,
        reason: Option<String>,
        payload: Option<Value>,
    },
    /// The sequence is the run's next one, assigned when deciding.
    Checkpoint {
        source: Option<String>,
        state: Value,
    },
    Log(RunLogged),
    /// LLM output chunks, in order; their indexes follow the run's last one,
    /// assigned when deciding.
    AppendChunks(Vec<String>),
    RecordUsage(RunUsageRecorded),
    RecordToolCall(RunToolCalled),
    RecordOutput(RunOutputRecorded),
    SetDebugMode(RunDebugModeSet),
    /// Frees the run's idempotency key, so a create with it makes a new run.
    ResetIdempotencyKey,
    /// Ends the run as its deadline says (`deadline_reason`), if the
    /// deadline is due at `now`; the ledger's own command (actor `system`).
    EnforceDeadline {
        now: Timestamp,
    },
}

/// A command on one existing run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCommand {
    pub run_id: Uuid,
    /// When set, the command is refused unless the run is at this version.
    pub expected_version: Option<i64>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Create(CreateRun),
    Run(RunCommand),
}

/// What a command needs read before it can decide.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The run a `RunCommand` targets.
    pub target: Option<RunState>,
    /// For a create with an idempotency key: the unfinished run holding it.
    pub idempotent_match: Option<RunState>,
    /// Referenced runs that do not exist.
    pub missing_references: Vec<(&'static str, Uuid)>,
    /// For a create with `continuation_of`: the run it continues.
    pub continued: Option<RunState>,
}

/// Events for one stream, appended only if the stream is still at `expected`.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamWrite {
    pub run_id: Uuid,
    pub expected: ExpectedVersion,
    pub events: Vec<RunEvent>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to append; answer with this run.
    Existing(RunState),
    Append {
        writes: Vec<StreamWrite>,
        reply: Reply,
    },
}

/// Which run(s) the answer is about once the writes are appended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reply {
    Created(Uuid),
    Updated(Uuid),
    /// A detail of the run (checkpoint, log line…) was recorded.
    Recorded(Uuid),
    Retried {
        source: Uuid,
        new_run: Uuid,
        action: RetryAction,
    },
}

/// The result of an executed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Created(RunState),
    /// An idempotent create that matched an unfinished run.
    Existing(RunState),
    Updated(RunState),
    /// The run after recording a detail, and the detail as the API shows it.
    Recorded {
        run: RunState,
        record: Value,
    },
    Retried {
        source: RunState,
        new_run: RunState,
        action: RetryAction,
    },
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("run {0} does not exist")]
    NotFound(Uuid),
    #[error("{0}")]
    Refused(Refusal),
    #[error("run {run_id} is at version {actual}, not {expected}")]
    VersionConflict { run_id: Uuid, expected: i64, actual: i64 },
    #[error("{field} refers to run {run_id}, which does not exist")]
    MissingReference { field: &'static str, run_id: Uuid },
}

impl From<Refusal> for CommandError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// Applies `events` to a copy of `state`, as the store will after appending.
fn check(state: &RunState, events: &[RunEvent]) -> Result<(), Refusal> {
    let mut probe = state.clone();
    let now = Timestamp::now();
    for event in events {
        let at = EventContext {
            position: probe.position + 1,
            stream_version: probe.version + 1,
            recorded_at: now,
            metadata: None,
        };
        probe.apply(event, &at)?;
    }
    Ok(())
}

pub fn decide(command: &Command, loaded: &Loaded) -> Result<Decision, CommandError> {
    match command {
        Command::Create(create) => decide_create(create, loaded),
        Command::Run(cmd) => decide_run(cmd, loaded),
    }
}

fn decide_create(create: &CreateRun, loaded: &Loaded) -> Result<Decision, CommandError> {
    if let Some(existing) = &loaded.idempotent_match {
        return Ok(Decision::Existing(existing.clone()));
    }
    if let Some((field, run_id)) = loaded.missing_references.first() {
        return Err(CommandError::MissingReference { field, run_id: *run_id });
    }
    let run_id = Uuid::now_v7();
    let event = RunEvent::Created(RunCreated {
        run_id,
        project: create.project.clone(),
        task_name: create.task_name.to_string(),
        triggered_by: create.triggered_by,
        payload: create.payload.clone(),
        tags: create.tags.clone(),
        metadata: create.metadata.clone(),
        priority: create.priority,
        idempotency_key: create.idempotency_key.clone(),
        concurrency_key: create.concurrency_key.clone(),
        max_attempts: create.max_attempts,
        timeout_secs: create.timeout_secs,
        expires_at: create.expires_at,
        heartbeat_timeout_secs: create.heartbeat_timeout_secs,
        scheduled_at: create.scheduled_at,
        parent_run_id: create.parent_run_id,
        continuation_of: create.continuation_of,
        depends_on: create.depends_on.clone(),
        external_execution_id: create.external_execution_id.clone(),
        replica_index: create.replica_index,
        debug_mode: create.debug_mode,
        // A continuation is in the lineage of the run it continues, one
        // step further from its root, as a retry is.
        lineage_root: loaded.continued.as_ref().map(|c| c.lineage_root.unwrap_or(c.id)),
        lineage_depth: loaded.continued.as_ref().map_or(0, |c| c.lineage_depth + 1),
        ..RunCreated::default()
    });
    check(&RunState::empty(run_id), std::slice::from_ref(&event))?;
    Ok(Decision::Append {
        writes: vec![StreamWrite {
            run_id,
            expected: ExpectedVersion::NoStream,
            events: vec![event],
        }],
        reply: Reply::Created(run_id),
    })
}

fn decide_run(cmd: &RunCommand, loaded: &Loaded) -> Result<Decision, CommandError> {
    let state = match &loaded.target {
        Some(state) if state.exists() => state,
        _ => return Err(CommandError::NotFound(cmd.run_id)),
    };
    if let Some(expected) = cmd.expected_version {
        if expected != state.version {
            return Err(CommandError::VersionConflict {
                run_id: cmd.run_id,
                expected,
                actual: state.version,
            });
        }
    }
    let expected = ExpectedVersion::Exact(state.version);
    let append = |events: Vec<RunEvent>, reply: Reply| -> Result<Decision, CommandError> {
        check(state, &events)?;
        Ok(Decision::Append {
            writes: vec![StreamWrite {
                run_id: cmd.run_id,
                expected,
                events,
            }],
            reply,
        })
    };
    let updated = |events: Vec<RunEvent>| append(events, Reply::Updated(cmd.run_id));
    let recorded = |event: RunEvent| append(vec![event], Reply::Recorded(cmd.run_id));
    match &cmd.action {
        Action::Start(started) => updated(vec![RunEvent::Started(started.clone())]),
        Action::Heartbeat => updated(vec![RunEvent::Heartbeat(Default::default())]),
        Action::End(ended) => updated(end_events(state, ended.clone())),
        Action::EnforceDeadline { now } => {
            let due = state.deadline_at.zip(state.deadline_reason).filter(|(at, _)| at <= now);
            let Some((at, end_reason)) = due else {
                return Err(CommandError::Refused(Refusal {
                    kind: RefusalKind::IllegalTransition,
                    current_status: Some(state.status),
                    message: format!("run {} has no deadline due at {now}", state.id),
                }));
            };
            let error = match end_reason {
                EndReason::Expired => format!("not started by its expires_at, {at}"),
                EndReason::Crashed => format!(
                    "no heartbeat for {} s (deadline {at})",
                    state.heartbeat_timeout_secs.unwrap_or_default()
                ),
                _ => format!(
                    "still running after its timeout of {} s (deadline {at})",
                    state.timeout_secs.unwrap_or_default()
                ),
            };
            updated(end_events(
                state,
                RunEnded {
                    end_reason,
                    exit_code: None,
                    error: Some(error),
                    result: None,
                    execution_trace: None,
                },
            ))
        }
        Action::Cancel(reason) => updated(vec![RunEvent::Ended(RunEnded {
            end_reason: EndReason::Stopped,
            exit_code: None,
            error: Some(match &reason.reason {
                Some(why) => format!("canceled: {why}"),
                None => "canceled".to_owned(),
            }),
            result: None,
            execution_trace: None,
        })]),
        Action::Pause(reason) => updated(vec![RunEvent::Paused(reason.clone())]),
        Action::Resume(reason) => updated(vec![RunEvent::Resumed(reason.clone())]),
        Action::Reschedule(r) => updated(vec![RunEvent::Rescheduled(r.clone())]),
        Action::Delete(reason) => updated(vec![RunEvent::Deleted(reason.clone())]),
        Action::Restore(reason) => updated(vec![RunEvent::Restored(reason.clone())]),
        Action::Retry {
            action,
            reason,
            payload,
        } => decide_retry(state, expected, *action, reason.clone(), payload.clone()),
        Action::Checkpoint { source, state: saved } => recorded(RunEvent::Checkpointed(RunCheckpointed {
            sequence: state.last_checkpoint_sequence + 1,
            source: source.clone(),
            state: saved.clone(),
        })),
        Action::Log(line) => recorded(RunEvent::Logged(line.clone())),
        Action::AppendChunks(chunks) => updated(vec![RunEvent::Chunks(RunChunks {
            first_index: state.chunks + 1,
            chunks: chunks.clone(),
        })]),
        Action::RecordUsage(usage) => recorded(RunEvent::UsageRecorded(usage.clone())),
        Action::RecordToolCall(call) => recorded(RunEvent::ToolCalled(call.clone())),
        Action::RecordOutput(output) => recorded(RunEvent::OutputRecorded(output.clone())),
        Action::SetDebugMode(set) => updated(vec![RunEvent::DebugModeSet(set.clone())]),
        Action::ResetIdempotencyKey => updated(vec![RunEvent::IdempotencyKeyReset(Empty {})]),
    }
}

/// The end, and the dead-lettering of a failure that used the last attempt.
fn end_events(state: &RunState, ended: RunEnded) -> Vec<RunEvent> {
    let dead_letter =
        ended.end_reason.is_failure() && state.max_attempts.is_some_and(|max| state.retry_attempt + 1 >= max);
    let reason = ended.end_reason;
    let mut events = vec![RunEvent::Ended(ended)];
    if dead_letter {
        events.push(RunEvent::DeadLettered(Reason {
            reason: Some(format!(
                "{reason} after attempt {} of {}",
                state.retry_attempt + 1,
                state.max_attempts.unwrap_or_default()
            )),
        }));
    }
    events
}

/// A retry is a new run; the source only gains `run.retried`. Both streams
/// are written in the same transaction.
fn decide_retry(
    source: &RunState,
    expected: ExpectedVersion,
    action: RetryAction,
    reason: Option<String>,
    payload: Option<Value>,
) -> Result<Decision, CommandError> {
    let new_run = Uuid::now_v7();
    let mut events = Vec::with_capacity(2);
    if action == RetryAction::Restart && source.status != runledger_projections::RunStatus::Ended {
        events.push(RunEvent::Ended(RunEnded {
            end_reason: EndReason::Stopped,
            exit_code: None,
            error: Some(match &reason {
                Some(why) => format!("restarted: {why}"),
                None => "restarted".to_owned(),
            }),
            result: None,
            execution_trace: None,
        }));
    }
    events.push(RunEvent::Retried(RunRetried {
        new_run_id: new_run,
        action: action.as_str().into(),
        reason,
    }));
    check(source, &events)?;
    let mut created = retry_of(source, new_run, payload);
    if action == RetryAction::Rerun {
        created.triggered_by = TriggeredBy::Rerun;
    }
    let created = RunEvent::Created(created);
    Ok(Decision::Append {
        writes: vec![
            StreamWrite {
                run_id: source.id,
                expected,
                events,
            },
            StreamWrite {
                run_id: new_run,
                expected: ExpectedVersion::NoStream,
                events: vec![created],
            },
        ],
        reply: Reply::Retried {
            source: source.id,
            new_run,
            action,
        },
    })
}

/// The new run of a retry: the source's configuration, one attempt later,
/// in the source's lineage.
pub fn retry_of(source: &RunState, new_run: Uuid, payload: Option<Value>) -> RunCreated {
    RunCreated {
        run_id: new_run,
        project: source.project.clone(),
        task_name: source.task_name.clone(),
        triggered_by: TriggeredBy::Retry,
        payload: payload.or_else(|| source.payload.clone()),
        tags: source.tags.clone(),
        metadata: source.metadata.clone(),
        priority: source.priority,
        idempotency_key: None,
        concurrency_key: source.concurrency_key.clone(),
        max_attempts: source.max_attempts,
        timeout_secs: source.timeout_secs,
        // An absolute time the source was created with; a retry is decided
        // later, and would often be born expired.
        expires_at: None,
        heartbeat_timeout_secs: source.heartbeat_timeout_secs,
        scheduled_at: None,
        parent_run_id: source.parent_run_id,
        continuation_of: None,
        depends_on: source.depends_on.clone(),
        external_execution_id: None,
        replica_index: source.replica_index,
        retry_attempt: source.retry_attempt + 1,
        retry_of_run_id: Some(source.id),
        lineage_root: Some(source.lineage_root.unwrap_or(source.id)),
        lineage_depth: source.lineage_depth + 1,
        debug_mode: source.debug_mode,
    }
}

/// Builds the answer from the runs after the append and the API's form of
/// the last detail it recorded, if any.
pub fn outcome(reply: Reply, states: &HashMap<Uuid, RunState>, record: Option<Value>) -> Option<Outcome> {
    Some(match reply {
        Reply::Created(id) => Outcome::Created(states.get(&id)?.clone()),
        Reply::Updated(id) => Outcome::Updated(states.get(&id)?.clone()),
        Reply::Recorded(id) => Outcome::Recorded {
            run: states.get(&id)?.clone(),
            record: record?,
        },
        Reply::Retried {
            source,
            new_run,
            action,
        } => Outcome::Retried {
            source: states.get(&source)?.clone(),
            new_run: states.get(&new_run)?.clone(),
            action,
        },
    })
}

impl CommandError {
    /// A refusal from the fold about a missing run is a 404, not a 409.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_)) || matches!(self, Self::Refused(r) if r.kind == RefusalKind::NotFound)
    }
}

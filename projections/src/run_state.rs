//! `RunState::apply` is the only place that knows what an event does to a
//! run. Commands validate by applying their events to a copy, the runs
//! projection applies stored events, and time travel folds history with it.

use std::collections::BTreeMap;
use std::fmt;

use runledger_events::{EndReason, EventEnvelope, ExecutionTrace, Metadata, RunEvent, Timestamp, TriggeredBy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The phase of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Pending,
    Running,
    Paused,
    Ended,
}

impl RunStatus {
    pub const ALL: &'static [RunStatus] = &[Self::Pending, Self::Running, Self::Paused, Self::Ended];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an event sits in the log, and who appended it; the fold records
/// it on the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventContext<'a> {
    pub position: i64,
    pub stream_version: i64,
    pub recorded_at: Timestamp,
    /// The event's metadata; `None` where it is not known yet (a command
    /// probing whether its events apply), or not read (a replay reads it
    /// for `run.created` only, the one event whose metadata the fold keeps).
    pub metadata: Option<&'a Metadata>,
}

impl<'a> EventContext<'a> {
    pub fn of(envelope: &'a EventEnvelope) -> Self {
        Self {
            position: envelope.position,
            stream_version: envelope.stream_version,
            recorded_at: envelope.recorded_at,
            metadata: Some(&envelope.metadata),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The event needs a run that does not exist.
    NotFound,
    /// `run.created` for a run that exists.
    AlreadyExists,
    /// The run's current state does not allow the event.
    IllegalTransition,
}

/// Why the fold will not apply an event.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub current_status: Option<RunStatus>,
    pub message: String,
}

/// A run: the fold of its stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunState {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub project: String,
    pub task_name: String,
    pub status: RunStatus,
    /// Why the run ended (set when status is `ended`).
    #[schema(value_type = Option<crate::schema::EndReasonSchema>)]
    pub end_reason: Option<EndReason>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    #[schema(value_type = crate::schema::TriggeredBySchema)]
    pub triggered_by: TriggeredBy,
    pub replica_index: i64,
    pub retry_attempt: i64,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub retry_of_run_id: Option<Uuid>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub lineage_root: Option<Uuid>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_run_id: Option<Uuid>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub continuation_of: Option<Uuid>,
    pub lineage_depth: i64,
    /// Who created the run: the actor (token name, `anonymous`, or
    /// `system`) of its `run.created` event.
    #[serde(default)]
    pub created_by: Option<String>,
    /// The bulk operation that created the run (a bulk retry, rerun or
    /// dead-letter replay), from its `run.created` event; null otherwise.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub operation_id: Option<String>,
    /// Step timings the executor reported on start and end, merged (the
    /// end's members win).
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::ExecutionTraceSchema>)]
    pub execution_trace: Option<ExecutionTrace>,
    #[schema(value_type = Vec<String>, format = Uuid)]
    pub depends_on: Vec<Uuid>,
    pub external_execution_id: Option<String>,
    pub payload: Option<Value>,
    pub result: Option<Value>,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub priority: i64,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub max_attempts: Option<i64>,
    pub timeout_secs: Option<i64>,
    /// A run still pending at this time ends `expired`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// A running run with no heartbeat (or start, or resume) for this many
    /// seconds ends `crashed`.
    pub heartbeat_timeout_secs: Option<i64>,
    pub debug_mode: bool,
    /// The sequence of the run's last checkpoint (0: none yet).
    #[serde(default)]
    pub last_checkpoint_sequence: i64,
    /// LLM chunks streamed to the run so far (`POST /api/runs/{id}/chunks`):
    /// the index of its last chunk (0: none yet).
    #[serde(default)]
    pub chunks: i64,
    pub dead_lettered: bool,
    pub deleted: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub heartbeat_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    /// The run's next deadline: when the ledger ends it by itself, unless
    /// an event comes first (the earliest of `expires_at` while pending, the
    /// start plus `timeout_secs`, and the last sign of life plus
    /// `heartbeat_timeout_secs` while running).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deadline_at: Option<Timestamp>,
    /// How the run ends at `deadline_at`: `expired`, `timeout` or `crashed`.
    #[schema(value_type = Option<crate::schema::EndReasonSchema>)]
    pub deadline_reason: Option<EndReason>,
    /// The version of the run's stream: the number of events folded.
    pub version: i64,
    /// The log position of the run's last event.
    pub position: i64,
}

impl RunState {
    /// The fold's starting point: a run with no events. `apply` refuses every
    /// event but `run.created` on it.
    pub fn empty(id: Uuid) -> Self {
        Self {
            id,
            project: String::new(),
            task_name: String::new(),
            status: RunStatus::Pending,
            end_reason: None,
            exit_code: None,
            error: None,
            triggered_by: TriggeredBy::Api,
            replica_index: 0,
            retry_attempt: 0,
            retry_of_run_id: None,
            lineage_root: None,
            parent_run_id: None,
            continuation_of: None,
            lineage_depth: 0,
            created_by: None,
            operation_id: None,
            execution_trace: None,
            depends_on: Vec::new(),
            external_execution_id: None,
            payload: None,
            result: None,
            tags: BTreeMap::new(),
            metadata: BTreeMap::new(),
            priority: 0,
            idempotency_key: None,
            concurrency_key: None,
            max_attempts: None,
            timeout_secs: None,
            expires_at: None,
            heartbeat_timeout_secs: None,
            debug_mode: false,
            last_checkpoint_sequence: 0,
            chunks: 0,
            dead_lettered: false,
            deleted: false,
            deleted_at: None,
            created_at: Timestamp::from_micros(0).expect("the epoch"),
            scheduled_at: None,
            start_at: None,
            heartbeat_at: None,
            end_at: None,
            duration_ms: None,
            deadline_at: None,
            deadline_reason: None,
            version: 0,
            position: 0,
        }
    }

    pub fn exists(&self) -> bool {
        self.version > 0
    }

    fn illegal(&self, what: &str) -> Refusal {
        Refusal {
            kind: RefusalKind::IllegalTransition,
            current_status: Some(self.status),
            message: format!("cannot {what}: run {} is {}", self.id, self.describe_status()),
        }
    }

    fn describe_status(&self) -> String {
        match (self.status, self.end_reason) {
            (RunStatus::Ended, Some(reason)) => format!("ended ({reason})"),
            (status, _) => status.to_string(),
        }
    }

    fn require(&self, allowed: &[RunStatus], what: &str) -> Result<(), Refusal> {
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(self.illegal(what))
        }
    }

    /// Applies one stored event.
    pub fn apply_envelope(&mut self, envelope: &EventEnvelope) -> Result<(), ApplyError> {
        let event = RunEvent::from_envelope(envelope)?;
        self.apply(&event, &EventContext::of(envelope))?;
        Ok(())
    }

    /// The fold. Refuses, and leaves the state untouched, if the event is not
    /// legal in the run's current state.
    pub fn apply(&mut self, event: &RunEvent, at: &EventContext<'_>) -> Result<(), Refusal> {
        use RunStatus::*;
        if let RunEvent::Created(created) = event {
            if self.exists() {
                return Err(Refusal {
                    kind: RefusalKind::AlreadyExists,
                    current_status: Some(self.status),
                    message: format!("run {} already exists", self.id),
                });
            }
            self.create(created, at);
            self.arm_deadline(at.recorded_at);
            self.touch(at);
            return Ok(());
        }
        if !self.exists() {
            return Err(Refusal {
                kind: RefusalKind::NotFound,
                current_status: None,
                message: format!("run {} does not exist", self.id),
            });
        }
        #[cfg(debug_assertions)]
        let before = self.clone();
        match event {
            RunEvent::Created(_) => unreachable!("handled above"),
            RunEvent::Started(started) => {
                self.require(&[Pending], "start")?;
                self.status = Running;
                self.start_at = Some(at.recorded_at);
                self.heartbeat_at = Some(at.recorded_at);
                if let Some(id) = &started.external_execution_id {
                    self.external_execution_id = Some(id.clone());
                }
                if let Some(index) = started.replica_index {
                    self.replica_index = index;
                }
                if let Some(trace) = &started.execution_trace {
                    self.execution_trace = Some(trace.clone());
                }
            }
            RunEvent::Heartbeat(_) => {
                self.require(&[Running, Paused], "heartbeat")?;
                self.heartbeat_at = Some(at.recorded_at);
            }
            RunEvent::Paused(_) => {
                self.require(&[Running], "pause")?;
                self.status = Paused;
            }
            RunEvent::Resumed(_) => {
                self.require(&[Paused], "resume")?;
                self.status = Running;
            }
            RunEvent::Rescheduled(r) => {
                self.require(&[Pending], "reschedule")?;
                self.scheduled_at = Some(r.scheduled_at);
            }
            // A checkpoint is state to resume from, and an output part of
            // the result: both are fixed once the run has ended.
            RunEvent::Checkpointed(c) => {
                self.require(&[Pending, Running, Paused], "checkpoint")?;
                if c.sequence != self.last_checkpoint_sequence + 1 {
                    return Err(self.illegal(&format!(
                        "record checkpoint {} after checkpoint {}",
                        c.sequence, self.last_checkpoint_sequence
                    )));
                }
                self.last_checkpoint_sequence = c.sequence;
            }
            RunEvent::OutputRecorded(_) => self.require(&[Pending, Running, Paused], "record an output")?,
            // A run's output stream: its chunks follow one another with no
            // gap or repeat, and end with the run.
            RunEvent::Chunks(c) => {
                self.require(&[Pending, Running, Paused], "stream chunks")?;
                if c.chunks.is_empty() || c.first_index != self.chunks + 1 {
                    return Err(self.illegal(&format!(
                        "append {} chunks from index {} after chunk {}",
                        c.chunks.len(),
                        c.first_index,
                        self.chunks
                    )));
                }
                self.chunks += c.chunks.len() as i64;
            }
            // Telemetry: log lines, usage and tool calls arrive after the end
            // from buffered shippers, and cost that was incurred must not be
            // lost, so they are taken in any state.
            RunEvent::Logged(_) | RunEvent::UsageRecorded(_) | RunEvent::ToolCalled(_) => {}
            RunEvent::Ended(ended) => {
                self.require(&[Pending, Running, Paused], "end")?;
                self.status = Ended;
                self.end_reason = Some(ended.end_reason);
                self.exit_code = ended.exit_code;
                self.error = ended.error.clone();
                self.result = ended.result.clone();
                self.end_at = Some(at.recorded_at);
                self.duration_ms = self.start_at.map(|start| at.recorded_at.millis_since(&start));
                if let Some(end) = &ended.execution_trace {
                    self.execution_trace = Some(merge_trace(self.execution_trace.take(), end));
                }
            }
            RunEvent::DeadLettered(_) => {
                let failed = self.end_reason.is_some_and(|r| r.is_failure());
                if self.status != Ended || !failed || self.dead_lettered {
                    return Err(self.illegal("dead-letter"));
                }
                self.dead_lettered = true;
            }
            RunEvent::Deleted(_) => {
                if self.deleted {
                    return Err(self.illegal("delete a deleted run"));
                }
                self.deleted = true;
                self.deleted_at = Some(at.recorded_at);
            }
            RunEvent::Restored(_) => {
                if !self.deleted {
                    return Err(self.illegal("restore a run that is not deleted"));
                }
                self.deleted = false;
                self.deleted_at = None;
            }
            RunEvent::Retried(retried) => {
                // A rerun starts the task again from a run in any phase.
                if retried.action != "rerun" {
                    self.require(&[Ended], "retry an unfinished run")?;
                }
                if retried.action == "dlq_replay" {
                    if !self.dead_lettered {
                        return Err(self.illegal("replay a run that is not dead-lettered"));
                    }
                    self.dead_lettered = false;
                }
            }
            RunEvent::DebugModeSet(set) => self.debug_mode = set.enabled,
            RunEvent::IdempotencyKeyReset(_) => {
                if self.idempotency_key.is_none() {
                    return Err(self.illegal("reset an idempotency key that is not set"));
                }
                self.idempotency_key = None;
            }
        }
        if matches!(
            event,
            RunEvent::Started(_)
                | RunEvent::Heartbeat(_)
                | RunEvent::Paused(_)
                | RunEvent::Resumed(_)
                | RunEvent::Ended(_)
        ) {
            self.arm_deadline(at.recorded_at);
        }
        self.touch(at);
        #[cfg(debug_assertions)]
        debug_assert!(
            crate::RunChanges::only_changes_differ(&before, self),
            "{} changed a field RunChanges does not hold: history could not restore it",
            event.event_type()
        );
        Ok(())
    }

    /// Sets the next deadline from the run's phase, after an event at `at`
    /// that is a sign of life (a start, heartbeat or resume restarts the
    /// heartbeat clock). A timeout counts from the start, paused time
    /// included; a paused run is not expected to heartbeat. On a tie the
    /// timeout is the reason.
    fn arm_deadline(&mut self, at: Timestamp) {
        let after = |from: Option<Timestamp>, secs: Option<i64>, reason: EndReason| {
            from.zip(secs)
                .and_then(|(from, secs)| from.plus_secs(secs))
                .map(|t| (t, reason))
        };
        let next = match self.status {
            RunStatus::Pending => self.expires_at.map(|t| (t, EndReason::Expired)),
            RunStatus::Running => [
                after(self.start_at, self.timeout_secs, EndReason::Timeout),
                after(Some(at), self.heartbeat_timeout_secs, EndReason::Crashed),
            ]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t),
            RunStatus::Paused => after(self.start_at, self.timeout_secs, EndReason::Timeout),
            RunStatus::Ended => None,
        };
        self.deadline_at = next.map(|(t, _)| t);
        self.deadline_reason = next.map(|(_, r)| r);
    }

    fn touch(&mut self, at: &EventContext<'_>) {
        self.version = at.stream_version;
        self.position = at.position;
    }

    fn create(&mut self, c: &runledger_events::RunCreated, at: &EventContext<'_>) {
        *self = Self {
            id: c.run_id,
            project: c.project.clone(),
            task_name: c.task_name.clone(),
            triggered_by: c.triggered_by,
            replica_index: c.replica_index,
            retry_attempt: c.retry_attempt,
            retry_of_run_id: c.retry_of_run_id,
            lineage_root: Some(c.lineage_root.unwrap_or(c.run_id)),
            parent_run_id: c.parent_run_id,
            continuation_of: c.continuation_of,
            lineage_depth: c.lineage_depth,
            created_by: at.metadata.map(|m| m.actor.clone()),
            operation_id: at.metadata.and_then(|m| m.operation_id.clone()),
            depends_on: c.depends_on.clone(),
            external_execution_id: c.external_execution_id.clone(),
            payload: c.payload.clone(),
            tags: c.tags.clone(),
            metadata: c.metadata.clone(),
            priority: c.priority,
            idempotency_key: c.idempotency_key.clone(),
            concurrency_key: c.concurrency_key.clone(),
            max_attempts: c.max_attempts,
            timeout_secs: c.timeout_secs,
            expires_at: c.expires_at,
            heartbeat_timeout_secs: c.heartbeat_timeout_secs,
            debug_mode: c.debug_mode,
            created_at: at.recorded_at,
            scheduled_at: c.scheduled_at,
            ..Self::empty(c.run_id)
        };
    }
}

/// The start's trace with the end's members over it.
fn merge_trace(start: Option<ExecutionTrace>, end: &ExecutionTrace) -> ExecutionTrace {
    let start = start.unwrap_or_default();
    let pick = |s: Option<i64>, e: Option<i64>| e.or(s);
    ExecutionTrace {
        queue_wait_ms: pick(start.queue_wait_ms, end.queue_wait_ms),
        dequeue_ms: pick(start.dequeue_ms, end.dequeue_ms),
        connect_ms: pick(start.connect_ms, end.connect_ms),
        ttfb_ms: pick(start.ttfb_ms, end.ttfb_ms),
        transfer_ms: pick(start.transfer_ms, end.transfer_ms),
        total_ms: pick(start.total_ms, end.total_ms),
        dispatch_ms: pick(start.dispatch_ms, end.dispatch_ms),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Decode(#[from] runledger_events::DecodeError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

#[cfg(test)]
#[path = "run_state_tests.rs"]
mod tests;

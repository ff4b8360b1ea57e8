//! What a run's events after `run.created` can change. `run_history` stores
//! only this part of each version; the rest of a run is fixed when it is
//! created, so a past version is the run's current state with the version's
//! changes put back. A run with a large payload and a thousand heartbeats
//! keeps one copy of the payload, not a thousand, and a rebuild writes a
//! fraction of the bytes.

use std::borrow::Cow;

use runledger_events::{EndReason, ExecutionTrace, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{RunState, RunStatus};

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The fields of `RunState` that `RunState::apply` changes after creation.
/// Defaults are left out of the JSON and come back as defaults, so every
/// field is restored, including those a version does not name.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunChanges<'a> {
    status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    replica_index: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_execution_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "is_zero")]
    last_checkpoint_sequence: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    chunks: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    dead_lettered: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_false")]
    debug_mode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execution_trace: Option<Cow<'a, ExecutionTrace>>,
    version: i64,
    position: i64,
}

impl<'a> RunChanges<'a> {
    pub fn of(s: &'a RunState) -> Self {
        Self {
            status: s.status,
            end_reason: s.end_reason,
            exit_code: s.exit_code,
            error: s.error.as_deref().map(Cow::Borrowed),
            result: s.result.as_ref().map(Cow::Borrowed),
            replica_index: s.replica_index,
            external_execution_id: s.external_execution_id.as_deref().map(Cow::Borrowed),
            scheduled_at: s.scheduled_at,
            last_checkpoint_sequence: s.last_checkpoint_sequence,
            chunks: s.chunks,
            dead_lettered: s.dead_lettered,
            deleted: s.deleted,
            deleted_at: s.deleted_at,
            idempotency_key: s.idempotency_key.as_deref().map(Cow::Borrowed),
            debug_mode: s.debug_mode,
            start_at: s.start_at,
            heartbeat_at: s.heartbeat_at,
            end_at: s.end_at,
            duration_ms: s.duration_ms,
            deadline_at: s.deadline_at,
            deadline_reason: s.deadline_reason,
            execution_trace: s.execution_trace.as_ref().map(Cow::Borrowed),
            version: s.version,
            position: s.position,
        }
    }

    /// The JSON `run_history` stores for the version `s`.
    pub fn json(s: &RunState) -> Result<String, serde_json::Error> {
        serde_json::to_string(&RunChanges::of(s))
    }

    /// The version whose changes are `changes` (as `json` wrote them), from
    /// the run's current state.
    pub fn restore(current: RunState, changes: &str) -> Result<RunState, serde_json::Error> {
        let c: RunChanges<'_> = serde_json::from_str(changes)?;
        Ok(c.put_back(current))
    }

    /// A row of a query of states: the run's `state` and, for a past
    /// version, its `changes` (see `HISTORY_STATE`).
    pub fn decode(state: &str, changes: Option<&str>) -> Result<RunState, serde_json::Error> {
        let current = crate::read_state(state)?;
        match changes {
            Some(changes) => Self::restore(current, changes),
            None => Ok(current),
        }
    }

    /// `state` with these changes in place of its own.
    fn put_back(self, state: RunState) -> RunState {
        RunState {
            status: self.status,
            end_reason: self.end_reason,
            exit_code: self.exit_code,
            error: self.error.map(Cow::into_owned),
            result: self.result.map(Cow::into_owned),
            replica_index: self.replica_index,
            external_execution_id: self.external_execution_id.map(Cow::into_owned),
            scheduled_at: self.scheduled_at,
            last_checkpoint_sequence: self.last_checkpoint_sequence,
            chunks: self.chunks,
            dead_lettered: self.dead_lettered,
            deleted: self.deleted,
            deleted_at: self.deleted_at,
            idempotency_key: self.idempotency_key.map(Cow::into_owned),
            debug_mode: self.debug_mode,
            start_at: self.start_at,
            heartbeat_at: self.heartbeat_at,
            end_at: self.end_at,
            duration_ms: self.duration_ms,
            deadline_at: self.deadline_at,
            deadline_reason: self.deadline_reason,
            execution_trace: self.execution_trace.map(Cow::into_owned),
            version: self.version,
            position: self.position,
            ..state
        }
    }

    /// Whether `before` and `after` differ only in what `RunChanges` holds:
    /// `RunState::apply` checks it of every event in debug builds, so a new
    /// field that events change cannot be left out of history unnoticed.
    pub fn only_changes_differ(before: &RunState, after: &RunState) -> bool {
        RunChanges::of(before).put_back(after.clone()) == *before
    }
}

#[cfg(test)]
mod tests {
    use runledger_events::{
        Empty, Reason, RunCheckpointed, RunChunks, RunCreated, RunDebugModeSet, RunEnded, RunEvent, RunLogged,
        RunOutputRecorded, RunRescheduled, RunRetried, RunStarted,
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::EventContext;

    /// A run through every kind of event, with every field away from its
    /// default somewhere; each version as it was.
    fn versions() -> Vec<RunState> {
        let id = Uuid::now_v7();
        let at = |micros: i64| Timestamp::from_micros(micros).unwrap();
        let events = vec![
            RunEvent::Created(RunCreated {
                run_id: id,
                project: "billing".into(),
                task_name: "invoice".into(),
                payload: Some(json!({"customer": 7, "lines": [1, 2, 3]})),
                tags: [("env".to_owned(), "prod".to_owned())].into(),
                metadata: [("team".to_owned(), "core".to_owned())].into(),
                priority: 5,
                idempotency_key: Some("inv-7".into()),
                concurrency_key: Some("customer-7".into()),
                max_attempts: Some(3),
                timeout_secs: Some(60),
                expires_at: Some(at(900_000_000)),
                heartbeat_timeout_secs: Some(30),
                depends_on: vec![Uuid::now_v7()],
                ..Default::default()
            }),
            RunEvent::Rescheduled(RunRescheduled {
                scheduled_at: at(5_000_000),
                reason: None,
            }),
            RunEvent::DebugModeSet(RunDebugModeSet { enabled: true }),
            RunEvent::Started(RunStarted {
                external_execution_id: Some("pod-1".into()),
                replica_index: Some(2),
                execution_trace: Some(runledger_events::ExecutionTrace {
                    queue_wait_ms: Some(40),
                    ..Default::default()
                }),
            }),
            RunEvent::Heartbeat(Empty {}),
            RunEvent::Checkpointed(RunCheckpointed {
                sequence: 1,
                source: None,
                state: json!({"page": 4}),
            }),
            RunEvent::Chunks(RunChunks {
                first_index: 1,
                chunks: vec!["Hel".into(), "lo".into()],
            }),
            RunEvent::Paused(Reason::default()),
            RunEvent::Resumed(Reason::default()),
            RunEvent::OutputRecorded(RunOutputRecorded {
                output_key: "pdf".into(),
                schema: None,
                value: json!("s3://x"),
            }),
            RunEvent::Ended(RunEnded {
                end_reason: EndReason::Failed,
                exit_code: Some(3),
                error: Some("printer on fire".into()),
                result: Some(json!({"partial": true})),
                execution_trace: Some(runledger_events::ExecutionTrace {
                    total_ms: Some(900),
                    ..Default::default()
                }),
            }),
            RunEvent::Logged(RunLogged {
                level: "info".into(),
                log_type: None,
                message: "late line".into(),
                data: None,
            }),
            RunEvent::DeadLettered(Reason::default()),
            RunEvent::Retried(RunRetried {
                new_run_id: Uuid::now_v7(),
                action: "dlq_replay".into(),
                reason: None,
            }),
            RunEvent::IdempotencyKeyReset(Empty {}),
            RunEvent::Deleted(Reason::default()),
            RunEvent::Restored(Reason::default()),
            RunEvent::Deleted(Reason::default()),
        ];
        let mut state = RunState::empty(id);
        let mut out = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let v = i as i64 + 1;
            let ctx = EventContext {
                position: 10 * v,
                stream_version: v,
                recorded_at: at(v * 1_000_000),
                metadata: None,
            };
            state
                .apply(event, &ctx)
                .unwrap_or_else(|e| panic!("{}: {e}", event.event_type()));
            out.push(state.clone());
        }
        out
    }

    #[test]
    fn every_version_is_restored_from_the_current_state_and_its_changes() {
        let versions = versions();
        let current = versions.last().unwrap().clone();
        for version in &versions {
            let json = RunChanges::json(version).unwrap();
            let restored = RunChanges::restore(current.clone(), &json).unwrap();
            assert_eq!(&restored, version, "version {} from {json}", version.version);
            let row = serde_json::to_string(&restored).unwrap();
            assert_eq!(
                RunChanges::decode(&serde_json::to_string(&current).unwrap(), Some(&json)).unwrap(),
                *version
            );
            assert_eq!(RunChanges::decode(&row, None).unwrap(), *version);
        }
    }

    #[test]
    fn changes_leave_out_what_creation_fixed_and_every_default() {
        let versions = versions();
        let first = RunChanges::json(&versions[0]).unwrap();
        for fixed in [
            "payload",
            "customer",
            "tags",
            "metadata",
            "billing",
            "invoice",
            "depends_on",
        ] {
            assert!(!first.contains(fixed), "{fixed} in {first}");
        }
        for default in ["end_reason", "deleted", "dead_lettered", "null", "debug_mode"] {
            assert!(!first.contains(default), "{default} in {first}");
        }
        assert!(first.contains(r#""idempotency_key":"inv-7""#), "{first}");
        let whole = serde_json::to_string(&versions[0]).unwrap();
        assert!(
            first.len() * 4 < whole.len(),
            "{} bytes of changes, {} of state",
            first.len(),
            whole.len()
        );
    }

    #[test]
    fn a_change_to_a_fixed_field_is_noticed() {
        let versions = versions();
        let before = &versions[3];
        let mut after = versions[4].clone();
        assert!(RunChanges::only_changes_differ(before, &after));
        after.priority += 1;
        assert!(!RunChanges::only_changes_differ(before, &after));
    }
}

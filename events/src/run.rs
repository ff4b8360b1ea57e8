//! The run event vocabulary: what executors and operators can say happened.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{upcast, EventEnvelope, NewEvent, Timestamp};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The accepted spellings, for error messages.
            pub fn allowed() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Why a run ended.
    EndReason {
        Success = "success",
        Failed = "failed",
        Stopped = "stopped",
        Timeout = "timeout",
        Crashed = "crashed",
        Skipped = "skipped",
        LogOverflow = "log_overflow",
        Expired = "expired",
    }
);

impl EndReason {
    /// Ends that count against a run's attempts and can dead-letter it.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed | Self::Timeout | Self::Crashed)
    }
}

string_enum!(
    /// What caused a run to be created.
    #[derive(Default)]
    TriggeredBy {
        Cron = "cron",
        #[default]
        Api = "api",
        Cloud = "cloud",
        Service = "service",
        Startup = "startup",
        Manual = "manual",
        Spawn = "spawn",
        Workflow = "workflow",
        Event = "event",
        Retry = "retry",
        Rerun = "rerun",
    }
);

fn is_false(b: &bool) -> bool {
    !*b
}

/// `run.created`: everything a run is born with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCreated {
    pub run_id: Uuid,
    pub project: String,
    pub task_name: String,
    pub triggered_by: TriggeredBy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<i64>,
    /// A run still pending at this time ends `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A running run with no heartbeat (or start) for this long ends `crashed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_of: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
    #[serde(default)]
    pub replica_index: i64,
    #[serde(default)]
    pub retry_attempt: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of_run_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage_root: Option<Uuid>,
    #[serde(default)]
    pub lineage_depth: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug_mode: bool,
}

/// How long the steps of an execution took, as the executor measured them
/// (milliseconds, each optional). Reported on `run.started` and
/// `run.ended`; the run shows both merged, the end's members winning. The
/// API refuses members it does not know; the log's reader ignores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionTrace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dequeue_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_ms: Option<i64>,
}

impl ExecutionTrace {
    /// The members, in the order of the struct.
    pub const MEMBERS: &'static [&'static str] = &[
        "queue_wait_ms",
        "dequeue_ms",
        "connect_ms",
        "ttfb_ms",
        "transfer_ms",
        "total_ms",
        "dispatch_ms",
    ];

    /// The member named `name`, for parsers.
    pub fn member_mut(&mut self, name: &str) -> Option<&mut Option<i64>> {
        Some(match name {
            "queue_wait_ms" => &mut self.queue_wait_ms,
            "dequeue_ms" => &mut self.dequeue_ms,
            "connect_ms" => &mut self.connect_ms,
            "ttfb_ms" => &mut self.ttfb_ms,
            "transfer_ms" => &mut self.transfer_ms,
            "total_ms" => &mut self.total_ms,
            "dispatch_ms" => &mut self.dispatch_ms,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_trace: Option<ExecutionTrace>,
}

/// Events that carry nothing but an optional human reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRescheduled {
    pub scheduled_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    pub end_reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_trace: Option<ExecutionTrace>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRetried {
    pub new_run_id: Uuid,
    /// `retry`, `replay`, `rerun` or `dlq_replay`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCheckpointed {
    pub sequence: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub state: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunLogged {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_type: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunUsageRecorded {
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_microusd: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunToolCalled {
    pub tool_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutputRecorded {
    pub output_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    pub value: Value,
}

/// `run.chunks`: a run's LLM output chunks, in order — one or more requests'
/// chunks coalesced over a short window into one event. `chunks[0]` is the
/// run's chunk `first_index` (1-based), the next one `first_index + 1`, …
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunChunks {
    pub first_index: i64,
    pub chunks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDebugModeSet {
    pub enabled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Every event a run's stream can hold. The serde tag is the stored `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RunEvent {
    #[serde(rename = "run.created")]
    Created(RunCreated),
    #[serde(rename = "run.started")]
    Started(RunStarted),
    #[serde(rename = "run.heartbeat")]
    Heartbeat(Empty),
    #[serde(rename = "run.paused")]
    Paused(Reason),
    #[serde(rename = "run.resumed")]
    Resumed(Reason),
    #[serde(rename = "run.rescheduled")]
    Rescheduled(RunRescheduled),
    #[serde(rename = "run.checkpointed")]
    Checkpointed(RunCheckpointed),
    #[serde(rename = "run.logged")]
    Logged(RunLogged),
    #[serde(rename = "run.usage_recorded")]
    UsageRecorded(RunUsageRecorded),
    #[serde(rename = "run.tool_called")]
    ToolCalled(RunToolCalled),
    #[serde(rename = "run.output_recorded")]
    OutputRecorded(RunOutputRecorded),
    #[serde(rename = "run.ended")]
    Ended(RunEnded),
    #[serde(rename = "run.dead_lettered")]
    DeadLettered(Reason),
    #[serde(rename = "run.deleted")]
    Deleted(Reason),
    #[serde(rename = "run.restored")]
    Restored(Reason),
    #[serde(rename = "run.retried")]
    Retried(RunRetried),
    #[serde(rename = "run.debug_mode_set")]
    DebugModeSet(RunDebugModeSet),
    #[serde(rename = "run.idempotency_key_reset")]
    IdempotencyKeyReset(Empty),
    #[serde(rename = "run.chunks")]
    Chunks(RunChunks),
}

/// Every event type name, in the order of the vocabulary.
pub const RUN_EVENT_TYPES: &[&str] = &[
    "run.created",
    "run.started",
    "run.heartbeat",
    "run.paused",
    "run.resumed",
    "run.rescheduled",
    "run.checkpointed",
    "run.logged",
    "run.usage_recorded",
    "run.tool_called",
    "run.output_recorded",
    "run.ended",
    "run.dead_lettered",
    "run.deleted",
    "run.restored",
    "run.retried",
    "run.debug_mode_set",
    "run.idempotency_key_reset",
    "run.chunks",
];

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Upcast(#[from] upcast::UpcastError),
    #[error("event {event_type} does not match its schema: {source}")]
    Shape {
        event_type: String,
        source: serde_json::Error,
    },
}

impl RunEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created(_) => "run.created",
            Self::Started(_) => "run.started",
            Self::Heartbeat(_) => "run.heartbeat",
            Self::Paused(_) => "run.paused",
            Self::Resumed(_) => "run.resumed",
            Self::Rescheduled(_) => "run.rescheduled",
            Self::Checkpointed(_) => "run.checkpointed",
            Self::Logged(_) => "run.logged",
            Self::UsageRecorded(_) => "run.usage_recorded",
            Self::ToolCalled(_) => "run.tool_called",
            Self::OutputRecorded(_) => "run.output_recorded",
            Self::Ended(_) => "run.ended",
            Self::DeadLettered(_) => "run.dead_lettered",
            Self::Deleted(_) => "run.deleted",
            Self::Restored(_) => "run.restored",
            Self::Retried(_) => "run.retried",
            Self::DebugModeSet(_) => "run.debug_mode_set",
            Self::IdempotencyKeyReset(_) => "run.idempotency_key_reset",
            Self::Chunks(_) => "run.chunks",
        }
    }

    /// The event as it is appended, at the current schema version of its type.
    pub fn to_new(&self, event_id: Uuid) -> NewEvent {
        let mut tagged = serde_json::to_value(self).expect("run events always serialize");
        let data = tagged
            .as_object_mut()
            .and_then(|o| o.remove("data"))
            .unwrap_or_else(|| Value::Object(Default::default()));
        let event_type = self.event_type();
        NewEvent {
            event_id,
            event_type: event_type.to_owned(),
            schema_version: upcast::current_version(event_type),
            data,
        }
    }

    /// Reads a stored event, upcasting older schema versions first.
    pub fn decode(event_type: &str, schema_version: i32, data: &Value) -> Result<Self, DecodeError> {
        if schema_version == upcast::current_version(event_type) {
            return Self::from_current(event_type, data);
        }
        let data = upcast::upcast(event_type, schema_version, data.clone())?;
        Self::from_current(event_type, &data)
    }

    /// Reads a stored event from its stored data text; events at the
    /// current schema version are decoded without an intermediate `Value`.
    pub fn decode_text(event_type: &str, schema_version: i32, data: &str) -> Result<Self, DecodeError> {
        if schema_version == upcast::current_version(event_type) {
            let mut de = serde_json::Deserializer::from_str(data);
            return Self::from_current(event_type, &mut de);
        }
        let value: Value = serde_json::from_str(data).map_err(|source| DecodeError::Shape {
            event_type: event_type.to_owned(),
            source,
        })?;
        Self::decode(event_type, schema_version, &value)
    }

    /// Deserializes the variant named by `event_type` from `data`.
    fn from_current<'de, D>(event_type: &str, data: D) -> Result<Self, DecodeError>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        fn de<'de, T: Deserialize<'de>, D: serde::Deserializer<'de, Error = serde_json::Error>>(
            data: D,
        ) -> Result<T, serde_json::Error> {
            T::deserialize(data)
        }
        let shape = |source| DecodeError::Shape {
            event_type: event_type.to_owned(),
            source,
        };
        Ok(match event_type {
            "run.created" => Self::Created(de(data).map_err(shape)?),
            "run.started" => Self::Started(de(data).map_err(shape)?),
            "run.heartbeat" => Self::Heartbeat(de(data).map_err(shape)?),
            "run.paused" => Self::Paused(de(data).map_err(shape)?),
            "run.resumed" => Self::Resumed(de(data).map_err(shape)?),
            "run.rescheduled" => Self::Rescheduled(de(data).map_err(shape)?),
            "run.checkpointed" => Self::Checkpointed(de(data).map_err(shape)?),
            "run.logged" => Self::Logged(de(data).map_err(shape)?),
            "run.usage_recorded" => Self::UsageRecorded(de(data).map_err(shape)?),
            "run.tool_called" => Self::ToolCalled(de(data).map_err(shape)?),
            "run.output_recorded" => Self::OutputRecorded(de(data).map_err(shape)?),
            "run.ended" => Self::Ended(de(data).map_err(shape)?),
            "run.dead_lettered" => Self::DeadLettered(de(data).map_err(shape)?),
            "run.deleted" => Self::Deleted(de(data).map_err(shape)?),
            "run.restored" => Self::Restored(de(data).map_err(shape)?),
            "run.retried" => Self::Retried(de(data).map_err(shape)?),
            "run.debug_mode_set" => Self::DebugModeSet(de(data).map_err(shape)?),
            "run.idempotency_key_reset" => Self::IdempotencyKeyReset(de(data).map_err(shape)?),
            "run.chunks" => Self::Chunks(de(data).map_err(shape)?),
            other => return Err(upcast::UpcastError::UnknownType(other.to_owned()).into()),
        })
    }

    pub fn from_envelope(envelope: &EventEnvelope) -> Result<Self, DecodeError> {
        Self::decode(&envelope.event_type, envelope.schema_version, &envelope.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let events = [
            RunEvent::Created(RunCreated {
                run_id: Uuid::now_v7(),
                project: "default".into(),
                task_name: "nightly".into(),
                triggered_by: TriggeredBy::Cron,
                tags: [("env".to_string(), "prod".to_string())].into(),
                ..Default::default()
            }),
            RunEvent::Heartbeat(Empty {}),
            RunEvent::Ended(RunEnded {
                end_reason: EndReason::Failed,
                exit_code: Some(2),
                error: Some("boom".into()),
                result: None,
                execution_trace: None,
            }),
        ];
        for event in events {
            let new = event.to_new(Uuid::now_v7());
            assert_eq!(new.event_type, event.event_type());
            assert!(new.data.is_object());
            let back = RunEvent::decode(&new.event_type, new.schema_version, &new.data).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn every_type_name_is_listed() {
        for name in RUN_EVENT_TYPES {
            assert!(upcast::current_version(name) >= 1);
        }
        assert_eq!(RUN_EVENT_TYPES.len(), 19);
    }

    #[test]
    fn string_enums_parse_their_own_spelling_only() {
        for r in EndReason::ALL {
            assert_eq!(r.as_str().parse::<EndReason>(), Ok(*r));
        }
        assert!("FAILED".parse::<EndReason>().is_err());
        assert!(TriggeredBy::allowed().contains("rerun"));
    }
}

//! Reading the log for followers and auditors: each event with the task and
//! project of its run, and the one implementation of the log filters.

use runledger_events::EventEnvelope;
use uuid::Uuid;

/// An event as followers see it: with its run's task and project.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub envelope: EventEnvelope,
    pub task_name: Option<String>,
    pub project: Option<String>,
}

/// The filters of `GET /api/events` and the SSE streams. A filter that is
/// not set matches everything; `types` matches any of its values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogFilter {
    pub types: Vec<String>,
    pub run_id: Option<Uuid>,
    pub task_name: Option<String>,
    pub project: Option<String>,
    pub actor: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, entry: &LogEntry) -> bool {
        let e = &entry.envelope;
        (self.types.is_empty() || self.types.contains(&e.event_type))
            && self
                .run_id
                .is_none_or(|id| e.stream_id.strip_prefix("run-") == Some(id.to_string().as_str()))
            && self
                .task_name
                .as_ref()
                .is_none_or(|t| entry.task_name.as_ref() == Some(t))
            && self.project.as_ref().is_none_or(|p| entry.project.as_ref() == Some(p))
            && self.actor.as_ref().is_none_or(|a| e.metadata.actor == *a)
    }
}

/// Events after `$1`, in position order, at most `$2`, each with its run's
/// task and project (both dialects).
pub const LOG_PAGE_SQL: &str = "SELECT e.position, e.event_id, e.stream_id, e.stream_version, e.event_type, \
     e.schema_version, e.data, e.metadata, e.recorded_at, e.prev_hash, e.hash, r.task_name, r.project \
     FROM events e LEFT JOIN runs r ON r.id = substr(e.stream_id, 5) \
     WHERE e.position > $1 ORDER BY e.position LIMIT $2";

#[cfg(test)]
mod tests {
    use super::*;
    use runledger_events::{Metadata, Timestamp};

    fn entry(event_type: &str, run: Uuid, task: &str, actor: &str) -> LogEntry {
        LogEntry {
            envelope: EventEnvelope {
                position: 1,
                event_id: Uuid::now_v7(),
                stream_id: format!("run-{run}"),
                stream_version: 1,
                event_type: event_type.into(),
                schema_version: 1,
                data: serde_json::json!({}),
                metadata: Metadata::actor(actor),
                recorded_at: Timestamp::now(),
                prev_hash: String::new(),
                hash: String::new(),
            },
            task_name: Some(task.into()),
            project: Some("default".into()),
        }
    }

    #[test]
    fn every_filter_must_match() {
        let run = Uuid::now_v7();
        let e = entry("run.started", run, "etl", "ops");
        assert!(LogFilter::default().matches(&e));
        let f = LogFilter {
            types: vec!["run.created".into(), "run.started".into()],
            run_id: Some(run),
            task_name: Some("etl".into()),
            project: Some("default".into()),
            actor: Some("ops".into()),
        };
        assert!(f.matches(&e));
        assert!(!LogFilter {
            types: vec!["run.ended".into()],
            ..f.clone()
        }
        .matches(&e));
        assert!(!LogFilter {
            run_id: Some(Uuid::now_v7()),
            ..f.clone()
        }
        .matches(&e));
        assert!(!LogFilter {
            task_name: Some("other".into()),
            ..f.clone()
        }
        .matches(&e));
        assert!(!LogFilter {
            project: Some("other".into()),
            ..f.clone()
        }
        .matches(&e));
        assert!(!LogFilter {
            actor: Some("bob".into()),
            ..f
        }
        .matches(&e));
    }
}

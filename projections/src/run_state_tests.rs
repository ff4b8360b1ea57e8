//! Given these events, when this event, then this state or this refusal.

use super::*;
use runledger_events::{Empty, Reason, RunCreated, RunEnded, RunRetried, RunStarted};

fn at(version: i64, micros: i64) -> EventContext<'static> {
    EventContext {
        position: 100 + version,
        stream_version: version,
        recorded_at: Timestamp::from_micros(micros).unwrap(),
        metadata: None,
    }
}

fn created(id: Uuid) -> RunEvent {
    RunEvent::Created(RunCreated {
        run_id: id,
        project: "default".into(),
        task_name: "nightly-report".into(),
        max_attempts: Some(3),
        ..Default::default()
    })
}

fn ended(reason: EndReason, code: i64) -> RunEvent {
    RunEvent::Ended(RunEnded {
        end_reason: reason,
        exit_code: Some(code),
        error: None,
        result: None,
        execution_trace: None,
    })
}

fn given(events: &[RunEvent]) -> RunState {
    let id = Uuid::now_v7();
    let mut state = RunState::empty(id);
    for (i, event) in events.iter().enumerate() {
        let event = match event {
            RunEvent::Created(_) => created(id),
            other => other.clone(),
        };
        let v = i as i64 + 1;
        state.apply(&event, &at(v, v * 1_000_000)).expect("given events apply");
    }
    state
}

fn when(state: &RunState, event: RunEvent) -> Result<RunState, Refusal> {
    let mut next = state.clone();
    let v = state.version + 1;
    next.apply(&event, &at(v, v * 1_000_000)).map(|()| next)
}

fn placeholder() -> RunEvent {
    created(Uuid::nil())
}

fn started() -> RunEvent {
    RunEvent::Started(RunStarted::default())
}

#[test]
fn created_run_is_pending_with_its_own_lineage_root() {
    let s = given(&[placeholder()]);
    assert!(s.exists());
    assert_eq!(s.status, RunStatus::Pending);
    assert_eq!(s.lineage_root, Some(s.id));
    assert_eq!(s.version, 1);
    assert_eq!(s.position, 101);
    assert_eq!(s.created_at.as_micros(), 1_000_000);
}

#[test]
fn start_then_end_records_times_and_duration() {
    let s = given(&[placeholder(), started()]);
    assert_eq!(s.status, RunStatus::Running);
    let s = when(&s, ended(EndReason::Success, 0)).unwrap();
    assert_eq!(s.status, RunStatus::Ended);
    assert_eq!(s.end_reason, Some(EndReason::Success));
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.duration_ms, Some(1_000));
    assert_eq!(s.version, 3);
}

#[test]
fn events_on_a_missing_run_are_refused() {
    let empty = RunState::empty(Uuid::now_v7());
    let refusal = when(&empty, started()).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::NotFound);
}

#[test]
fn created_twice_is_refused() {
    let s = given(&[placeholder()]);
    let refusal = when(&s, created(s.id)).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::AlreadyExists);
}

#[test]
fn illegal_transitions_name_the_current_status_and_change_nothing() {
    let pending = given(&[placeholder()]);
    let done = given(&[placeholder(), started(), ended(EndReason::Failed, 1)]);
    let cases = [
        (&pending, RunEvent::Paused(Reason::default()), RunStatus::Pending),
        (&pending, RunEvent::Resumed(Reason::default()), RunStatus::Pending),
        (&pending, RunEvent::Heartbeat(Empty {}), RunStatus::Pending),
        (&done, started(), RunStatus::Ended),
        (&done, ended(EndReason::Success, 0), RunStatus::Ended),
        (&done, RunEvent::Restored(Reason::default()), RunStatus::Ended),
    ];
    for (state, event, status) in cases {
        let mut copy = state.clone();
        let refusal = copy.apply(&event, &at(state.version + 1, 0)).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::IllegalTransition, "{event:?}");
        assert_eq!(refusal.current_status, Some(status));
        assert!(refusal.message.contains(status.as_str()), "{}", refusal.message);
        assert_eq!(&copy, state, "a refused event must not change the state");
    }
}

#[test]
fn pause_and_resume_toggle_running() {
    let s = given(&[placeholder(), started(), RunEvent::Paused(Reason::default())]);
    assert_eq!(s.status, RunStatus::Paused);
    let s = when(&s, RunEvent::Resumed(Reason::default())).unwrap();
    assert_eq!(s.status, RunStatus::Running);
}

#[test]
fn cancel_of_a_pending_run_ends_it_without_duration() {
    let s = given(&[placeholder(), ended(EndReason::Stopped, 0)]);
    assert_eq!(s.status, RunStatus::Ended);
    assert_eq!(s.duration_ms, None);
}

#[test]
fn delete_and_restore_are_each_others_inverse_and_not_repeatable() {
    let s = given(&[placeholder(), RunEvent::Deleted(Reason::default())]);
    assert!(s.deleted);
    assert!(s.deleted_at.is_some());
    assert!(when(&s, RunEvent::Deleted(Reason::default())).is_err());
    let s = when(&s, RunEvent::Restored(Reason::default())).unwrap();
    assert!(!s.deleted);
    assert_eq!(s.deleted_at, None);
}

#[test]
fn only_failed_runs_can_be_dead_lettered_and_only_once() {
    let ok = given(&[placeholder(), started(), ended(EndReason::Success, 0)]);
    assert!(when(&ok, RunEvent::DeadLettered(Reason::default())).is_err());
    let failed = given(&[placeholder(), started(), ended(EndReason::Crashed, 137)]);
    let dead = when(&failed, RunEvent::DeadLettered(Reason::default())).unwrap();
    assert!(dead.dead_lettered);
    assert!(when(&dead, RunEvent::DeadLettered(Reason::default())).is_err());
}

#[test]
fn retry_needs_an_ended_run_and_dlq_replay_clears_the_flag() {
    let running = given(&[placeholder(), started()]);
    let retry = |action: &str| {
        RunEvent::Retried(RunRetried {
            new_run_id: Uuid::now_v7(),
            action: action.into(),
            reason: None,
        })
    };
    assert!(when(&running, retry("retry")).is_err());
    let dead = given(&[
        placeholder(),
        started(),
        ended(EndReason::Failed, 1),
        RunEvent::DeadLettered(Reason::default()),
    ]);
    let kept = when(&dead, retry("retry")).unwrap();
    assert!(kept.dead_lettered);
    let cleared = when(&dead, retry("dlq_replay")).unwrap();
    assert!(!cleared.dead_lettered);
}

#[test]
fn replaying_stored_envelopes_gives_the_same_state() {
    let id = Uuid::now_v7();
    let events = [created(id), started(), ended(EndReason::Timeout, 124)];
    let mut direct = RunState::empty(id);
    let mut replayed = RunState::empty(id);
    let metadata = Metadata {
        actor: "scheduler".into(),
        operation_id: Some("op-1".into()),
        ..Default::default()
    };
    for (i, event) in events.iter().enumerate() {
        let ctx = EventContext {
            metadata: Some(&metadata),
            ..at(i as i64 + 1, (i as i64 + 1) * 7)
        };
        direct.apply(event, &ctx).unwrap();
        let new = event.to_new(Uuid::now_v7());
        let envelope = EventEnvelope {
            position: ctx.position,
            event_id: new.event_id,
            stream_id: runledger_events::run_stream_id(&id),
            stream_version: ctx.stream_version,
            event_type: new.event_type,
            schema_version: new.schema_version,
            data: new.data,
            metadata: metadata.clone(),
            recorded_at: ctx.recorded_at,
            prev_hash: String::new(),
            hash: String::new(),
        };
        replayed.apply_envelope(&envelope).unwrap();
    }
    assert_eq!(direct, replayed);
    assert_eq!(replayed.created_by.as_deref(), Some("scheduler"));
    assert_eq!(replayed.operation_id.as_deref(), Some("op-1"));
}

#[test]
fn created_by_and_operation_come_from_run_created_alone_and_traces_merge() {
    use runledger_events::ExecutionTrace;
    let id = Uuid::now_v7();
    let creator = Metadata::actor("ci");
    let operator = Metadata {
        actor: "ops".into(),
        operation_id: Some("op-2".into()),
        ..Default::default()
    };
    let mut run = RunState::empty(id);
    fn ctx(v: i64, m: &Metadata) -> EventContext<'_> {
        EventContext {
            metadata: Some(m),
            ..at(v, v * 10)
        }
    }
    run.apply(&created(id), &ctx(1, &creator)).unwrap();
    let start = RunStarted {
        execution_trace: Some(ExecutionTrace {
            queue_wait_ms: Some(5),
            connect_ms: Some(7),
            ..Default::default()
        }),
        ..Default::default()
    };
    run.apply(&RunEvent::Started(start), &ctx(2, &operator)).unwrap();
    let end = RunEnded {
        end_reason: EndReason::Success,
        exit_code: Some(0),
        error: None,
        result: None,
        execution_trace: Some(ExecutionTrace {
            connect_ms: Some(9),
            total_ms: Some(50),
            ..Default::default()
        }),
    };
    run.apply(&RunEvent::Ended(end), &ctx(3, &operator)).unwrap();
    assert_eq!(run.created_by.as_deref(), Some("ci"));
    assert_eq!(run.operation_id, None, "later events' operations are not the run's");
    assert_eq!(
        run.execution_trace,
        Some(ExecutionTrace {
            queue_wait_ms: Some(5),
            connect_ms: Some(9),
            total_ms: Some(50),
            ..Default::default()
        })
    );
}

fn with_deadlines(id: Uuid) -> RunEvent {
    RunEvent::Created(RunCreated {
        run_id: id,
        project: "default".into(),
        task_name: "nightly-report".into(),
        expires_at: Some(Timestamp::from_micros(10_000_000).unwrap()),
        timeout_secs: Some(100),
        heartbeat_timeout_secs: Some(5),
        ..Default::default()
    })
}

/// The run after `events` (the first is its creation), event i at i s.
fn deadlines_after(events: &[RunEvent]) -> RunState {
    let id = Uuid::now_v7();
    let mut state = RunState::empty(id);
    for (i, event) in events.iter().enumerate() {
        let event = match event {
            RunEvent::Created(_) => with_deadlines(id),
            other => other.clone(),
        };
        let v = i as i64 + 1;
        state.apply(&event, &at(v, v * 1_000_000)).expect("events apply");
    }
    state
}

fn secs(s: i64) -> Option<Timestamp> {
    Timestamp::from_micros(s * 1_000_000)
}

#[test]
fn a_pending_run_is_due_to_expire_and_a_start_replaces_it_with_the_running_deadlines() {
    let pending = deadlines_after(&[placeholder()]);
    assert_eq!(pending.deadline_at, secs(10));
    assert_eq!(pending.deadline_reason, Some(EndReason::Expired));
    // Started at 2 s: silent from 2 s for 5 s, well before the timeout.
    let running = deadlines_after(&[placeholder(), started()]);
    assert_eq!(running.deadline_at, secs(7));
    assert_eq!(running.deadline_reason, Some(EndReason::Crashed));
}

#[test]
fn a_heartbeat_postpones_the_heartbeat_deadline_and_an_end_clears_it() {
    let beat = RunEvent::Heartbeat(Empty {});
    let run = deadlines_after(&[placeholder(), started(), beat.clone(), beat]);
    assert_eq!(run.deadline_at, secs(9));
    let ended = when(&run, ended(EndReason::Success, 0)).unwrap();
    assert_eq!((ended.deadline_at, ended.deadline_reason), (None, None));
}

#[test]
fn a_paused_run_keeps_its_timeout_only_and_a_resume_restarts_the_heartbeat_clock() {
    let paused = deadlines_after(&[placeholder(), started(), RunEvent::Paused(Reason::default())]);
    assert_eq!(paused.deadline_at, secs(102), "started at 2 s with a 100 s timeout");
    assert_eq!(paused.deadline_reason, Some(EndReason::Timeout));
    let resumed = when(&paused, RunEvent::Resumed(Reason::default())).unwrap();
    assert_eq!(resumed.deadline_at, secs(9), "resumed at 4 s");
    assert_eq!(resumed.deadline_reason, Some(EndReason::Crashed));
}

#[test]
fn a_run_without_deadline_fields_has_no_deadline() {
    let run = given(&[placeholder(), started()]);
    assert_eq!((run.deadline_at, run.deadline_reason), (None, None));
}

#[test]
fn chunks_follow_one_another_and_end_with_the_run() {
    use runledger_events::RunChunks;
    let chunks = |first_index: i64, n: usize| {
        RunEvent::Chunks(RunChunks {
            first_index,
            chunks: vec!["x".to_owned(); n],
        })
    };
    let s = given(&[placeholder(), started(), chunks(1, 2), chunks(3, 1)]);
    assert_eq!(s.chunks, 3);
    // A gap, a repeat and an empty batch are refused.
    for bad in [chunks(5, 1), chunks(3, 1), chunks(4, 0)] {
        let err = when(&s, bad).unwrap_err();
        assert_eq!(err.kind, RefusalKind::IllegalTransition);
    }
    let s = when(&s, ended(EndReason::Success, 0)).unwrap();
    let err = when(&s, chunks(4, 1)).unwrap_err();
    assert!(err.message.contains("ended"), "{err}");
}

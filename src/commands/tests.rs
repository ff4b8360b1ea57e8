//! Given a run in some state, when a command, then these events or this error.

use super::*;
use runledger_projections::RunStatus;

fn create(task: &str) -> CreateRun {
    CreateRun::new(TaskName::parse(task).unwrap())
}

/// Decides, then folds the decided events as the store would.
fn execute(command: &Command, loaded: &Loaded) -> Result<(Vec<StreamWrite>, HashMap<Uuid, RunState>), CommandError> {
    let Decision::Append { writes, .. } = decide(command, loaded)? else {
        panic!("expected writes")
    };
    let mut states: HashMap<Uuid, RunState> = HashMap::new();
    if let Some(t) = &loaded.target {
        states.insert(t.id, t.clone());
    }
    for w in &writes {
        let s = states.entry(w.run_id).or_insert_with(|| RunState::empty(w.run_id));
        for e in &w.events {
            let at = EventContext {
                position: s.position + 1,
                stream_version: s.version + 1,
                recorded_at: Timestamp::now(),
                metadata: None,
            };
            s.apply(e, &at).unwrap();
        }
    }
    Ok((writes, states))
}

fn given_run(setup: impl FnOnce(&mut CreateRun), actions: &[Action]) -> RunState {
    let mut c = create("etl");
    setup(&mut c);
    let (writes, states) = execute(&Command::Create(c), &Loaded::default()).unwrap();
    let mut state = states[&writes[0].run_id].clone();
    for action in actions {
        let cmd = Command::Run(RunCommand {
            run_id: state.id,
            expected_version: None,
            action: action.clone(),
        });
        let loaded = Loaded {
            target: Some(state.clone()),
            ..Default::default()
        };
        let (_, states) = execute(&cmd, &loaded).unwrap();
        state = states[&state.id].clone();
    }
    state
}

fn when(state: &RunState, action: Action) -> Result<(Vec<StreamWrite>, HashMap<Uuid, RunState>), CommandError> {
    let cmd = Command::Run(RunCommand {
        run_id: state.id,
        expected_version: None,
        action,
    });
    execute(
        &cmd,
        &Loaded {
            target: Some(state.clone()),
            ..Default::default()
        },
    )
}

fn end(reason: EndReason) -> Action {
    Action::End(RunEnded {
        end_reason: reason,
        exit_code: Some(1),
        error: None,
        result: None,
        execution_trace: None,
    })
}

fn types(writes: &[StreamWrite]) -> Vec<&'static str> {
    writes
        .iter()
        .flat_map(|w| w.events.iter().map(|e| e.event_type()))
        .collect()
}

#[test]
fn create_appends_run_created_to_a_new_stream() {
    let (writes, states) = execute(&Command::Create(create("etl")), &Loaded::default()).unwrap();
    assert_eq!(types(&writes), ["run.created"]);
    assert_eq!(writes[0].expected, ExpectedVersion::NoStream);
    assert_eq!(states[&writes[0].run_id].task_name, "etl");
}

#[test]
fn create_with_a_held_idempotency_key_returns_the_holder() {
    let holder = given_run(|c| c.idempotency_key = Some("k".into()), &[]);
    let loaded = Loaded {
        idempotent_match: Some(holder.clone()),
        ..Default::default()
    };
    assert_eq!(
        decide(&Command::Create(create("etl")), &loaded),
        Ok(Decision::Existing(holder))
    );
}

#[test]
fn create_referring_to_a_missing_run_is_refused() {
    let missing = Uuid::now_v7();
    let loaded = Loaded {
        missing_references: vec![("parent_run_id", missing)],
        ..Default::default()
    };
    assert_eq!(
        decide(&Command::Create(create("etl")), &loaded),
        Err(CommandError::MissingReference {
            field: "parent_run_id",
            run_id: missing
        })
    );
}

#[test]
fn a_command_on_a_missing_run_is_not_found() {
    let cmd = Command::Run(RunCommand {
        run_id: Uuid::now_v7(),
        expected_version: None,
        action: Action::Heartbeat,
    });
    assert!(decide(&cmd, &Loaded::default()).unwrap_err().is_not_found());
}

#[test]
fn a_stale_expected_version_is_a_conflict() {
    let run = given_run(|_| {}, &[Action::Start(Default::default())]);
    let cmd = Command::Run(RunCommand {
        run_id: run.id,
        expected_version: Some(1),
        action: Action::Heartbeat,
    });
    let loaded = Loaded {
        target: Some(run.clone()),
        ..Default::default()
    };
    assert_eq!(
        decide(&cmd, &loaded),
        Err(CommandError::VersionConflict {
            run_id: run.id,
            expected: 1,
            actual: 2
        })
    );
}

#[test]
fn failing_the_last_attempt_dead_letters_in_the_same_append() {
    let run = given_run(|c| c.max_attempts = Some(1), &[Action::Start(Default::default())]);
    let (writes, states) = when(&run, end(EndReason::Failed)).unwrap();
    assert_eq!(types(&writes), ["run.ended", "run.dead_lettered"]);
    assert!(states[&run.id].dead_lettered);
}

#[test]
fn failing_with_attempts_left_or_succeeding_does_not_dead_letter() {
    let run = given_run(|c| c.max_attempts = Some(2), &[Action::Start(Default::default())]);
    assert_eq!(types(&when(&run, end(EndReason::Crashed)).unwrap().0), ["run.ended"]);
    let last = given_run(|c| c.max_attempts = Some(1), &[Action::Start(Default::default())]);
    assert_eq!(types(&when(&last, end(EndReason::Success)).unwrap().0), ["run.ended"]);
    let unlimited = given_run(|_| {}, &[Action::Start(Default::default())]);
    assert_eq!(
        types(&when(&unlimited, end(EndReason::Failed)).unwrap().0),
        ["run.ended"]
    );
}

#[test]
fn cancel_ends_the_run_as_stopped() {
    let run = given_run(|_| {}, &[]);
    let (_, states) = when(
        &run,
        Action::Cancel(Reason {
            reason: Some("operator".into()),
        }),
    )
    .unwrap();
    let after = &states[&run.id];
    assert_eq!(after.status, RunStatus::Ended);
    assert_eq!(after.end_reason, Some(EndReason::Stopped));
    assert_eq!(after.error.as_deref(), Some("canceled: operator"));
}

#[test]
fn illegal_actions_are_refused_with_the_current_status() {
    let pending = given_run(|_| {}, &[]);
    let ended = given_run(|_| {}, &[Action::Start(Default::default()), end(EndReason::Success)]);
    for (state, action) in [
        (&pending, Action::Pause(Reason::default())),
        (&pending, Action::Restore(Reason::default())),
        (&ended, Action::Start(Default::default())),
        (&ended, Action::Cancel(Reason::default())),
        (
            &ended,
            Action::Reschedule(RunRescheduled {
                scheduled_at: Timestamp::now(),
                reason: None,
            }),
        ),
    ] {
        match when(state, action) {
            Err(CommandError::Refused(r)) => assert_eq!(r.current_status, Some(state.status)),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn retry_creates_a_new_run_in_the_lineage_and_marks_the_source() {
    let source = given_run(
        |c| {
            c.payload = Some(serde_json::json!({"n": 1}));
            c.tags.insert("env".into(), "prod".into());
            c.max_attempts = Some(5);
        },
        &[Action::Start(Default::default()), end(EndReason::Failed)],
    );
    let retry = Action::Retry {
        action: RetryAction::Retry,
        reason: Some("flaky".into()),
        payload: None,
    };
    let (writes, states) = when(&source, retry).unwrap();
    assert_eq!(types(&writes), ["run.retried", "run.created"]);
    assert_eq!(writes[0].expected, ExpectedVersion::Exact(source.version));
    let new = &states[&writes[1].run_id];
    assert_eq!(new.retry_of_run_id, Some(source.id));
    assert_eq!(new.retry_attempt, 1);
    assert_eq!(new.lineage_root, Some(source.id));
    assert_eq!(new.lineage_depth, 1);
    assert_eq!(new.triggered_by, TriggeredBy::Retry);
    assert_eq!(new.payload, source.payload);
    assert_eq!(new.tags, source.tags);
    let after = &states[&source.id];
    assert_eq!(after.status, source.status, "the source is otherwise untouched");
    assert_eq!(after.version, source.version + 1);
}

#[test]
fn retry_of_a_retry_keeps_the_root_and_payload_override_wins() {
    let first = given_run(|_| {}, &[Action::Start(Default::default()), end(EndReason::Failed)]);
    let retry = |payload| Action::Retry {
        action: RetryAction::Replay,
        reason: None,
        payload,
    };
    let (writes, states) = when(&first, retry(None)).unwrap();
    let mut second = states[&writes[1].run_id].clone();
    for action in [Action::Start(Default::default()), end(EndReason::Failed)] {
        second = when(&second, action).unwrap().1[&second.id].clone();
    }
    let (writes, states) = when(&second, retry(Some(serde_json::json!("override")))).unwrap();
    let third = &states[&writes[1].run_id];
    assert_eq!(third.lineage_root, Some(first.id));
    assert_eq!(third.retry_attempt, 2);
    assert_eq!(third.payload, Some(serde_json::json!("override")));
}

#[test]
fn retry_of_an_unfinished_run_is_refused() {
    let running = given_run(|_| {}, &[Action::Start(Default::default())]);
    let retry = Action::Retry {
        action: RetryAction::Retry,
        reason: None,
        payload: None,
    };
    assert!(matches!(when(&running, retry), Err(CommandError::Refused(_))));
}

fn checkpoint(n: i64) -> Action {
    Action::Checkpoint {
        source: None,
        state: serde_json::json!({ "step": n }),
    }
}

#[test]
fn checkpoints_are_numbered_from_one_per_run() {
    let run = given_run(|_| {}, &[Action::Start(Default::default()), checkpoint(1)]);
    assert_eq!(run.last_checkpoint_sequence, 1);
    let (writes, states) = when(&run, checkpoint(2)).unwrap();
    match &writes[0].events[..] {
        [RunEvent::Checkpointed(c)] => assert_eq!(c.sequence, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(states[&run.id].last_checkpoint_sequence, 2);
}

#[test]
fn telemetry_is_taken_after_the_end_but_checkpoints_and_outputs_are_not() {
    let ended = given_run(|_| {}, &[Action::Start(Default::default()), end(EndReason::Success)]);
    let telemetry = [
        Action::Log(RunLogged {
            level: "info".into(),
            log_type: None,
            message: "flushed late".into(),
            data: None,
        }),
        Action::RecordUsage(RunUsageRecorded {
            provider: "p".into(),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            cost_microusd: 4,
        }),
        Action::RecordToolCall(RunToolCalled {
            tool_name: "grep".into(),
            input: None,
            output: None,
            duration_ms: Some(5),
            status: "success".into(),
        }),
        Action::SetDebugMode(RunDebugModeSet { enabled: true }),
    ];
    for action in telemetry {
        assert!(when(&ended, action.clone()).is_ok(), "{action:?}");
    }
    let output = Action::RecordOutput(RunOutputRecorded {
        output_key: "k".into(),
        schema: None,
        value: serde_json::json!(1),
    });
    for action in [checkpoint(1), output] {
        match when(&ended, action) {
            Err(CommandError::Refused(r)) => assert_eq!(r.current_status, Some(RunStatus::Ended)),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_continuation_joins_the_lineage_of_the_run_it_continues() {
    let first = given_run(|_| {}, &[]);
    let mut c = create("etl");
    c.continuation_of = Some(first.id);
    let loaded = Loaded {
        continued: Some(first.clone()),
        ..Default::default()
    };
    let (writes, states) = execute(&Command::Create(c), &loaded).unwrap();
    let next = &states[&writes[0].run_id];
    assert_eq!(next.lineage_root, Some(first.id));
    assert_eq!(next.lineage_depth, 1);
}

#[test]
fn resetting_an_idempotency_key_frees_it_and_needs_one() {
    let keyed = given_run(|c| c.idempotency_key = Some("k".into()), &[]);
    let (writes, states) = when(&keyed, Action::ResetIdempotencyKey).unwrap();
    assert_eq!(types(&writes), ["run.idempotency_key_reset"]);
    assert_eq!(states[&keyed.id].idempotency_key, None);
    let reset = states[&keyed.id].clone();
    assert!(matches!(
        when(&reset, Action::ResetIdempotencyKey),
        Err(CommandError::Refused(_))
    ));
}

#[test]
fn a_due_deadline_ends_the_run_as_it_says_and_dead_letters_a_last_attempt() {
    let run = given_run(
        |c| {
            c.timeout_secs = Some(1);
            c.max_attempts = Some(1);
        },
        &[Action::Start(RunStarted::default())],
    );
    let deadline = run.deadline_at.expect("a running run with a timeout has a deadline");
    let (writes, states) = when(&run, Action::EnforceDeadline { now: deadline }).unwrap();
    assert_eq!(types(&writes), ["run.ended", "run.dead_lettered"]);
    let ended = &states[&run.id];
    assert_eq!(ended.end_reason, Some(EndReason::Timeout));
    assert!(ended.dead_lettered);
    assert_eq!(ended.deadline_at, None);
}

#[test]
fn a_deadline_not_yet_due_is_refused() {
    let run = given_run(|c| c.expires_at = Timestamp::from_micros(i64::MAX / 2), &[]);
    let err = when(&run, Action::EnforceDeadline { now: Timestamp::now() }).unwrap_err();
    assert!(matches!(err, CommandError::Refused(_)), "{err:?}");
    let plain = given_run(|_| {}, &[]);
    assert!(when(&plain, Action::EnforceDeadline { now: Timestamp::now() }).is_err());
}

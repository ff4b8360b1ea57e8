//! The log on SQLite, driven directly: appends, versions, idempotency, group
//! commit isolation and the hash chain.

use std::sync::Arc;

use runledger_events::sqlite::{self, read, verify_chain, AppendError, WriteError, Writer};
use runledger_events::{ExpectedVersion, Metadata, NewEvent};
use serde_json::json;
use uuid::Uuid;

const SCHEMA: &str = include_str!("../../migrations/sqlite/0001_events.sql");

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Arc<Writer>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    sqlite::open(&path).unwrap().execute_batch(SCHEMA).unwrap();
    let writer = Arc::new(Writer::start(&path).unwrap());
    (dir, path, writer)
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "run.heartbeat".into(),
        schema_version: 1,
        data: json!({"n": n}),
    }
}

async fn append(
    w: &Writer,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<Vec<runledger_events::EventEnvelope>, WriteError<AppendError>> {
    let stream = stream.to_owned();
    w.submit(move |tx| tx.append(&stream, expected, &events, &Metadata::actor("test")))
        .await
}

#[tokio::test]
async fn appends_get_consecutive_positions_and_stream_versions() {
    let (_d, path, w) = setup();
    let a = append(&w, "s-a", ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    let b = append(&w, "s-b", ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    let c = append(&w, "s-a", ExpectedVersion::Exact(2), vec![event(4)])
        .await
        .unwrap();
    let positions: Vec<i64> = a.iter().chain(&b).chain(&c).map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(c[0].stream_version, 3);
    assert_eq!(b[0].prev_hash, a[1].hash);
    assert_eq!(*w.head().borrow(), 4);
    let conn = sqlite::open(&path).unwrap();
    let stored = read::stream(&conn, "s-a", 0, 10, &[]).unwrap();
    assert_eq!(stored, [a, c].concat(), "what was returned is what was stored");
    assert!(verify_chain(&conn).unwrap().is_intact());
}

#[tokio::test]
async fn a_wrong_expected_version_is_refused_and_appends_nothing() {
    let (_d, path, w) = setup();
    append(&w, "s", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
    ] {
        match append(&w, "s", expected, vec![event(2)]).await {
            Err(WriteError::Refused(AppendError::WrongVersion { actual: 1, .. })) => {}
            other => panic!("expected a version refusal, got {other:?}"),
        }
    }
    let conn = sqlite::open(&path).unwrap();
    assert_eq!(read::head(&conn).unwrap().0, 1);
}

#[tokio::test]
async fn appending_the_same_event_ids_again_is_a_no_op() {
    let (_d, path, w) = setup();
    let events = vec![event(1), event(2)];
    let first = append(&w, "s", ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    // The repeat would fail its version check; it must return the originals instead.
    let again = append(&w, "s", ExpectedVersion::NoStream, events).await.unwrap();
    assert_eq!(first, again);
    let conn = sqlite::open(&path).unwrap();
    assert_eq!(read::head(&conn).unwrap().0, 2);
}

#[tokio::test]
async fn a_refused_unit_never_fails_its_neighbours_in_the_batch() {
    let (_d, path, w) = setup();
    append(&w, "taken", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    // Many concurrent units land in the same batches; every third one is refused.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let (stream, expected) = if i % 3 == 0 {
                ("taken".to_owned(), ExpectedVersion::NoStream)
            } else {
                (format!("s-{i}"), ExpectedVersion::NoStream)
            };
            append(&w, &stream, expected, vec![event(i)]).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap() as i64;
    }
    assert_eq!(ok, 200);
    let conn = sqlite::open(&path).unwrap();
    let report = verify_chain(&conn).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 201, "positions stay gap-free across refusals");
}

#[tokio::test]
async fn a_unit_that_refuses_after_writing_rolls_back_its_batch() {
    let (_d, path, w) = setup();
    let result: Result<(), WriteError<&str>> = w
        .submit(|tx| {
            tx.append("s", ExpectedVersion::Any, &[event(1)], &Metadata::actor("t"))
                .unwrap();
            Err("changed my mind")
        })
        .await;
    assert!(matches!(result, Err(WriteError::Storage(_))), "{result:?}");
    let next = append(&w, "s", ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(next[0].position, 1, "nothing of the broken batch was kept");
    assert_eq!(next[0].prev_hash, runledger_events::chain::GENESIS_HASH);
    assert!(verify_chain(&sqlite::open(&path).unwrap()).unwrap().is_intact());
}

#[tokio::test]
async fn a_half_repeated_append_is_refused_before_writing() {
    let (_d, path, w) = setup();
    let first = event(1);
    append(&w, "s", ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    match append(&w, "t", ExpectedVersion::NoStream, vec![event(2), first]).await {
        Err(WriteError::Refused(AppendError::PartialDuplicate(_))) => {}
        other => panic!("expected a partial-duplicate refusal, got {other:?}"),
    }
    assert_eq!(read::head(&sqlite::open(&path).unwrap()).unwrap().0, 1);
}

fn tamper(path: &std::path::Path, sql: &str) {
    let conn = sqlite::open(path).unwrap();
    conn.execute_batch(&format!(
        "DROP TRIGGER events_are_append_only_update; DROP TRIGGER events_are_append_only_delete; {sql}"
    ))
    .unwrap();
}

#[tokio::test]
async fn verification_finds_the_first_altered_removed_or_reordered_event() {
    for (sql, position) in [
        ("UPDATE events SET data = '{\"n\":99}' WHERE position = 3", 3),
        ("DELETE FROM events WHERE position = 2", 2),
        (
            "UPDATE events SET position = 100 WHERE position = 4; UPDATE events SET position = 4 WHERE position = 5; \
          UPDATE events SET position = 5 WHERE position = 100",
            4,
        ),
    ] {
        let (_d, path, w) = setup();
        for i in 0..6 {
            append(&w, &format!("s-{i}"), ExpectedVersion::NoStream, vec![event(i)])
                .await
                .unwrap();
        }
        drop(w);
        tamper(&path, sql);
        let report = verify_chain(&sqlite::open(&path).unwrap()).unwrap();
        assert_eq!(
            report.first_break.as_ref().map(|b| b.0),
            Some(position),
            "{sql}: {report:?}"
        );
    }
}

#[tokio::test]
async fn a_writer_notices_appends_made_by_another_process() {
    let (_d, path, a) = setup();
    let b = Writer::start(&path).unwrap();
    append(&a, "s", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    append(&b, "s", ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap();
    // `a` remembers version 1 for "s"; the moved head must make it forget.
    match append(&a, "s", ExpectedVersion::Exact(1), vec![event(3)]).await {
        Err(WriteError::Refused(AppendError::WrongVersion { actual: 2, .. })) => {}
        other => panic!("expected a version refusal, got {other:?}"),
    }
    let third = append(&a, "s", ExpectedVersion::Exact(2), vec![event(3)])
        .await
        .unwrap();
    assert_eq!((third[0].position, third[0].stream_version), (3, 3));
    assert!(verify_chain(&sqlite::open(&path).unwrap()).unwrap().is_intact());
}

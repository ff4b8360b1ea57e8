//! Several runledger nodes on one PostgreSQL database: the log stays
//! gap-free, commit-ordered and exactly-once for a reader that follows it by
//! position, even while writers on every node race — and a reader waits for a
//! writer that holds its transaction open instead of skipping past it.

mod common;

use common::SendChecked;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Node, TestServer};
use runledger_events::postgres as log;
use runledger_events::{Metadata, NewEvent};
use serde_json::{json, Value};
use sqlx::ConnectOptions;

const TARGET_EVENTS: i64 = 21_000;

/// One executor: creates, starts and ends runs until the cluster holds enough
/// acknowledged events. Returns the runs it finished.
async fn executor(client: reqwest::Client, base: String, acked: Arc<AtomicI64>) -> Vec<String> {
    let mut runs = Vec::new();
    while acked.load(Ordering::Relaxed) < TARGET_EVENTS {
        let run: Value = client
            .post(format!("{base}/api/runs"))
            .json(&json!({"task_name": "cluster"}))
            .send_checked()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = run["id"].as_str().expect("created").to_owned();
        for (step, body) in [
            ("start", json!({})),
            ("end", json!({"end_reason": "success", "exit_code": 0})),
        ] {
            let resp = client
                .post(format!("{base}/api/runs/{id}/{step}"))
                .json(&body)
                .send_checked()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
        }
        acked.fetch_add(3, Ordering::Relaxed);
        runs.push(id);
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sixteen_writers_and_a_reader_see_every_event_once_in_order() {
    let Some(url) = common::postgres_url("two_nodes_sixteen_writers_and_a_reader_see_every_event_once_in_order") else {
        return;
    };
    let (schema, options) = common::postgres_schema(&url).await;
    let node_url = common::url_with_schema(&url, &schema);
    let nodes = [Node::start(&node_url), Node::start(&node_url)];

    // The reader follows the log by position while the writers run.
    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (options, writing) = (options.clone(), writing.clone());
        tokio::spawn(async move {
            let mut conn = options.connect().await.unwrap();
            let (mut last, mut ids) = (0i64, HashSet::new());
            loop {
                let still_writing = writing.load(Ordering::SeqCst);
                let page = log::after(&mut conn, last, 1000).await.unwrap();
                for event in &page {
                    assert_eq!(
                        event.position,
                        last + 1,
                        "the reader saw a gap or a repeat after {last}"
                    );
                    assert!(ids.insert(event.event_id), "event {} delivered twice", event.event_id);
                    last = event.position;
                }
                if page.is_empty() {
                    if !still_writing {
                        return (last, ids.len());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    let client = reqwest::Client::new();
    let acked = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for node in &nodes {
        for _ in 0..8 {
            writers.push(tokio::spawn(executor(client.clone(), node.base.clone(), acked.clone())));
        }
    }
    let mut finished = Vec::new();
    for w in writers {
        finished.extend(w.await.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let (last, delivered) = reader.await.unwrap();

    let mut conn = options.connect().await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(total >= TARGET_EVENTS, "only {total} events");
    assert_eq!(last, total, "the reader reached the head");
    assert_eq!(delivered as i64, total, "every event exactly once");
    let report = log::verify_chain(&mut conn).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, total);
    let ids: Vec<String> = finished.iter().map(|id| format!("run-{id}")).collect();
    let complete: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT stream_id FROM events WHERE stream_id = ANY($1) \
         GROUP BY stream_id HAVING COUNT(*) = 3 AND MAX(stream_version) = 3) s",
    )
    .bind(&ids)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        complete as usize,
        finished.len(),
        "every acknowledged run has its three events"
    );
    let both_nodes_wrote: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE version = 3")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(both_nodes_wrote as usize, finished.len());
    drop(nodes);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waits_for_a_writer_holding_its_transaction_and_never_skips_it() {
    let Some(s) = TestServer::postgres("a_reader_waits_for_a_writer_holding_its_transaction_and_never_skips_it").await
    else {
        return;
    };
    let Backend::Postgres { url, schema } = &s.backend else {
        unreachable!()
    };
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let options = options.options([("search_path", schema.as_str())]);
    s.create(json!({"task_name": "before"})).await;

    // A slow writer: holds the append lock with an uncommitted event.
    let mut holder = options.connect().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut holder).await.unwrap();
    log::lock(&mut tx).await.unwrap();
    let mut sealer = log::head(&mut tx).await.unwrap();
    let held = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "run.heartbeat".into(),
        schema_version: 1,
        data: json!({}),
    };
    let sealed = sealer.seal(
        "run-held",
        0,
        std::slice::from_ref(&held),
        &Metadata::actor("slow-writer"),
    );
    log::insert(&mut tx, &sealed).await.unwrap();

    // Another writer, through the API, must wait behind it.
    let s = Arc::new(s);
    let pending = {
        let s = s.clone();
        tokio::spawn(async move { s.post("/api/runs", json!({"task_name": "after"})).await.status.as_u16() })
    };
    let mut reader = options.connect().await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let seen: Vec<i64> = log::after(&mut reader, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(
            seen,
            [1],
            "nothing after the held position may be visible before it commits"
        );
    }
    assert!(
        !pending.is_finished(),
        "the API writer cannot commit while the lock is held"
    );

    tx.commit().await.unwrap();
    assert_eq!(pending.await.unwrap(), 201);
    let after = log::after(&mut reader, 0, 100).await.unwrap();
    let positions: Vec<i64> = after.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(after[1].event_id, held.event_id, "the held event keeps its place");
    assert_eq!(after[2].event_type, "run.created");
    assert!(log::verify_chain(&mut reader).await.unwrap().is_intact());
    Arc::try_unwrap(s).ok().expect("one owner").stop().await;
}

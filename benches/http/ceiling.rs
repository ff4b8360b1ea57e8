//! The ceiling: the least a durable `POST /api/runs` can do on this stack.
//! axum on hyper and tokio parses the same body, and one writer thread
//! appends each to a bare SQLite table with runledger's connection settings
//! (WAL, synchronous=FULL): everything queued meanwhile in one transaction,
//! every request answered after its batch commits.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{Commits, Serving};

const MAX_BATCH: usize = runledger_events::sqlite::MAX_BATCH;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    task_name: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

struct Append {
    task_name: String,
    tags: String,
    reply: oneshot::Sender<Result<i64, String>>,
}

async fn create(
    State(appends): State<mpsc::Sender<Append>>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, String)> {
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let tags = serde_json::to_string(&body.tags).map_err(|e| failed(e.to_string()))?;
    let (reply, answer) = oneshot::channel();
    appends
        .send(Append {
            task_name: body.task_name,
            tags,
            reply,
        })
        .await
        .map_err(|_| failed("the writer has stopped".into()))?;
    let id = answer
        .await
        .map_err(|_| failed("the writer has stopped".into()))?
        .map_err(failed)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// One transaction per batch of whatever is queued.
fn write(mut conn: rusqlite::Connection, mut appends: mpsc::Receiver<Append>, stats: &Mutex<Commits>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = appends.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match appends.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        let committed = (|| -> rusqlite::Result<Vec<i64>> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(batch.len());
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO appends (task_name, tags, recorded_at) VALUES (?1, ?2, ?3)")?;
                let now = runledger_events::Timestamp::now().to_rfc3339();
                for append in &batch {
                    insert.execute(rusqlite::params![append.task_name, append.tags, now])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            let started = Instant::now();
            tx.commit()?;
            let mut stats = stats.lock().unwrap();
            stats.batches += 1.0;
            stats.units += ids.len() as f64;
            stats.seconds += started.elapsed().as_secs_f64();
            Ok(ids)
        })();
        match committed {
            Ok(ids) => batch.drain(..).zip(ids).for_each(|(a, id)| {
                let _ = a.reply.send(Ok(id));
            }),
            Err(e) => batch.drain(..).for_each(|a| {
                let _ = a.reply.send(Err(e.to_string()));
            }),
        }
    }
}

/// Serves the ceiling's `POST /api/runs` on a port-0 listener, on a fresh
/// database at `path`; the writer counts its commits in the stats.
pub async fn start(path: &Path) -> (Serving, Arc<Mutex<Commits>>) {
    let conn = runledger_events::sqlite::open(path).expect("open the ceiling's database");
    conn.execute_batch(
        "CREATE TABLE appends (id INTEGER PRIMARY KEY, task_name TEXT NOT NULL, \
         tags TEXT NOT NULL, recorded_at TEXT NOT NULL)",
    )
    .expect("the ceiling's table");
    let (appends, queue) = mpsc::channel(16 * 1024);
    let stats = Arc::new(Mutex::new(Commits::default()));
    let writer_stats = stats.clone();
    let writer = std::thread::Builder::new()
        .name("ceiling-writer".into())
        .spawn(move || write(conn, queue, &writer_stats))
        .expect("the ceiling's writer thread");
    let router = Router::new().route("/api/runs", post(create)).with_state(appends);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = Serving::spawn(addr, move |stopped| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await?;
        // The router held the only sender: the writer drains its queue and ends.
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        Ok(())
    });
    (serving, stats)
}

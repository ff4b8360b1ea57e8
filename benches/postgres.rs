//! PostgreSQL throughput, in one run:
//!
//! - `nodes`: two ledger nodes (each its own pool and group-commit writer,
//!   contending for the advisory lock as two processes would) with 32
//!   concurrent writers each, every call the full create-run command
//!   (decide, append, upsert the runs projection);
//! - `raw`: the same number of ~300-byte rows, precomputed, inserted into a
//!   bare table with one multi-row INSERT (UNNEST) of 64 rows per transaction.
//!
//! `RUNLEDGER_BENCH_POSTGRES_URL=postgres://… cargo bench --bench postgres`
//! (falls back to RUNLEDGER_TEST_POSTGRES_URL); `RUNLEDGER_BENCH_EVENTS` sets
//! the events per case (default 50000).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use runledger::ledger::Ledger;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

async fn fresh_schema(base: &PgConnectOptions) -> (String, PgConnectOptions) {
    let schema = format!("rl_bench_{}", Uuid::new_v4().simple());
    let mut conn = base.connect().await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    (schema.clone(), base.clone().options([("search_path", schema.as_str())]))
}

async fn drop_schema(base: &PgConnectOptions, schema: &str) {
    let mut conn = base.connect().await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn nodes(base: &PgConnectOptions, nodes: usize, writers: usize, total: usize) -> f64 {
    let (schema, options) = fresh_schema(base).await;
    let mut ledgers = Vec::new();
    for _ in 0..nodes {
        ledgers.push(Arc::new(Ledger::open_postgres(options.clone()).await.unwrap()));
    }
    let per = total / (nodes * writers);
    let start = Instant::now();
    // Writer i runs on node i % nodes.
    common::concurrently(nodes * writers, |i| {
        let ledger = ledgers[i % nodes].clone();
        async move { common::create_runs(&ledger, i / nodes, per).await }
    })
    .await;
    let rate = (per * nodes * writers) as f64 / start.elapsed().as_secs_f64();
    drop(ledgers);
    drop_schema(base, &schema).await;
    rate
}

async fn raw(base: &PgConnectOptions, total: usize, batch: usize) -> f64 {
    let (schema, options) = fresh_schema(base).await;
    let mut conn = options.connect().await.unwrap();
    sqlx::query(
        "CREATE TABLE events (position BIGINT PRIMARY KEY, event_id UUID, stream_id TEXT, stream_version BIGINT, \
         event_type TEXT, schema_version INT, data TEXT, metadata TEXT, recorded_at TEXT, prev_hash TEXT, hash TEXT)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let data = format!(r#"{{"level":"info","message":"step finished; {}"}}"#, "x".repeat(180));
    let rows: Vec<(i64, Uuid)> = (0..total).map(|i| (i as i64 + 1, Uuid::now_v7())).collect();
    let hash = "f".repeat(64);
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = conn.begin().await.unwrap();
        let positions: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        sqlx::query(
            "INSERT INTO events SELECT p, i, 'run-bench', p, 'run.logged', 1, $3, '{\"actor\":\"bench\"}', \
             '2026-01-01T00:00:00.000000Z', $4, $4 FROM UNNEST($1::bigint[], $2::uuid[]) AS t(p, i)",
        )
        .bind(positions)
        .bind(ids)
        .bind(&data)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    drop_schema(base, &schema).await;
    rate
}

fn main() {
    let url = std::env::var("RUNLEDGER_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("RUNLEDGER_TEST_POSTGRES_URL"))
        .ok()
        .filter(|u| !u.is_empty());
    let Some(url) = url else {
        println!("SKIPPED: set RUNLEDGER_BENCH_POSTGRES_URL (or RUNLEDGER_TEST_POSTGRES_URL) to a PostgreSQL URL");
        return;
    };
    let quick = std::env::args().skip(1).any(|a| a != "--bench");
    let total: usize = std::env::var("RUNLEDGER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let total = if quick { 2_048 } else { total };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base: PgConnectOptions = url.parse().expect("PostgreSQL URL");
        let mut conn = base.connect().await.unwrap();
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        println!(
            "PostgreSQL {version} on 127.0.0.1, synchronous_commit={sync}, {cores} cores (shared with the server)"
        );
        println!("{:<22} {:>9} {:>12} {:>8}", "case", "events", "events/s", "x raw");
        let raw_rate = raw(&base, total, 64).await;
        println!("{:<22} {:>9} {:>12.0} {:>8.2}", "raw UNNEST/64tx", total, raw_rate, 1.0);
        for (n, w) in [(1, 32), (2, 32)] {
            let rate = nodes(&base, n, w, total).await;
            let case = format!("{n} node(s) x {w} writers");
            println!("{case:<22} {total:>9} {rate:>12.0} {:>8.2}", rate / raw_rate);
        }
    });
}

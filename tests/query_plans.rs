//! Every supported list query is served by an index: the query plan of each
//! filter, each sort both ways, each cursor and `as_of`, and of each total,
//! must not scan the whole `runs` or `run_history` table (SQLite: `SCAN`
//! without an index; PostgreSQL, with sequential scans and sorts priced
//! out, so that a tiny table plans as a large one would: `Seq
//! Scan`). A slow query fails here without a timing. On a ledger with a few
//! runs of each kind, so that the planner sees real rows.

mod common;

use common::TestServer;
use runledger_events::{EndReason, Timestamp, TriggeredBy};
use runledger_projections::{
    task_counts::Latest, Arg, Cursor, Dialect, Known, RunFilter, RunQuery, RunStatus, SortDirection, SortField,
    SqlQuery, StatusValue,
};
use serde_json::json;
use sqlx::Arguments;

const TABLES: [&str; 2] = ["runs", "run_history"];

fn filters(parent: uuid::Uuid) -> Vec<(&'static str, RunFilter)> {
    let f = RunFilter::default;
    let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    vec![
        ("none", f()),
        (
            "status=failed",
            RunFilter {
                statuses: vec![StatusValue::EndReason(EndReason::Failed)],
                ..f()
            },
        ),
        (
            "status=failed,timeout",
            RunFilter {
                statuses: vec![
                    StatusValue::EndReason(EndReason::Failed),
                    StatusValue::EndReason(EndReason::Timeout),
                ],
                ..f()
            },
        ),
        (
            "status=running",
            RunFilter {
                statuses: vec![StatusValue::Phase(RunStatus::Running)],
                ..f()
            },
        ),
        (
            "status=deleted",
            RunFilter {
                statuses: vec![StatusValue::Deleted],
                ..f()
            },
        ),
        (
            "status=dead_letter",
            RunFilter {
                statuses: vec![StatusValue::DeadLetter],
                ..f()
            },
        ),
        (
            "project",
            RunFilter {
                project: Some("billing".into()),
                ..f()
            },
        ),
        (
            "task_name",
            RunFilter {
                task_name: Some("etl".into()),
                ..f()
            },
        ),
        (
            "triggered_by",
            RunFilter {
                triggered_by: vec![TriggeredBy::Cron],
                ..f()
            },
        ),
        (
            "created_after",
            RunFilter {
                created_after: Some(at),
                ..f()
            },
        ),
        (
            "created_before",
            RunFilter {
                created_before: Some(at),
                ..f()
            },
        ),
        (
            "deadline_before",
            RunFilter {
                deadline_before: Some(at),
                ..f()
            },
        ),
        (
            "exit_code_min",
            RunFilter {
                exit_code_min: Some(1),
                ..f()
            },
        ),
        (
            "exit_code_max",
            RunFilter {
                exit_code_max: Some(0),
                ..f()
            },
        ),
        (
            "retries_only",
            RunFilter {
                retries_only: true,
                ..f()
            },
        ),
        (
            "search",
            RunFilter {
                search: Some("etl".into()),
                ..f()
            },
        ),
        (
            "search that may be in an id",
            RunFilter {
                search: Some("0a1b".into()),
                ..f()
            },
        ),
        (
            "tag",
            RunFilter {
                tags: vec![("env".into(), "prod".into())],
                ..f()
            },
        ),
        (
            "parent_run_id",
            RunFilter {
                parent_run_id: Some(parent),
                ..f()
            },
        ),
        (
            "operation_id",
            RunFilter {
                operation_id: Some(parent),
                ..f()
            },
        ),
        (
            "payload",
            RunFilter {
                payload: json!({"customer": "acme", "plan": {"tier": "gold"}})
                    .as_object()
                    .cloned(),
                ..f()
            },
        ),
        (
            "payload {}",
            RunFilter {
                payload: json!({}).as_object().cloned(),
                ..f()
            },
        ),
        (
            "include_deleted",
            RunFilter {
                include_deleted: true,
                ..f()
            },
        ),
        (
            "dlq",
            RunFilter {
                dead_lettered_only: true,
                ..f()
            },
        ),
    ]
}

const SORTS: [SortField; 7] = [
    SortField::DeadlineAt,
    SortField::CreatedAt,
    SortField::StartAt,
    SortField::TaskName,
    SortField::Status,
    SortField::ExitCode,
    SortField::Duration,
];

/// Every query the lists run: (what it is, its SQL).
fn queries(parent: uuid::Uuid, head: i64, dialect: Dialect) -> Vec<(String, SqlQuery)> {
    let mut out = Vec::new();
    // What a task's row goes back to when its latest run is deleted.
    for kind in Latest::ALL {
        let q = SqlQuery {
            sql: kind.recompute_sql("$1", "VALUES ($1, $2)"),
            args: vec![Arg::Text("etl".into()), Arg::Text(parent.to_string())],
        };
        out.push((format!("a task's {}", kind.column()), q));
    }
    // A run's page (the console's, the debug bundle): its chain, and its
    // version at a position.
    let run = Arg::Text(parent.to_string());
    out.push((
        "a run's lineage".to_owned(),
        SqlQuery {
            sql: runledger_projections::details::LINEAGE_SQL.to_owned(),
            args: vec![run.clone()],
        },
    ));
    out.push((
        "a run's version at a position".to_owned(),
        SqlQuery {
            sql: runledger_projections::VERSION_AT_SQL.to_owned(),
            args: vec![run.clone(), Arg::Int(head / 2)],
        },
    ));
    // Every append that stores a version of a run closes its open one.
    out.push((
        "closing a run's open version".to_owned(),
        SqlQuery {
            sql: runledger_projections::CLOSE_VERSION_SQL.to_owned(),
            args: vec![Arg::Int(head), Arg::Int(0), run.clone()],
        },
    ));
    // `/metrics` reads the oldest pending run at every scrape.
    out.push((
        "metrics: the oldest pending run".to_owned(),
        SqlQuery {
            sql: runledger_projections::gauges::OLDEST_PENDING_SQL.to_owned(),
            args: vec![],
        },
    ));
    // The deadline enforcer reads the earliest due runs, and the next
    // deadline, on every node at every wake-up.
    out.push((
        "deadlines: the earliest due runs".to_owned(),
        SqlQuery {
            sql: runledger_projections::deadlines::DUE_SQL.to_owned(),
            args: vec![Arg::Int(Timestamp::now().as_micros()), Arg::Int(256)],
        },
    ));
    out.push((
        "deadlines: the next deadline".to_owned(),
        SqlQuery {
            sql: runledger_projections::deadlines::NEXT_SQL.to_owned(),
            args: vec![],
        },
    ));
    let id = "01890000-0000-7000-8000-000000000000".to_owned();
    for as_of in [None, Some(head / 2)] {
        let when = if as_of.is_some() { " as_of" } else { "" };
        for (name, filter) in filters(parent) {
            let q = RunQuery {
                filter,
                as_of,
                ..RunQuery::default()
            };
            out.push((format!("total of {name}{when}"), q.count_sql(dialect)));
            for (i, part) in q.page_sql(dialect, &Known::default()).into_iter().enumerate() {
                out.push((format!("page {i} of {name}{when}"), part));
            }
            // A deep page: the rows it skips come from an index alone.
            let deep = RunQuery {
                offset: 100,
                ..q.clone()
            };
            for (i, part) in deep.page_sql(dialect, &Known::default()).into_iter().enumerate() {
                out.push((format!("offset page {i} of {name}{when}"), part));
            }
            // A page of a few runs with a tag or payload is read from its
            // index, as its count is.
            let few = Known {
                total: Some(3),
                ..Known::default()
            };
            if !q.filter.tags.is_empty() || q.filter.payload.is_some() {
                for (i, part) in q.page_sql(dialect, &few).into_iter().enumerate() {
                    out.push((format!("page {i} of a few runs of {name}{when}"), part));
                }
            }
            // A search page reads the matching task names first, then one
            // index range per name (and its cursor's next page too).
            if let Some(names) = q.search_tasks_sql(dialect) {
                out.push((format!("task names of {name}{when}"), names));
                let tasks = Known {
                    search_tasks: Some(vec!["etl".to_owned(), "billing".to_owned()]),
                    ..Known::default()
                };
                let next = RunQuery {
                    cursor: Some(Cursor {
                        sort_field: SortField::CreatedAt,
                        sort_direction: SortDirection::Desc,
                        value: Some(Arg::Int(5)),
                        id: "01890000-0000-7000-8000-000000000000".to_owned(),
                    }),
                    ..q.clone()
                };
                for (which, q) in [("page", &q), ("cursor page", &next)] {
                    for (i, part) in q.page_sql(dialect, &tasks).into_iter().enumerate() {
                        out.push((format!("{which} {i} of {name} by task{when}"), part));
                    }
                }
            }
        }
        for sort_field in SORTS {
            for sort_direction in [SortDirection::Asc, SortDirection::Desc] {
                let base = RunQuery {
                    sort_field,
                    sort_direction,
                    as_of,
                    ..RunQuery::default()
                };
                let sort = format!("sort {sort_field:?} {sort_direction:?}{when}");
                for (i, part) in base.page_sql(dialect, &Known::default()).into_iter().enumerate() {
                    out.push((format!("page {i} of {sort}"), part));
                }
                // A filter that matches most runs: the page walks the sort's
                // index as it would unfiltered (on SQLite; PostgreSQL
                // chooses itself), whichever index the filter has.
                let most = Known {
                    total: Some(900),
                    live_runs: Some(1000),
                    ..Known::default()
                };
                for (name, filter) in [
                    (
                        "task",
                        RunFilter {
                            task_name: Some("etl".into()),
                            ..RunFilter::default()
                        },
                    ),
                    (
                        "failed",
                        RunFilter {
                            statuses: vec![StatusValue::EndReason(EndReason::Failed)],
                            ..RunFilter::default()
                        },
                    ),
                ] {
                    let q = RunQuery { filter, ..base.clone() };
                    if let Some(live) = q.live_runs_sql(dialect) {
                        out.push((format!("live runs for a {name} page of {sort}"), live));
                    }
                    let walked = q.live_runs_sql(dialect).is_some();
                    for (i, part) in q.page_sql(dialect, &most).into_iter().enumerate() {
                        let walks = if walked { " (walked)" } else { "" };
                        out.push((format!("page {i} of a {name} of {sort}{walks}"), part));
                    }
                }
                let value = match sort_field {
                    SortField::TaskName | SortField::Status => Arg::Text("m".into()),
                    _ => Arg::Int(5),
                };
                let mut cursors = vec![Some(value)];
                if matches!(
                    sort_field,
                    SortField::StartAt | SortField::ExitCode | SortField::Duration | SortField::DeadlineAt
                ) {
                    cursors.push(None);
                }
                for value in cursors {
                    let cursor = Cursor {
                        sort_field,
                        sort_direction,
                        value: value.clone(),
                        id: id.clone(),
                    };
                    let q = RunQuery {
                        cursor: Some(cursor),
                        ..base.clone()
                    };
                    for (i, part) in q.page_sql(dialect, &Known::default()).into_iter().enumerate() {
                        out.push((format!("cursor ({value:?}) page {i} of {sort}"), part));
                    }
                }
            }
        }
    }
    out
}

/// The plan's lines that read a whole table of `TABLES`.
async fn full_scans(s: &TestServer, q: &SqlQuery, dialect: Dialect) -> (Vec<String>, String) {
    let lines: Vec<String> = match dialect {
        Dialect::Sqlite => {
            let path = s.database_url().trim_start_matches("sqlite://").to_owned();
            let conn = rusqlite::Connection::open(path).unwrap();
            runledger_projections::payload::register_sqlite(&conn).unwrap();
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql)).unwrap();
            let args: Vec<rusqlite::types::Value> = q
                .args
                .iter()
                .map(|a| match a {
                    Arg::Int(i) => rusqlite::types::Value::Integer(*i),
                    Arg::Text(t) => rusqlite::types::Value::Text(t.clone()),
                })
                .collect();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap();
            rows.map(|r| r.unwrap()).collect()
        }
        Dialect::Postgres => {
            let mut conn = s.pg_connection().await;
            sqlx::raw_sql("SET enable_seqscan = off; SET enable_sort = off")
                .execute(&mut conn)
                .await
                .unwrap();
            let mut args = sqlx::postgres::PgArguments::default();
            for a in &q.args {
                match a {
                    Arg::Int(i) => args.add(*i).unwrap(),
                    Arg::Text(t) => args.add(t.clone()).unwrap(),
                }
            }
            sqlx::query_scalar_with(&format!("EXPLAIN {}", q.sql), args)
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    };
    let scans = lines
        .iter()
        .filter(|line| {
            let line = line.trim();
            TABLES.iter().any(|t| match dialect {
                Dialect::Sqlite => {
                    (line == format!("SCAN {t}") || line.starts_with(&format!("SCAN {t} "))) && !line.contains("USING")
                        // Under an alias: the runs' id index read whole
                        // (no list walks it in order).
                        || line.starts_with("SCAN ") && line.contains("sqlite_autoindex_runs_1")
                }
                Dialect::Postgres => {
                    line.contains(&format!("Seq Scan on {t} ")) || line.ends_with(&format!("Seq Scan on {t}"))
                }
            })
        })
        .cloned()
        .collect();
    (scans, lines.join("\n"))
}

async fn no_list_query_scans_a_whole_table(s: TestServer, dialect: Dialect) {
    let parent = s
        .run_through(
            "etl",
            json!({"tags": {"env": "prod"}, "payload": {"customer": "acme", "plan": {"tier": "gold"}}}),
            &["start", "end:failed:1"],
        )
        .await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{parent_id}/retry"), json!({})).await.ok(202);
    // A bulk operation's run, for the operation_id filter.
    s.post("/api/runs/bulk/rerun", json!({"ids": [parent_id]}))
        .await
        .ok(200);
    for (task, steps) in [
        ("etl", vec!["start"]),
        ("report", vec!["start", "end:success:0"]),
        ("report", vec!["delete"]),
    ] {
        s.run_through(
            task,
            json!({"parent_run_id": parent_id, "tags": {"env": "dev"}, "timeout_secs": 3600}),
            &steps,
        )
        .await;
    }
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    // The check itself: a condition no index serves is caught.
    let unindexed = SqlQuery {
        sql: "SELECT state FROM runs WHERE state LIKE $1".into(),
        args: vec![Arg::Text("%x%".into())],
    };
    assert!(
        !full_scans(&s, &unindexed, dialect).await.0.is_empty(),
        "a full scan goes unnoticed"
    );
    let mut failures = Vec::new();
    for (name, q) in queries(parent_id.parse().unwrap(), head, dialect) {
        let (scans, plan) = full_scans(&s, &q, dialect).await;
        if !scans.is_empty() {
            failures.push(format!("{name}: {scans:?}\n  {}\n  plan:\n{plan}", q.sql));
        }
        // A sort with no filter reads its index in order: nothing to sort,
        // so the first page costs its rows whatever the size of the table
        // (and so does the oldest pending run: the start of one range).
        let sorts = plan
            .lines()
            .any(|l| l.contains("TEMP B-TREE") || l.trim_start().trim_start_matches("-> ").starts_with("Sort"));
        // So does a list of one phase in created order (its range of
        // `runs_status_created` is in (created_at, id) order).
        let in_order = (name.contains(" of sort ") && !name.contains("as_of") && !name.contains(" of a "))
            || name.ends_with(" (walked)")
            || name == "page 0 of status=running"
            || name == "page 0 of none"
            || name.starts_with("metrics: ")
            || name.starts_with("deadlines: ");
        if in_order && sorts {
            failures.push(format!("{name} sorts:\n  {}\n  plan:\n{plan}", q.sql));
        }
    }
    assert!(
        failures.is_empty(),
        "{} queries scan a whole table or sort an unfiltered list:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.stop().await;
}

#[tokio::test]
async fn sqlite_list_queries_use_indexes() {
    no_list_query_scans_a_whole_table(TestServer::sqlite().await, Dialect::Sqlite).await;
}

#[tokio::test]
async fn postgres_list_queries_use_indexes() {
    if let Some(s) = TestServer::postgres("postgres_list_queries_use_indexes").await {
        no_list_query_scans_a_whole_table(s, Dialect::Postgres).await;
    }
}
